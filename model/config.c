#include "model/config.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"

/* transformers 4.57.6's defaults for the keys whose default differs by class. */
static const struct {
    const char *architecture, *model_type;
    int kv_heads;            /* num_key_value_heads when the key is absent (0: num_attention_heads) */
    int head_dim;            /* head_dim when absent (0: hidden_size / num_attention_heads) */
    int max_positions;       /* max_position_embeddings when absent */
} ARCHS[] = {
    [KV_ARCH_LLAMA] = {"LlamaForCausalLM", "llama", 0, 0, 2048},
    [KV_ARCH_MISTRAL] = {"MistralForCausalLM", "mistral", 8, 0, 4096 * 32},
    [KV_ARCH_QWEN2] = {"Qwen2ForCausalLM", "qwen2", 32, 0, 32768},
    [KV_ARCH_QWEN3] = {"Qwen3ForCausalLM", "qwen3", 32, 128, 32768},
};
#define N_ARCHS (int)(sizeof ARCHS / sizeof ARCHS[0])

/* The key's value, NULL when absent or null. */
static const cJSON *item(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int get_int(const cJSON *v, const char *key, int *out, const char *path, kv_error *err) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2e9)
        return kv_fail(err, "%s: \"%s\" must be an integer", path, key);
    *out = (int)v->valuedouble;
    return 0;
}

/* An integer key; absent or null -> dflt, or an error when required. */
static int opt_int(const cJSON *o, const char *key, int required, int dflt, int *out, const char *path,
                   kv_error *err) {
    const cJSON *v = item(o, key);
    if (!v) {
        if (required) return kv_fail(err, "%s: missing required key \"%s\"", path, key);
        *out = dflt;
        return 0;
    }
    return get_int(v, key, out, path, err);
}

