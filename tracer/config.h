/* config.json of a Hugging Face causal LM, reduced to what the forward pass
 * needs. Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
 * Qwen3ForCausalLM. */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include "common/error.h"

typedef enum { KV_ARCH_LLAMA, KV_ARCH_MISTRAL, KV_ARCH_QWEN2, KV_ARCH_QWEN3 } kv_arch;

typedef struct {
    kv_arch arch;
    char architecture[64];      /* as named in config.json */
    int hidden_size;            /* D */
    int intermediate_size;      /* I */
    int n_layers;
    int n_heads;                /* H */
    int n_kv_heads;             /* KVH, divides H */
    int head_dim;               /* hd */
    int vocab_size;             /* V */
    int max_position_embeddings;
    float rms_norm_eps;
    double rope_theta;
    int rope_llama3;            /* rope_scaling of type llama3 */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    int tie_word_embeddings;
    int qkv_bias;               /* q/k/v projections have biases (Qwen2, attention_bias) */
    int o_bias;                 /* o_proj has a bias (attention_bias on Llama/Mistral) */
    int qk_norm;                /* per-head RMSNorm of q and k before RoPE (Qwen3) */
    int sliding_window;         /* 0: none; else query i sees key j when 0 <= i - j < sliding_window */
    int bos_id, eos_id, pad_id; /* -1 when absent (eos: first when a list) */
    char *json;                 /* config.json verbatim */
} kv_config;

int kv_config_load(kv_config *cfg, const char *path, kv_error *err);
void kv_config_free(kv_config *cfg);

/* inv_freq[hd/2] for RoPE, llama3 scaling applied. */
void kv_rope_inv_freq(const kv_config *cfg, double *inv_freq);

#endif
