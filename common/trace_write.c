#include "common/trace_write.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/fileio.h"
#include "common/trace.h"

struct kv_trace_writer {
    kv_trace_meta meta;
    char *path, *tmp_path;
    hid_t file;
    hid_t f16;                 /* IEEE half type */
    int n_prompts;
    /* current prompt */
    hid_t group, d_colsum, d_window, d_values, d_attn;
    int n, wrows;
    void *map_buf;             /* [KV_TRACE_MAP_BLOCK, N] f32 or f16 */
};

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

static int attr_int(hid_t loc, const char *name, int value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, H5T_NATIVE_INT, &value) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
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

/* Writes a block [count] at [start] of a dataset, memory space shaped like
 * the selection. */
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

kv_trace_writer *kv_trace_create(const char *path, int force, const kv_trace_meta *meta, kv_error *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (kv_path_exists(path) && !force) {
        kv_fail(err, "%s: already exists (use --force to overwrite)", path);
        return NULL;
    }
    kv_trace_writer *w = kv_calloc(1, sizeof *w, err);
    if (!w) return NULL;
    w->meta = *meta;
    w->file = w->group = w->d_colsum = w->d_window = w->d_values = w->d_attn = -1;
    w->path = strdup(path);
    size_t n = strlen(path) + 32;
    w->tmp_path = malloc(n);
    if (!w->path || !w->tmp_path) {
        kv_fail(err, "out of memory");
        goto fail;
    }
    snprintf(w->tmp_path, n, "%s.partial.%d", path, (int)getpid());
    w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        kv_fail(err, "%s: cannot create the output file (is the directory writable?)", w->tmp_path);
        goto fail;
    }
    w->f16 = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(w->f16, 15, 10, 5, 0, 10);
    H5Tset_size(w->f16, 2);
    H5Tset_ebias(w->f16, 15);
    hid_t root = w->file;
    int bad = attr_str(root, "format", KV_TRACE_FORMAT) || attr_int(root, "format_version", KV_TRACE_FORMAT_VERSION) ||
              attr_str(root, "model", meta->model_name) || attr_str(root, "config_json", meta->config_json) ||
              attr_str(root, "created_by", meta->created_by) || attr_int(root, "window", meta->window) ||
              attr_int(root, "full_maps", meta->full_maps);
    hid_t g = H5Gcreate2(root, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad = bad || g < 0 || attr_int(g, "n_layers", meta->n_layers) || attr_int(g, "n_heads", meta->n_heads) ||
          attr_int(g, "n_kv_heads", meta->n_kv_heads) || attr_int(g, "head_dim", meta->head_dim) ||
          attr_int(g, "hidden_size", meta->hidden_size) || attr_int(g, "vocab_size", meta->vocab_size) ||
          attr_str(g, "architecture", meta->architecture);
    hsize_t nl = (hsize_t)meta->n_traced;
    bad = bad || write_all(g, "layers", H5T_STD_I32LE, H5T_NATIVE_INT, 1, &nl, meta->layers);
    hsize_t wo_dims[3] = {nl, (hsize_t)meta->hidden_size, (hsize_t)meta->n_heads * meta->head_dim};
    hid_t d = bad ? -1 : make_dataset(g, "wo", H5T_IEEE_F32LE, 3, wo_dims, NULL, 0);
    if (d >= 0) H5Dclose(d);
    hid_t pg = H5Gcreate2(root, "prompts", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g >= 0) H5Gclose(g);
    if (pg >= 0) H5Gclose(pg);
    if (bad || d < 0 || pg < 0) {
        kv_fail(err, "%s: cannot write the file header", w->tmp_path);
        goto fail;
    }
    return w;
fail:
    kv_trace_abort(w);
    return NULL;
}

int kv_trace_write_wo(kv_trace_writer *w, int slot, const float *wo, kv_error *err) {
    hid_t d = H5Dopen2(w->file, "model/wo", H5P_DEFAULT);
    hsize_t start[3] = {(hsize_t)slot, 0, 0};
    hsize_t count[3] = {1, (hsize_t)w->meta.hidden_size, (hsize_t)w->meta.n_heads * w->meta.head_dim};
    int rc = d < 0 ? -1 : write_block(d, H5T_NATIVE_FLOAT, 3, start, count, wo);
    if (d >= 0) H5Dclose(d);
    return rc ? kv_fail(err, "%s: cannot write /model/wo", w->tmp_path) : 0;
}

