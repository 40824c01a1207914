#include "policy/adakv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const kv_scorer_names[KV_N_SCORERS] = {"snapkv", "h2o", "tova", "streaming", "observed", "knorm"};
const char *const kv_pool_names[KV_N_POOLS] = {"max", "avg", "none", "avg-padded"};
const char *const kv_safeguard_names[KV_N_SAFEGUARDS] = {"protect", "kvpress", "blend"};
const char *const kv_gqa_order_names[KV_N_GQA_ORDERS] = {"combine-pool", "pool-combine"};
const char *const kv_pyramid_names[KV_N_PYRAMIDS] = {"adakv", "kvpress"};

int kv_name_index(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name)) return i;
    return -1;
}

int kv_adakv_preset(const char *name, kv_adakv_params *p) {
    if (!strcmp(name, "kvpress")) { /* SnapKVPress, AdaKVPress, PyramidKVPress defaults */
        p->scorer = KV_SCORER_SNAPKV, p->pool = KV_POOL_AVG_PADDED, p->kernel = 5, p->obs_window = 64;
        p->alpha = 0.2, p->safeguard = KV_SAFEGUARD_KVPRESS, p->gqa_order = KV_GQA_POOL_COMBINE;
        p->pyramid = KV_PYRAMID_KVPRESS;
    } else if (!strcmp(name, "adakv")) { /* AdaptiveSnapKVCluster's defaults */
        p->scorer = KV_SCORER_SNAPKV, p->pool = KV_POOL_MAX, p->kernel = 7, p->obs_window = 32;
        p->alpha = 0.2, p->safeguard = KV_SAFEGUARD_BLEND, p->gqa_order = KV_GQA_COMBINE_POOL;
        p->pyramid = KV_PYRAMID_ADAKV;
    } else
        return -1;
    return 0;
}

void kv_adakv_conventions(const kv_adakv_params *p, int pyramid, char *out, size_t size) {
    snprintf(out, size, "w%d %s%d %s %s a%g%s%s", p->obs_window, kv_pool_names[p->pool], p->kernel,
             kv_gqa_order_names[p->gqa_order], kv_safeguard_names[p->safeguard], p->alpha,
             pyramid ? " pyramid-" : "", pyramid ? kv_pyramid_names[p->pyramid] : "");
}

void kv_pool1d(const double *in, int P, kv_pool pool, int kernel, double *out) {
    if (pool == KV_POOL_NONE || kernel <= 1) {
        memcpy(out, in, (size_t)P * sizeof *out);
        return;
    }
    int half = kernel / 2;
    for (int j = 0; j < P; j++) {
        int lo = j - half < 0 ? 0 : j - half;
        int hi = j + half >= P ? P - 1 : j + half;
        double m = in[lo], s = 0;
        for (int q = lo; q <= hi; q++) {
            if (in[q] > m) m = in[q];
            s += in[q];
        }
        out[j] = pool == KV_POOL_MAX ? m : s / (pool == KV_POOL_AVG_PADDED ? kernel : hi - lo + 1);
    }
}

