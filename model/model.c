#include "model/model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"

/* Looks up a tensor and checks its dtype and shape (2-D when cols > 0, else 1-D). */
static const kv_tensor *need(const kv_model *m, const char *name, int rows, int cols, kv_error *err) {
    const kv_tensor *t = kv_checkpoint_find(&m->ckpt, name);
    if (!t) {
        kv_fail(err, "%s: missing tensor '%s'", m->dir, name);
        return NULL;
    }
    if (t->dtype != KV_F32 && t->dtype != KV_F16 && t->dtype != KV_BF16) {
        kv_fail(err, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                m->ckpt.shard_paths[t->shard], name, kv_dtype_name(t->dtype));
        return NULL;
    }
    int ok = cols > 0 ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                      : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[128] = "", *p = got;
        for (int i = 0; i < t->ndim && p < got + 100; i++)
            p += snprintf(p, got + sizeof got - p, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (cols > 0)
            kv_fail(err, "%s: tensor '%s' has shape [%s], expected [%d, %d]", m->ckpt.shard_paths[t->shard], name, got,
                    rows, cols);
        else
            kv_fail(err, "%s: tensor '%s' has shape [%s], expected [%d]", m->ckpt.shard_paths[t->shard], name, got,
                    rows);
        return NULL;
    }
    return t;
}

/* float32 weights on a host-memory backend are read in place from the mapped checkpoint (it stays open
 * as long as the model): no copy, and no second 4 bytes per parameter of memory */
static int load_matrix(kv_model *m, kv_weight *w, const char *name, int rows, int cols, kv_error *err) {
    const kv_tensor *t = need(m, name, rows, cols, err);
    if (!t) return -1;
    if (m->k->host_memory && t->dtype == KV_F32 && (uintptr_t)t->data % sizeof(float) == 0) {
        *w = (kv_weight){.data = (void *)t->data, .dtype = KV_F32, .rows = rows, .cols = cols, .borrowed = 1};
        return 0;
    }
    return m->k->upload_weight(m->k, w, t->data, t->dtype, rows, cols, err);
}

static void free_weight(kv_kernels *k, kv_weight *w) {
    if (w->data && !w->borrowed) k->free(k, w->data);
    w->data = NULL;
}

/* 1-D tensors (norms, biases) become float32 device vectors. */
static int load_vector(kv_model *m, float **dst, const char *name, int n, kv_error *err) {
    const kv_tensor *t = need(m, name, n, 0, err);
    if (!t) return -1;
    float *host = kv_malloc((size_t)n * sizeof(float), err);
    if (!host) return -1;
    kv_to_f32(host, t->data, t->dtype, n);
    *dst = m->k->alloc(m->k, (size_t)n * sizeof(float), err);
    int rc = *dst ? m->k->upload(m->k, *dst, host, (size_t)n * sizeof(float), err) : -1;
    free(host);
    return rc;
}

int kv_model_build(kv_model *m, const char *dir, kv_kernels *k, kv_error *err) {
    memset(m, 0, sizeof *m);
    m->k = k;
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    char *cfg_path = kv_path_join(dir, "config.json", err);
    if (!cfg_path) return -1;
    int rc = kv_config_load(&m->cfg, cfg_path, err);
    free(cfg_path);
    if (rc) return -1;
    if (kv_checkpoint_open(&m->ckpt, dir, err)) {
        kv_config_free(&m->cfg);
        return -1;
    }
    const kv_config *c = &m->cfg;
    int D = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    int QD = c->n_heads * hd, KVD = c->n_kv_heads * hd;
    m->layers = kv_calloc(c->n_layers, sizeof *m->layers, err);
    if (!m->layers) goto fail;
    if (load_matrix(m, &m->embed, "model.embed_tokens.weight", c->vocab_size, D, err)) goto fail;
    if (load_vector(m, &m->final_norm, "model.norm.weight", D, err)) goto fail;
    /* tied models use the embedding even when the file also stores lm_head (as transformers does) */
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
        m->lm_head_tied = 1;
    } else if (load_matrix(m, &m->lm_head, "lm_head.weight", c->vocab_size, D, err)) {
        goto fail;
    }
    char name[256];
    for (int l = 0; l < c->n_layers; l++) {
        kv_layer *L = &m->layers[l];
#define P(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
        if (load_vector(m, &L->attn_norm, P("input_layernorm.weight"), D, err) ||
            load_vector(m, &L->mlp_norm, P("post_attention_layernorm.weight"), D, err) ||
            load_matrix(m, &L->wq, P("self_attn.q_proj.weight"), QD, D, err) ||
            load_matrix(m, &L->wk, P("self_attn.k_proj.weight"), KVD, D, err) ||
            load_matrix(m, &L->wv, P("self_attn.v_proj.weight"), KVD, D, err) ||
            load_matrix(m, &L->wo, P("self_attn.o_proj.weight"), D, QD, err) ||
            load_matrix(m, &L->w_gate, P("mlp.gate_proj.weight"), I, D, err) ||
            load_matrix(m, &L->w_up, P("mlp.up_proj.weight"), I, D, err) ||
            load_matrix(m, &L->w_down, P("mlp.down_proj.weight"), D, I, err))
            goto fail;
        if (c->qkv_bias && (load_vector(m, &L->bq, P("self_attn.q_proj.bias"), QD, err) ||
                            load_vector(m, &L->bk, P("self_attn.k_proj.bias"), KVD, err) ||
                            load_vector(m, &L->bv, P("self_attn.v_proj.bias"), KVD, err)))
            goto fail;
        if (c->o_bias && load_vector(m, &L->bo, P("self_attn.o_proj.bias"), D, err)) goto fail;
        if (c->mlp_bias && (load_vector(m, &L->b_gate, P("mlp.gate_proj.bias"), I, err) ||
                            load_vector(m, &L->b_up, P("mlp.up_proj.bias"), I, err) ||
                            load_vector(m, &L->b_down, P("mlp.down_proj.bias"), D, err)))
            goto fail;
        if (c->qk_norm && (load_vector(m, &L->q_norm, P("self_attn.q_norm.weight"), hd, err) ||
                           load_vector(m, &L->k_norm, P("self_attn.k_norm.weight"), hd, err)))
            goto fail;
#undef P
    }
    return 0;
fail:
    kv_model_free(m);
    return -1;
}

void kv_model_free(kv_model *m) {
    kv_kernels *k = m->k;
    if (k && m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            kv_layer *L = &m->layers[l];
            kv_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) free_weight(k, ws[i]);
            void *bufs[] = {L->attn_norm, L->mlp_norm, L->bq, L->bk, L->bv, L->bo, L->q_norm, L->k_norm,
                            L->b_gate, L->b_up, L->b_down};
            for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
                if (bufs[i]) k->free(k, bufs[i]);
        }
    }
    if (k) {
        if (!m->lm_head_tied) free_weight(k, &m->lm_head);
        free_weight(k, &m->embed);
        if (m->final_norm) k->free(k, m->final_norm);
    }
    free(m->layers);
    kv_checkpoint_close(&m->ckpt);
    kv_config_free(&m->cfg);
    memset(m, 0, sizeof *m);
}

int kv_model_read_wo(const kv_model *m, int layer, float *dst, kv_error *err) {
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.self_attn.o_proj.weight", layer);
    const kv_tensor *t = need(m, name, m->cfg.hidden_size, m->cfg.n_heads * m->cfg.head_dim, err);
    if (!t) return -1;
    kv_to_f32(dst, t->data, t->dtype, (size_t)t->numel);
    return 0;
}