static void close_prompt(kv_trace_writer *w) {
    hid_t *ids[] = {&w->d_colsum, &w->d_window, &w->d_values, &w->d_attn};
    for (size_t i = 0; i < 4; i++)
        if (*ids[i] >= 0) {
            H5Dclose(*ids[i]);
            *ids[i] = -1;
        }
    if (w->group >= 0) H5Gclose(w->group);
    w->group = -1;
    free(w->map_buf);
    w->map_buf = NULL;
}

int kv_trace_begin_prompt(kv_trace_writer *w, const kv_trace_prompt *p, kv_error *err) {
    const kv_trace_meta *m = &w->meta;
    char gname[KV_PROMPT_ID_MAX + 16];
    snprintf(gname, sizeof gname, "prompts/%s", p->id);
    w->n = p->n;
    w->wrows = m->window < p->n ? m->window : p->n;
    hsize_t N = (hsize_t)p->n, L = (hsize_t)m->n_traced, H = (hsize_t)m->n_heads;
    w->group = H5Gcreate2(w->file, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (w->group < 0) return kv_fail(err, "%s: cannot create group /%s", w->tmp_path, gname);
    int bad = attr_int(w->group, "n_tokens", p->n) || attr_int(w->group, "index", w->n_prompts) ||
              (p->text && attr_str(w->group, "text", p->text));
    bad = bad || write_all(w->group, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &N, p->tokens);
    /* pieces: variable-length UTF-8 */
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
        bad = w->d_attn < 0 || !w->map_buf;
    }
    if (bad) {
        close_prompt(w);
        return kv_fail(err, "%s: cannot write prompt '%s'", w->tmp_path, p->id);
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
        return kv_fail(err, "%s: cannot write layer slot %d (disk full?)", w->tmp_path, slot);
    return 0;
}

int kv_trace_write_map_block(kv_trace_writer *w, int slot, int head, int row0, int rows, const float *probs,
                             int n_keys, kv_error *err) {
    size_t N = (size_t)w->n;
    int f16 = w->meta.maps_f16;
    for (int r = 0; r < rows; r++) {
        const float *src = probs + (size_t)r * n_keys;
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
    hsize_t start[4] = {(hsize_t)slot, (hsize_t)head, (hsize_t)row0, 0}, count[4] = {1, 1, (hsize_t)rows, N};
    if (write_block(w->d_attn, f16 ? w->f16 : H5T_NATIVE_FLOAT, 4, start, count, w->map_buf))
        return kv_fail(err, "%s: cannot write attention maps (disk full?)", w->tmp_path);
    return 0;
}

int kv_trace_write_logits(kv_trace_writer *w, const float *logits, kv_error *err) {
    hsize_t V = (hsize_t)w->meta.vocab_size;
    if (write_all(w->group, "last_logits", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &V, logits))
        return kv_fail(err, "%s: cannot write last_logits", w->tmp_path);
    return 0;
}

int kv_trace_end_prompt(kv_trace_writer *w, kv_error *err) {
    (void)err;
    close_prompt(w);
    w->n_prompts++;
    return 0;
}

int kv_trace_commit(kv_trace_writer *w, kv_error *err) {
    close_prompt(w);
    H5Tclose(w->f16);
    herr_t r = H5Fclose(w->file);
    w->file = -1;
    int rc = 0;
    if (r < 0) {
        rc = kv_fail(err, "%s: cannot finish writing the file", w->tmp_path);
        unlink(w->tmp_path);
    } else if (rename(w->tmp_path, w->path) != 0) {
        rc = kv_fail(err, "%s: cannot move the finished trace into place", w->path);
        unlink(w->tmp_path);
    }
    free(w->path);
    free(w->tmp_path);
    free(w);
    return rc;
}

void kv_trace_abort(kv_trace_writer *w) {
    if (!w) return;
    close_prompt(w);
    if (w->file >= 0) {
        H5Tclose(w->f16);
        H5Fclose(w->file);
        unlink(w->tmp_path);
    }
    free(w->path);
    free(w->tmp_path);
    free(w);
}