void kv_adakv_scores(const float *win, int Wp, const float *colsum, const float *key_norm, int N, int H, int KVH,
                     const kv_adakv_params *p, double *out, double *tmp) {
    int w = p->obs_window, Q = p->future_q;
    int Nc = N - Q, P = Nc - w;
    int G = H / KVH;
    int wrow0 = N - Wp; /* query position of window row 0 */
    if (P <= 0) return;
    double *s = tmp, *comb = tmp + N, *pooled = tmp + 2 * (size_t)N;
    if (p->scorer == KV_SCORER_KNORM) { /* per KV head: no group to combine, no pooling */
        for (int g = 0; g < KVH; g++)
            for (int j = 0; j < P; j++) out[(size_t)g * P + j] = -(double)key_norm[(size_t)g * N + j];
        return;
    }
    if (p->scorer == KV_SCORER_TOVA || p->scorer == KV_SCORER_STREAMING) { /* one row of scores for every KV head */
        for (int j = 0; j < P; j++) s[j] = 0;
        if (p->scorer == KV_SCORER_TOVA)
            for (int h = 0; h < H; h++) {
                const float *a = win + ((size_t)h * Wp + (Nc - 1 - wrow0)) * N;
                for (int j = 0; j < P; j++) s[j] += (double)a[j] / H;
            }
        else
            for (int j = 0; j < P; j++) s[j] = j < KV_STREAMING_SINKS ? 2.0 : (double)j / P;
        for (int g = 0; g < KVH; g++) memcpy(out + (size_t)g * P, s, (size_t)P * sizeof *s);
        return;
    }
    for (int g = 0; g < KVH; g++) {
        for (int j = 0; j < P; j++) comb[j] = p->gqa_max ? -INFINITY : 0.0;
        for (int h = g * G; h < (g + 1) * G; h++) {
            if (p->scorer == KV_SCORER_SNAPKV) {
                for (int j = 0; j < P; j++) s[j] = 0;
                for (int i = Nc - w; i < Nc; i++) {
                    const float *a = win + ((size_t)h * Wp + (i - wrow0)) * N;
                    for (int j = 0; j < P; j++) s[j] += a[j];
                }
                for (int j = 0; j < P; j++) s[j] /= w;
            } else {
                const float *cs = colsum + (size_t)h * N;
                for (int j = 0; j < P; j++) s[j] = cs[j];
                for (int i = Nc; i < N; i++) { /* leave the held-out rows out */
                    const float *a = win + ((size_t)h * Wp + (i - wrow0)) * N;
                    for (int j = 0; j < P; j++) s[j] -= a[j];
                }
                if (p->scorer == KV_SCORER_OBSERVED) /* the mean over the context rows that see j */
                    for (int j = 0; j < P; j++) s[j] /= Nc - j;
            }
            int pool_now = p->scorer == KV_SCORER_SNAPKV && p->gqa_order == KV_GQA_POOL_COMBINE;
            if (pool_now) { /* pool this query head before the group is combined */
                kv_pool1d(s, P, p->pool, p->kernel, pooled);
                memcpy(s, pooled, (size_t)P * sizeof *s);
            }
            for (int j = 0; j < P; j++) {
                if (p->gqa_max) comb[j] = s[j] > comb[j] ? s[j] : comb[j];
                else comb[j] += s[j] / G;
            }
        }
        double *o = out + (size_t)g * P;
        if (p->scorer == KV_SCORER_SNAPKV && p->gqa_order == KV_GQA_COMBINE_POOL) kv_pool1d(comb, P, p->pool, p->kernel, o);
        else memcpy(o, comb, (size_t)P * sizeof *o);
    }
}

typedef struct {
    double s;
    int h, j;
} shj;

static int cmp_shj(const void *a, const void *b) {
    const shj *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return x->j < y->j ? -1 : (x->j > y->j);
}

int kv_adakv_orders(const double *scores, int KVH, int P, int *head_order, int *all_order, kv_error *err) {
    size_t n = (size_t)KVH * P;
    shj *e = kv_malloc((n ? n : 1) * sizeof *e, err);
    if (!e) return -1;
    for (int g = 0; g < KVH; g++) {
        for (int j = 0; j < P; j++) e[j] = (shj){scores[(size_t)g * P + j], g, j};
        qsort(e, (size_t)P, sizeof *e, cmp_shj);
        for (int j = 0; j < P; j++) head_order[(size_t)g * P + j] = e[j].j;
    }
    for (size_t k = 0; k < n; k++) e[k] = (shj){scores[k], (int)(k / P), (int)(k % P)};
    qsort(e, n, sizeof *e, cmp_shj);
    for (size_t k = 0; k < n; k++) all_order[k] = e[k].h * P + e[k].j;
    free(e);
    return 0;
}

/* Prefix positions each head keeps before the global fill (protect, kvpress). */
static int protected_prefix(const kv_split *s, int b) {
    if (s->safeguard == KV_SAFEGUARD_KVPRESS) {
        /* kvpress: n_safe = int(n_kept * alpha), at least 1, over the scores
         * of all B = b + w positions; the window's come first */
        int n_safe = (int)floor((double)(b + s->window) * s->alpha);
        if (s->alpha > 0 && n_safe < 1) n_safe = 1;
        return n_safe > s->window ? n_safe - s->window : 0;
    }
    return (int)floor(s->alpha * b + 1e-12);
}

