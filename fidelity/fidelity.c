/* kvtrace fidelity: specs, kept sets, the two passes and the metrics
 * (docs/fidelity.md). Kept sets reuse the analyzer's own definitions
 * (policy/fastgen.h, policy/adakv.h, policy/loss.h) on the context's attention as the
 * reference pass computes it. */
#include "fidelity/fidelity.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/adakv.h"
#include "policy/fastgen.h"
#include "common/cli.h"
#include "common/fileio.h"
#include "format/trace.h"
#include "model/forward.h"
#include "policy/gqa.h"
#include "policy/loss.h"

const char *kv_spec_kind_name(kv_spec_kind k) {
    static const char *const names[] = {"full", "streaming", "adakv", "fastgen"};
    return names[k];
}

/* ---- specs -------------------------------------------------------------- */

/* Reads a kvanalyze policies.json (policy/policy_file.h) at threshold T into s. */
static int load_policies(kv_spec *s, const char *path, const kv_config *cfg, kv_error *err) {
    kv_policy_file *p = kv_policies_read(path, err);
    if (!p) return kv_wrap(err, "spec '%s'", s->text);
    int rc = -1;
    if (p->n_layers != cfg->n_layers || p->n_heads != cfg->n_heads || p->n_kv_heads != cfg->n_kv_heads ||
        p->head_dim != cfg->head_dim || p->hidden_size != cfg->hidden_size) {
        kv_fail(err, "%s: written for another model (%s%s%d layers, %d heads, %d KV heads, head_dim %d, hidden %d); "
                     "this model has %d layers, %d heads, %d KV heads, head_dim %d, hidden %d",
                path, p->model, p->model[0] ? ": " : "", p->n_layers, p->n_heads, p->n_kv_heads, p->head_dim,
                p->hidden_size, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, cfg->hidden_size);
        goto done;
    }
    const kv_threshold_policy *tp = kv_policies_at(p, s->threshold);
    if (!tp) {
        char avail[256] = "";
        for (int k = 0; k < p->n_thr; k++) {
            size_t l = strlen(avail);
            if (l < sizeof avail - 24) snprintf(avail + l, sizeof avail - l, "%s%g", l ? ", " : "", p->thr[k].threshold);
        }
        kv_fail(err, "%s: no policies for threshold %g (the file has %s)", path, s->threshold, avail);
        goto done;
    }
    s->r_local = p->r_local;
    s->r_frequent = p->r_frequent;
    s->gqa_max = p->gqa_max;
    s->n_layers = p->n_layers;
    s->n_kv_heads = p->n_kv_heads;
    s->components = kv_malloc((size_t)p->n_layers * p->n_kv_heads, err);
    if (!s->components) goto done;
    memset(s->components, KV_COMP_FULL, (size_t)p->n_layers * p->n_kv_heads); /* layers the file does not cover keep everything */
    for (int l = 0; l < tp->n_layers; l++)
        for (int g = 0; g < tp->layers[l].n_kv; g++) {
            const kv_head_policy *h = &tp->layers[l].kv[g];
            s->components[(size_t)tp->layers[l].layer * p->n_kv_heads + h->head] = h->components;
        }
    rc = 0;
done:
    kv_policies_free(p);
    return rc;
}

