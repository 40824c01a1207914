/* Full attention maps leave the writer as whole chunks: queued, encoded on
 * all threads (float16 conversion, shuffle, libdeflate) and stored with
 * H5Dwrite_chunk, instead of HDF5 deflating them one at a time. */
#include <libdeflate.h>
#include <omp.h>
#include <stdlib.h>

#include "common/dtype.h"
#include "format/writer_internal.h"

void kv_map_queue_free(kv_trace_writer *w) {
    for (int i = 0; w->queue && i < w->cap_queue; i++) {
        free(w->queue[i].rows);
        free(w->queue[i].out);
    }
    free(w->queue);
    w->queue = NULL;
    w->n_queue = w->cap_queue = 0;
    for (int t = 0; t < w->enc_threads; t++) {
        if (w->enc_tmp) free(w->enc_tmp[t]);
        if (w->enc && w->enc[t]) libdeflate_free_compressor(w->enc[t]);
    }
    free(w->enc_tmp);
    free(w->enc);
    w->enc_tmp = NULL;
    w->enc = NULL;
    w->enc_threads = 0;
}

/* Chunks the queue holds: two per thread, or more small ones up to 16 MiB of
 * float32 rows, so that short prompts do not start a parallel region every
 * few chunks. */
static int queue_capacity(int n, int threads) {
    size_t cr = n < KV_TRACE_MAP_BLOCK ? (size_t)n : KV_TRACE_MAP_BLOCK, rows_bytes = cr * n * 4;
    size_t cap = ((size_t)16 << 20) / rows_bytes, least = threads > 2 ? 2 * (size_t)threads : 4;
    if (cap > 64) cap = 64;
    return (int)(cap > least ? cap : least);
}

/* Bytes the queue takes for prompts of n tokens (for memory estimates). */
size_t kv_trace_map_queue_bytes(int n, int f16, int threads) {
    size_t cr = n < KV_TRACE_MAP_BLOCK ? (size_t)n : KV_TRACE_MAP_BLOCK, stored = cr * n * (f16 ? 2 : 4);
    return (size_t)queue_capacity(n, threads) * (cr * n * 4 + stored + stored / 8 + 1024) + (size_t)threads * stored;
}

/* Sized for the prompt in flight; 0, or -1 when out of memory. */
int kv_map_queue_alloc(kv_trace_writer *w) {
    size_t N = (size_t)w->n, cr = N < KV_TRACE_MAP_BLOCK ? N : KV_TRACE_MAP_BLOCK;
    int threads = omp_get_max_threads();
    w->chunk_bytes = cr * N * (w->meta.maps_f16 ? 2 : 4);
    size_t bound = libdeflate_zlib_compress_bound(NULL, w->chunk_bytes);
    w->cap_queue = queue_capacity(w->n, threads);
    w->queue = calloc((size_t)w->cap_queue, sizeof *w->queue);
    w->enc_threads = threads;
    w->enc_tmp = calloc((size_t)threads, sizeof *w->enc_tmp);
    w->enc = calloc((size_t)threads, sizeof *w->enc);
    if (!w->queue || !w->enc_tmp || !w->enc) return -1;
    for (int i = 0; i < w->cap_queue; i++)
        if (!(w->queue[i].rows = malloc(cr * N * sizeof(float))) ||
            !(w->queue[i].out = malloc(bound > w->chunk_bytes ? bound : w->chunk_bytes)))
            return -1;
    for (int t = 0; t < threads; t++)
        if (!(w->enc_tmp[t] = malloc(w->chunk_bytes)) || !(w->enc[t] = libdeflate_alloc_compressor(1))) return -1;
    return 0;
}

/* HDF5's shuffle filter: byte k of every element into plane k. */
static void shuffle_f32(unsigned char *dst, const float *src, size_t n) {
    unsigned char *p0 = dst, *p1 = dst + n, *p2 = dst + 2 * n, *p3 = dst + 3 * n;
    const uint32_t *u = (const uint32_t *)(const void *)src;
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        uint32_t x = u[i];
        p0[i] = (unsigned char)x;
        p1[i] = (unsigned char)(x >> 8);
        p2[i] = (unsigned char)(x >> 16);
        p3[i] = (unsigned char)(x >> 24);
    }
}

/* Encodes the queued chunks (float16 and/or shuffle + deflate) on all
 * threads, then stores them in order. */
int kv_map_queue_flush(kv_trace_writer *w, kv_error *err) {
    if (!w->n_queue) return 0;
    size_t N = (size_t)w->n, cr = N < KV_TRACE_MAP_BLOCK ? N : KV_TRACE_MAP_BLOCK, ne = cr * N;
    size_t bound = libdeflate_zlib_compress_bound(NULL, w->chunk_bytes);
    int f16 = w->meta.maps_f16, deflate = w->meta.maps_deflate, failed = 0;
#pragma omp parallel num_threads(w->enc_threads) reduction(| : failed)
    {
        int t = omp_get_thread_num();
        unsigned char *tmp = w->enc_tmp[t];
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < w->n_queue; i++) {
            map_chunk *c = &w->queue[i];
            /* queued chunks are float16 or deflated (or both) */
            if (f16) { /* into out: the stored bytes, or scratch before the shuffle */
                uint16_t *h = (uint16_t *)(void *)c->out;
                for (size_t k = 0; k < ne; k++) h[k] = kv_f32_to_f16(c->rows[k]);
                if (deflate)
                    for (size_t k = 0; k < ne; k++) tmp[k] = (unsigned char)h[k], tmp[ne + k] = (unsigned char)(h[k] >> 8);
            } else
                shuffle_f32(tmp, c->rows, ne);
            c->out_len = w->chunk_bytes;
            if (deflate) {
                c->out_len = libdeflate_zlib_compress(w->enc[t], tmp, w->chunk_bytes, c->out, bound);
                failed |= c->out_len == 0;
            }
        }
    }
    int rc = failed ? kv_fail(err, "%s: cannot compress attention maps", w->ptmp) : 0;
    for (int i = 0; !rc && i < w->n_queue; i++) {
        const map_chunk *c = &w->queue[i];
        hsize_t off[4] = {(hsize_t)c->slot, (hsize_t)c->head, (hsize_t)c->row0, 0};
        if (H5Dwrite_chunk(w->d_attn, H5P_DEFAULT, 0, off, c->out_len, c->out) < 0)
            rc = kv_fail(err, "%s: cannot write attention maps (disk full?)", w->ptmp);
    }
    w->n_queue = 0;
    return rc;
}
