#include "model/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Activations of one prompt, on the backend. */
typedef struct {
    float *x;        /* [N, D] residual stream */
    float *xn;       /* [N, D] normalised input of a block */
    float *q;        /* [N, H·hd] */
    float *kk;       /* [N, KVH·hd] */
    float *v;        /* [N, KVH·hd] */
    float *att;      /* [N, H·hd] attention output before o_proj */
    float *proj;     /* [N, D] block output */
    float *gate;     /* [N, I] */
    float *up;       /* [N, I] */
    float *cos, *sin;/* [N, hd/2] RoPE tables */
    float *colsum;   /* [H, N] */
    float *window;   /* [H, W', N] */
    float *nearsum;  /* [n_near, H, N], or NULL */
    float *logits;   /* [R, V] logits of the last R positions */
    uint8_t *allow;  /* [KVH, Nc] keep mask of the current layer, or NULL */
} run_state;

typedef struct {
    float *colsum;   /* [H, N] */
    float *window;   /* [H, W', N] */
    float *nearsum;  /* [n_near, H, N], or NULL */
    float *v;        /* [N, KVH·hd] */
    float *k;        /* [N, KVH·hd] */
} host_capture;

size_t kv_forward_bytes(const kv_config *c, int n, int window, int n_near) {
    size_t N = (size_t)n, W = (size_t)(window < n ? window : n) + (size_t)n_near;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t floats = N * c->hidden_size * 3 + N * qd * 2 + N * kvd * 2 + N * c->intermediate_size * 2 +
                    N * c->head_dim + (size_t)c->n_heads * N * (1 + W) + c->vocab_size;
    return 2 * floats * sizeof(float); /* device buffers plus host staging */
}

static void free_state(kv_kernels *k, run_state *s) {
    void *bufs[] = {s->x,    s->xn,  s->q,   s->kk,  s->v,      s->att,    s->proj,   s->gate,
                    s->up,   s->cos, s->sin, s->colsum, s->window, s->nearsum, s->logits, s->allow};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) k->free(k, bufs[i]);
    memset(s, 0, sizeof *s);
}

static int build_state(kv_kernels *k, run_state *s, const kv_config *c, int n, int wrows, int n_near, int logit_rows,
                       int n_ctx, kv_error *err) {
    memset(s, 0, sizeof *s);
    size_t N = n, D = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    size_t qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    struct { float **p; size_t n; } want[] = {
        {&s->x, N * D},   {&s->xn, N * D},  {&s->q, N * qd},    {&s->kk, N * kvd},
        {&s->v, N * kvd}, {&s->att, N * qd}, {&s->proj, N * D},   {&s->gate, N * I},
        {&s->up, N * I},  {&s->cos, N * hd / 2}, {&s->sin, N * hd / 2},
        {&s->colsum, c->n_heads * N}, {&s->window, c->n_heads * (size_t)wrows * N},
        {&s->logits, (size_t)c->vocab_size * (logit_rows > 1 ? logit_rows : 1)},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!(*want[i].p = k->alloc(k, want[i].n * sizeof(float), err))) {
            free_state(k, s);
            return -1;
        }
    if (n_near > 0 && !(s->nearsum = k->alloc(k, (size_t)n_near * c->n_heads * N * sizeof(float), err))) {
        free_state(k, s);
        return -1;
    }
    if (n_ctx > 0 && !(s->allow = k->alloc(k, (size_t)c->n_kv_heads * n_ctx, err))) {
        free_state(k, s);
        return -1;
    }
    return 0;
}

/* cos/sin [n, hd/2] at positions 0..n-1 (model/rope.c). */
static int upload_rope_tables(kv_kernels *k, run_state *s, const kv_model *m, int n, kv_error *err) {
    size_t bytes = (size_t)n * (m->cfg.head_dim / 2) * sizeof(float);
    float *cs = kv_malloc(bytes, err), *sn = kv_malloc(bytes, err);
    int rc = cs && sn && !kv_rope_tables(&m->cfg, n, m->rope_precision, cs, sn, err) &&
                     !k->upload(k, s->cos, cs, bytes, err) && !k->upload(k, s->sin, sn, bytes, err)
                 ? 0
                 : -1;
    free(cs);
    free(sn);
    return rc;
}

