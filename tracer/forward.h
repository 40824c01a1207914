/* One readable forward pass over a prompt, with hooks that receive what the
 * trace captures from each layer. */
#ifndef KV_FORWARD_H
#define KV_FORWARD_H

#include "tracer/model.h"

typedef struct {
    void *ctx;
    int window;                                   /* W: attention rows kept from the end */
    int (*want_layer)(void *ctx, int layer);      /* capture this layer? */
    kv_map_sink *(*map_sink)(void *ctx, int layer); /* full maps of this layer, or NULL */
    /* Host pointers, valid during the call: colsum [H, N], window [H, W', N],
     * v [N, KVH·hd] (value vectors after v_proj, bias included). */
    int (*layer_done)(void *ctx, int layer, const float *colsum, const float *window, const float *v, kv_error *err);
    void (*progress)(void *ctx, int layer);       /* optional: called as each layer finishes */
} kv_capture_hooks;

/* Runs tokens[0..n) through the model; logits (host, [V], optional) get the
 * last position's logits. hooks may be NULL. */
int kv_forward(kv_model *m, const int32_t *tokens, int n, const kv_capture_hooks *hooks, float *logits,
               kv_error *err);

/* Bytes of activations kv_forward allocates for n tokens (for memory checks). */
size_t kv_forward_bytes(const kv_config *c, int n, int window);

#endif
