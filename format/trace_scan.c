/* Streaming reads of full attention maps (kv_prompt_scan_attn): stored
 * chunks read raw in batches with H5Dread_chunk, inflated (libdeflate),
 * unshuffled and converted on OpenMP threads, checked for NaN/Inf, and handed
 * to the caller block by block while they are still in cache. Plain
 * H5Dread when the storage does not allow it (or KV_READ_PLAIN=1). */
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <libdeflate.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/h5util.h"
#include "format/scan_internal.h"
#include "format/trace_read.h"

void kv_scan_detect(kv_prompt *p) {
    p->attn_fast = 0;
    p->attn_shuffle_idx = p->attn_deflate_idx = -1;
    hid_t ft = H5Dget_type(p->d_attn);
    int f32 = H5Tequal(ft, H5T_IEEE_F32LE) > 0, f16 = 0;
    if (!f32 && H5Tget_class(ft) == H5T_FLOAT && H5Tget_size(ft) == 2 && H5Tget_order(ft) == H5T_ORDER_LE) {
        size_t spos, epos, esize, mpos, msize;
        H5Tget_fields(ft, &spos, &epos, &esize, &mpos, &msize);
        f16 = spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(ft) == 15;
    }
    H5Tclose(ft);
    p->attn_elem = f16 ? 2 : 4; /* also what the checker's tolerance goes by */
    const unsigned one = 1;
    if (!(f32 || f16) || *(const unsigned char *)&one != 1) return; /* needs a little-endian host */
    const char *plain = getenv("KV_READ_PLAIN");
    if (plain && *plain && strcmp(plain, "0")) return;
    hid_t dcpl = H5Dget_create_plist(p->d_attn);
    int ok = 0;
    hsize_t cd[4];
    if (H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 4, cd) == 4 && cd[0] == 1 && cd[1] == 1 &&
        cd[3] == (hsize_t)p->n_tokens && cd[2] >= 1) {
        ok = 1;
        int nf = H5Pget_nfilters(dcpl);
        for (int k = 0; ok && k < nf; k++) {
            unsigned flags, vals[8];
            size_t nv = 8;
            char name[64];
            H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)k, &flags, &nv, vals, sizeof name, name, NULL);
            if (id == H5Z_FILTER_SHUFFLE && p->attn_shuffle_idx < 0 && p->attn_deflate_idx < 0)
                p->attn_shuffle_idx = k;
            else if (id == H5Z_FILTER_DEFLATE && p->attn_deflate_idx < 0)
                p->attn_deflate_idx = k;
            else
                ok = 0;
        }
        p->attn_chunk_rows = (int)cd[2];
    }
    H5Pclose(dcpl);
    p->attn_fast = ok;
}

/* Undoes HDF5's shuffle filter for 4-byte elements: planes [4][ne] -> nv
 * interleaved elements (nv <= ne). */
static void unshuffle4(unsigned char *dst, const unsigned char *src, size_t ne, size_t nv) {
    const unsigned char *p0 = src, *p1 = src + ne, *p2 = src + 2 * ne, *p3 = src + 3 * ne;
    size_t i = 0;
#ifdef __SSE2__
    for (; i + 16 <= nv; i += 16) {
        __m128i b0 = _mm_loadu_si128((const __m128i *)(p0 + i)), b1 = _mm_loadu_si128((const __m128i *)(p1 + i));
        __m128i b2 = _mm_loadu_si128((const __m128i *)(p2 + i)), b3 = _mm_loadu_si128((const __m128i *)(p3 + i));
        __m128i t0 = _mm_unpacklo_epi8(b0, b1), t1 = _mm_unpackhi_epi8(b0, b1);
        __m128i t2 = _mm_unpacklo_epi8(b2, b3), t3 = _mm_unpackhi_epi8(b2, b3);
        _mm_storeu_si128((__m128i *)(dst + 4 * i), _mm_unpacklo_epi16(t0, t2));
        _mm_storeu_si128((__m128i *)(dst + 4 * i + 16), _mm_unpackhi_epi16(t0, t2));
        _mm_storeu_si128((__m128i *)(dst + 4 * i + 32), _mm_unpacklo_epi16(t1, t3));
        _mm_storeu_si128((__m128i *)(dst + 4 * i + 48), _mm_unpackhi_epi16(t1, t3));
    }
#endif
    for (; i < nv; i++) {
        dst[4 * i + 0] = p0[i];
        dst[4 * i + 1] = p1[i];
        dst[4 * i + 2] = p2[i];
        dst[4 * i + 3] = p3[i];
    }
}

