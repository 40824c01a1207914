/* One readable forward pass over a prompt, with hooks that receive what the
 * trace captures from each layer. */
#ifndef KV_FORWARD_H
#define KV_FORWARD_H

#include "model/model.h"

/* What one layer hands to the trace: host pointers, valid during layer_done. */
typedef struct {
    const float *colsum;  /* [H, N] */
    const float *window;  /* [H, W', N] */
    const float *nearsum; /* [n_near, H, N] (NULL when n_near is 0; kernels/kernels.h) */
    const float *v;       /* [N, KVH·hd] value vectors after v_proj, bias included */
    const float *k;       /* [N, KVH·hd] key vectors as a KV cache holds them: after k_proj, k_norm and RoPE;
                           * NULL unless the hooks ask for them (want_keys) */
} kv_layer_capture;

typedef struct {
    void *ctx;
    int window;                                   /* W: attention rows kept from the end */
    int n_near;                                   /* FastGen local windows to accumulate (0: none) */
    int want_keys;                                /* hand layer_done the keys (kv_layer_capture.k) */
    const int *near_w;                            /* [n_near] their lengths in positions, each >= 0 */
    int (*want_layer)(void *ctx, int layer);      /* capture this layer? */
    kv_map_sink *(*map_sink)(void *ctx, int layer); /* full maps of this layer, or NULL */
    int (*layer_done)(void *ctx, int layer, const kv_layer_capture *cap, kv_error *err);
    void (*progress)(void *ctx, int layer);       /* optional: called as each layer finishes */
} kv_capture_hooks;

/* Runs tokens[0..n) through the model; logits (host, [V], optional) get the
 * last position's logits. hooks may be NULL. */
int kv_forward(kv_model *m, const int32_t *tokens, int n, const kv_capture_hooks *hooks, float *logits,
               kv_error *err);

/* A compressed pass (docs/fidelity.md): per layer, which of the n_ctx
 * context positions each KV head keeps for the rows after the context. */
typedef struct {
    int n_ctx;                   /* Nc: rows i >= n_ctx are masked */
    const uint8_t *const *allow; /* [n_layers] host [KVH, n_ctx] keep masks (1 keep); NULL entry: layer not compressed */
} kv_forward_masks;

/* kv_forward with optional masks (NULL: the plain pass, the same code) and
 * the logits of the last logit_rows positions: logits (host, optional)
 * [logit_rows, V], row r is position n - logit_rows + r. */
int kv_forward_ex(kv_model *m, const int32_t *tokens, int n, const kv_capture_hooks *hooks,
                  const kv_forward_masks *masks, int logit_rows, float *logits, kv_error *err);


/* Bytes of activations kv_forward allocates for n tokens (for memory checks). */
size_t kv_forward_bytes(const kv_config *c, int n, int window, int n_near);

#endif
