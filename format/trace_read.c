#include "common/trace_read.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <math.h>
#include <libdeflate.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

static char *dupstr(const char *s, kv_error *err) {
    size_t n = strlen(s);
    char *c = kv_malloc(n + 1, err);
    if (c) memcpy(c, s, n + 1);
    return c;
}

char *kv_h5_read_string_attr(hid_t obj, const char *name, const char *where, kv_error *err) {
    if (H5Aexists(obj, name) <= 0) {
        kv_fail(err, "%s: missing string attribute '%s'", where, name);
        return NULL;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = a < 0 ? -1 : H5Aget_type(a);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    hid_t mt = -1;
    char *out = NULL;
    if (a < 0 || ft < 0 || sp < 0) {
        kv_fail(err, "%s: cannot open attribute '%s'", where, name);
        goto done;
    }
    if (H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        kv_fail(err, "%s: attribute '%s' is not a single string", where, name);
        goto done;
    }
    if (H5Tis_variable_str(ft) > 0) {
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        char *s = NULL;
        if (H5Aread(a, mt, &s) < 0) {
            kv_fail(err, "%s: cannot read string attribute '%s'", where, name);
            goto done;
        }
        out = dupstr(s ? s : "", err);
        if (s) H5free_memory(s);
    } else {
        size_t n = H5Tget_size(ft);
        mt = H5Tcopy(ft);
        out = kv_calloc(n + 1, 1, err);
        if (out && H5Aread(a, mt, out) < 0) {
            free(out);
            out = NULL;
            kv_fail(err, "%s: cannot read string attribute '%s'", where, name);
        }
    }
done:
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    return out;
}

/* Reads a scalar numeric attribute as int; -1 with err when missing. */
static int read_int_attr(hid_t obj, const char *name, const char *where, int *v, kv_error *err) {
    if (H5Aexists(obj, name) <= 0) return kv_fail(err, "%s: missing attribute '%s'", where, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    int rc = 0;
    if (H5Tget_class(ft) != H5T_INTEGER || H5Sget_simple_extent_npoints(sp) != 1)
        rc = kv_fail(err, "%s: attribute '%s' is not an integer", where, name);
    else if (H5Aread(a, H5T_NATIVE_INT, v) < 0)
        rc = kv_fail(err, "%s: cannot read attribute '%s'", where, name);
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

/* Opens dataset name in grp and checks its type class and shape; dims[k] < 0
 * means "any" and is filled in. Returns the dataset id or -1. */
static hid_t open_dataset(hid_t grp, const char *name, const char *where, H5T_class_t cls,
                          int rank, long long *dims, kv_error *err) {
    if (H5Lexists(grp, name, H5P_DEFAULT) <= 0) {
        kv_fail(err, "%s: missing dataset '%s'", where, name);
        return -1;
    }
    hid_t d = H5Dopen2(grp, name, H5P_DEFAULT);
    if (d < 0) {
        kv_fail(err, "%s: '%s' is not a dataset", where, name);
        return -1;
    }
    hid_t ft = H5Dget_type(d), sp = H5Dget_space(d);
    H5T_class_t c = H5Tget_class(ft);
    int r = H5Sget_simple_extent_ndims(sp);
    hsize_t sh[8] = {0};
    int ok = 1;
    if (c != cls) {
        kv_fail(err, "%s: dataset '%s' has the wrong type (expected %s)", where, name,
                cls == H5T_FLOAT ? "float" : cls == H5T_INTEGER ? "integer" : "string");
        ok = 0;
    } else if (r != rank) {
        kv_fail(err, "%s: dataset '%s' has rank %d, expected %d", where, name, r, rank);
        ok = 0;
    } else {
        H5Sget_simple_extent_dims(sp, sh, NULL);
        for (int k = 0; k < rank; k++) {
            if (dims[k] >= 0 && (long long)sh[k] != dims[k]) {
                char got[160] = "", want[160] = "";
                for (int q = 0; q < rank; q++) {
                    size_t gl = strlen(got), wl = strlen(want);
                    snprintf(got + gl, sizeof got - gl, "%s%llu", q ? "," : "", (unsigned long long)sh[q]);
                    if (dims[q] >= 0)
                        snprintf(want + wl, sizeof want - wl, "%s%lld", q ? "," : "", dims[q]);
                    else
                        snprintf(want + wl, sizeof want - wl, "%s*", q ? "," : "");
                }
                kv_fail(err, "%s: dataset '%s' has shape [%s], expected [%s]", where, name, got, want);
                ok = 0;
                break;
            }
        }
        if (ok)
            for (int k = 0; k < rank; k++) dims[k] = (long long)sh[k];
    }
    H5Tclose(ft);
    H5Sclose(sp);
    if (!ok) {
        H5Dclose(d);
        return -1;
    }
    return d;
}

/* Reads the hyperslab [start, start+count) of a float dataset into out with
 * a memory space of the same shape, then checks that every value is finite. */
static int read_slab(hid_t d, int rank, const hsize_t *start, const hsize_t *count, float *out,
                     const char *where, const char *name, kv_error *err) {
    hid_t fs = H5Dget_space(d);
    hid_t ms = H5Screate_simple(rank, count, NULL);
    int rc = 0;
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out) < 0)
        rc = kv_fail(err, "%s: cannot read dataset '%s'", where, name);
    H5Sclose(ms);
    H5Sclose(fs);
    if (rc) return rc;
    size_t n = 1;
    for (int k = 0; k < rank; k++) n *= count[k];
    for (size_t i = 0; i < n; i++)
        if (!isfinite(out[i]))
            return kv_fail(err, "%s: dataset '%s' has a non-finite value (NaN or Inf) in traced layer %llu",
                           where, name, (unsigned long long)start[0]);
    return 0;
}

/* --------------------------------------------------------------- trace */

typedef struct {
    char **names;
    int n, cap;
} name_list;

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)g;
    (void)info;
    name_list *l = op;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **nn = realloc(l->names, (size_t)cap * sizeof *nn);
        if (!nn) return -1;
        l->names = nn;
        l->cap = cap;
    }
    l->names[l->n] = strdup(name);
    if (!l->names[l->n]) return -1;
    l->n++;
    return 0;
}

