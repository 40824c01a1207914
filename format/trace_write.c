#include "common/trace_write.h"

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <libdeflate.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/fileio.h"
#include "common/trace.h"

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
    hid_t f16;                 /* IEEE half type */
    hid_t mfile;               /* model.h5.tmp while open, else -1 */
    done_prompt *done;         /* completed prompts, in index order */
    int n_done, cap_done;
    /* the prompt in flight */
    hid_t pfile, group, d_colsum, d_window, d_values, d_attn;
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

/* ---- small HDF5 helpers ---------------------------------------------------- */

static hid_t utf8_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

static int attr_str(hid_t loc, const char *name, const char *value) {
    hid_t t = utf8_type(), sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, t, &value) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

/* Reads a variable-length string attribute into a malloc'd string (NULL if absent). */
static char *read_attr_str(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT), t = utf8_type();
    char *v = NULL, *out = NULL;
    if (a >= 0 && H5Aread(a, t, &v) >= 0 && v) out = strdup(v);
    if (v) H5free_memory(v);
    if (a >= 0) H5Aclose(a);
    H5Tclose(t);
    return out;
}

static int attr_int(hid_t loc, const char *name, int value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, H5T_NATIVE_INT, &value) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int read_attr_int(hid_t loc, const char *name, int *value) {
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    int rc = a < 0 || H5Aread(a, H5T_NATIVE_INT, value) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    return rc;
}

/* Creates a dataset; chunk == NULL: contiguous. deflate: shuffle + deflate. */
static hid_t make_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const hsize_t *chunk, int deflate) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk) {
        H5Pset_chunk(dcpl, rank, chunk);
        if (deflate) {
            H5Pset_shuffle(dcpl);
            H5Pset_deflate(dcpl, 1);
        }
    }
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

/* Writes a block [count] at [start], memory space shaped like the selection. */
static int write_block(hid_t d, hid_t memtype, int rank, const hsize_t *start, const hsize_t *count,
                       const void *buf) {
    hid_t fs = H5Dget_space(d);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(rank, count, NULL);
    herr_t r = H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return r < 0 ? -1 : 0;
}

static int write_all(hid_t loc, const char *name, hid_t filetype, hid_t memtype, int rank, const hsize_t *dims,
                     const void *buf) {
    hid_t d = make_dataset(loc, name, filetype, rank, dims, NULL, 0);
    if (d < 0) return -1;
    herr_t r = H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Dclose(d);
    return r < 0 ? -1 : 0;
}

static char *parts_file(const kv_trace_writer *w, const char *name) { return kv_path_join(w->parts, name, NULL); }

/* The file attributes of docs/trace-format.md (model.h5, index.h5, the final file). */
static int write_root_attrs(hid_t root, const kv_trace_meta *m) {
    return attr_str(root, "format", KV_TRACE_FORMAT) || attr_int(root, "format_version", KV_TRACE_FORMAT_VERSION) ||
                   attr_str(root, "model", m->model_name) || attr_str(root, "config_json", m->config_json) ||
                   attr_str(root, "created_by", m->created_by) || attr_int(root, "window", m->window) ||
                   attr_str(root, "rope_precision", m->rope_precision) || attr_int(root, "full_maps", m->full_maps)
               ? -1
               : 0;
}

/* Everything that changes a trace's content besides the prompts. */
static char *settings_of(const kv_trace_meta *m) {
    size_t cap = 256 + (size_t)m->n_traced * 12;
    char *s = malloc(cap);
    if (!s) return NULL;
    int k = snprintf(s, cap, "model %s, window %d, rope %s, full maps %s, layers ", m->model_name, m->window,
                     m->rope_precision,
                     !m->full_maps ? "no" : m->maps_f16 ? (m->maps_deflate ? "f16 deflate" : "f16 raw")
                                                         : (m->maps_deflate ? "f32 deflate" : "f32 raw"));
    for (int i = 0; i < m->n_traced && k < (int)cap - 12; i++) k += snprintf(s + k, cap - k, i ? ",%d" : "%d", m->layers[i]);
    return s;
}

