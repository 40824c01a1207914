#include "plots/results.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"

#define KVP_JSON_MAX ((size_t)1 << 30)

static cJSON *read_json(const char *path, kv_error *err) {
    char *text = kv_read_file(path, KVP_JSON_MAX, NULL, err);
    if (!text) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) kv_fail(err, "%s: not valid JSON", path);
    return j;
}

static int get_num(const cJSON *o, const char *key, double *out, const char *path, const char *where,
                   kv_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return kv_fail(err, "%s: %s: missing or non-numeric \"%s\"", path, where, key);
    *out = v->valuedouble;
    return 0;
}

static void model_name(const cJSON *root, char *out, size_t n) {
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(root, "parameters");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(par, "model");
    snprintf(out, n, "%s", cJSON_IsString(m) ? m->valuestring : "");
}

static int read_heads(const cJSON *arr, kvp_head_pol **out, int *n, const char *path, const char *where,
                      kv_error *err) {
    if (!cJSON_IsArray(arr)) return kv_fail(err, "%s: %s: missing array", path, where);
    *n = cJSON_GetArraySize(arr);
    *out = kv_calloc(*n ? *n : 1, sizeof **out, err);
    if (!*out) return -1;
    int i = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, arr) {
        kvp_head_pol *hp = &(*out)[i++];
        double v = 0;
        if (get_num(h, "head", &v, path, where, err)) return -1;
        hp->head = (int)v;
        const cJSON *pol = cJSON_GetObjectItemCaseSensitive(h, "policy");
        hp->policy = cJSON_IsString(pol) ? kvp_policy_index(pol->valuestring) : -1;
        if (hp->policy < 0)
            return kv_fail(err, "%s: %s head %d: unknown policy %s%s%s", path, where, hp->head,
                           cJSON_IsString(pol) ? "'" : "", cJSON_IsString(pol) ? pol->valuestring : "(none)",
                           cJSON_IsString(pol) ? "'" : "");
        if (get_num(h, "kept_fraction", &hp->kept_fraction, path, where, err)) return -1;
        const cJSON *rec = cJSON_GetObjectItemCaseSensitive(h, "recovery");
        static const char *rk[KVP_N_POLICIES] = {"special", "punct", "frequent", "local", "full"};
        for (int k = 0; k < KVP_N_POLICIES; k++)
            if (get_num(rec, rk[k], &hp->recovery[k], path, where, err)) return -1;
    }
    return 0;
}

kvp_policies *kvp_policies_read(const char *path, kv_error *err) {
    cJSON *root = read_json(path, err);
    if (!root) return NULL;
    kvp_policies *p = kv_calloc(1, sizeof *p, err);
    if (!p) goto fail;
    model_name(root, p->model, sizeof p->model);
    const cJSON *pols = cJSON_GetObjectItemCaseSensitive(root, "policies");
    if (!cJSON_IsArray(pols) || cJSON_GetArraySize(pols) == 0) {
        kv_fail(err, "%s: no \"policies\" entries", path);
        goto fail;
    }
    p->n_thr = cJSON_GetArraySize(pols);
    p->thr = kv_calloc(p->n_thr, sizeof *p->thr, err);
    if (!p->thr) goto fail;
    int ti = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, pols) {
        kvp_thr_pol *tp = &p->thr[ti++];
        if (get_num(t, "threshold", &tp->threshold, path, "policies[]", err)) goto fail;
        char where[96];
        snprintf(where, sizeof where, "threshold %g", tp->threshold);
        const cJSON *mem = cJSON_GetObjectItemCaseSensitive(t, "memory");
        if (get_num(mem, "kept_fraction", &tp->mem_kept_fraction, path, where, err)) goto fail;
        tp->kv_bytes_full = tp->kv_bytes_kept = NAN;
        get_num(mem, "kv_bytes_full", &tp->kv_bytes_full, path, where, err);
        get_num(mem, "kv_bytes_kept", &tp->kv_bytes_kept, path, where, err);
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(t, "layers");
        if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) == 0) {
            kv_fail(err, "%s: %s: no \"layers\"", path, where);
            goto fail;
        }
        tp->n_layers = cJSON_GetArraySize(layers);
        tp->layers = kv_calloc(tp->n_layers, sizeof *tp->layers, err);
        if (!tp->layers) goto fail;
        int li = 0;
        const cJSON *l;
        cJSON_ArrayForEach(l, layers) {
            kvp_layer_pol *lp = &tp->layers[li++];
            double v = 0;
            if (get_num(l, "layer", &v, path, where, err)) goto fail;
            lp->layer = (int)v;
            char w2[160];
            snprintf(w2, sizeof w2, "%s layer %d kv_heads", where, lp->layer);
            if (read_heads(cJSON_GetObjectItemCaseSensitive(l, "kv_heads"), &lp->kv, &lp->n_kv, path, w2, err))
                goto fail;
            snprintf(w2, sizeof w2, "%s layer %d query_heads", where, lp->layer);
            if (read_heads(cJSON_GetObjectItemCaseSensitive(l, "query_heads"), &lp->q, &lp->n_q, path, w2, err))
                goto fail;
        }
    }
    cJSON_Delete(root);
    return p;
