/* The trace writer's state, shared by its three parts: trace_write.c (the
 * writer), trace_parts.c (the crash-safe parts directory) and map_encode.c
 * (full maps encoded in parallel). Not for use outside format/. */
#ifndef KV_WRITER_INTERNAL_H
#define KV_WRITER_INTERNAL_H

#include <hdf5.h>
#include <stddef.h>

#include "format/trace_write.h"

typedef struct {
    char *id;
    char *file;                /* part file name inside the parts directory */
    int index;
} done_prompt;

/* One attn chunk waiting to be encoded and stored. */
typedef struct {
    int slot, head, row0;
    float *rows;               /* [cr, N] float32, zero-padded */
    unsigned char *out;        /* its stored bytes: shuffled + deflated, or plain float16 */
    size_t out_len;
} map_chunk;

struct kv_trace_writer {
    kv_trace_meta meta;
    char *path;                /* the final trace */
    char *parts;               /* path.parts */
    char *index_path;          /* parts/index.h5 */
    char *settings;            /* what a resumed run must match */
    int created_parts;         /* this run made the parts directory */
    int resumed;
    int direct;                /* one prompt: written straight into parts/trace.h5.tmp with /model (mfile),
                                  renamed into place at the end; no part files, nothing to resume or merge */
    hid_t f16;                 /* IEEE half type */
    hid_t mfile;               /* mtmp while open, else -1 */
    char *mtmp;                /* parts/model.h5.tmp, or parts/trace.h5.tmp when direct */
    done_prompt *done;         /* completed prompts, in index order */
    int n_done, cap_done;
    /* the prompt in flight */
    hid_t pfile, group, d_colsum, d_window, d_values, d_key_norm, d_attn, d_nearsum;
    char *ptmp, *pname;
    char *pid;
    int n, wrows;
    void *map_buf;             /* [KV_TRACE_MAP_BLOCK, N] f32 or f16, for blocks not aligned to chunks */
    /* Full maps leave as whole chunks: queued, encoded on all threads
     * (float16 conversion, shuffle, libdeflate) and stored with
     * H5Dwrite_chunk, instead of HDF5 deflating them one at a time. */
    size_t chunk_bytes;        /* stored chunk before compression: cr × N × element */
    map_chunk *queue;          /* [cap_queue] */
    int n_queue, cap_queue;
    int enc_threads;
    unsigned char **enc_tmp;   /* [enc_threads] one converted, shuffled chunk */
    struct libdeflate_compressor **enc;   /* [enc_threads] */
};

/* ---- the parts directory (trace_parts.c) ---- */
/* path of a file inside the parts directory (malloc'd; NULL when out of memory) */
char *kv_parts_file(const kv_trace_writer *w, const char *name);
/* the file attributes of docs/trace-format.md (model.h5, index.h5, the final file) */
int kv_parts_write_root_attrs(hid_t root, const kv_trace_meta *m);
/* everything that changes a trace's content besides the prompts (malloc'd) */
char *kv_parts_settings(const kv_trace_meta *m);
int kv_parts_remove_dir(const char *dir);
int kv_parts_add_done(kv_trace_writer *w, const char *id, const char *file, int index);
/* an interrupted run's parts: 0 loaded, 1 nothing to resume, -1 error */
int kv_parts_load(kv_trace_writer *w, kv_error *err);
int kv_parts_write_index(kv_trace_writer *w, kv_error *err);
int kv_parts_create_model_file(kv_trace_writer *w, kv_error *err);
int kv_parts_finish_model_file(kv_trace_writer *w, kv_error *err);

/* ---- full maps encoded in parallel (map_encode.c) ---- */
/* sized for the prompt in flight; 0, or -1 when out of memory */
int kv_map_queue_alloc(kv_trace_writer *w);
void kv_map_queue_free(kv_trace_writer *w);
/* encodes the queued chunks on all threads, then stores them in order */
int kv_map_queue_flush(kv_trace_writer *w, kv_error *err);

#endif