/* NaN or Inf anywhere in x [rows, width] stops the pass, naming where. */
static int check_finite(kv_kernels *k, const float *x, int rows, int width, const char *what, kv_error *err) {
    long long at;
    if (k->first_nonfinite(k, x, (size_t)rows * width, &at, err)) return -1;
    if (at < 0) return 0;
    float v;
    if (k->download(k, &v, x + at, sizeof v, err)) return -1;
    return kv_fail(err, "non-finite value (%s) in %s at position %lld, element %lld", isnan(v) ? "NaN" : "Inf",
                   what, at / width, at % width);
}

static int attention_block(kv_model *m, run_state *s, const kv_layer *L, int l, int n, const kv_capture_hooks *hooks,
                           const kv_forward_masks *masks, host_capture *hc, kv_error *err) {
    kv_kernels *k = m->k;
    const kv_config *c = &m->cfg;
    int H = c->n_heads, KVH = c->n_kv_heads, hd = c->head_dim, D = c->hidden_size;
    if (k->rmsnorm(k, s->xn, s->x, L->attn_norm, n, D, c->rms_norm_eps, err) ||
        k->matmul(k, s->q, s->xn, &L->wq, L->bq, n, err) || k->matmul(k, s->kk, s->xn, &L->wk, L->bk, n, err) ||
        k->matmul(k, s->v, s->xn, &L->wv, L->bv, n, err))
        return -1;
    if (c->qk_norm && (k->rmsnorm(k, s->q, s->q, L->q_norm, n * H, hd, c->rms_norm_eps, err) ||
                       k->rmsnorm(k, s->kk, s->kk, L->k_norm, n * KVH, hd, c->rms_norm_eps, err)))
        return -1;
    if (k->rope(k, s->q, n, H, hd, s->cos, s->sin, err) || k->rope(k, s->kk, n, KVH, hd, s->cos, s->sin, err))
        return -1;
    if (check_finite(k, s->q, n, H * hd, "the queries", err) || check_finite(k, s->kk, n, KVH * hd, "the keys", err) ||
        check_finite(k, s->v, n, KVH * hd, "the values", err))
        return -1;
    int capture = hooks && hooks->want_layer && hooks->want_layer(hooks->ctx, l);
    int wrows = hooks && hooks->window < n ? hooks->window : n;
    int n_near = hooks ? hooks->n_near : 0;
    kv_attn_capture cap = {.colsum = s->colsum, .window = s->window, .window_rows = wrows,
                           .maps = hooks && hooks->map_sink ? hooks->map_sink(hooks->ctx, l) : NULL,
                           .nearsum = s->nearsum, .near_w = hooks ? hooks->near_w : NULL, .n_near = n_near};
    kv_attn_mask mask = {.allow = s->allow, .n_ctx = masks ? masks->n_ctx : 0};
    int masked = masks && masks->allow[l];
    if (masked && k->upload(k, s->allow, masks->allow[l], (size_t)KVH * masks->n_ctx, err)) return -1;
    if (k->attention(k, s->att, s->q, s->kk, s->v, n, H, KVH, hd, c->layer_window[l], masked ? &mask : NULL,
                     capture ? &cap : NULL, err))
        return -1;
    if (capture) {
        if (k->download(k, hc->colsum, s->colsum, (size_t)H * n * sizeof(float), err) ||
            k->download(k, hc->window, s->window, (size_t)H * wrows * n * sizeof(float), err) ||
            (n_near && k->download(k, hc->nearsum, s->nearsum, (size_t)n_near * H * n * sizeof(float), err)) ||
            k->download(k, hc->v, s->v, (size_t)n * KVH * hd * sizeof(float), err) ||
            (hc->k && k->download(k, hc->k, s->kk, (size_t)n * KVH * hd * sizeof(float), err)) ||
            hooks->layer_done(hooks->ctx, l, &(kv_layer_capture){hc->colsum, hc->window, hc->nearsum, hc->v, hc->k},
                              err))
            return -1;
    }
    if (check_finite(k, s->att, n, H * hd, "the attention output", err) ||
        k->matmul(k, s->proj, s->att, &L->wo, L->bo, n, err))
        return -1;
    return k->add(k, s->x, s->proj, (size_t)n * D, err);
}

