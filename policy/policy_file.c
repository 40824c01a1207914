/* policies.json and budgets.json: the one writer and the one reader
 * (schemas in docs/analyzer.md). */
#include "policy/policy_file.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"

#define KV_JSON_MAX ((size_t)1 << 30)

uint8_t kv_rung_components(int rung) {
    return rung >= KV_RUNG_FULL ? KV_COMP_FULL : (uint8_t)((1u << (rung + 1)) - 1);
}

/* ---- reading -------------------------------------------------------------- */

static cJSON *read_json(const char *path, kv_error *err) {
    size_t len;
    char *text = kv_read_file(path, KV_JSON_MAX, &len, err);
    if (!text) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
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

static int get_int(const cJSON *o, const char *key, int *out, const char *path, const char *where, kv_error *err) {
    double v = 0;
    if (get_num(o, key, &v, path, where, err)) return -1;
    if (v != floor(v) || fabs(v) > 1 << 30) return kv_fail(err, "%s: %s: \"%s\" is not an integer", path, where, key);
    *out = (int)v;
    return 0;
}

/* an optional string; "" when absent */
static void get_str(const cJSON *o, const char *key, char *out, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    snprintf(out, n, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

/* "gqa": "mean" or "max" */
static int get_gqa(const cJSON *par, int *gqa_max, const char *path, kv_error *err) {
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(par, "gqa");
    if (!cJSON_IsString(g) || (strcmp(g->valuestring, "mean") && strcmp(g->valuestring, "max")))
        return kv_fail(err, "%s: parameters: \"gqa\" must be \"mean\" or \"max\"", path);
    *gqa_max = !strcmp(g->valuestring, "max");
    return 0;
}

static int get_prompts(const cJSON *par, char ***out, int *n, const char *path, kv_error *err) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(par, "prompts"), *s;
    *n = 0;
    if (!a) return 0;
    if (!cJSON_IsArray(a)) return kv_fail(err, "%s: parameters: \"prompts\" is not an array", path);
    *out = kv_calloc((size_t)cJSON_GetArraySize(a) + 1, sizeof **out, err);
    if (!*out) return -1;
    cJSON_ArrayForEach(s, a) {
        if (!cJSON_IsString(s)) return kv_fail(err, "%s: parameters: a prompt id that is not a string", path);
        if (!((*out)[(*n)++] = kv_strdup(s->valuestring, err))) return -1;
    }
    return 0;
}

static void free_strings(char **s, int n) {
    for (int i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

static int read_heads(const cJSON *arr, kv_head_policy **out, int *n, const char *path, const char *where,
                      kv_error *err) {
    if (!cJSON_IsArray(arr)) return kv_fail(err, "%s: %s: missing array", path, where);
    *n = cJSON_GetArraySize(arr);
    *out = kv_calloc(*n ? *n : 1, sizeof **out, err);
    if (!*out) return -1;
    int i = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, arr) {
        kv_head_policy *hp = &(*out)[i++];
        if (get_int(h, "head", &hp->head, path, where, err)) return -1;
        const cJSON *pol = cJSON_GetObjectItemCaseSensitive(h, "policy");
        hp->policy = cJSON_IsString(pol) ? kv_rung_index(pol->valuestring) : -1;
        if (hp->policy < 0)
            return kv_fail(err, "%s: %s head %d: unknown policy %s%s%s", path, where, hp->head,
                           cJSON_IsString(pol) ? "'" : "", cJSON_IsString(pol) ? pol->valuestring : "(none)",
                           cJSON_IsString(pol) ? "'" : "");
        const cJSON *comps = cJSON_GetObjectItemCaseSensitive(h, "components"), *cmp;
        if (!cJSON_IsArray(comps)) return kv_fail(err, "%s: %s head %d: missing \"components\"", path, where, hp->head);
        cJSON_ArrayForEach(cmp, comps) {
            int k = -1;
            for (int c = 0; c < KV_N_RUNGS && cJSON_IsString(cmp); c++)
                if (!strcmp(cmp->valuestring, kv_rung_component[c])) k = c;
            if (k < 0)
                return kv_fail(err, "%s: %s head %d: unknown component '%s'", path, where, hp->head,
                               cJSON_IsString(cmp) ? cmp->valuestring : "");
            hp->components |= (uint8_t)(1u << k);
        }
        if (!hp->components) return kv_fail(err, "%s: %s head %d: no components", path, where, hp->head);
        if (get_num(h, "kept_fraction", &hp->kept_fraction, path, where, err)) return -1;
        const cJSON *rec = cJSON_GetObjectItemCaseSensitive(h, "recovery");
        for (int k = 0; k < KV_N_RUNGS; k++)
            if (get_num(rec, kv_rung_component[k], &hp->recovery[k], path, where, err)) return -1;
    }
    return 0;
}

static int read_threshold(const cJSON *t, kv_threshold_policy *tp, const kv_policy_file *p, const char *path,
                          kv_error *err) {
    if (get_num(t, "threshold", &tp->threshold, path, "policies[]", err)) return -1;
    char where[96];
    snprintf(where, sizeof where, "threshold %g", tp->threshold);
    const cJSON *mem = cJSON_GetObjectItemCaseSensitive(t, "memory");
    if (get_num(mem, "kept_fraction", &tp->mem_kept_fraction, path, where, err)) return -1;
    tp->mean_tokens = tp->kv_bytes_full = tp->kv_bytes_kept = NAN;
    kv_error ignored; /* optional */
    get_num(mem, "mean_tokens", &tp->mean_tokens, path, where, &ignored);
    get_num(mem, "kv_bytes_full", &tp->kv_bytes_full, path, where, &ignored);
    get_num(mem, "kv_bytes_kept", &tp->kv_bytes_kept, path, where, &ignored);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(t, "layers"), *l;
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) == 0)
        return kv_fail(err, "%s: %s: no \"layers\"", path, where);
    tp->layers = kv_calloc(cJSON_GetArraySize(layers), sizeof *tp->layers, err);
    if (!tp->layers) return -1;
    cJSON_ArrayForEach(l, layers) {
        kv_layer_policy *lp = &tp->layers[tp->n_layers++];
        if (get_int(l, "layer", &lp->layer, path, where, err)) return -1;
        if (lp->layer < 0 || lp->layer >= p->n_layers)
            return kv_fail(err, "%s: %s: layer %d is not a layer of the model (0-%d)", path, where, lp->layer,
                           p->n_layers - 1);
        char w2[160];
        snprintf(w2, sizeof w2, "%s layer %d kv_heads", where, lp->layer);
        if (read_heads(cJSON_GetObjectItemCaseSensitive(l, "kv_heads"), &lp->kv, &lp->n_kv, path, w2, err)) return -1;
        snprintf(w2, sizeof w2, "%s layer %d query_heads", where, lp->layer);
        if (read_heads(cJSON_GetObjectItemCaseSensitive(l, "query_heads"), &lp->q, &lp->n_q, path, w2, err))
            return -1;
        for (int g = 0; g < lp->n_kv; g++)
            if (lp->kv[g].head < 0 || lp->kv[g].head >= p->n_kv_heads)
                return kv_fail(err, "%s: %s layer %d: KV head %d is not a head of the model (0-%d)", path, where,
                               lp->layer, lp->kv[g].head, p->n_kv_heads - 1);
    }
    return 0;
}

/* root: a parsed policies.json; path names it in messages */
static kv_policy_file *policies_from_json(const cJSON *root, const char *path, kv_error *err) {
    kv_policy_file *p = kv_calloc(1, sizeof *p, err);
    if (!p) goto fail;
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(root, "parameters");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(par) || !cJSON_IsObject(model)) {
        kv_fail(err, "%s: not a kvanalyze policies.json (needs \"parameters\" and \"model\")", path);
        goto fail;
    }
    get_str(par, "model", p->model, sizeof p->model);
    get_str(par, "trace", p->trace, sizeof p->trace);
    get_str(par, "rows", p->rows, sizeof p->rows);
    get_str(par, "rows_from", p->rows_from, sizeof p->rows_from);
    const cJSON *agg = cJSON_GetObjectItemCaseSensitive(par, "aggregate");
    p->aggregate_min = cJSON_IsString(agg) && !strcmp(agg->valuestring, "min");
    kv_error ignored; /* skip_rows is optional (0) */
    get_int(par, "skip_rows", &p->skip_rows, path, "parameters", &ignored);
    if (get_num(par, "r_local", &p->r_local, path, "parameters", err) ||
        get_num(par, "r_frequent", &p->r_frequent, path, "parameters", err) || get_gqa(par, &p->gqa_max, path, err) ||
        get_prompts(par, &p->prompts, &p->n_prompts, path, err) ||
        get_int(model, "n_layers", &p->n_layers, path, "model", err) ||
        get_int(model, "n_heads", &p->n_heads, path, "model", err) ||
        get_int(model, "n_kv_heads", &p->n_kv_heads, path, "model", err) ||
        get_int(model, "head_dim", &p->head_dim, path, "model", err) ||
        get_int(model, "hidden_size", &p->hidden_size, path, "model", err))
        goto fail;
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(model, "layers"), *x;
    if (cJSON_IsArray(tl)) {
        if (!(p->traced = kv_calloc((size_t)cJSON_GetArraySize(tl) + 1, sizeof *p->traced, err))) goto fail;
        cJSON_ArrayForEach(x, tl) p->traced[p->n_traced++] = cJSON_IsNumber(x) ? (int)x->valuedouble : -1;
    }
    const cJSON *pols = cJSON_GetObjectItemCaseSensitive(root, "policies"), *t;
    if (!cJSON_IsArray(pols) || cJSON_GetArraySize(pols) == 0) {
        kv_fail(err, "%s: no \"policies\" entries", path);
        goto fail;
    }
    if (!(p->thr = kv_calloc(cJSON_GetArraySize(pols), sizeof *p->thr, err))) goto fail;
    cJSON_ArrayForEach(t, pols) {
        if (read_threshold(t, &p->thr[p->n_thr++], p, path, err)) goto fail;
    }
    return p;
fail:
    kv_policies_free(p);
    return NULL;
}