int kv_spec_parse(kv_spec *s, const char *text, const kv_config *cfg, int obs_window, kv_error *err) {
    memset(s, 0, sizeof *s);
    if (strlen(text) >= sizeof s->text) return kv_fail(err, "spec '%.40s...': too long", text);
    strcpy(s->text, text);
    char buf[sizeof s->text];
    strcpy(buf, text);
    const char *usage = "expected full, streaming:B, adakv:uniform|adaptive:B[:alpha] or fastgen:policies.json:T";
    char *colon = strchr(buf, ':');
    if (colon) *colon = 0;
    const char *kind = buf, *rest = colon ? colon + 1 : NULL;
    long B;
    if (!strcmp(kind, "full")) {
        if (rest) return kv_fail(err, "spec '%s': full takes no arguments", text);
        s->kind = KV_SPEC_FULL;
    } else if (!strcmp(kind, "streaming")) {
        s->kind = KV_SPEC_STREAMING;
        if (!rest || kv_parse_long(rest, LONG_MIN, LONG_MAX, &B))
            return kv_fail(err, "spec '%s': expected streaming:B with B an integer budget per KV head", text);
        if (B <= KV_STREAMING_SINKS || B > 1 << 30)
            return kv_fail(err, "spec '%s': budget %ld must exceed the %d attention-sink positions StreamingLLM keeps",
                           text, B, KV_STREAMING_SINKS);
        s->budget = (int)B;
    } else if (!strcmp(kind, "adakv")) {
        s->kind = KV_SPEC_ADAKV;
        s->alpha = 0.2;
        char *alloc = (char *)rest, *b = rest ? strchr(rest, ':') : NULL, *a = NULL;
        if (b) *b++ = 0;
        if (b && (a = strchr(b, ':'))) *a++ = 0;
        if (!alloc || (strcmp(alloc, "uniform") && strcmp(alloc, "adaptive")))
            return kv_fail(err, "spec '%s': expected adakv:uniform:B or adakv:adaptive:B[:alpha]", text);
        s->adaptive = !strcmp(alloc, "adaptive");
        if (!b || kv_parse_long(b, LONG_MIN, LONG_MAX, &B) || B > 1 << 30)
            return kv_fail(err, "spec '%s': the budget '%s' is not an integer", text, b ? b : "");
        if (B <= obs_window)
            return kv_fail(err, "spec '%s': budget %ld must exceed the observation window (%d positions, always kept; "
                                "--obs-window)", text, B, obs_window);
        s->budget = (int)B;
        if (a) {
            if (!s->adaptive) return kv_fail(err, "spec '%s': alpha applies to adaptive budgets only", text);
            if (kv_parse_double(a, &s->alpha) || s->alpha < 0 || s->alpha > 1)
                return kv_fail(err, "spec '%s': alpha '%s' is not a number from 0 to 1", text, a);
        }
    } else if (!strcmp(kind, "fastgen")) {
        s->kind = KV_SPEC_FASTGEN;
        char *t = rest ? strrchr(rest, ':') : NULL;
        if (!t || t == rest) return kv_fail(err, "spec '%s': expected fastgen:policies.json:T", text);
        *t++ = 0;
        if (kv_parse_double(t, &s->threshold) || s->threshold < 0 || s->threshold > 1)
            return kv_fail(err, "spec '%s': threshold '%s' is not a number from 0 to 1", text, t);
        if (load_policies(s, rest, cfg, err)) return -1;
    } else {
        return kv_fail(err, "spec '%s': unknown kind '%s' (%s)", text, kind, usage);
    }
    return 0;
}

void kv_spec_free(kv_spec *s) {
    free(s->components);
    s->components = NULL;
}

int kv_fidelity_min_tokens(const kv_spec *specs, int n_specs, const kv_fidelity_params *p) {
    int need = p->continuation + 1;
    for (int s = 0; s < n_specs; s++)
        if (specs[s].kind == KV_SPEC_ADAKV && p->continuation + p->ada.obs_window + 1 > need)
            need = p->continuation + p->ada.obs_window + 1;
    return need;
}

/* ---- reference pass and kept sets --------------------------------------- */

typedef struct {
    kv_model *m;
    const kv_spec *specs;
    int n_specs;
    const kv_fidelity_params *p;
    kv_fidelity_state *st;
    const uint8_t *flags; /* [N] */
    int any_adakv;
    /* scratch */
    float *cs_ctx;        /* [H, Nc] the context rows' accumulated attention */
    float *comb;          /* [Nc] a KV group's combined cs_ctx */
    int *cls;             /* [Nc] FastGen classes */
    double *scores, *tmp; /* [KVH, P], [3 N] */
    int *head_order, *all_order; /* [KVH, P], [KVH * P] */
    uint8_t *keep;        /* [KVH, P] */
    int *counts;          /* [KVH] */
    float *values;        /* [KVH, N, hd] */
    float *wo;            /* [D, H hd] */
} ref_ctx;

static int want_layer(void *p, int layer) {
    ref_ctx *r = p;
    return r->p->layer < 0 || r->p->layer == layer;
}

