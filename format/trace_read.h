/* Trace reader (format v1, docs/trace-format.md). Opens a trace, validates
 * its format attributes and /model, lists prompts, and reads one prompt's
 * datasets one layer at a time through hyperslabs (the memory dataspace has
 * the same rank and shape as the file selection). Every float read is
 * checked to be finite. Shared by kvanalyze and kvplot.
 *
 *   kv_trace *t = kv_trace_open("trace.h5", &err);
 *   kv_prompt *p = kv_prompt_open(t, t->prompt_ids[0], &err);
 *   kv_prompt_read_window(p, 0, buf, &err);     // buf: [H, W', N]
 *   kv_prompt_close(p); kv_trace_close(t);
 */
#ifndef KV_TRACE_READ_H
#define KV_TRACE_READ_H

#include <stdint.h>

#include "common/error.h"
#include "format/trace.h"

typedef struct {
    int64_t file;          /* hid_t (HDF5's ids are int64_t; <hdf5.h> stays inside format/) */
    char *path;
    /* file attributes */
    char *model;           /* attribute "model" */
    char *config_json;     /* attribute "config_json" ("" when absent) */
    char *created_by;      /* ("" when absent) */
    int window;            /* W, the tracer's --window */
    int full_maps;
    int n_near;            /* FastGen local-window accumulators per prompt ("nearsum"), 0: none */
    double near_r_local[KV_MAX_NEAR]; /* [n_near] their r_l (attribute "nearsum_r_local") */
    /* /model attributes */
    int n_layers;          /* the model's layer count (all layers) */
    int n_heads;           /* H */
    int n_kv_heads;        /* KVH */
    int head_dim;          /* hd */
    int hidden_size;       /* D */
    int vocab_size;
    char *architecture;
    /* /model datasets */
    int L;                 /* traced layers */
    int *layers;           /* [L] model layer index of each traced layer */
    /* prompts, in "index" order */
    int n_prompts;
    char **prompt_ids;     /* [n_prompts] */
} kv_trace;

typedef struct {
    const kv_trace *trace;
    char id[KV_PROMPT_ID_MAX + 1];
    int index;
    int n_tokens;          /* N */
    int window_rows;       /* W' = rows of the "window" dataset */
    int has_attn;          /* 1 when "attn" [L, H, N, N] exists */
    int has_values;
    int has_key_norm;      /* 1 when "key_norm" [L, KVH, N] exists (traces since 2026-12-07) */
    int has_pieces;
    int has_nearsum;       /* 1 when "nearsum" [L, n_near, H, N] exists */
    int near_w[KV_MAX_NEAR]; /* [n_near] its local windows, in positions */
    uint8_t *flags;        /* [N] token flags (KV_FLAG_*) */
    int64_t group;         /* hid_t */
    int64_t d_attn, d_colsum, d_window, d_values, d_key_norm, d_nearsum; /* hid_t; -1 when absent */
    /* fast path for attn: raw chunks [1, 1, rows, N] decompressed on threads */
    int attn_fast;         /* 1 when usable (float32/float16 LE, shuffle and/or deflate only) */
    int attn_elem;         /* bytes per stored element: 4 or 2 */
    int attn_chunk_rows;
    int attn_shuffle_idx;  /* filter index of shuffle in the pipeline, -1 none */
    int attn_deflate_idx;  /* filter index of deflate, -1 none */
    int scan_batch_chunks; /* row blocks per batch of kv_prompt_scan_attn; 0 (open's default): automatic */
    struct kv_scan_scratch *scratch; /* the scan's buffers, kept between calls (first touches are costly) */
} kv_prompt;

/* Opens and validates a trace (format, format_version, /model, /prompts).
 * Returns NULL with err filled on failure. */
kv_trace *kv_trace_open(const char *path, kv_error *err);
void kv_trace_close(kv_trace *t);

/* Index of a prompt id in t->prompt_ids, or -1. */
int kv_trace_find_prompt(const kv_trace *t, const char *id);

/* Reads /model/wo for traced layer li (0..L-1) into out [D, H*hd]. */
int kv_trace_read_wo(const kv_trace *t, int li, float *out, kv_error *err);

/* Opens one prompt and checks every dataset's shape against the model. */
kv_prompt *kv_prompt_open(const kv_trace *t, const char *id, kv_error *err);
void kv_prompt_close(kv_prompt *p);

/* Per-layer reads; li is the traced-layer position (0..L-1).
 *   attn:    heads [h0, h0+nh) -> out [nh, N, N]   (float16 converted).
 *            When the maps are float32 or IEEE float16 in chunks of whole rows with only
 *            shuffle/deflate filters, the raw chunks are read with
 *            H5Dread_chunk and decompressed on OpenMP threads (libdeflate); set
 *            KV_READ_PLAIN=1 in the environment to force plain H5Dread.
 *   window:  out [H, W', N]
 *   colsum:  out [H, N]
 *   values:  out [KVH, N, hd] */
int kv_prompt_read_attn(const kv_prompt *p, int li, int h0, int nh, float *out, kv_error *err);

/* Streams the maps of heads [h0, h0+nh) of traced layer li without holding
 * them (their stored chunks are read in batches, see below): fn gets blocks
 * of query rows [row0, row0+nrows), rows[q] -> [nrows, N] of head h0+q. fn
 * runs on several OpenMP threads at once (thread is omp_get_thread_num(),
 * below omp_get_max_threads() at the call) and blocks come in no fixed
 * order. Every block is checked for NaN/Inf before fn sees it; on a fault
 * the scan stops early and returns -1 with err filled. */
typedef void (*kv_attn_block_fn)(void *ctx, int thread, int row0, int nrows, const float *const *rows);
int kv_prompt_scan_attn(const kv_prompt *p, int li, int h0, int nh, kv_attn_block_fn fn, void *ctx, kv_error *err);
/* Row blocks whose stored chunks (of nh heads) a scan holds at once:
 * p->scan_batch_chunks when set, else about 256 MiB uncompressed and at
 * least 4 per thread (also for memory estimates). */
int kv_prompt_scan_batch_chunks(const kv_prompt *p, int nh);
int kv_prompt_read_window(const kv_prompt *p, int li, float *out, kv_error *err);
int kv_prompt_read_colsum(const kv_prompt *p, int li, float *out, kv_error *err);
int kv_prompt_read_values(const kv_prompt *p, int li, float *out, kv_error *err);
/* out [KVH, N]: the L2 norm of every cached key (after RoPE) */
int kv_prompt_read_key_norm(const kv_prompt *p, int li, float *out, kv_error *err);
/* nearsum of r_l number k (p->trace->near_r_local[k]): out [H, N] */
int kv_prompt_read_nearsum(const kv_prompt *p, int li, int k, float *out, kv_error *err);

/* tokens [N] (int32) */
int kv_prompt_read_tokens(const kv_prompt *p, int32_t *out, kv_error *err);
/* pieces: returns a malloc'd array of N malloc'd UTF-8 strings (free with
 * kv_strings_free), or NULL on error. All empty when the trace has none. */
char **kv_prompt_read_pieces(const kv_prompt *p, kv_error *err);
void kv_strings_free(char **s, int n);

#endif