kv_policy_file *kv_policies_read(const char *path, kv_error *err) {
    cJSON *root = read_json(path, err);
    if (!root) return NULL;
    kv_policy_file *p = policies_from_json(root, path, err);
    cJSON_Delete(root);
    return p;
}

void kv_policies_free(kv_policy_file *p) {
    if (!p) return;
    for (int t = 0; t < p->n_thr; t++) {
        for (int l = 0; l < p->thr[t].n_layers; l++) {
            free(p->thr[t].layers[l].kv);
            free(p->thr[t].layers[l].q);
        }
        free(p->thr[t].layers);
    }
    free(p->thr);
    free(p->traced);
    free_strings(p->prompts, p->n_prompts);
    free(p);
}

const kv_threshold_policy *kv_policies_at(const kv_policy_file *p, double t) {
    for (int i = 0; i < p->n_thr; i++)
        if (fabs(p->thr[i].threshold - t) < 1e-9) return &p->thr[i];
    return NULL;
}

static kv_budget_file *budgets_from_json(const cJSON *root, const char *path, kv_error *err) {
    kv_budget_file *b = kv_calloc(1, sizeof *b, err);
    if (!b) goto fail;
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(root, "parameters");
    get_str(par, "model", b->model, sizeof b->model);
    get_str(par, "trace", b->trace, sizeof b->trace);
    get_str(par, "scorer", b->scorer, sizeof b->scorer);
    get_str(par, "pool", b->pool, sizeof b->pool);
    get_str(par, "safeguard", b->safeguard, sizeof b->safeguard);
    get_str(par, "gqa_order", b->gqa_order, sizeof b->gqa_order);
    get_str(par, "pyramid_schedule", b->pyramid_schedule, sizeof b->pyramid_schedule);
    get_str(par, "eval", b->eval, sizeof b->eval);
    kv_error ignored; /* parameters are informative for the readers: optional */
    get_int(par, "kernel", &b->kernel, path, "parameters", &ignored);
    get_int(par, "obs_window", &b->obs_window, path, "parameters", &ignored);
    get_num(par, "alpha", &b->alpha, path, "parameters", &ignored);
    const cJSON *pyr = cJSON_GetObjectItemCaseSensitive(par, "pyramid");
    b->pyramid = cJSON_IsTrue(pyr);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(par, "gqa");
    b->gqa_max = cJSON_IsString(g) && !strcmp(g->valuestring, "max");
    if (get_prompts(par, &b->prompts, &b->n_prompts, path, err)) goto fail;
    const cJSON *sets = cJSON_GetObjectItemCaseSensitive(root, "budgets"), *s;
    if (!cJSON_IsArray(sets) || cJSON_GetArraySize(sets) == 0) {
        kv_fail(err, "%s: no \"budgets\" entries", path);
        goto fail;
    }
    if (!(b->sets = kv_calloc(cJSON_GetArraySize(sets), sizeof *b->sets, err))) goto fail;
    cJSON_ArrayForEach(s, sets) {
        kv_budget_set *bs = &b->sets[b->n++];
        double v = 0;
        if (get_num(s, "budget", &v, path, "budgets[]", err)) goto fail;
        bs->budget = (long)v;
        char where[64];
        snprintf(where, sizeof where, "budget %ld", bs->budget);
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(s, "layers"), *l;
        if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) == 0) {
            kv_fail(err, "%s: %s: no \"layers\"", path, where);
            goto fail;
        }
        if (!(bs->layers = kv_calloc(cJSON_GetArraySize(layers), sizeof *bs->layers, err))) goto fail;
        cJSON_ArrayForEach(l, layers) {
            kv_budget_layer *lb = &bs->layers[bs->n_layers++];
            if (get_int(l, "layer", &lb->layer, path, where, err) ||
                get_int(l, "layer_budget", &lb->layer_budget, path, where, err))
                goto fail;
            const cJSON *kb = cJSON_GetObjectItemCaseSensitive(l, "kv_budgets"), *x;
            if (!cJSON_IsArray(kb) || cJSON_GetArraySize(kb) == 0) {
                kv_fail(err, "%s: %s layer %d: missing \"kv_budgets\"", path, where, lb->layer);
                goto fail;
            }
            if (!(lb->kv_budgets = kv_calloc(cJSON_GetArraySize(kb), sizeof *lb->kv_budgets, err))) goto fail;
            cJSON_ArrayForEach(x, kb) {
                if (!cJSON_IsNumber(x)) {
                    kv_fail(err, "%s: %s layer %d: non-numeric kv_budgets entry", path, where, lb->layer);
                    goto fail;
                }
                lb->kv_budgets[lb->n_kv++] = (int)x->valuedouble;
            }
        }
    }
    return b;