static int opt_num(const cJSON *o, const char *key, double dflt, double *out, const char *path, kv_error *err) {
    const cJSON *v = item(o, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(v)) return kv_fail(err, "%s: \"%s\" must be a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static int opt_bool(const cJSON *o, const char *key, int dflt, int *out, const char *path, kv_error *err) {
    const cJSON *v = item(o, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(v)) return kv_fail(err, "%s: \"%s\" must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* bos/eos/pad ids: a number or a list of numbers, appended without repeats. */
/* Adds the token ids of key (a number or a list of them) to ids [*n], without repeats. */
static int add_token_ids(int32_t *ids, int *n, const cJSON *o, const char *key, const char *path, kv_error *err) {
    const cJSON *v = item(o, key);
    if (!v) return 0;
    int m = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    for (int i = 0; i < m; i++) {
        const cJSON *e = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, i) : v;
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 2147483647.0 ||
            e->valuedouble != floor(e->valuedouble))
            return kv_fail(err, "%s: \"%s\" must be a token id or a list of them", path, key);
        int32_t id = (int32_t)e->valuedouble, seen = 0;
        for (int j = 0; j < *n; j++) seen |= ids[j] == id;
        if (seen) continue;
        if (*n == KV_MAX_SPECIAL_IDS)
            return kv_fail(err, "%s: more than %d bos/eos/pad token ids", path, KV_MAX_SPECIAL_IDS);
        ids[(*n)++] = id;
    }
    return 0;
}

static int special_ids_of(const cJSON *root, int32_t *ids, int *n, const char *path, kv_error *err) {
    *n = 0;
    return add_token_ids(ids, n, root, "bos_token_id", path, err) || add_token_ids(ids, n, root, "eos_token_id", path, err) ||
                   add_token_ids(ids, n, root, "pad_token_id", path, err)
               ? -1
               : 0;
}

int kv_config_special_ids(const char *path, int32_t ids[KV_MAX_SPECIAL_IDS], int *n, kv_error *err) {
    size_t len;
    char *json = kv_read_file(path, (size_t)64 << 20, &len, err);
    if (!json) return -1;
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    if (!root) return kv_fail(err, "%s: not valid JSON", path);
    int rc = special_ids_of(root, ids, n, path, err);
    cJSON_Delete(root);
    return rc;
}

/* A key the chosen class reads in a way kvtrace does not compute. */
static int unsupported(const char *path, const char *key, const cJSON *v, const char *why, kv_error *err) {
    char *text = cJSON_PrintUnformatted(v);
    kv_fail(err, "%s: \"%s\": %s is not supported by kvtrace (%s)", path, key, text ? text : "?", why);
    free(text);
    return -1;
}

static int need_num(const cJSON *r, const char *key, const char *type, double *out, const char *path,
                    kv_error *err) {
    const cJSON *v = item(r, key);
    if (!v) return kv_fail(err, "%s: rope scaling of type \"%s\" needs \"%s\" (transformers refuses it too)", path, type, key);
    if (!cJSON_IsNumber(v)) return kv_fail(err, "%s: rope scaling \"%s\" must be a number", path, key);
    *out = v->valuedouble;
    return 0;
}

/* rope_theta and rope_scaling as transformers 4.57.6 reads them ("type" is
 * the old spelling of "rope_type"), or rope_parameters, the transformers 5
 * spelling that carries rope_theta inside (4.57.6 itself ignores that key). */
static int parse_rope(kv_config *c, const cJSON *root, const char *path, kv_error *err) {
    kv_rope *p = &c->rope;
    const cJSON *rs = item(root, "rope_scaling"), *rp = item(root, "rope_parameters");
    if (rs && rp) return kv_fail(err, "%s: both \"rope_scaling\" and \"rope_parameters\" are set; keep one", path);
    const cJSON *r = rs ? rs : rp;
    const char *key = rs ? "rope_scaling" : "rope_parameters";
    if (opt_num(root, "rope_theta", 10000.0, &p->theta, path, err)) return -1;
    if (rp && opt_num(rp, "rope_theta", p->theta, &p->theta, path, err)) return -1;
    if (!(p->theta > 0)) return kv_fail(err, "%s: \"rope_theta\" must be positive", path);
    p->type = KV_ROPE_DEFAULT;
    if (!r) return 0;
    if (!cJSON_IsObject(r)) return kv_fail(err, "%s: \"%s\" must be an object", path, key);
    const cJSON *t = item(r, "rope_type");
    if (!t) t = item(r, "type");
    if (!t && rs) return kv_fail(err, "%s: \"rope_scaling\" has no \"rope_type\" (transformers fails on it too)", path);
    if (t && !cJSON_IsString(t)) return kv_fail(err, "%s: \"%s\" rope_type must be a string", path, key);
    const char *type = t ? t->valuestring : "default";
    if (!strcmp(type, "default")) return 0;
    if (!strcmp(type, "linear")) p->type = KV_ROPE_LINEAR;
    else if (!strcmp(type, "dynamic")) p->type = KV_ROPE_DYNAMIC;
    else if (!strcmp(type, "yarn")) p->type = KV_ROPE_YARN;
    else if (!strcmp(type, "llama3")) p->type = KV_ROPE_LLAMA3;
    else return unsupported(path, "rope_type", t, "supported: default, linear, dynamic, yarn, llama3", err);
    if (need_num(r, "factor", type, &p->factor, path, err)) return -1;
    if (!(p->factor > 0)) return kv_fail(err, "%s: rope scaling \"factor\" must be positive", path);
    if (p->type == KV_ROPE_LLAMA3) {
        double orig;
        if (need_num(r, "low_freq_factor", type, &p->low_freq_factor, path, err) ||
            need_num(r, "high_freq_factor", type, &p->high_freq_factor, path, err) ||
            need_num(r, "original_max_position_embeddings", type, &orig, path, err))
            return -1;
        p->original_max_pos = (int)orig;
        if (p->low_freq_factor <= 0 || p->high_freq_factor <= p->low_freq_factor || orig < 1 || orig != floor(orig))
            return kv_fail(err, "%s: invalid llama3 rope scaling (need 0 < low_freq_factor < high_freq_factor and a "
                                "positive integer original_max_position_embeddings)", path);
    }
    if (p->type == KV_ROPE_YARN) {
        /* _compute_yarn_parameters: `x or default` for these keys, so 0 also takes the default */
        double af, mscale, mscale_all, orig;
        if (opt_num(r, "attention_factor", -1, &af, path, err) || opt_num(r, "mscale", 0, &mscale, path, err) ||
            opt_num(r, "mscale_all_dim", 0, &mscale_all, path, err) ||
            opt_num(r, "beta_fast", 0, &p->beta_fast, path, err) ||
            opt_num(r, "beta_slow", 0, &p->beta_slow, path, err) ||
            opt_num(r, "original_max_position_embeddings", 0, &orig, path, err) ||
            opt_bool(r, "truncate", 1, &p->truncate, path, err))
            return -1;
        if (p->beta_fast == 0) p->beta_fast = 32;
        if (p->beta_slow == 0) p->beta_slow = 1;
        p->original_max_pos = orig != 0 ? (int)orig : c->max_position_embeddings;
        if (p->original_max_pos < 1 || (orig != 0 && orig != floor(orig)))
            return kv_fail(err, "%s: yarn original_max_position_embeddings must be a positive integer", path);
#define MSCALE(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m) * log(s) + 1.0)
        if (af >= 0) p->attention_factor = af;
        else if (mscale != 0 && mscale_all != 0) p->attention_factor = MSCALE(p->factor, mscale) / MSCALE(p->factor, mscale_all);
        else p->attention_factor = MSCALE(p->factor, 1.0);
#undef MSCALE
    }
    return 0;
}

/* Which layers attend within a sliding window, and how far. */
static int parse_windows(kv_config *c, const cJSON *root, const char *path, kv_error *err) {
    c->layer_window = kv_calloc(c->n_layers, sizeof *c->layer_window, err);
    if (!c->layer_window) return -1;
    if (c->arch == KV_ARCH_LLAMA) return 0; /* LlamaForCausalLM has no sliding window; the key is ignored */
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    int window = 4096; /* the classes' default when the key is absent */
    if (sw && cJSON_IsNull(sw)) window = 0;
    else if (sw && get_int(sw, "sliding_window", &window, path, err)) return -1;
    if (sw && !cJSON_IsNull(sw) && window < 1) return kv_fail(err, "%s: \"sliding_window\" must be positive or null", path);
    if (c->arch == KV_ARCH_MISTRAL) { /* every layer; use_sliding_window, max_window_layers, layer_types unread */
        for (int l = 0; l < c->n_layers; l++) c->layer_window[l] = window;
        return 0;
    }
    /* Qwen2 / Qwen3: the window is set only with use_sliding_window, and by
     * default only layers from max_window_layers on use it */
    int use = 0, from = 28;
    if (opt_bool(root, "use_sliding_window", 0, &use, path, err) ||
        opt_int(root, "max_window_layers", 0, 28, &from, path, err))
        return -1;
    if (!use) window = 0;
    const cJSON *types = item(root, "layer_types");
    if (!types) {
        for (int l = from < 0 ? 0 : from; l < c->n_layers; l++) c->layer_window[l] = window;
        return 0;
    }
    if (!cJSON_IsArray(types) || cJSON_GetArraySize(types) != c->n_layers)
        return kv_fail(err, "%s: \"layer_types\" must list one type per layer (%d)", path, c->n_layers);
    for (int l = 0; l < c->n_layers; l++) {
        const cJSON *t = cJSON_GetArrayItem(types, l);
        if (cJSON_IsString(t) && !strcmp(t->valuestring, "full_attention")) continue;
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "sliding_attention"))
            return unsupported(path, "layer_types", t, "supported: full_attention, sliding_attention", err);
        if (!window)
            return kv_fail(err, "%s: \"layer_types\" makes layer %d sliding_attention but no sliding_window is in force "
                                "(use_sliding_window false or sliding_window null); transformers fails on it too",
                           path, l);
        c->layer_window[l] = window;
    }
    return 0;
}