typedef struct {
    int index;
    char *name;
} idx_name;

static int cmp_idx(const void *a, const void *b) {
    const idx_name *x = a, *y = b;
    if (x->index != y->index) return x->index < y->index ? -1 : 1;
    return strcmp(x->name, y->name);
}

void kv_trace_close(kv_trace *t) {
    if (!t) return;
    if (t->file >= 0) H5Fclose(t->file);
    free(t->path);
    free(t->model);
    free(t->config_json);
    free(t->created_by);
    free(t->architecture);
    free(t->layers);
    if (t->prompt_ids)
        for (int i = 0; i < t->n_prompts; i++) free(t->prompt_ids[i]);
    free(t->prompt_ids);
    free(t);
}

kv_trace *kv_trace_open(const char *path, kv_error *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        kv_fail(err, "%s: cannot open file", path);
        return NULL;
    }
    fclose(fp);
    if (H5Fis_hdf5(path) <= 0) {
        kv_fail(err, "%s: not an HDF5 file (not a kvtrace trace)", path);
        return NULL;
    }
    kv_trace *t = kv_calloc(1, sizeof *t, err);
    if (!t) return NULL;
    t->file = -1;
    t->path = dupstr(path, err);
    if (!t->path) goto fail;
    t->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (t->file < 0) {
        kv_fail(err, "%s: cannot open as HDF5", path);
        goto fail;
    }
    hid_t f = t->file;
    if (H5Aexists(f, "format") <= 0) {
        kv_fail(err, "%s: not a kvtrace trace (no 'format' attribute)", path);
        goto fail;
    }
    char *fmt = kv_h5_read_string_attr(f, "format", path, err);
    if (!fmt) goto fail;
    int is_kv = !strcmp(fmt, KV_TRACE_FORMAT);
    if (!is_kv) kv_fail(err, "%s: not a kvtrace trace (format is '%s')", path, fmt);
    free(fmt);
    if (!is_kv) goto fail;
    int ver = 0;
    if (read_int_attr(f, "format_version", path, &ver, err)) goto fail;
    if (ver != KV_TRACE_FORMAT_VERSION) {
        kv_fail(err, "%s: unsupported format_version %d (this reader reads version %d)", path, ver,
                KV_TRACE_FORMAT_VERSION);
        goto fail;
    }
    if (!(t->model = kv_h5_read_string_attr(f, "model", path, err))) goto fail;
    t->config_json = H5Aexists(f, "config_json") > 0 ? kv_h5_read_string_attr(f, "config_json", path, err)
                                                     : dupstr("", err);
    if (!t->config_json) goto fail;
    t->created_by = H5Aexists(f, "created_by") > 0 ? kv_h5_read_string_attr(f, "created_by", path, err)
                                                   : dupstr("", err);
    if (!t->created_by) goto fail;
    if (read_int_attr(f, "window", path, &t->window, err)) goto fail;
    if (read_int_attr(f, "full_maps", path, &t->full_maps, err)) goto fail;
    if (t->window < 1) {
        kv_fail(err, "%s: attribute 'window' is %d, must be at least 1", path, t->window);
        goto fail;
    }

    /* /model */
    char where[1200];
    snprintf(where, sizeof where, "%s: /model", path);
    if (H5Lexists(f, "model", H5P_DEFAULT) <= 0) {
        kv_fail(err, "%s: missing group /model", path);
        goto fail;
    }
    hid_t m = H5Gopen2(f, "model", H5P_DEFAULT);
    if (m < 0) {
        kv_fail(err, "%s: /model is not a group", path);
        goto fail;
    }
    int rc = read_int_attr(m, "n_layers", where, &t->n_layers, err) ||
             read_int_attr(m, "n_heads", where, &t->n_heads, err) ||
             read_int_attr(m, "n_kv_heads", where, &t->n_kv_heads, err) ||
             read_int_attr(m, "head_dim", where, &t->head_dim, err) ||
             read_int_attr(m, "hidden_size", where, &t->hidden_size, err) ||
             read_int_attr(m, "vocab_size", where, &t->vocab_size, err);
    if (!rc) {
        t->architecture = H5Aexists(m, "architecture") > 0 ? kv_h5_read_string_attr(m, "architecture", where, err)
                                                           : dupstr("", err);
        if (!t->architecture) rc = -1;
    }
    if (!rc && (t->n_layers < 1 || t->n_heads < 1 || t->n_kv_heads < 1 || t->head_dim < 1 ||
                t->hidden_size < 1 || t->n_heads % t->n_kv_heads)) {
        rc = kv_fail(err, "%s: inconsistent model attributes (n_layers %d, n_heads %d, n_kv_heads %d, head_dim %d, hidden_size %d)",
                     where, t->n_layers, t->n_heads, t->n_kv_heads, t->head_dim, t->hidden_size);
    }
    if (!rc) {
        long long dl[1] = {-1};
        hid_t d = open_dataset(m, "layers", where, H5T_INTEGER, 1, dl, err);
        if (d < 0) rc = -1;
        else {
            t->L = (int)dl[0];
            t->layers = kv_calloc((size_t)(t->L ? t->L : 1), sizeof(int), err);
            if (!t->layers || t->L < 1) rc = t->layers ? kv_fail(err, "%s: 'layers' is empty", where) : -1;
            else if (H5Dread(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t->layers) < 0)
                rc = kv_fail(err, "%s: cannot read 'layers'", where);
            for (int i = 0; !rc && i < t->L; i++)
                if (t->layers[i] < 0 || t->layers[i] >= t->n_layers || (i && t->layers[i] <= t->layers[i - 1]))
                    rc = kv_fail(err, "%s: 'layers' must be ascending indices in [0, %d)", where, t->n_layers);
            H5Dclose(d);
        }
    }
    if (!rc) {
        long long dw[3] = {t->L, t->hidden_size, (long long)t->n_heads * t->head_dim};
        hid_t d = open_dataset(m, "wo", where, H5T_FLOAT, 3, dw, err);
        if (d < 0) rc = -1;
        else H5Dclose(d);
    }
    H5Gclose(m);
    if (rc) goto fail;

    /* /prompts */
    if (H5Lexists(f, "prompts", H5P_DEFAULT) <= 0) {
        kv_fail(err, "%s: missing group /prompts", path);
        goto fail;
    }
    hid_t pg = H5Gopen2(f, "prompts", H5P_DEFAULT);
    if (pg < 0) {
        kv_fail(err, "%s: /prompts is not a group", path);
        goto fail;
    }
    name_list nl = {0};
    hsize_t idx = 0;
    if (H5Literate(pg, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, &nl) < 0) {
        H5Gclose(pg);
        for (int i = 0; i < nl.n; i++) free(nl.names[i]);
        free(nl.names);
        kv_fail(err, "%s: cannot list /prompts", path);
        goto fail;
    }
    idx_name *in = calloc((size_t)nl.n + 1, sizeof *in);
    rc = in ? 0 : kv_fail(err, "out of memory");
    for (int i = 0; !rc && i < nl.n; i++) {
        in[i].name = nl.names[i];
        if (!kv_prompt_id_valid(nl.names[i])) {
            rc = kv_fail(err, "%s: invalid prompt id '%s'", path, nl.names[i]);
            break;
        }
        hid_t g = H5Gopen2(pg, nl.names[i], H5P_DEFAULT);
        if (g < 0) {
            rc = kv_fail(err, "%s: /prompts/%s is not a group", path, nl.names[i]);
            break;
        }
        snprintf(where, sizeof where, "%s: /prompts/%s", path, nl.names[i]);
        rc = read_int_attr(g, "index", where, &in[i].index, err);
        H5Gclose(g);
    }
    H5Gclose(pg);
    if (!rc && nl.n == 0) rc = kv_fail(err, "%s: the trace has no prompts", path);
    if (rc) {
        for (int i = 0; i < nl.n; i++) free(nl.names[i]);
        free(nl.names);
        free(in);
        goto fail;
    }
    qsort(in, (size_t)nl.n, sizeof *in, cmp_idx);
    for (int i = 0; i < nl.n; i++) nl.names[i] = in[i].name;
    free(in);
    t->prompt_ids = nl.names;
    t->n_prompts = nl.n;
    return t;