fail:
    kv_budgets_free(b);
    return NULL;
}

kv_budget_file *kv_budgets_read(const char *path, kv_error *err) {
    cJSON *root = read_json(path, err);
    if (!root) return NULL;
    kv_budget_file *b = budgets_from_json(root, path, err);
    cJSON_Delete(root);
    return b;
}

void kv_budgets_free(kv_budget_file *b) {
    if (!b) return;
    for (int s = 0; s < b->n; s++) {
        for (int l = 0; l < b->sets[s].n_layers; l++) free(b->sets[s].layers[l].kv_budgets);
        free(b->sets[s].layers);
    }
    free(b->sets);
    free_strings(b->prompts, b->n_prompts);
    free(b);
}

/* ---- writing -------------------------------------------------------------- */

static cJSON *str_array(char **s, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(s[i]));
    return a;
}

static cJSON *head_obj(const kv_head_policy *hp) {
    cJSON *h = cJSON_CreateObject();
    if (!h) return NULL;
    cJSON_AddNumberToObject(h, "head", hp->head);
    cJSON_AddStringToObject(h, "policy", kv_rung_policy[hp->policy]);
    cJSON *comp = cJSON_AddArrayToObject(h, "components");
    for (int c = 0; comp && c < KV_N_RUNGS; c++)
        if (hp->components & (1u << c)) cJSON_AddItemToArray(comp, cJSON_CreateString(kv_rung_component[c]));
    cJSON_AddNumberToObject(h, "kept_fraction", hp->kept_fraction);
    cJSON *r = cJSON_AddObjectToObject(h, "recovery");
    for (int c = 0; r && c < KV_N_RUNGS; c++) cJSON_AddNumberToObject(r, kv_rung_component[c], hp->recovery[c]);
    return h;
}