/* IEEE half -> float for all 65536 bit patterns (built once, 256 KiB). */
static const float *half_table(void) {
    static float *tab;
    if (tab) return tab;
    float *t = malloc(65536 * sizeof *t);
    if (!t) return NULL;
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, f;
        if (e == 0 && m == 0) f = sign;
        else if (e == 0) { /* subnormal: normalise */
            int k = -1;
            do {
                k++;
                m <<= 1;
            } while (!(m & 0x400));
            f = sign | (uint32_t)(127 - 15 - k) << 23 | (m & 0x3ff) << 13;
        } else if (e == 31) f = sign | 0x7f800000u | m << 13;
        else f = sign | (e + 112) << 23 | m << 13;
        memcpy(&t[h], &f, sizeof f);
    }
    tab = t;
    return tab;
}

/* 1 when any of n floats is NaN or Inf (exponent bits all set) */
static int any_nonfinite(const float *x, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return bad;
}

/* Decodes one raw chunk (filter mask fmask, len bytes at src) of rows rows
 * and returns its floats: dst (rows × N floats) when anything had to be
 * undone, src itself when the chunk is stored as plain float32 (no copy); tmp
 * holds chunk_bytes. NULL when corrupt. */
static const float *decode_chunk(const kv_prompt *p, const unsigned char *src, size_t len, uint32_t fmask,
                                 struct libdeflate_decompressor *dz, unsigned char *tmp, size_t chunk_bytes,
                                 size_t rows, float *dst) {
    size_t N = (size_t)p->n_tokens, cr = (size_t)p->attn_chunk_rows, nv = rows * N;
    if (len == 0) { /* unallocated chunk: fill value 0 */
        memset(dst, 0, nv * sizeof *dst);
        return dst;
    }
    if (p->attn_deflate_idx >= 0 && !(fmask & (1u << p->attn_deflate_idx))) {
        /* HDF5's deflate filter writes zlib streams; libdeflate inflates them
         * about twice as fast as zlib */
        size_t dl = 0;
        if (libdeflate_zlib_decompress(dz, src, len, tmp, chunk_bytes, &dl) != LIBDEFLATE_SUCCESS ||
            dl != chunk_bytes)
            return NULL;
        src = tmp;
        len = dl;
    }
    if (len != chunk_bytes) return NULL;
    int shuffled = p->attn_shuffle_idx >= 0 && !(fmask & (1u << p->attn_shuffle_idx));
    if (p->attn_elem == 2) { /* float16 -> float32 through a table */
        const float *h2f = half_table();
        size_t ne = cr * N;
        if (shuffled)
            for (size_t i = 0; i < nv; i++) dst[i] = h2f[src[i] | (unsigned)src[ne + i] << 8];
        else
            for (size_t i = 0; i < nv; i++) dst[i] = h2f[src[2 * i] | (unsigned)src[2 * i + 1] << 8];
    } else if (shuffled)
        unshuffle4((unsigned char *)dst, src, cr * N, nv);
    else if (src == tmp || ((uintptr_t)src & (_Alignof(float) - 1)))
        memcpy(dst, src, nv * sizeof *dst);
    else
        return (const float *)src; /* plain float32 in the raw buffer */
    return dst;
}

/* Buffers of kv_prompt_scan_attn, kept with the prompt between calls: in a
 * VM, first touches of fresh pages cost more than the reads themselves. */
struct kv_scan_scratch {
    unsigned char *raw; /* a batch of stored chunks */
    size_t raw_cap;
    int threads, nh;
    size_t chunk_bytes, block_floats;
    unsigned char **tmp;                   /* [threads] one inflated chunk */
    float **blk;                           /* [threads] nh decoded row blocks */
    const float ***rows;                   /* [threads] nh row pointers */
    struct libdeflate_decompressor **dz;   /* [threads] */
};

void kv_scan_scratch_free(struct kv_scan_scratch *s) {
    if (!s) return;
    for (int i = 0; i < s->threads; i++) {
        if (s->tmp) free(s->tmp[i]);
        if (s->blk) free(s->blk[i]);
        if (s->rows) free((void *)s->rows[i]);
        if (s->dz && s->dz[i]) libdeflate_free_decompressor(s->dz[i]);
    }
    free(s->tmp);
    free(s->blk);
    free((void *)s->rows);
    free(s->dz);
    free(s->raw);
    free(s);
}

