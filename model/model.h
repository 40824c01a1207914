/* A loaded model: config, weights uploaded to a kernels backend, and the
 * checkpoint they came from (kept open: the trace copies o_proj from it). */
#ifndef KV_MODEL_H
#define KV_MODEL_H

#include "kernels/kernels.h"
#include "model/config.h"
#include "model/safetensors.h"

typedef struct {
    float *attn_norm;         /* [D] input_layernorm */
    kv_weight wq;             /* [H·hd, D] */
    kv_weight wk;             /* [KVH·hd, D] */
    kv_weight wv;             /* [KVH·hd, D] */
    kv_weight wo;             /* [D, H·hd] */
    float *bq, *bk, *bv;      /* [H·hd], [KVH·hd], [KVH·hd] or NULL */
    float *bo;                /* [D] or NULL */
    float *q_norm, *k_norm;   /* [hd] (Qwen3) or NULL */
    float *mlp_norm;          /* [D] post_attention_layernorm */
    kv_weight w_gate;         /* [I, D] */
    kv_weight w_up;           /* [I, D] */
    kv_weight w_down;         /* [D, I] */
    float *b_gate, *b_up;     /* [I] (mlp_bias) or NULL */
    float *b_down;            /* [D] (mlp_bias) or NULL */
} kv_layer;

typedef struct {
    char dir[1024];           /* checkpoint directory, for messages */
    kv_config cfg;
    kv_checkpoint ckpt;
    kv_kernels *k;            /* not owned */
    kv_weight embed;          /* [V, D] */
    kv_layer *layers;         /* [n_layers] */
    float *final_norm;        /* [D] */
    kv_weight lm_head;        /* [V, D]; shares embed's data when tied */
    int lm_head_tied;
    kv_rope_precision rope_precision; /* KV_ROPE_F32 (as transformers) unless the caller sets it */
} kv_model;

/* Loads dir/config.json and the safetensors weights, checks every tensor's
 * presence, dtype and shape, and uploads to k. */
int kv_model_build(kv_model *m, const char *dir, kv_kernels *k, kv_error *err);
void kv_model_free(kv_model *m);

/* o_proj weight of layer l as float32 [D, H·hd], read from the checkpoint. */
int kv_model_read_wo(const kv_model *m, int layer, float *dst, kv_error *err);

#endif