/* Prints root to fp and deletes it. */
static int print_json(FILE *fp, cJSON *root, kv_error *err) {
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    if (!s) return kv_fail(err, "out of memory writing JSON");
    int bad = fputs(s, fp) < 0 || fputc('\n', fp) == EOF;
    cJSON_free(s);
    return bad ? kv_fail(err, "cannot write JSON (disk full?)") : 0;
}

/* cJSON's builders return NULL when out of memory and adding NULL drops the
 * item silently, so a tree is checked before it is printed: the reader must
 * read it back with as many entries as were written. */
static int policies_complete(const cJSON *root, const kv_policy_file *p) {
    kv_error ignored;
    kv_policy_file *back = root ? policies_from_json(root, "", &ignored) : NULL;
    int ok = back && back->n_thr == p->n_thr && back->n_prompts == p->n_prompts && back->n_traced == p->n_traced;
    for (int k = 0; ok && k < p->n_thr; k++) {
        ok = back->thr[k].n_layers == p->thr[k].n_layers;
        for (int l = 0; ok && l < p->thr[k].n_layers; l++)
            ok = back->thr[k].layers[l].n_kv == p->thr[k].layers[l].n_kv &&
                 back->thr[k].layers[l].n_q == p->thr[k].layers[l].n_q;
    }
    kv_policies_free(back);
    return ok;
}