fail:
    cJSON_Delete(root);
    kvp_policies_free(p);
    return NULL;
}

void kvp_policies_free(kvp_policies *p) {
    if (!p) return;
    for (int t = 0; t < p->n_thr; t++) {
        for (int l = 0; l < p->thr[t].n_layers; l++) {
            free(p->thr[t].layers[l].kv);
            free(p->thr[t].layers[l].q);
        }
        free(p->thr[t].layers);
    }
    free(p->thr);
    free(p);
}

const kvp_thr_pol *kvp_policies_at(const kvp_policies *p, double t) {
    for (int i = 0; i < p->n_thr; i++)
        if (fabs(p->thr[i].threshold - t) < 1e-9) return &p->thr[i];
    return NULL;
}

kvp_budgets *kvp_budgets_read(const char *path, kv_error *err) {
    cJSON *root = read_json(path, err);
    if (!root) return NULL;
    kvp_budgets *b = kv_calloc(1, sizeof *b, err);
    if (!b) goto fail;
    model_name(root, b->model, sizeof b->model);
    const cJSON *sets = cJSON_GetObjectItemCaseSensitive(root, "budgets");
    if (!cJSON_IsArray(sets) || cJSON_GetArraySize(sets) == 0) {
        kv_fail(err, "%s: no \"budgets\" entries", path);
        goto fail;
    }
    b->n = cJSON_GetArraySize(sets);
    b->sets = kv_calloc(b->n, sizeof *b->sets, err);
    if (!b->sets) goto fail;
    int si = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, sets) {
        kvp_budget_set *bs = &b->sets[si++];
        double v = 0;
        if (get_num(s, "budget", &v, path, "budgets[]", err)) goto fail;
        bs->budget = (long)v;
        char where[64];
        snprintf(where, sizeof where, "budget %ld", bs->budget);
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(s, "layers");
        if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) == 0) {
            kv_fail(err, "%s: %s: no \"layers\"", path, where);
            goto fail;
        }
        bs->n_layers = cJSON_GetArraySize(layers);
        bs->layers = kv_calloc(bs->n_layers, sizeof *bs->layers, err);
        if (!bs->layers) goto fail;
        int li = 0;
        const cJSON *l;
        cJSON_ArrayForEach(l, layers) {
            kvp_layer_budget *lb = &bs->layers[li++];
            if (get_num(l, "layer", &v, path, where, err)) goto fail;
            lb->layer = (int)v;
            if (get_num(l, "layer_budget", &v, path, where, err)) goto fail;
            lb->layer_budget = (int)v;
            const cJSON *kb = cJSON_GetObjectItemCaseSensitive(l, "kv_budgets");
            if (!cJSON_IsArray(kb) || cJSON_GetArraySize(kb) == 0) {
                kv_fail(err, "%s: %s layer %d: missing \"kv_budgets\"", path, where, lb->layer);
                goto fail;
            }
            lb->n_kv = cJSON_GetArraySize(kb);
            lb->kv_budgets = kv_calloc(lb->n_kv, sizeof *lb->kv_budgets, err);
            if (!lb->kv_budgets) goto fail;
            int k = 0;
            const cJSON *x;
            cJSON_ArrayForEach(x, kb) {
                if (!cJSON_IsNumber(x)) {
                    kv_fail(err, "%s: %s layer %d: non-numeric kv_budgets entry", path, where, lb->layer);
                    goto fail;
                }
                lb->kv_budgets[k++] = (int)x->valuedouble;
            }
        }
    }
    cJSON_Delete(root);
    return b;
fail:
    cJSON_Delete(root);
    kvp_budgets_free(b);
    return NULL;
}

void kvp_budgets_free(kvp_budgets *b) {
    if (!b) return;
    for (int s = 0; s < b->n; s++) {
        for (int l = 0; l < b->sets[s].n_layers; l++) free(b->sets[s].layers[l].kv_budgets);
        free(b->sets[s].layers);
    }
    free(b->sets);
    free(b);
}
