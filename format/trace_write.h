/* Writes a trace (docs/trace-format.md) so that a run killed at any moment
 * loses at most the prompt in flight:
 *
 *   OUT.parts/model.h5          file attributes and /model
 *   OUT.parts/prompt-00000.h5   one file per completed prompt (/prompts/<id>)
 *   OUT.parts/index.h5          the trace so far: external links to the above,
 *                               rewritten after every prompt
 *
 * Every file in OUT.parts is written under a temporary name and renamed when
 * complete, so each one present is whole. kv_trace_commit merges the parts
 * into OUT (again under a temporary name, then renamed) and removes OUT.parts;
 * a run that stops before that leaves OUT.parts for kv_trace_create(resume).
 *
 * A run of one prompt has nothing to resume: it writes /model and its prompt
 * straight into OUT.parts/trace.h5.tmp, renamed to OUT at the end, so that
 * its data are written once, not twice (docs/trace-format.md). */
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
    const char *rope_precision; /* "f32" (as transformers) or "f64" */
    int full_maps;             /* write attn */
    int maps_f16;              /* attn as float16 instead of float32 */
    int maps_deflate;          /* attn chunks shuffled + deflated (else stored raw: twice the size, faster to read) */
    const double *near_r_local;/* [n_near] FastGen r_l values of "nearsum" (attribute "nearsum_r_local") */
    int n_near;                /* 0 .. KV_MAX_NEAR; 0: no "nearsum" */
    int n_prompts;             /* prompts this run writes; 1: straight into the trace (above) */
} kv_trace_meta;

typedef struct {
    const char *id;
    const char *text;          /* NULL for input_ids prompts */
    const int32_t *tokens;     /* [n] */
    int n;
    char *const *pieces;       /* [n] or NULL (empty strings) */
    const uint8_t *flags;      /* [n] or NULL (zeros) */
    const int *near_w;         /* [meta.n_near] local window of each r_l for this prompt, in positions */
} kv_trace_prompt;

typedef struct kv_trace_writer kv_trace_writer;

/* Starts a trace at path. An existing path is an error unless force. An
 * existing path.parts (an interrupted run) is continued when resume is set
 * (its settings must match meta), removed when force is set, an error
 * otherwise. */
kv_trace_writer *kv_trace_create(const char *path, int force, int resume, const kv_trace_meta *meta, kv_error *err);
/* 1 when the prompt was completed by the interrupted run being resumed. */
int kv_trace_has_prompt(const kv_trace_writer *w, const char *id);
int kv_trace_n_prompts(const kv_trace_writer *w);
/* Where the trace so far can be read while the run goes on (index.h5). */
const char *kv_trace_index_path(const kv_trace_writer *w);

/* wo [D, H·hd] of traced slot `slot`; every slot, before the first prompt
 * (ignored when resuming: the interrupted run wrote them). */
int kv_trace_write_wo(kv_trace_writer *w, int slot, const float *wo, kv_error *err);
int kv_trace_begin_prompt(kv_trace_writer *w, const kv_trace_prompt *p, kv_error *err);
/* One traced layer of the current prompt (docs/trace-format.md). */
typedef struct {
    const float *colsum;   /* [H, N] */
    const float *window;   /* [H, W', N] */
    const float *nearsum;  /* [n_near, H, N] (NULL when n_near is 0) */
    const float *values;   /* [KVH, N, hd] */
    const float *key_norm; /* [KVH, N] L2 norm of each cached key */
} kv_trace_layer;
int kv_trace_write_layer(kv_trace_writer *w, int slot, const kv_trace_layer *layer, kv_error *err);
/* probs [rows, n_keys] = rows row0.. of head `head`'s map; columns >= n_keys are zero */
int kv_trace_write_map_block(kv_trace_writer *w, int slot, int head, int row0, int rows, const float *probs,
                             int n_keys, kv_error *err);
int kv_trace_write_logits(kv_trace_writer *w, const float *logits, kv_error *err);
/* Makes the prompt durable: its part file is renamed into place and the index rewritten. */
int kv_trace_end_prompt(kv_trace_writer *w, kv_error *err);
/* Merges the parts into path and removes path.parts; frees w either way. */
int kv_trace_commit(kv_trace_writer *w, kv_error *err);
/* Stops: removes the prompt in flight; with keep_completed the completed
 * prompts stay in path.parts for --resume, else path.parts goes too (when
 * this run created it). Frees w. */
void kv_trace_abort(kv_trace_writer *w, int keep_completed);

/* Removes a parts directory and every file in it. */
int kv_trace_remove_parts(const char *parts_dir);
/* How many completed prompts an interrupted run left in a parts directory
 * (0 when none, or when it cannot be read). */
int kv_trace_parts_completed(const char *parts_dir);

#define KV_TRACE_MAP_BLOCK 64   /* query rows per attn chunk */

/* Host memory the writer's full-map chunk queue takes for prompts of n
 * tokens when encoding on `threads` threads. */
size_t kv_trace_map_queue_bytes(int n, int f16, int threads);

#endif