static int budgets_complete(const cJSON *root, const kv_budget_file *b) {
    kv_error ignored;
    kv_budget_file *back = root ? budgets_from_json(root, "", &ignored) : NULL;
    int ok = back && back->n == b->n && back->n_prompts == b->n_prompts;
    for (int k = 0; ok && k < b->n; k++) {
        ok = back->sets[k].n_layers == b->sets[k].n_layers;
        for (int l = 0; ok && l < b->sets[k].n_layers; l++) ok = back->sets[k].layers[l].n_kv == b->sets[k].layers[l].n_kv;
    }
    kv_budgets_free(back);
    return ok;
}

int kv_policies_write(FILE *fp, const kv_policy_file *p, kv_error *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON *par = cJSON_AddObjectToObject(root, "parameters");
    double *thr = malloc((size_t)(p->n_thr ? p->n_thr : 1) * sizeof *thr);
    for (int k = 0; thr && k < p->n_thr; k++) thr[k] = p->thr[k].threshold;
    if (thr) cJSON_AddItemToObject(par, "thresholds", cJSON_CreateDoubleArray(thr, p->n_thr));
    free(thr);
    cJSON_AddNumberToObject(par, "r_local", p->r_local);
    cJSON_AddNumberToObject(par, "r_frequent", p->r_frequent);
    cJSON_AddStringToObject(par, "gqa", p->gqa_max ? "max" : "mean");
    cJSON_AddStringToObject(par, "aggregate", p->aggregate_min ? "min" : "mean");
    cJSON_AddNumberToObject(par, "skip_rows", p->skip_rows);
    cJSON_AddStringToObject(par, "rows", p->rows);
    if (p->rows_from[0]) cJSON_AddStringToObject(par, "rows_from", p->rows_from);
    cJSON_AddStringToObject(par, "trace", p->trace);
    cJSON_AddStringToObject(par, "model", p->model);
    cJSON_AddItemToObject(par, "prompts", str_array(p->prompts, p->n_prompts));
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    cJSON_AddNumberToObject(m, "n_layers", p->n_layers);
    cJSON_AddNumberToObject(m, "n_heads", p->n_heads);
    cJSON_AddNumberToObject(m, "n_kv_heads", p->n_kv_heads);
    cJSON_AddNumberToObject(m, "head_dim", p->head_dim);
    cJSON_AddNumberToObject(m, "hidden_size", p->hidden_size);
    cJSON_AddItemToObject(m, "layers", cJSON_CreateIntArray(p->traced, p->n_traced));
    cJSON *pol = cJSON_AddArrayToObject(root, "policies");
    for (int k = 0; pol && k < p->n_thr; k++) {
        const kv_threshold_policy *tp = &p->thr[k];
        cJSON *th = cJSON_CreateObject();
        cJSON_AddItemToArray(pol, th);
        cJSON_AddNumberToObject(th, "threshold", tp->threshold);
        cJSON *layers = cJSON_AddArrayToObject(th, "layers");
        for (int li = 0; layers && li < tp->n_layers; li++) {
            const kv_layer_policy *lp = &tp->layers[li];
            cJSON *lo = cJSON_CreateObject();
            cJSON_AddItemToArray(layers, lo);
            cJSON_AddNumberToObject(lo, "layer", lp->layer);
            cJSON *kvh = cJSON_AddArrayToObject(lo, "kv_heads");
            for (int g = 0; kvh && g < lp->n_kv; g++) cJSON_AddItemToArray(kvh, head_obj(&lp->kv[g]));
            cJSON *qh = cJSON_AddArrayToObject(lo, "query_heads");
            for (int h = 0; qh && h < lp->n_q; h++) cJSON_AddItemToArray(qh, head_obj(&lp->q[h]));
        }
        cJSON *mem = cJSON_AddObjectToObject(th, "memory");
        cJSON_AddNumberToObject(mem, "kept_fraction", tp->mem_kept_fraction);
        cJSON_AddNumberToObject(mem, "bytes_per_element", 2);
        cJSON_AddNumberToObject(mem, "mean_tokens", tp->mean_tokens);
        cJSON_AddNumberToObject(mem, "kv_bytes_full", tp->kv_bytes_full);
        cJSON_AddNumberToObject(mem, "kv_bytes_kept", tp->kv_bytes_kept);
    }
    if (!policies_complete(root, p)) {
        cJSON_Delete(root);
        return kv_fail(err, "out of memory building policies.json");
    }
    return print_json(fp, root, err);
}