/* Fills mask [KVH, Nc] of spec s at one layer. Returns 0, or -1 when out of memory. */
static int spec_mask(ref_ctx *r, const kv_spec *s, int layer, uint8_t *mask, kv_error *err) {
    const kv_config *c = &r->m->cfg;
    int Nc = r->st->n_ctx, KVH = c->n_kv_heads, G = c->n_heads / KVH, w = r->p->ada.obs_window;
    switch (s->kind) {
    case KV_SPEC_FULL: memset(mask, 1, (size_t)KVH * Nc); break;
    case KV_SPEC_STREAMING:
        for (int g = 0; g < KVH; g++)
            for (int j = 0; j < Nc; j++)
                mask[(size_t)g * Nc + j] = s->budget >= Nc || j < KV_STREAMING_SINKS ||
                                           j >= Nc - (s->budget - KV_STREAMING_SINKS);
        break;
    case KV_SPEC_ADAKV: {
        int P = Nc - w;
        kv_split split = {s->adaptive ? KV_ALLOC_ADAPTIVE : KV_ALLOC_UNIFORM, s->alpha, r->p->ada.safeguard, w};
        kv_adakv_select(&split, r->head_order, r->all_order, KVH, P, s->budget - w, r->keep, r->counts);
        for (int g = 0; g < KVH; g++)
            for (int j = 0; j < Nc; j++) mask[(size_t)g * Nc + j] = j >= P || r->keep[(size_t)g * P + j];
        break;
    }
    case KV_SPEC_FASTGEN: {
        kv_fastgen_params fp = {.r_local = s->r_local, .r_frequent = s->r_frequent};
        int nl = kv_local_window(s->r_local, Nc);
        for (int g = 0; g < KVH; g++) {
            uint8_t comp = s->components[(size_t)layer * KVH + g], *mg = mask + (size_t)g * Nc;
            if (comp & KV_COMP_FULL) {
                memset(mg, 1, Nc);
                continue;
            }
            /* the group's combined accumulated attention, as the analyzer combines colsum */
            const float *cs = r->cs_ctx + (size_t)g * G * Nc;
            kv_gqa_combine_strided(r->comb, cs, Nc, G, Nc, s->gqa_max);
            kv_fastgen_head fh; /* for its classes, in r->cls */
            int built = kv_fastgen_head_build(&fh, Nc, r->flags, r->comb, &fp, r->cls);
            kv_fastgen_head_free(&fh);
            if (built) return kv_fail(err, "out of memory");
            for (int j = 0; j < Nc; j++)
                mg[j] = ((comp & KV_COMP_SPECIAL) && r->cls[j] == 0) || ((comp & KV_COMP_PUNCT) && r->cls[j] == 1) ||
                        ((comp & KV_COMP_FREQUENT) && r->cls[j] == 2) || ((comp & KV_COMP_LOCAL) && Nc - 1 - j < nl);
        }
        break;
    }
    }
    return 0;
}

static int layer_done(void *p, int layer, const kv_layer_capture *cap, kv_error *err) {
    /* fidelity accumulates no local windows (n_near 0) and reads no keys */
    const float *colsum = cap->colsum, *window = cap->window, *v = cap->v;
    ref_ctx *r = p;
    kv_fidelity_state *st = r->st;
    const kv_config *c = &r->m->cfg;
    double t0 = kv_now_s();
    int N = st->n, Nc = st->n_ctx, H = c->n_heads, KVH = c->n_kv_heads, hd = c->head_dim, D = c->hidden_size;
    int Q = st->Q, w = r->p->ada.obs_window;
    int Wp = Q + (r->any_adakv ? w : 0), wrow0 = N - Wp;
    /* the context rows' colsum: all rows minus the continuation's */
    for (int h = 0; h < H; h++)
        for (int j = 0; j < Nc; j++) {
            double s = colsum[(size_t)h * N + j];
            for (int i = Nc; i < N; i++) s -= window[((size_t)h * Wp + (i - wrow0)) * N + j];
            r->cs_ctx[(size_t)h * Nc + j] = (float)s;
        }
    if (r->any_adakv) {
        kv_adakv_params ap = r->p->ada;
        ap.scorer = KV_SCORER_SNAPKV, ap.gqa_max = 0, ap.future_q = Q;
        kv_adakv_scores(window, Wp, colsum, NULL, N, H, KVH, &ap, r->scores, r->tmp);
        if (kv_adakv_orders(r->scores, KVH, Nc - w, r->head_order, r->all_order, err)) return -1;
    }
    /* the analyzer's actual L1 loss on the continuation rows (eval future:Q, no window) */
    for (int g = 0; g < KVH; g++)
        for (int i = 0; i < N; i++)
            memcpy(r->values + ((size_t)g * N + i) * hd, v + ((size_t)i * KVH + g) * hd, hd * sizeof(float));
    kv_loss_ctx lc;
    if (kv_model_read_wo(r->m, layer, r->wo, err) ||
        kv_loss_ctx_build(&lc, &(kv_layer_view){window, Wp, r->values, r->wo, N, H, KVH, hd, D}, 0, Q, err))
        return -1;
    for (int s = 0; s < r->n_specs; s++) {
        uint8_t *mask = kv_malloc((size_t)KVH * Nc, err);
        if (!mask) {
            kv_loss_ctx_free(&lc);
            return -1;
        }
        st->masks[(size_t)s * st->n_layers + layer] = mask;
        if (spec_mask(r, &r->specs[s], layer, mask, err)) {
            kv_loss_ctx_free(&lc);
            return -1;
        }
        size_t kept = 0;
        for (size_t j = 0; j < (size_t)KVH * Nc; j++) kept += mask[j];
        st->kept[s] += (double)kept;
        kv_loss loss;
        kv_loss_eval(&lc, kept == (size_t)KVH * Nc ? NULL : mask, &loss); /* nothing evicted: exactly 0 */
        st->l1[s] += loss.actual_l1;
        st->rel_l1[s] += loss.relative_l1;
    }
    kv_loss_ctx_free(&lc);
    st->t_select += kv_now_s() - t0;
    return 0;
}