/* The prompt's scratch, (re)built when threads or sizes grew; NULL when out of memory. */
static struct kv_scan_scratch *scratch_get(const kv_prompt *p, int threads, int nh, size_t chunk_bytes,
                                           size_t block_floats) {
    struct kv_scan_scratch *s = p->scratch;
    if (s && s->threads >= threads && s->nh >= nh && s->chunk_bytes >= chunk_bytes && s->block_floats >= block_floats)
        return s;
    kv_scan_scratch_free(s);
    ((kv_prompt *)p)->scratch = NULL; /* the buffers are a cache: mutable behind a const prompt */
    s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->threads = threads;
    s->nh = nh;
    s->chunk_bytes = chunk_bytes;
    s->block_floats = block_floats;
    s->tmp = calloc((size_t)threads, sizeof *s->tmp);
    s->blk = calloc((size_t)threads, sizeof *s->blk);
    s->rows = calloc((size_t)threads, sizeof *s->rows);
    s->dz = calloc((size_t)threads, sizeof *s->dz);
    int ok = s->tmp && s->blk && s->rows && s->dz;
    for (int i = 0; ok && i < threads; i++)
        ok = (s->tmp[i] = malloc(chunk_bytes)) && (s->blk[i] = malloc(block_floats * sizeof(float))) &&
             (s->rows[i] = malloc((size_t)nh * sizeof(float *))) && (s->dz[i] = libdeflate_alloc_decompressor());
    if (!ok) {
        kv_scan_scratch_free(s);
        return NULL;
    }
    ((kv_prompt *)p)->scratch = s;
    return s;
}

enum { SCAN_OK, SCAN_NOMEM, SCAN_CORRUPT, SCAN_NONFINITE };

static int scan_fail(int bad, int li, int head, const char *where, kv_error *err) {
    if (bad == SCAN_CORRUPT)
        return kv_fail(err, "%s: dataset 'attn' has a corrupt chunk (traced layer %d, head %d)", where, li, head);
    if (bad == SCAN_NONFINITE)
        return kv_fail(err, "%s: dataset 'attn' has a non-finite value (NaN or Inf) in traced layer %d, head %d",
                       where, li, head);
    return kv_fail(err, "out of memory");
}

/* Automatic batches of stored chunks: at most this much uncompressed data,
 * unless keeping every thread busy takes more. */
#define KV_SCAN_BATCH_BYTES ((size_t)256 << 20)

int kv_prompt_scan_batch_chunks(const kv_prompt *p, int nh) {
    size_t N = (size_t)p->n_tokens, cr = p->attn_fast ? (size_t)p->attn_chunk_rows : 64;
    size_t elem = p->attn_fast ? (size_t)p->attn_elem : 4, per = (size_t)nh * cr * N * elem;
    size_t nchunk = (N + cr - 1) / cr, b = KV_SCAN_BATCH_BYTES / (per ? per : 1);
    size_t least = 4 * (size_t)omp_get_max_threads();
    if (b < least) b = least;
    if (p->scan_batch_chunks > 0) b = (size_t)p->scan_batch_chunks;
    return (int)(b < nchunk ? b : nchunk);
}

/* Chunks of whole rows with shuffle/deflate only: one thread reads a batch of
 * raw chunks of all nh heads with H5Dread_chunk (HDF5 is not thread-safe),
 * then every thread takes one row block at a time, decodes it for each head
 * into its own buffer and hands it to fn while it is still in cache. */