fail:
    kv_trace_close(t);
    return NULL;
}

int kv_trace_find_prompt(const kv_trace *t, const char *id) {
    for (int i = 0; i < t->n_prompts; i++)
        if (!strcmp(t->prompt_ids[i], id)) return i;
    return -1;
}

int kv_trace_read_wo(const kv_trace *t, int li, float *out, kv_error *err) {
    char where[1100];
    snprintf(where, sizeof where, "%s: /model", t->path);
    hid_t d = H5Dopen2(t->file, "model/wo", H5P_DEFAULT);
    if (d < 0) return kv_fail(err, "%s: cannot open 'wo'", where);
    hsize_t start[3] = {(hsize_t)li, 0, 0};
    hsize_t count[3] = {1, (hsize_t)t->hidden_size, (hsize_t)t->n_heads * t->head_dim};
    int rc = read_slab(d, 3, start, count, out, where, "wo", err);
    H5Dclose(d);
    return rc;
}


/* ------------------------------------------------------ fast attn reads */

static void detect_fast_attn(kv_prompt *p) {
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

static void scratch_free(struct kv_scan_scratch *s) {
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
    scratch_free(s);
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
        scratch_free(s);
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

typedef struct {
    float *out; /* [nh, N, N] */
    size_t N;
    int nh;
} copy_ctx;

static void copy_block(void *ctx, int thread, int row0, int nrows, const float *const *rows) {
    (void)thread;
    copy_ctx *c = ctx;
    for (int q = 0; q < c->nh; q++)
        memcpy(c->out + ((size_t)q * c->N + (size_t)row0) * c->N, rows[q], (size_t)nrows * c->N * sizeof(float));
}

/* --------------------------------------------------------------- prompt */

void kv_prompt_close(kv_prompt *p) {
    if (!p) return;
    if (p->d_attn >= 0) H5Dclose(p->d_attn);
    if (p->d_colsum >= 0) H5Dclose(p->d_colsum);
    if (p->d_window >= 0) H5Dclose(p->d_window);
    if (p->d_values >= 0) H5Dclose(p->d_values);
    if (p->group >= 0) H5Gclose(p->group);
    free(p->flags);
    scratch_free(p->scratch);
    free(p);
}

kv_prompt *kv_prompt_open(const kv_trace *t, const char *id, kv_error *err) {
    if (kv_trace_find_prompt(t, id) < 0) {
        kv_fail(err, "%s: no prompt with id '%s'", t->path, id);
        return NULL;
    }
    kv_prompt *p = kv_calloc(1, sizeof *p, err);
    if (!p) return NULL;
    p->trace = t;
    p->group = p->d_attn = p->d_colsum = p->d_window = p->d_values = -1;
    snprintf(p->id, sizeof p->id, "%s", id);
    char gname[KV_PROMPT_ID_MAX + 16], where[1200];
    snprintf(gname, sizeof gname, "prompts/%s", id);
    snprintf(where, sizeof where, "%s: /prompts/%s", t->path, id);
    p->group = H5Gopen2(t->file, gname, H5P_DEFAULT);
    if (p->group < 0) {
        kv_fail(err, "%s: cannot open group", where);
        goto fail;
    }
    if (read_int_attr(p->group, "n_tokens", where, &p->n_tokens, err)) goto fail;
    if (read_int_attr(p->group, "index", where, &p->index, err)) goto fail;
    long long N = p->n_tokens;
    if (N < 1) {
        kv_fail(err, "%s: n_tokens is %lld", where, N);
        goto fail;
    }
    long long L = t->L, H = t->n_heads, KVH = t->n_kv_heads, hd = t->head_dim;

    long long df[1] = {N};
    hid_t d = open_dataset(p->group, "flags", where, H5T_INTEGER, 1, df, err);
    if (d < 0) goto fail;
    p->flags = kv_malloc((size_t)N, err);
    if (!p->flags || H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, p->flags) < 0) {
        H5Dclose(d);
        if (p->flags) kv_fail(err, "%s: cannot read 'flags'", where);
        goto fail;
    }
    H5Dclose(d);
    if (H5Lexists(p->group, "tokens", H5P_DEFAULT) > 0) {
        long long dt[1] = {N};
        d = open_dataset(p->group, "tokens", where, H5T_INTEGER, 1, dt, err);
        if (d < 0) goto fail;
        H5Dclose(d);
    }
    if (H5Lexists(p->group, "pieces", H5P_DEFAULT) > 0) {
        long long dp[1] = {N};
        d = open_dataset(p->group, "pieces", where, H5T_STRING, 1, dp, err);
        if (d < 0) goto fail;
        H5Dclose(d);
        p->has_pieces = 1;
    }

    long long dc[3] = {L, H, N};
    if ((p->d_colsum = open_dataset(p->group, "colsum", where, H5T_FLOAT, 3, dc, err)) < 0) goto fail;
    long long Wp = t->window < N ? t->window : N;
    long long dw[4] = {L, H, Wp, N};
    if ((p->d_window = open_dataset(p->group, "window", where, H5T_FLOAT, 4, dw, err)) < 0) goto fail;
    p->window_rows = (int)Wp;
    if (H5Lexists(p->group, "attn", H5P_DEFAULT) > 0) {
        long long da[4] = {L, H, N, N};
        if ((p->d_attn = open_dataset(p->group, "attn", where, H5T_FLOAT, 4, da, err)) < 0) goto fail;
        p->has_attn = 1;
        detect_fast_attn(p);
    } else if (t->full_maps) {
        kv_fail(err, "%s: missing dataset 'attn' (the file says full_maps = 1)", where);
        goto fail;
    }
    if (H5Lexists(p->group, "values", H5P_DEFAULT) > 0) {
        long long dv[4] = {L, KVH, N, hd};
        if ((p->d_values = open_dataset(p->group, "values", where, H5T_FLOAT, 4, dv, err)) < 0) goto fail;
        p->has_values = 1;
    }
    return p;
fail:
    kv_prompt_close(p);
    return NULL;
}

static void pwhere(const kv_prompt *p, char *buf, size_t n) {
    snprintf(buf, n, "%s: /prompts/%s", p->trace->path, p->id);
}

int kv_prompt_read_attn(const kv_prompt *p, int li, int h0, int nh, float *out, kv_error *err) {
    copy_ctx c = {out, (size_t)p->n_tokens, nh};
    return kv_prompt_scan_attn(p, li, h0, nh, copy_block, &c, err);
}

int kv_prompt_read_window(const kv_prompt *p, int li, float *out, kv_error *err) {
    char where[1200];
    pwhere(p, where, sizeof where);
    hsize_t start[4] = {(hsize_t)li, 0, 0, 0};
    hsize_t count[4] = {1, (hsize_t)p->trace->n_heads, (hsize_t)p->window_rows, (hsize_t)p->n_tokens};
    return read_slab(p->d_window, 4, start, count, out, where, "window", err);
}

int kv_prompt_read_colsum(const kv_prompt *p, int li, float *out, kv_error *err) {
    char where[1200];
    pwhere(p, where, sizeof where);
    hsize_t start[3] = {(hsize_t)li, 0, 0};
    hsize_t count[3] = {1, (hsize_t)p->trace->n_heads, (hsize_t)p->n_tokens};
    return read_slab(p->d_colsum, 3, start, count, out, where, "colsum", err);
}

int kv_prompt_read_values(const kv_prompt *p, int li, float *out, kv_error *err) {
    char where[1200];
    pwhere(p, where, sizeof where);
    if (!p->has_values) return kv_fail(err, "%s: missing dataset 'values'", where);
    hsize_t start[4] = {(hsize_t)li, 0, 0, 0};
    hsize_t count[4] = {1, (hsize_t)p->trace->n_kv_heads, (hsize_t)p->n_tokens, (hsize_t)p->trace->head_dim};
    return read_slab(p->d_values, 4, start, count, out, where, "values", err);
}

int kv_prompt_read_tokens(const kv_prompt *p, int32_t *out, kv_error *err) {
    char where[1200];
    pwhere(p, where, sizeof where);
    if (H5Lexists(p->group, "tokens", H5P_DEFAULT) <= 0) return kv_fail(err, "%s: missing dataset 'tokens'", where);
    hid_t d = H5Dopen2(p->group, "tokens", H5P_DEFAULT);
    int rc = 0;
    if (d < 0 || H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        rc = kv_fail(err, "%s: cannot read 'tokens'", where);
    if (d >= 0) H5Dclose(d);
    return rc;
}

void kv_strings_free(char **s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

char **kv_prompt_read_pieces(const kv_prompt *p, kv_error *err) {
    int N = p->n_tokens;
    char where[1200];
    pwhere(p, where, sizeof where);
    char **out = kv_calloc((size_t)N, sizeof *out, err);
    if (!out) return NULL;
    if (!p->has_pieces) {
        for (int i = 0; i < N; i++)
            if (!(out[i] = dupstr("", err))) {
                kv_strings_free(out, N);
                return NULL;
            }
        return out;
    }
    hid_t d = H5Dopen2(p->group, "pieces", H5P_DEFAULT);
    hid_t ft = H5Dget_type(d);
    int rc = 0;
    if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        char **raw = kv_calloc((size_t)N, sizeof *raw, err);
        int got = 0;
        if (!raw) rc = -1;
        else if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)
            rc = kv_fail(err, "%s: cannot read 'pieces'", where);
        else got = 1;
        for (int i = 0; !rc && i < N; i++)
            if (!(out[i] = dupstr(raw[i] ? raw[i] : "", err))) rc = -1;
        if (got) {
            hid_t sp = H5Dget_space(d);
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, raw);
            H5Sclose(sp);
        }
        free(raw);
        H5Tclose(mt);
    } else {
        size_t sz = H5Tget_size(ft);
        char *buf = kv_calloc((size_t)N, sz, err);
        if (!buf || H5Dread(d, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
            rc = buf ? kv_fail(err, "%s: cannot read 'pieces'", where) : -1;
        for (int i = 0; !rc && i < N; i++) {
            out[i] = kv_calloc(sz + 1, 1, err);
            if (!out[i]) rc = -1;
            else memcpy(out[i], buf + (size_t)i * sz, sz);
        }
        free(buf);
    }
    H5Tclose(ft);
    H5Dclose(d);
    if (rc) {
        kv_strings_free(out, N);
        return NULL;
    }
    return out;
}
