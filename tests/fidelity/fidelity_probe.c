/* Test helper for tests/test_fidelity.py: runs kvtrace fidelity's reference
 * and compressed passes on one token sequence and dumps what they computed.
 *
 *   fidelity_probe MODEL_DIR IDS Q LAYER OBS_WINDOW OUTDIR SPEC...
 *
 * IDS is a comma-separated token list, LAYER -1 for every layer. Writes
 * OUTDIR/ref.f32 [Q, V] (reference logits), and per spec s:
 * OUTDIR/comp_<s>.f32 [Q, V] (compressed logits), OUTDIR/mask_<s>.u8
 * [L, KVH, Nc] (255 for a layer not compressed), OUTDIR/row_<s>.txt (the CSV
 * numbers: memory_kept mean_kl max_kl top1 nll_ref nll_comp l1 relative_l1).
 * Token flags are all zero (no tokenizer), or from FIDELITY_PROBE_FLAGS, a
 * comma-separated list of KV_FLAG_* bytes, one per token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fidelity/fidelity.h"

static int dump(const char *dir, const char *name, const void *p, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, bytes, f) != bytes) return -1;
    return fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: fidelity_probe MODEL_DIR IDS Q LAYER OBS_WINDOW OUTDIR SPEC...\n");
        return 2;
    }
    kv_error err;
    int n = 0, cap = 16;
    int32_t *ids = malloc(cap * sizeof *ids);
    for (char *t = strtok(argv[2], ","); t; t = strtok(NULL, ",")) {
        if (n == cap) ids = realloc(ids, (cap *= 2) * sizeof *ids);
        ids[n++] = atoi(t);
    }
    kv_fidelity_params p = {.continuation = atoi(argv[3]), .layer = atoi(argv[4]),
                            .ada = {.scorer = KV_SCORER_SNAPKV, .pool = KV_POOL_MAX, .kernel = 7,
                                    .obs_window = atoi(argv[5]), .alpha = 0.2}};
    const char *out = argv[6];
    int n_specs = argc - 7;
    kv_kernels *k = kv_kernels_cpu(2, &err);
    kv_model m;
    if (!k || kv_model_build(&m, argv[1], k, &err)) goto fail;
    kv_spec *specs = calloc(n_specs, sizeof *specs);
    for (int s = 0; s < n_specs; s++)
        if (kv_spec_parse(&specs[s], argv[7 + s], &m.cfg, p.ada.obs_window, &err)) goto fail;
    uint8_t *flags = calloc(n, 1);
    const char *fl = getenv("FIDELITY_PROBE_FLAGS");
    if (fl) {
        char *copy = strdup(fl);
        int i = 0;
        for (char *t = strtok(copy, ","); t && i < n; t = strtok(NULL, ",")) flags[i++] = (uint8_t)atoi(t);
        free(copy);
    }
    kv_fidelity_state st;
    if (kv_fidelity_reference(&m, ids, n, flags, specs, n_specs, &p, &st, &err)) goto fail;
    size_t QV = (size_t)st.Q * st.vocab, LM = (size_t)st.n_kv_heads * st.n_ctx;
    float *comp = malloc(QV * sizeof(float));
    uint8_t *masks = malloc(st.n_layers * LM);
    if (dump(out, "ref.f32", st.ref_logits, QV * sizeof(float))) goto io;
    for (int s = 0; s < n_specs; s++) {
        char name[64];
        if (kv_fidelity_compressed(&m, ids, &st, s, comp, &err)) goto fail;
        snprintf(name, sizeof name, "comp_%d.f32", s);
        if (dump(out, name, comp, QV * sizeof(float))) goto io;
        for (int l = 0; l < st.n_layers; l++) {
            const uint8_t *mk = st.masks[(size_t)s * st.n_layers + l];
            if (mk) memcpy(masks + l * LM, mk, LM);
            else memset(masks + l * LM, 255, LM);
        }
        snprintf(name, sizeof name, "mask_%d.u8", s);
        if (dump(out, name, masks, st.n_layers * LM)) goto io;
        kv_fidelity_row r;
        if (kv_fidelity_metrics(&st, s, ids, comp, &r, NULL, &err)) goto fail;
        char row[512];
        int len = snprintf(row, sizeof row, "%.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g\n", r.memory_kept,
                           r.mean_kl, r.max_kl, r.top1, r.nll_ref, r.nll_comp, r.l1, r.relative_l1);
        snprintf(name, sizeof name, "row_%d.txt", s);
        if (dump(out, name, row, len)) goto io;
    }
    kv_fidelity_state_free(&st);
    for (int s = 0; s < n_specs; s++) kv_spec_free(&specs[s]);
    free(specs), free(flags), free(comp), free(masks), free(ids);
    kv_model_free(&m);
    k->destroy(k);
    return 0;
io:
    fprintf(stderr, "fidelity_probe: cannot write to %s\n", out);
    return 1;
fail:
    fprintf(stderr, "fidelity_probe: %s\n", err.msg);
    return 1;
}