static int scan_attn_fast(const kv_prompt *p, int li, int h0, int nh, kv_attn_block_fn fn, void *ctx,
                          const char *where, kv_error *err) {
    size_t N = (size_t)p->n_tokens, cr = (size_t)p->attn_chunk_rows;
    int nchunk = (int)((N + cr - 1) / cr), batch = kv_prompt_scan_batch_chunks(p, nh), nall = nh * batch;
    size_t chunk_bytes = cr * N * (size_t)p->attn_elem;
    if (p->attn_elem == 2 && !half_table()) return kv_fail(err, "out of memory");
    struct kv_scan_scratch *sc = scratch_get(p, omp_get_max_threads(), nh, chunk_bytes, (size_t)nh * cr * N);
    hsize_t *len = calloc((size_t)nall, sizeof *len);
    size_t *pos = calloc((size_t)nall, sizeof *pos);
    uint32_t *fmask = calloc((size_t)nall, sizeof *fmask);
    int rc = 0, bad = SCAN_OK, bad_head = -1;
    if (!sc || !len || !pos || !fmask) rc = kv_fail(err, "out of memory");
    for (int c0 = 0; !rc && !bad && c0 < nchunk; c0 += batch) {
        int nb = nchunk - c0 < batch ? nchunk - c0 : batch;
        size_t total = 0;
        for (int k = 0; k < nh * nb; k++) { /* k = q * nb + (c - c0) */
            hsize_t off[4] = {(hsize_t)li, (hsize_t)(h0 + k / nb), (hsize_t)(c0 + k % nb) * cr, 0};
            if (H5Dget_chunk_storage_size(p->d_attn, off, &len[k]) < 0) len[k] = 0;
            pos[k] = total;
            total += (len[k] + 63) & ~(hsize_t)63; /* aligned, for reading floats in place */
        }
        if (total > sc->raw_cap) {
            free(sc->raw);
            sc->raw_cap = 0;
            if (!(sc->raw = malloc(total))) {
                rc = kv_fail(err, "out of memory");
                break;
            }
            sc->raw_cap = total;
        }
        unsigned char *raw = sc->raw;
        for (int k = 0; !rc && k < nh * nb; k++) {
            hsize_t off[4] = {(hsize_t)li, (hsize_t)(h0 + k / nb), (hsize_t)(c0 + k % nb) * cr, 0};
            if (len[k] && H5Dread_chunk(p->d_attn, H5P_DEFAULT, off, &fmask[k], raw + pos[k]) < 0)
                rc = kv_fail(err, "%s: cannot read a chunk of dataset 'attn'", where);
        }
        if (rc) break;
#pragma omp parallel
        {
            int tid = omp_get_thread_num();
            unsigned char *tmp = sc->tmp[tid];
            float *blk = sc->blk[tid];
            const float **rows = sc->rows[tid];
#pragma omp for schedule(dynamic, 1)
            for (int c = c0; c < c0 + nb; c++) {
                int stop;
#pragma omp atomic read
                stop = bad;
                if (stop) continue;
                size_t nr = N - (size_t)c * cr < cr ? N - (size_t)c * cr : cr;
                int fault = SCAN_OK, q = 0;
                for (; q < nh && !fault; q++) {
                    int k = q * nb + (c - c0);
                    rows[q] = decode_chunk(p, raw + pos[k], len[k], fmask[k], sc->dz[tid], tmp, chunk_bytes, nr,
                                           blk + (size_t)q * cr * N);
                    if (!rows[q]) fault = SCAN_CORRUPT;
                    else if (any_nonfinite(rows[q], nr * N)) fault = SCAN_NONFINITE;
                }
                if (fault) {
#pragma omp critical(kv_scan_fault)
                    if (!bad) bad = fault, bad_head = h0 + q - 1;
                    continue;
                }
                fn(ctx, tid, c * (int)cr, (int)nr, rows);
            }
        }
    }
    free(len);
    free(pos);
    free(fmask);
    if (!rc && bad) rc = scan_fail(bad, li, bad_head, where, err);
    return rc;
}

/* Any other layout: HDF5 reads blocks of rows (a memory space of the same
 * shape as the selection), whose rows are then spread over threads. */
static int scan_attn_plain(const kv_prompt *p, int li, int h0, int nh, kv_attn_block_fn fn, void *ctx,
                           const char *where, kv_error *err) {
    int N = p->n_tokens, B = 64;
    float *blk = kv_malloc((size_t)nh * B * N * sizeof *blk, err);
    if (!blk) return -1;
    int rc = 0;
    for (int row0 = 0; !rc && row0 < N; row0 += B) {
        int nr = N - row0 < B ? N - row0 : B;
        hsize_t start[4] = {(hsize_t)li, (hsize_t)h0, (hsize_t)row0, 0}, count[4] = {1, (hsize_t)nh, (hsize_t)nr, (hsize_t)N};
        hid_t fs = H5Dget_space(p->d_attn), ms = H5Screate_simple(4, count, NULL);
        if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
            H5Dread(p->d_attn, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, blk) < 0)
            rc = kv_fail(err, "%s: cannot read dataset 'attn'", where);
        H5Sclose(ms);
        H5Sclose(fs);
        for (int q = 0; !rc && q < nh; q++)
            if (any_nonfinite(blk + (size_t)q * nr * N, (size_t)nr * N))
                rc = scan_fail(SCAN_NONFINITE, li, h0 + q, where, err);
        if (rc) break;
        int nomem = 0;
#pragma omp parallel reduction(| : nomem)
        {
            const float **rows = malloc((size_t)nh * sizeof *rows);
            int tid = omp_get_thread_num();
            nomem = !rows;
#pragma omp for schedule(dynamic, 1)
            for (int r = 0; r < nr; r += 8) {
                if (!rows) continue;
                for (int q = 0; q < nh; q++) rows[q] = blk + ((size_t)q * nr + r) * N;
                fn(ctx, tid, row0 + r, nr - r < 8 ? nr - r : 8, rows);
            }
            free((void *)rows);
        }
        if (nomem) rc = kv_fail(err, "out of memory");
    }
    free(blk);
    return rc;
}

int kv_prompt_scan_attn(const kv_prompt *p, int li, int h0, int nh, kv_attn_block_fn fn, void *ctx, kv_error *err) {
    char where[1200];
    snprintf(where, sizeof where, "%s: /prompts/%s", p->trace->path, p->id);
    if (!p->has_attn) return kv_fail(err, "%s: no dataset 'attn' (traced without --full-maps)", where);
    return p->attn_fast ? scan_attn_fast(p, li, h0, nh, fn, ctx, where, err)
                        : scan_attn_plain(p, li, h0, nh, fn, ctx, where, err);
}
