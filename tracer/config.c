#include "tracer/config.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"

/* Reads an integer key; missing -> dflt (or an error when dflt < -1 i.e. required). */
static int get_int(const cJSON *o, const char *key, int dflt, int *out, const char *path, kv_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (dflt == -2) return kv_fail(err, "%s: missing required key \"%s\"", path, key);
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2e9)
        return kv_fail(err, "%s: \"%s\" must be an integer", path, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_num(const cJSON *o, const char *key, double dflt, double *out, const char *path, kv_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(v)) return kv_fail(err, "%s: \"%s\" must be a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, int dflt, int *out, const char *path, kv_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(v)) return kv_fail(err, "%s: \"%s\" must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_token_id(const cJSON *o, const char *key, int *out, const char *path, kv_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = -1;
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0); /* eos_token_id may be a list */
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2147483647.0 ||
        v->valuedouble != floor(v->valuedouble))
        return kv_fail(err, "%s: \"%s\" must be a token id", path, key);
    *out = (int)v->valuedouble;
    return 0;
}

/* rope_scaling (or the newer rope_parameters): only "default" and "llama3" are supported. */
static int parse_rope(kv_config *c, const cJSON *root, const char *path, kv_error *err) {
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *r = cJSON_IsObject(rp) ? rp : rs;
    if (get_num(root, "rope_theta", 10000.0, &c->rope_theta, path, err)) return -1;
    if (!r || cJSON_IsNull(r)) return 0;
    if (!cJSON_IsObject(r)) return kv_fail(err, "%s: \"rope_scaling\" must be an object", path);
    if (r == rp && get_num(rp, "rope_theta", c->rope_theta, &c->rope_theta, path, err)) return -1;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "rope_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(r, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "default";
    if (!strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3"))
        return kv_fail(err, "%s: rope scaling type \"%s\" is not supported (supported: default, llama3)", path, type);
    c->rope_llama3 = 1;
    if (get_num(r, "factor", 8.0, &c->rope_factor, path, err) ||
        get_num(r, "low_freq_factor", 1.0, &c->rope_low_freq_factor, path, err) ||
        get_num(r, "high_freq_factor", 4.0, &c->rope_high_freq_factor, path, err) ||
        get_int(r, "original_max_position_embeddings", 8192, &c->rope_original_max_pos, path, err))
        return -1;
    if (c->rope_factor <= 0 || c->rope_low_freq_factor <= 0 || c->rope_high_freq_factor <= c->rope_low_freq_factor ||
        c->rope_original_max_pos <= 0)
        return kv_fail(err, "%s: invalid llama3 rope_scaling parameters", path);
    return 0;
}

int kv_config_load(kv_config *c, const char *path, kv_error *err) {
    memset(c, 0, sizeof *c);
    c->json = kv_read_file(path, 16u << 20, NULL, err);
    if (!c->json) return -1;
    cJSON *root = cJSON_Parse(c->json);
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        kv_fail(err, "%s: not a JSON object", path);
        goto done;
    }
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(a0)) {
        kv_fail(err, "%s: no \"architectures\" list naming the model class", path);
        goto done;
    }
    snprintf(c->architecture, sizeof c->architecture, "%s", a0->valuestring);
    if (!strcmp(a0->valuestring, "LlamaForCausalLM")) c->arch = KV_ARCH_LLAMA;
    else if (!strcmp(a0->valuestring, "MistralForCausalLM")) c->arch = KV_ARCH_MISTRAL;
    else if (!strcmp(a0->valuestring, "Qwen2ForCausalLM")) c->arch = KV_ARCH_QWEN2;
    else if (!strcmp(a0->valuestring, "Qwen3ForCausalLM")) c->arch = KV_ARCH_QWEN3;
    else {
        kv_fail(err, "%s: architecture \"%s\"%s%s%s is not supported (supported: LlamaForCausalLM, "
                     "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
                path, a0->valuestring, cJSON_IsString(mt) ? " (model_type \"" : "",
                cJSON_IsString(mt) ? mt->valuestring : "", cJSON_IsString(mt) ? "\")" : "");
        goto done;
    }
    double eps;
    int use_sw = 1, attention_bias = 0;
    if (get_int(root, "hidden_size", -2, &c->hidden_size, path, err) ||
        get_int(root, "intermediate_size", -2, &c->intermediate_size, path, err) ||
        get_int(root, "num_hidden_layers", -2, &c->n_layers, path, err) ||
        get_int(root, "num_attention_heads", -2, &c->n_heads, path, err) ||
        get_int(root, "num_key_value_heads", 0, &c->n_kv_heads, path, err) ||
        get_int(root, "head_dim", 0, &c->head_dim, path, err) ||
        get_int(root, "vocab_size", -2, &c->vocab_size, path, err) ||
        get_int(root, "max_position_embeddings", 2048, &c->max_position_embeddings, path, err) ||
        get_num(root, "rms_norm_eps", 1e-6, &eps, path, err) ||
        get_bool(root, "tie_word_embeddings", 0, &c->tie_word_embeddings, path, err) ||
        get_bool(root, "attention_bias", 0, &attention_bias, path, err) ||
        get_bool(root, "use_sliding_window", 1, &use_sw, path, err) ||
        get_int(root, "sliding_window", 0, &c->sliding_window, path, err) ||
        get_token_id(root, "bos_token_id", &c->bos_id, path, err) ||
        get_token_id(root, "eos_token_id", &c->eos_id, path, err) ||
        get_token_id(root, "pad_token_id", &c->pad_id, path, err) || parse_rope(c, root, path, err))
        goto done;
    c->rms_norm_eps = (float)eps;
    if (c->n_kv_heads == 0) c->n_kv_heads = c->n_heads;
    if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->vocab_size <= 0 || c->head_dim < 0 || c->max_position_embeddings <= 0) {
        kv_fail(err, "%s: sizes must be positive", path);
        goto done;
    }
    if (c->n_heads % c->n_kv_heads) {
        kv_fail(err, "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", path, c->n_heads,
                c->n_kv_heads);
        goto done;
    }
    if (c->head_dim == 0) {
        if (c->hidden_size % c->n_heads) {
            kv_fail(err, "%s: hidden_size (%d) is not a multiple of num_attention_heads (%d) and no head_dim is given",
                    path, c->hidden_size, c->n_heads);
            goto done;
        }
        c->head_dim = c->hidden_size / c->n_heads;
    }
    if (c->head_dim % 2) {
        kv_fail(err, "%s: head_dim %d is odd; RoPE needs an even head_dim", path, c->head_dim);
        goto done;
    }
    if (!use_sw || c->sliding_window < 0) c->sliding_window = 0;
    c->qkv_bias = c->arch == KV_ARCH_QWEN2 || attention_bias;
    c->o_bias = c->arch != KV_ARCH_QWEN2 && attention_bias;
    c->qk_norm = c->arch == KV_ARCH_QWEN3;
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc) kv_config_free(c);
    return rc;
}

void kv_config_free(kv_config *c) {
    free(c->json);
    c->json = NULL;
}

void kv_rope_inv_freq(const kv_config *c, double *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
        if (c->rope_llama3) {
            double old = c->rope_original_max_pos;
            double low_wavelen = old / c->rope_low_freq_factor, high_wavelen = old / c->rope_high_freq_factor;
            double wavelen = 2 * M_PI / f;
            if (wavelen > low_wavelen) {
                f = f / c->rope_factor;
            } else if (wavelen >= high_wavelen) { /* medium band: interpolate */
                double smooth = (old / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}