void kv_adakv_select(const kv_split *s, const int *head_order, const int *all_order, int KVH, int P, int b,
                     uint8_t *keep, int *counts) {
    memset(keep, 0, (size_t)KVH * P);
    int first, adaptive = s->alloc == KV_ALLOC_ADAPTIVE;
    long rest = 0;
    if (!adaptive) {
        first = b;
    } else if (s->safeguard == KV_SAFEGUARD_BLEND) {
        /* FFY0/AdaKV: the heads' shares of the global top KVH*b, blended with
         * the floor in float32 and rounded half to even, as torch does */
        long top = (long)KVH * (b < P ? b : P);
        for (int g = 0; g < KVH; g++) counts[g] = 0;
        for (long k = 0; k < top; k++) counts[all_order[k] / P]++;
        int floor_b = (int)((double)b * s->alpha);
        for (int g = 0; g < KVH; g++) {
            float cap = rintf((float)counts[g] * (float)(1.0 - s->alpha) + (float)floor_b);
            int c = b >= P ? P : (int)cap;
            counts[g] = c < 0 ? 0 : c > P ? P : c;
            for (int q = 0; q < counts[g]; q++) keep[(size_t)g * P + head_order[(size_t)g * P + q]] = 1;
        }
        return;
    } else {
        first = protected_prefix(s, b);
        rest = (long)KVH * b - (long)KVH * (first < b ? first : b);
    }
    if (first > P) first = P;
    if (first < 0) first = 0;
    for (int g = 0; g < KVH; g++) {
        for (int q = 0; q < first; q++) keep[(size_t)g * P + head_order[(size_t)g * P + q]] = 1;
        counts[g] = first;
    }
    size_t n = (size_t)KVH * P;
    for (size_t k = 0; adaptive && k < n && rest > 0; k++) {
        int idx = all_order[k];
        if (keep[idx]) continue;
        keep[idx] = 1;
        counts[idx / P]++;
        rest--;
    }
}

/* FFY0/AdaKV: integers throughout, on the prefix budget. */
static int pyramid_adakv(int b, int layer, int n_layers, int P) {
    const int beta = 20;
    if (b >= P || n_layers <= 1) return b;
    int min_num = b / beta;
    int max_num = 2 * b - min_num;
    if (max_num >= P) {
        max_num = P;
        min_num = 2 * b - max_num;
    }
    int steps = (max_num - min_num) / (n_layers - 1);
    return max_num - layer * steps;
}

/* kvpress 0.5.5 PyramidKVPress.get_layer_budget, with q_len = P + w and
 * q_len·(1 − compression_ratio) = B = b + w: doubles, Python's round (half to
 * even: rint in the default rounding mode); the result counts the window. */
static int pyramid_kvpress(int b, int w, int layer, int n_layers, int P) {
    const double beta = 20;
    double q_len = (double)P + w, x = (double)b + w; /* x = max_capacity_prompt - window_size */
    double min_num = x / beta, max_num = 2 * x - min_num;
    if (max_num >= q_len - w) {
        max_num = q_len - w;
        min_num = 2 * x - max_num;
    }
    if (!(q_len >= max_num && max_num >= min_num && min_num >= w)) /* kvpress falls back to the flat budget */
        return (x > 1 ? (int)rint(x) : 1) - w;
    double steps = n_layers > 1 ? (max_num - min_num) / (n_layers - 1) : 0.0;
    return (int)rint(max_num - layer * steps) - w;
}

int kv_pyramid_prefix_budget(kv_pyramid_schedule s, int b, int w, int layer, int n_layers, int P) {
    return s == KV_PYRAMID_KVPRESS ? pyramid_kvpress(b, w, layer, n_layers, P) : pyramid_adakv(b, layer, n_layers, P);
}