/* Keys that change the forward pass in ways kvtrace does not compute. */
static int refuse_unsupported(const kv_config *c, const cJSON *root, const char *path, kv_error *err) {
    const cJSON *v = item(root, "hidden_act");
    if (v && (!cJSON_IsString(v) || (strcmp(v->valuestring, "silu") && strcmp(v->valuestring, "swish"))))
        return unsupported(path, "hidden_act", v, "supported: silu", err);
    v = item(root, "partial_rotary_factor");
    if (v && (!cJSON_IsNumber(v) || v->valuedouble != 1.0))
        return unsupported(path, "partial_rotary_factor", v,
                           "these classes rotate the whole head; transformers 4.57.6 fails on a partial rotary factor",
                           err);
    v = item(root, "quantization_config");
    if (v) return unsupported(path, "quantization_config", v, "dequantise the checkpoint to F32, F16 or BF16 first", err);
    v = item(root, "model_type");
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, ARCHS[c->arch].model_type))) {
        char *text = cJSON_PrintUnformatted(v);
        kv_fail(err, "%s: \"model_type\": %s does not match architecture %s (transformers builds the model of the "
                     "model_type, \"%s\" expected)",
                path, text ? text : "?", c->architecture, ARCHS[c->arch].model_type);
        free(text);
        return -1;
    }
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
    const cJSON *mt = item(root, "model_type");
    if (!cJSON_IsString(a0)) {
        kv_fail(err, "%s: no \"architectures\" list naming the model class", path);
        goto done;
    }
    snprintf(c->architecture, sizeof c->architecture, "%s", a0->valuestring);
    int a = 0;
    while (a < N_ARCHS && strcmp(a0->valuestring, ARCHS[a].architecture)) a++;
    if (a == N_ARCHS) {
        kv_fail(err, "%s: architecture \"%s\"%s%s%s is not supported (supported: LlamaForCausalLM, "
                     "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
                path, a0->valuestring, cJSON_IsString(mt) ? " (model_type \"" : "",
                cJSON_IsString(mt) ? mt->valuestring : "", cJSON_IsString(mt) ? "\")" : "");
        goto done;
    }
    c->arch = (kv_arch)a;
    if (refuse_unsupported(c, root, path, err)) goto done;
    double eps;
    int attention_bias = 0, mlp_bias = 0;
    if (opt_int(root, "hidden_size", 1, 0, &c->hidden_size, path, err) ||
        opt_int(root, "intermediate_size", 1, 0, &c->intermediate_size, path, err) ||
        opt_int(root, "num_hidden_layers", 1, 0, &c->n_layers, path, err) ||
        opt_int(root, "num_attention_heads", 1, 0, &c->n_heads, path, err) ||
        opt_int(root, "vocab_size", 1, 0, &c->vocab_size, path, err) ||
        opt_int(root, "max_position_embeddings", 0, ARCHS[a].max_positions, &c->max_position_embeddings, path, err) ||
        opt_num(root, "rms_norm_eps", 1e-6, &eps, path, err) ||
        opt_bool(root, "tie_word_embeddings", 0, &c->tie_word_embeddings, path, err) ||
        opt_bool(root, "attention_bias", 0, &attention_bias, path, err) ||
        opt_bool(root, "mlp_bias", 0, &mlp_bias, path, err) || special_ids_of(root, c->special_ids, &c->n_special_ids, path, err))
        goto done;
    /* num_key_value_heads: absent -> the class default, null -> num_attention_heads */
    const cJSON *kvh = cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads");
    if (!kvh) c->n_kv_heads = ARCHS[a].kv_heads ? ARCHS[a].kv_heads : c->n_heads;
    else if (cJSON_IsNull(kvh)) c->n_kv_heads = c->n_heads;
    else if (get_int(kvh, "num_key_value_heads", &c->n_kv_heads, path, err)) goto done;
    if (opt_int(root, "head_dim", 0, ARCHS[a].head_dim, &c->head_dim, path, err)) goto done;
    c->rms_norm_eps = (float)eps;
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
    if (parse_rope(c, root, path, err) || parse_windows(c, root, path, err)) goto done;
    /* biases as each class builds its projections */
    c->qkv_bias = c->arch == KV_ARCH_QWEN2 || (attention_bias && c->arch != KV_ARCH_MISTRAL);
    c->o_bias = attention_bias && (c->arch == KV_ARCH_LLAMA || c->arch == KV_ARCH_QWEN3);
    c->mlp_bias = mlp_bias && c->arch == KV_ARCH_LLAMA;
    c->qk_norm = c->arch == KV_ARCH_QWEN3;
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc) kv_config_free(c);
    return rc;
}

void kv_config_free(kv_config *c) {
    free(c->json);
    free(c->layer_window);
    c->json = NULL;
    c->layer_window = NULL;
}
