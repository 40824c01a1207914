/* config.json of a Hugging Face causal LM, read with the semantics of
 * transformers 4.57.6 for LlamaForCausalLM, MistralForCausalLM,
 * Qwen2ForCausalLM and Qwen3ForCausalLM: each class's own defaults, the keys
 * each class reads and those it ignores. A key that would change the forward
 * pass in a way kvtrace does not compute is refused by name. Every key read:
 * docs/config.md. */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <stdint.h>

#include "common/error.h"

typedef enum { KV_ARCH_LLAMA, KV_ARCH_MISTRAL, KV_ARCH_QWEN2, KV_ARCH_QWEN3 } kv_arch;

typedef enum { KV_ROPE_DEFAULT, KV_ROPE_LINEAR, KV_ROPE_DYNAMIC, KV_ROPE_YARN, KV_ROPE_LLAMA3 } kv_rope_type;

/* rope_theta with rope_scaling (or transformers 5's rope_parameters). */
typedef struct {
    kv_rope_type type;
    double theta;
    double factor;                   /* linear, dynamic, yarn, llama3 */
    double low_freq_factor;          /* llama3 */
    double high_freq_factor;         /* llama3 */
    int original_max_pos;            /* llama3; yarn (its fallback, max_position_embeddings, filled in) */
    double attention_factor;         /* yarn: scale of cos and sin (resolved from mscale when not given) */
    double beta_fast, beta_slow;     /* yarn */
    int truncate;                    /* yarn: round the correction range outwards */
} kv_rope;

#define KV_MAX_SPECIAL_IDS 16

typedef struct {
    kv_arch arch;
    char architecture[64];      /* as named in config.json */
    int hidden_size;            /* D */
    int intermediate_size;      /* I */
    int n_layers;               /* L */
    int n_heads;                /* H */
    int n_kv_heads;             /* KVH, divides H */
    int head_dim;               /* hd */
    int vocab_size;             /* V */
    int max_position_embeddings;
    float rms_norm_eps;
    kv_rope rope;
    int tie_word_embeddings;
    int qkv_bias;               /* q/k/v projections have biases */
    int o_bias;                 /* o_proj has a bias */
    int mlp_bias;               /* gate/up/down projections have biases (Llama's mlp_bias) */
    int qk_norm;                /* per-head RMSNorm of q and k before RoPE (Qwen3) */
    int *layer_window;          /* [L] 0: full causal attention; else query i sees key j when 0 <= i - j < it */
    int32_t special_ids[KV_MAX_SPECIAL_IDS]; /* bos, eos and pad ids (each may be a list), without repeats */
    int n_special_ids;
    char *json;                 /* config.json verbatim */
} kv_config;

int kv_config_load(kv_config *cfg, const char *path, kv_error *err);
void kv_config_free(kv_config *cfg);
/* Only the bos/eos/pad token ids of a config.json (numbers or lists, without
 * repeats), as kv_config_load reads them, for tools that need no model
 * (kvtrace tokenize). */
int kv_config_special_ids(const char *path, int32_t ids[KV_MAX_SPECIAL_IDS], int *n, kv_error *err);

/* How RoPE's cos/sin tables are computed: as transformers does (float32
 * inverse frequencies and float32 angles, so its rounding, which grows with
 * the position, is reproduced), or in double (angles exact to float32
 * rounding of the final cos/sin). Measured difference: docs/config.md. */
typedef enum { KV_ROPE_F32, KV_ROPE_F64 } kv_rope_precision;

/* "f32" / "f64" <-> kv_rope_precision; parse returns -1 on anything else. */
int kv_rope_precision_parse(const char *name, kv_rope_precision *out);
const char *kv_rope_precision_name(kv_rope_precision p);

/* inv_freq [hd/2] of an n-token pass (dynamic scaling depends on n) and the
 * factor cos and sin are scaled by (yarn's attention factor, else 1). */
void kv_rope_inv_freq(const kv_config *cfg, int n, kv_rope_precision prec, double *inv_freq, double *scale);

/* cos, sin [n, hd/2] for positions 0..n-1 of an n-token pass. */
int kv_rope_tables(const kv_config *cfg, int n, kv_rope_precision prec, float *cos, float *sin, kv_error *err);

#endif
