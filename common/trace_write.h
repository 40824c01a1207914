/* Writes a trace file (docs/trace-format.md) under a temporary name and
 * renames it into place on kv_trace_commit; kv_trace_abort removes it. */
#ifndef KV_TRACE_WRITE_H
#define KV_TRACE_WRITE_H

#include <stdint.h>
#include "common/error.h"

typedef struct {
    const char *model_name;    /* checkpoint directory name */
    const char *config_json;   /* verbatim */
    const char *architecture;
    const char *created_by;
    int n_layers, n_heads, n_kv_heads, head_dim, hidden_size, vocab_size;
    const int *layers;         /* [n_traced] model layer of each traced slot */
    int n_traced;
    int window;                /* W */
    int full_maps;             /* write attn */
    int maps_f16;              /* attn as float16 instead of float32 */
    int maps_deflate;          /* attn chunks shuffled + deflated (else stored raw: larger, ~10x faster to read) */
} kv_trace_meta;

typedef struct {
    const char *id;
    const char *text;          /* NULL for input_ids prompts */
    const int32_t *tokens;     /* [n] */
    int n;
    char *const *pieces;       /* [n] or NULL (empty strings) */
    const uint8_t *flags;      /* [n] or NULL (zeros) */
} kv_trace_prompt;

typedef struct kv_trace_writer kv_trace_writer;

/* Fails when path exists and force is 0. */
kv_trace_writer *kv_trace_create(const char *path, int force, const kv_trace_meta *meta, kv_error *err);
/* wo [D, H·hd] of traced slot `slot` */
int kv_trace_write_wo(kv_trace_writer *w, int slot, const float *wo, kv_error *err);
int kv_trace_begin_prompt(kv_trace_writer *w, const kv_trace_prompt *p, kv_error *err);
/* colsum [H, N], window [H, W', N], values [KVH, N, hd] of traced slot `slot` */
int kv_trace_write_layer(kv_trace_writer *w, int slot, const float *colsum, const float *window,
                         const float *values, kv_error *err);
/* probs [rows, n_keys] = rows row0.. of head `head`'s map; columns >= n_keys are zero */
int kv_trace_write_map_block(kv_trace_writer *w, int slot, int head, int row0, int rows, const float *probs,
                             int n_keys, kv_error *err);
int kv_trace_write_logits(kv_trace_writer *w, const float *logits, kv_error *err);
int kv_trace_end_prompt(kv_trace_writer *w, kv_error *err);
/* Closes and renames into place; frees w either way. */
int kv_trace_commit(kv_trace_writer *w, kv_error *err);
/* Closes, removes the temporary file, frees w. */
void kv_trace_abort(kv_trace_writer *w);

#define KV_TRACE_MAP_BLOCK 64   /* query rows per attn chunk */

#endif