/* ---- the parts directory --------------------------------------------------- */

static int remove_parts_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = kv_path_join(dir, e->d_name, NULL);
        if (p) unlink(p);
        free(p);
    }
    closedir(d);
    return rmdir(dir);
}

int kv_trace_remove_parts(const char *parts_dir) { return remove_parts_dir(parts_dir); }

static int add_done(kv_trace_writer *w, const char *id, const char *file, int index) {
    if (w->n_done == w->cap_done) {
        int cap = w->cap_done ? 2 * w->cap_done : 16;
        done_prompt *p = realloc(w->done, cap * sizeof *p);
        if (!p) return -1;
        w->done = p;
        w->cap_done = cap;
    }
    w->done[w->n_done++] = (done_prompt){strdup(id), strdup(file), index};
    return 0;
}

static int cmp_done(const void *a, const void *b) { return ((const done_prompt *)a)->index - ((const done_prompt *)b)->index; }

typedef struct { char name[KV_PROMPT_ID_MAX + 1]; int count; } first_child;
static herr_t take_child(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)g, (void)info;
    first_child *c = op;
    if (c->count++ == 0) snprintf(c->name, sizeof c->name, "%s", name);
    return 0;
}

/* Reads an interrupted run's parts: checks its settings, lists its prompts,
 * drops unfinished temporary files. */
static int load_parts(kv_trace_writer *w, kv_error *err) {
    char *model = parts_file(w, "model.h5");
    hid_t f = model ? H5Fopen(model, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    free(model);
    if (f < 0) return 1; /* killed before the model file was complete: nothing to resume */
    char *settings = read_attr_str(f, "run_settings"), *config = read_attr_str(f, "config_json");
    H5Fclose(f);
    int rc = 0;
    if (!settings || !config) {
        rc = kv_fail(err, "%s: not a kvtrace parts directory (no run settings in model.h5)", w->parts);
    } else if (strcmp(config, w->meta.config_json)) {
        rc = kv_fail(err, "--resume: the interrupted run in %s traced a model with a different config.json", w->parts);
    } else if (strcmp(settings, w->settings)) {
        rc = kv_fail(err, "--resume: the interrupted run in %s used other settings (%s; now %s)", w->parts, settings,
                     w->settings);
    }
    free(settings);
    free(config);
    if (rc) return -1;
    DIR *d = opendir(w->parts);
    if (!d) return kv_fail(err, "%s: cannot list: %s", w->parts, strerror(errno));
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        char *p = parts_file(w, e->d_name);
        if (len > 4 && !strcmp(e->d_name + len - 4, ".tmp")) {
            unlink(p); /* in flight when the run stopped */
        } else if (!strncmp(e->d_name, "prompt-", 7) && len > 10 && !strcmp(e->d_name + len - 3, ".h5")) {
            hid_t pf = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
            hid_t g = pf >= 0 ? H5Gopen2(pf, "prompts", H5P_DEFAULT) : -1;
            first_child c = {{0}, 0};
            if (g >= 0) H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, take_child, &c);
            hid_t pg = c.count == 1 ? H5Gopen2(g, c.name, H5P_DEFAULT) : -1;
            int index;
            if (pg < 0 || read_attr_int(pg, "index", &index))
                rc = kv_fail(err, "%s: not a complete prompt file", p);
            else if (add_done(w, c.name, e->d_name, index))
                rc = kv_fail(err, "out of memory");
            if (pg >= 0) H5Gclose(pg);
            if (g >= 0) H5Gclose(g);
            if (pf >= 0) H5Fclose(pf);
        }
        free(p);
    }
    closedir(d);
    qsort(w->done, w->n_done, sizeof *w->done, cmp_done);
    return rc ? -1 : 0;
}