void kv_fidelity_state_free(kv_fidelity_state *st) {
    if (st->masks)
        for (int i = 0; i < st->n_specs * st->n_layers; i++) free(st->masks[i]);
    free(st->masks);
    free(st->ref_logits);
    free(st->kept);
    free(st->l1);
    free(st->rel_l1);
    memset(st, 0, sizeof *st);
}

int kv_fidelity_reference(kv_model *m, const int32_t *ids, int n, const uint8_t *flags, const kv_spec *specs,
                          int n_specs, const kv_fidelity_params *p, kv_fidelity_state *st, kv_error *err) {
    const kv_config *c = &m->cfg;
    memset(st, 0, sizeof *st);
    int Q = p->continuation;
    if (Q < 2) return kv_fail(err, "--continuation %d: at least 2 positions are needed", Q);
    int need = kv_fidelity_min_tokens(specs, n_specs, p);
    if (n < need)
        return kv_fail(err, "%d tokens; --continuation %d%s needs at least %d", n, Q,
                       need > Q + 1 ? " with Ada-KV's observation window" : "", need);
    if (p->layer >= c->n_layers)
        return kv_fail(err, "--layer %d: the model has %d layers (0-%d)", p->layer, c->n_layers, c->n_layers - 1);
    int H = c->n_heads, KVH = c->n_kv_heads, Nc = n - Q, V = c->vocab_size;
    *st = (kv_fidelity_state){.n = n, .n_ctx = Nc, .Q = Q, .n_layers = c->n_layers, .n_kv_heads = KVH, .vocab = V,
                              .n_specs = n_specs, .n_compressed = p->layer < 0 ? c->n_layers : 1};
    ref_ctx r = {.m = m, .specs = specs, .n_specs = n_specs, .p = p, .st = st, .flags = flags};
    for (int s = 0; s < n_specs; s++) r.any_adakv |= specs[s].kind == KV_SPEC_ADAKV;
    int P = r.any_adakv ? Nc - p->ada.obs_window : 1;
    size_t Nz = (size_t)n;
    st->ref_logits = kv_malloc((size_t)Q * V * sizeof(float), err);
    st->masks = kv_calloc((size_t)n_specs * c->n_layers, sizeof(uint8_t *), err);
    st->kept = kv_calloc(n_specs, sizeof(double), err);
    st->l1 = kv_calloc(n_specs, sizeof(double), err);
    st->rel_l1 = kv_calloc(n_specs, sizeof(double), err);
    r.cs_ctx = kv_malloc((size_t)H * Nc * sizeof(float), err);
    r.comb = kv_malloc((size_t)Nc * sizeof(float), err);
    r.cls = kv_malloc((size_t)Nc * sizeof(int), err);
    r.scores = kv_malloc((size_t)KVH * P * sizeof(double), err);
    r.tmp = kv_malloc(3 * Nz * sizeof(double), err);
    r.head_order = kv_malloc((size_t)KVH * P * sizeof(int), err);
    r.all_order = kv_malloc((size_t)KVH * P * sizeof(int), err);
    r.keep = kv_malloc((size_t)KVH * P, err);
    r.counts = kv_malloc((size_t)KVH * sizeof(int), err);
    r.values = kv_malloc((size_t)KVH * Nz * c->head_dim * sizeof(float), err);
    r.wo = kv_malloc((size_t)c->hidden_size * H * c->head_dim * sizeof(float), err);
    int rc = -1;
    if (!st->ref_logits || !st->masks || !st->kept || !st->l1 || !st->rel_l1 || !r.cs_ctx || !r.comb || !r.cls ||
        !r.scores || !r.tmp || !r.head_order || !r.all_order || !r.keep || !r.counts || !r.values || !r.wo)
        goto done;
    kv_capture_hooks hooks = {.ctx = &r, .window = Q + (r.any_adakv ? p->ada.obs_window : 0), .want_layer = want_layer,
                              .layer_done = layer_done};
    double t0 = kv_now_s();
    if (kv_forward_ex(m, ids, n, &hooks, NULL, Q, st->ref_logits, err)) goto done;
    st->t_reference = kv_now_s() - t0;
    rc = 0;
done:
    free(r.cs_ctx), free(r.comb), free(r.cls), free(r.scores), free(r.tmp), free(r.head_order), free(r.all_order);
    free(r.keep), free(r.counts), free(r.values), free(r.wo);
    if (rc) kv_fidelity_state_free(st);
    return rc;
}