int kv_budgets_write(FILE *fp, const kv_budget_file *b, kv_error *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON *par = cJSON_AddObjectToObject(root, "parameters");
    cJSON_AddStringToObject(par, "scorer", b->scorer);
    cJSON_AddStringToObject(par, "pool", b->pool);
    cJSON_AddNumberToObject(par, "kernel", b->kernel);
    cJSON_AddNumberToObject(par, "obs_window", b->obs_window);
    cJSON_AddNumberToObject(par, "alpha", b->alpha);
    cJSON_AddStringToObject(par, "safeguard", b->safeguard);
    cJSON_AddStringToObject(par, "gqa_order", b->gqa_order);
    cJSON_AddStringToObject(par, "gqa", b->gqa_max ? "max" : "mean");
    cJSON_AddBoolToObject(par, "pyramid", b->pyramid);
    if (b->pyramid) cJSON_AddStringToObject(par, "pyramid_schedule", b->pyramid_schedule);
    cJSON_AddStringToObject(par, "eval", b->eval);
    cJSON_AddStringToObject(par, "trace", b->trace);
    cJSON_AddStringToObject(par, "model", b->model);
    cJSON_AddItemToObject(par, "prompts", str_array(b->prompts, b->n_prompts));
    cJSON *bud = cJSON_AddArrayToObject(root, "budgets");
    for (int bi = 0; bud && bi < b->n; bi++) {
        const kv_budget_set *bs = &b->sets[bi];
        cJSON *bo = cJSON_CreateObject();
        cJSON_AddItemToArray(bud, bo);
        cJSON_AddNumberToObject(bo, "budget", (double)bs->budget);
        cJSON *layers = cJSON_AddArrayToObject(bo, "layers");
        for (int li = 0; layers && li < bs->n_layers; li++) {
            const kv_budget_layer *lb = &bs->layers[li];
            cJSON *lo = cJSON_CreateObject();
            cJSON_AddItemToArray(layers, lo);
            cJSON_AddNumberToObject(lo, "layer", lb->layer);
            cJSON_AddNumberToObject(lo, "layer_budget", lb->layer_budget);
            cJSON_AddItemToObject(lo, "kv_budgets", cJSON_CreateIntArray(lb->kv_budgets, lb->n_kv));
        }
    }
    if (!budgets_complete(root, b)) {
        cJSON_Delete(root);
        return kv_fail(err, "out of memory building budgets.json");
    }
    return print_json(fp, root, err);
}