/* index.h5: the trace so far, as external links into the parts. */
static int write_index(kv_trace_writer *w, kv_error *err) {
    char *tmp = parts_file(w, "index.h5.tmp");
    if (!tmp) return kv_fail(err, "out of memory");
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    int bad = f < 0 || write_root_attrs(f, &w->meta) ||
              H5Lcreate_external("model.h5", "/model", f, "model", H5P_DEFAULT, H5P_DEFAULT) < 0;
    hid_t g = bad ? -1 : H5Gcreate2(f, "prompts", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad = bad || g < 0;
    char obj[KV_PROMPT_ID_MAX + 16];
    for (int i = 0; !bad && i < w->n_done; i++) {
        snprintf(obj, sizeof obj, "/prompts/%s", w->done[i].id);
        bad = H5Lcreate_external(w->done[i].file, obj, g, w->done[i].id, H5P_DEFAULT, H5P_DEFAULT) < 0;
    }
    if (g >= 0) H5Gclose(g);
    if (f >= 0 && H5Fclose(f) < 0) bad = 1;
    if (!bad && rename(tmp, w->index_path)) bad = 1;
    if (bad) unlink(tmp);
    free(tmp);
    return bad ? kv_fail(err, "%s: cannot write the index of completed prompts", w->index_path) : 0;
}

/* model.h5.tmp with the file attributes and /model (wo filled in later). */
static int create_model_file(kv_trace_writer *w, kv_error *err) {
    const kv_trace_meta *m = &w->meta;
    char *tmp = parts_file(w, "model.h5.tmp");
    w->mfile = tmp ? H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT) : -1;
    free(tmp);
    if (w->mfile < 0) return kv_fail(err, "%s: cannot create files in it", w->parts);
    hid_t g = H5Gcreate2(w->mfile, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int bad = write_root_attrs(w->mfile, m) || attr_str(w->mfile, "run_settings", w->settings) || g < 0 ||
              attr_int(g, "n_layers", m->n_layers) || attr_int(g, "n_heads", m->n_heads) ||
              attr_int(g, "n_kv_heads", m->n_kv_heads) || attr_int(g, "head_dim", m->head_dim) ||
              attr_int(g, "hidden_size", m->hidden_size) || attr_int(g, "vocab_size", m->vocab_size) ||
              attr_str(g, "architecture", m->architecture);
    hsize_t nl = (hsize_t)m->n_traced;
    bad = bad || write_all(g, "layers", H5T_STD_I32LE, H5T_NATIVE_INT, 1, &nl, m->layers);
    hsize_t wo_dims[3] = {nl, (hsize_t)m->hidden_size, (hsize_t)m->n_heads * m->head_dim};
    hid_t d = bad ? -1 : make_dataset(g, "wo", H5T_IEEE_F32LE, 3, wo_dims, NULL, 0);
    if (d >= 0) H5Dclose(d);
    if (g >= 0) H5Gclose(g);
    return bad || d < 0 ? kv_fail(err, "%s: cannot write model.h5", w->parts) : 0;
}

static int finish_model_file(kv_trace_writer *w, kv_error *err) {
    if (w->mfile < 0) return 0;
    herr_t r = H5Fclose(w->mfile);
    w->mfile = -1;
    char *tmp = parts_file(w, "model.h5.tmp"), *fin = parts_file(w, "model.h5");
    int bad = r < 0 || !tmp || !fin || rename(tmp, fin);
    free(tmp);
    free(fin);
    if (bad) return kv_fail(err, "%s: cannot finish model.h5", w->parts);
    return write_index(w, err);
}

/* ---- the writer ------------------------------------------------------------ */

kv_trace_writer *kv_trace_create(const char *path, int force, int resume, const kv_trace_meta *meta, kv_error *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (kv_path_exists(path) && !force) {
        kv_fail(err, "%s: already exists (use --force to overwrite)", path);
        return NULL;
    }
    kv_trace_writer *w = kv_calloc(1, sizeof *w, err);
    if (!w) return NULL;
    w->meta = *meta;
    w->mfile = w->pfile = w->group = w->d_colsum = w->d_window = w->d_values = w->d_attn = -1;
    w->f16 = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(w->f16, 15, 10, 5, 0, 10);
    H5Tset_size(w->f16, 2);
    H5Tset_ebias(w->f16, 15);
    size_t n = strlen(path) + 8;
    w->path = strdup(path);
    w->parts = malloc(n);
    w->settings = settings_of(meta);
    if (!w->path || !w->parts || !w->settings) {
        kv_fail(err, "out of memory");
        goto fail;
    }
    snprintf(w->parts, n, "%s.parts", path);
    w->index_path = parts_file(w, "index.h5");
    if (kv_path_exists(w->parts)) {
        if (resume) {
            int r = load_parts(w, err);
            if (r < 0) goto fail;
            w->resumed = r == 0;
        } else if (force) {
            remove_parts_dir(w->parts);
        } else {
            kv_fail(err, "%s: an interrupted run's completed prompts are here; use --resume to continue it or "
                         "--force to start over", w->parts);
            goto fail;
        }
    }
    if (!kv_path_exists(w->parts)) {
        if (mkdir(w->parts, 0777)) {
            kv_fail(err, "%s: cannot create: %s", w->parts, strerror(errno));
            goto fail;
        }
        w->created_parts = 1;
    }
    if (!w->resumed && create_model_file(w, err)) goto fail;
    return w;
fail:
    kv_trace_abort(w, 0);
    return NULL;
}

int kv_trace_has_prompt(const kv_trace_writer *w, const char *id) {
    for (int i = 0; i < w->n_done; i++)
        if (!strcmp(w->done[i].id, id)) return 1;
    return 0;
}

int kv_trace_n_prompts(const kv_trace_writer *w) { return w->n_done; }

const char *kv_trace_index_path(const kv_trace_writer *w) { return w->index_path; }

int kv_trace_write_wo(kv_trace_writer *w, int slot, const float *wo, kv_error *err) {
    if (w->mfile < 0) return 0; /* resumed: written by the interrupted run */
    hid_t d = H5Dopen2(w->mfile, "model/wo", H5P_DEFAULT);
    hsize_t start[3] = {(hsize_t)slot, 0, 0};
    hsize_t count[3] = {1, (hsize_t)w->meta.hidden_size, (hsize_t)w->meta.n_heads * w->meta.head_dim};
    int rc = d < 0 ? -1 : write_block(d, H5T_NATIVE_FLOAT, 3, start, count, wo);
    if (d >= 0) H5Dclose(d);
    return rc ? kv_fail(err, "%s: cannot write /model/wo", w->parts) : 0;
}

/* ---- full maps: chunks encoded in parallel --------------------------------- */

static void free_map_queue(kv_trace_writer *w) {
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
static int alloc_map_queue(kv_trace_writer *w) {
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
static int flush_map_queue(kv_trace_writer *w, kv_error *err) {
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

/* Closes the prompt in flight; with discard its temporary file goes too. */
static void close_prompt(kv_trace_writer *w, int discard) {
    hid_t *ids[] = {&w->d_colsum, &w->d_window, &w->d_values, &w->d_attn};
    for (size_t i = 0; i < 4; i++)
        if (*ids[i] >= 0) {
            H5Dclose(*ids[i]);
            *ids[i] = -1;
        }
    if (w->group >= 0) H5Gclose(w->group);
    w->group = -1;
    if (w->pfile >= 0) H5Fclose(w->pfile);
    w->pfile = -1;
    if (discard && w->ptmp) unlink(w->ptmp);
    free_map_queue(w);
    free(w->map_buf);
    free(w->ptmp);
    free(w->pname);
    free(w->pid);
    w->map_buf = NULL;
    w->ptmp = w->pname = w->pid = NULL;
}

int kv_trace_begin_prompt(kv_trace_writer *w, const kv_trace_prompt *p, kv_error *err) {
    const kv_trace_meta *m = &w->meta;
    if (finish_model_file(w, err)) return -1;
    int index = w->n_done ? w->done[w->n_done - 1].index + 1 : 0;
    char name[32], tmpname[40];
    snprintf(name, sizeof name, "prompt-%05d.h5", index);
    snprintf(tmpname, sizeof tmpname, "%s.tmp", name);
    w->pname = strdup(name);
    w->ptmp = parts_file(w, tmpname);
    w->pid = strdup(p->id);
    w->n = p->n;
    w->wrows = m->window < p->n ? m->window : p->n;
    if (!w->pname || !w->ptmp || !w->pid) return kv_fail(err, "out of memory");
    w->pfile = H5Fcreate(w->ptmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t pg = w->pfile >= 0 ? H5Gcreate2(w->pfile, "prompts", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    w->group = pg >= 0 ? H5Gcreate2(pg, p->id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    if (pg >= 0) H5Gclose(pg);
    if (w->group < 0) {
        close_prompt(w, 1);
        return kv_fail(err, "%s: cannot create a file for prompt '%s'", w->parts, p->id);
    }
    hsize_t N = (hsize_t)p->n, L = (hsize_t)m->n_traced, H = (hsize_t)m->n_heads;
    int bad = attr_int(w->group, "n_tokens", p->n) || attr_int(w->group, "index", index) ||
              (p->text && attr_str(w->group, "text", p->text));
    bad = bad || write_all(w->group, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &N, p->tokens);
    const char **pieces = calloc(p->n, sizeof *pieces);
    uint8_t *flags = calloc(p->n, 1);
    if (!pieces || !flags) bad = 1;
    for (int i = 0; !bad && i < p->n; i++) {
        pieces[i] = p->pieces && p->pieces[i] ? p->pieces[i] : "";
        flags[i] = p->flags ? p->flags[i] : 0;
    }
    hid_t st = utf8_type();
    bad = bad || write_all(w->group, "pieces", st, st, 1, &N, pieces);
    bad = bad || write_all(w->group, "flags", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &N, flags);
    H5Tclose(st);
    free(pieces);
    free(flags);
    hsize_t cs_dims[3] = {L, H, N}, cs_chunk[3] = {1, H, N};
    hsize_t w_dims[4] = {L, H, (hsize_t)w->wrows, N}, w_chunk[4] = {1, 1, (hsize_t)w->wrows, N};
    hsize_t v_dims[4] = {L, (hsize_t)m->n_kv_heads, N, (hsize_t)m->head_dim};
    hsize_t v_chunk[4] = {1, 1, N, (hsize_t)m->head_dim};
    if (!bad) {
        w->d_colsum = make_dataset(w->group, "colsum", H5T_IEEE_F32LE, 3, cs_dims, cs_chunk, 0);
        w->d_window = make_dataset(w->group, "window", H5T_IEEE_F32LE, 4, w_dims, w_chunk, 0);
        w->d_values = make_dataset(w->group, "values", H5T_IEEE_F32LE, 4, v_dims, v_chunk, 0);
        bad = w->d_colsum < 0 || w->d_window < 0 || w->d_values < 0;
    }
    if (!bad && m->full_maps) {
        hsize_t rows = N < KV_TRACE_MAP_BLOCK ? N : KV_TRACE_MAP_BLOCK;
        hsize_t a_dims[4] = {L, H, N, N}, a_chunk[4] = {1, 1, rows, N};
        w->d_attn = make_dataset(w->group, "attn", m->maps_f16 ? w->f16 : H5T_IEEE_F32LE, 4, a_dims, a_chunk,
                                 m->maps_deflate);
        w->map_buf = malloc(rows * N * (m->maps_f16 ? 2 : 4));
        bad = w->d_attn < 0 || !w->map_buf || ((m->maps_f16 || m->maps_deflate) && alloc_map_queue(w));
    }
    if (bad) {
        close_prompt(w, 1);
        return kv_fail(err, "%s: cannot write prompt '%s'", w->parts, p->id);
    }
    return 0;
}

int kv_trace_write_layer(kv_trace_writer *w, int slot, const float *colsum, const float *window,
                         const float *values, kv_error *err) {
    const kv_trace_meta *m = &w->meta;
    hsize_t N = (hsize_t)w->n, H = (hsize_t)m->n_heads;
    hsize_t s3[3] = {(hsize_t)slot, 0, 0}, c3[3] = {1, H, N};
    hsize_t s4[4] = {(hsize_t)slot, 0, 0, 0}, cw[4] = {1, H, (hsize_t)w->wrows, N};
    hsize_t cv[4] = {1, (hsize_t)m->n_kv_heads, N, (hsize_t)m->head_dim};
    if (write_block(w->d_colsum, H5T_NATIVE_FLOAT, 3, s3, c3, colsum) ||
        write_block(w->d_window, H5T_NATIVE_FLOAT, 4, s4, cw, window) ||
        write_block(w->d_values, H5T_NATIVE_FLOAT, 4, s4, cv, values))
        return kv_fail(err, "%s: cannot write layer slot %d (disk full?)", w->ptmp, slot);
    return 0;
}

int kv_trace_write_map_block(kv_trace_writer *w, int slot, int head, int row0, int rows, const float *probs,
                             int n_keys, kv_error *err) {
    size_t N = (size_t)w->n;
    int f16 = w->meta.maps_f16, cr = w->n < KV_TRACE_MAP_BLOCK ? w->n : KV_TRACE_MAP_BLOCK;
    /* whole chunks that need encoding are queued; plain float32 has nothing
     * to encode and goes through HDF5's chunk cache */
    int aligned = row0 % cr == 0 && (rows % cr == 0 || row0 + rows == w->n);
    if (aligned && (f16 || w->meta.maps_deflate)) {
        for (int r = 0; r < rows; r += cr) {
            int nr = rows - r < cr ? rows - r : cr;
            map_chunk *c = &w->queue[w->n_queue++];
            c->slot = slot, c->head = head, c->row0 = row0 + r;
            for (int k = 0; k < nr; k++) {
                float *dst = c->rows + (size_t)k * N;
                memcpy(dst, probs + (size_t)(r + k) * n_keys, (size_t)n_keys * sizeof *dst);
                memset(dst + n_keys, 0, (N - (size_t)n_keys) * sizeof *dst);
            }
            memset(c->rows + (size_t)nr * N, 0, (size_t)(cr - nr) * N * sizeof(float)); /* past the last row */
            if (w->n_queue == w->cap_queue && flush_map_queue(w, err)) return -1;
        }
        return 0;
    }
    /* through map_buf, at most KV_TRACE_MAP_BLOCK rows at a time (the GPU
     * hands over 256-row blocks) */
    for (int b0 = 0; b0 < rows; b0 += cr) {
        int nb = rows - b0 < cr ? rows - b0 : cr;
        for (int r = 0; r < nb; r++) {
            const float *src = probs + (size_t)(b0 + r) * n_keys;
            if (f16) {
                uint16_t *dst = (uint16_t *)w->map_buf + r * N;
                for (int j = 0; j < n_keys; j++) dst[j] = kv_f32_to_f16(src[j]);
                memset(dst + n_keys, 0, (N - n_keys) * 2);
            } else {
                float *dst = (float *)w->map_buf + r * N;
                memcpy(dst, src, (size_t)n_keys * 4);
                memset(dst + n_keys, 0, (N - n_keys) * 4);
            }
        }
        hsize_t start[4] = {(hsize_t)slot, (hsize_t)head, (hsize_t)(row0 + b0), 0}, count[4] = {1, 1, (hsize_t)nb, N};
        if (write_block(w->d_attn, f16 ? w->f16 : H5T_NATIVE_FLOAT, 4, start, count, w->map_buf))
            return kv_fail(err, "%s: cannot write attention maps (disk full?)", w->ptmp);
    }
    return 0;
}

int kv_trace_write_logits(kv_trace_writer *w, const float *logits, kv_error *err) {
    hsize_t V = (hsize_t)w->meta.vocab_size;
    if (write_all(w->group, "last_logits", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &V, logits))
        return kv_fail(err, "%s: cannot write last_logits", w->ptmp);
    return 0;
}

int kv_trace_end_prompt(kv_trace_writer *w, kv_error *err) {
    if (flush_map_queue(w, err)) return -1;
    char *fin = parts_file(w, w->pname);
    int index = w->n_done ? w->done[w->n_done - 1].index + 1 : 0;
    char *tmp = strdup(w->ptmp), *id = strdup(w->pid), *name = strdup(w->pname);
    close_prompt(w, 0);
    int bad = !fin || !tmp || !id || !name || rename(tmp, fin) || add_done(w, id, name, index);
    if (bad && tmp) unlink(tmp);
    free(fin);
    free(tmp);
    free(id);
    free(name);
    if (bad) return kv_fail(err, "%s: cannot finish the prompt's file", w->parts);
    return write_index(w, err);
}

static void free_writer(kv_trace_writer *w) {
    for (int i = 0; i < w->n_done; i++) {
        free(w->done[i].id);
        free(w->done[i].file);
    }
    free(w->done);
    if (w->f16 > 0) H5Tclose(w->f16);
    free(w->path);
    free(w->parts);
    free(w->index_path);
    free(w->settings);
    free(w);
}

/* Copies the parts into one file under a temporary name, then renames it. */
int kv_trace_commit(kv_trace_writer *w, kv_error *err) {
    int rc = -1;
    /* assembled inside the parts directory, so a kill leaves nothing next to the output */
    char *tmp = parts_file(w, "trace.h5.tmp"), *model = parts_file(w, "model.h5");
    hid_t f = -1, mf = -1, pg = -1;
    if (!tmp || !model || finish_model_file(w, err)) goto done;
    f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    mf = H5Fopen(model, H5F_ACC_RDONLY, H5P_DEFAULT);
    int bad = f < 0 || mf < 0 || write_root_attrs(f, &w->meta) ||
              H5Ocopy(mf, "model", f, "model", H5P_DEFAULT, H5P_DEFAULT) < 0;
    pg = bad ? -1 : H5Gcreate2(f, "prompts", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad = bad || pg < 0;
    for (int i = 0; !bad && i < w->n_done; i++) {
        char *part = parts_file(w, w->done[i].file);
        hid_t src = part ? H5Fopen(part, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
        hid_t sg = src >= 0 ? H5Gopen2(src, "prompts", H5P_DEFAULT) : -1;
        bad = sg < 0 || H5Ocopy(sg, w->done[i].id, pg, w->done[i].id, H5P_DEFAULT, H5P_DEFAULT) < 0;
        if (sg >= 0) H5Gclose(sg);
        if (src >= 0) H5Fclose(src);
        free(part);
    }
    if (pg >= 0) H5Gclose(pg);
    if (mf >= 0) H5Fclose(mf);
    if (f >= 0 && H5Fclose(f) < 0) bad = 1;
    f = -1;
    if (bad) {
        kv_fail(err, "%s: cannot assemble the trace from %s (disk full?)", tmp, w->parts);
        goto done;
    }
    if (rename(tmp, w->path)) {
        kv_fail(err, "%s: cannot move the finished trace into place: %s", w->path, strerror(errno));
        goto done;
    }
    remove_parts_dir(w->parts);
    rc = 0;
done:
    if (rc && tmp) unlink(tmp);
    free(tmp);
    free(model);
    free_writer(w);
    return rc;
}

void kv_trace_abort(kv_trace_writer *w, int keep_completed) {
    if (!w) return;
    close_prompt(w, 1);
    if (w->mfile >= 0) {
        H5Fclose(w->mfile);
        w->mfile = -1;
        char *tmp = parts_file(w, "model.h5.tmp");
        if (tmp) unlink(tmp);
        free(tmp);
    }
    if (w->parts && (!keep_completed || w->n_done == 0) && w->created_parts) remove_parts_dir(w->parts);
    free_writer(w);
}