int kv_fidelity_compressed(kv_model *m, const int32_t *ids, const kv_fidelity_state *st, int s, float *logits,
                           kv_error *err) {
    kv_forward_masks fm = {.n_ctx = st->n_ctx, .allow = (const uint8_t *const *)st->masks + (size_t)s * st->n_layers};
    return kv_forward_ex(m, ids, st->n, NULL, &fm, st->Q, logits, err);
}

/* log-softmax of x [V] into out, in double */
static void log_softmax(const float *x, int V, double *out) {
    double m = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < V; i++) sum += exp((double)x[i] - m);
    double lse = m + log(sum);
    for (int i = 0; i < V; i++) out[i] = (double)x[i] - lse;
}

static int argmax(const float *x, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int kv_fidelity_metrics(const kv_fidelity_state *st, int s, const int32_t *ids, const float *comp,
                        kv_fidelity_row *row, kv_fidelity_token *tokens, kv_error *err) {
    int Q = st->Q, V = st->vocab, Nc = st->n_ctx;
    double *lr = kv_malloc((size_t)V * sizeof(double), err), *lc = kv_malloc((size_t)V * sizeof(double), err);
    if (!lr || !lc) {
        free(lr), free(lc);
        return -1;
    }
    memset(row, 0, sizeof *row);
    int agree = 0;
    for (int r = 0; r < Q; r++) {
        const float *xr = st->ref_logits + (size_t)r * V, *xc = comp + (size_t)r * V;
        log_softmax(xr, V, lr);
        log_softmax(xc, V, lc);
        double kl = 0;
        for (int i = 0; i < V; i++) kl += exp(lr[i]) * (lr[i] - lc[i]);
        if (kl < 0) kl = 0; /* rounding: KL >= 0 */
        row->mean_kl += kl;
        row->max_kl = kl > row->max_kl ? kl : row->max_kl;
        int top_ref = argmax(xr, V), top_comp = argmax(xc, V);
        agree += top_ref == top_comp;
        double logp_ref = NAN, logp_comp = NAN;
        if (r < Q - 1) { /* position Nc + r predicts token Nc + r + 1 */
            int t = ids[Nc + r + 1];
            logp_ref = lr[t], logp_comp = lc[t];
            row->nll_ref -= logp_ref;
            row->nll_comp -= logp_comp;
        }
        if (tokens) tokens[r] = (kv_fidelity_token){logp_ref, logp_comp, kl, top_ref, top_comp};
    }
    row->mean_kl /= Q;
    row->top1 = (double)agree / Q;
    row->nll_ref /= Q - 1;
    row->nll_comp /= Q - 1;
    /* uncompressed layers keep their whole context */
    double total = (double)st->n_layers * st->n_kv_heads * Nc;
    row->memory_kept = (st->kept[s] + (double)(st->n_layers - st->n_compressed) * st->n_kv_heads * Nc) / total;
    row->l1 = st->l1[s] / st->n_compressed;
    row->relative_l1 = st->rel_l1[s] / st->n_compressed;
    free(lr);
    free(lc);
    return 0;
}