static int mlp_block(kv_model *m, run_state *s, const kv_layer *L, int n, kv_error *err) {
    kv_kernels *k = m->k;
    const kv_config *c = &m->cfg;
    return k->rmsnorm(k, s->xn, s->x, L->mlp_norm, n, c->hidden_size, c->rms_norm_eps, err) ||
                   k->matmul(k, s->gate, s->xn, &L->w_gate, L->b_gate, n, err) ||
                   k->matmul(k, s->up, s->xn, &L->w_up, L->b_up, n, err) ||
                   k->swiglu(k, s->gate, s->up, (size_t)n * c->intermediate_size, err) ||
                   k->matmul(k, s->proj, s->gate, &L->w_down, L->b_down, n, err) ||
                   k->add(k, s->x, s->proj, (size_t)n * c->hidden_size, err)
               ? -1
               : 0;
}

int kv_forward(kv_model *m, const int32_t *tokens, int n, const kv_capture_hooks *hooks, float *logits,
               kv_error *err) {
    return kv_forward_ex(m, tokens, n, hooks, NULL, 1, logits, err);
}

int kv_forward_ex(kv_model *m, const int32_t *tokens, int n, const kv_capture_hooks *hooks,
                  const kv_forward_masks *masks, int logit_rows, float *logits, kv_error *err) {
    kv_kernels *k = m->k;
    const kv_config *c = &m->cfg;
    if (n <= 0) return kv_fail(err, "empty prompt");
    if (logits && (logit_rows < 1 || logit_rows > n))
        return kv_fail(err, "logits of the last %d positions asked of a %d-token prompt", logit_rows, n);
    if (masks && (masks->n_ctx < 1 || masks->n_ctx > n))
        return kv_fail(err, "masked pass: context length %d is outside 1..%d", masks->n_ctx, n);
    int wrows = hooks && hooks->window < n ? hooks->window : n;
    if (wrows < 1) wrows = 1;
    int R = logits ? logit_rows : 1, n_near = hooks ? hooks->n_near : 0;
    for (int q = 0; q < n_near; q++)
        if (hooks->near_w[q] < 0) return kv_fail(err, "local window of %d positions", hooks->near_w[q]);
    run_state s;
    if (build_state(k, &s, c, n, wrows, n_near, R, masks ? masks->n_ctx : 0, err)) return -1;
    host_capture hc = {0};
    int rc = -1;
    if (hooks) {
        hc.colsum = kv_malloc((size_t)c->n_heads * n * sizeof(float), err);
        hc.window = kv_malloc((size_t)c->n_heads * wrows * n * sizeof(float), err);
        hc.v = kv_malloc((size_t)n * c->n_kv_heads * c->head_dim * sizeof(float), err);
        if (hooks->want_keys) hc.k = kv_malloc((size_t)n * c->n_kv_heads * c->head_dim * sizeof(float), err);
        if (n_near) hc.nearsum = kv_malloc((size_t)n_near * c->n_heads * n * sizeof(float), err);
        if (!hc.colsum || !hc.window || !hc.v || (hooks->want_keys && !hc.k) || (n_near && !hc.nearsum)) goto done;
    }
    if (upload_rope_tables(k, &s, m, n, err) || k->embed(k, s.x, &m->embed, tokens, n, err)) goto done;
    for (int l = 0; l < c->n_layers; l++) {
        const kv_layer *L = &m->layers[l];
        if (attention_block(m, &s, L, l, n, hooks, masks, &hc, err) || mlp_block(m, &s, L, n, err) ||
            check_finite(k, s.x, n, c->hidden_size, "the residual stream", err)) {
            kv_wrap(err, "layer %d", l);
            goto done;
        }
        if (hooks && hooks->progress) hooks->progress(hooks->ctx, l);
    }
    if (logits) {
        float *last = s.x + (size_t)(n - R) * c->hidden_size;
        if (k->rmsnorm(k, s.xn, last, m->final_norm, R, c->hidden_size, c->rms_norm_eps, err) ||
            k->matmul(k, s.logits, s.xn, &m->lm_head, NULL, R, err) ||
            check_finite(k, s.logits, R, c->vocab_size, R == 1 ? "the last position's logits" : "the logits", err) ||
            k->download(k, logits, s.logits, (size_t)R * c->vocab_size * sizeof(float), err))
            goto done;
    }
    rc = 0;
done:
    free(hc.colsum);
    free(hc.window);
    free(hc.nearsum);
    free(hc.v);
    free(hc.k);
    free_state(k, &s);
    return rc;
}
