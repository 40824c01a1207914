#include "format/trace_write.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/fileio.h"
#include "format/h5util.h"
#include "format/trace.h"
#include "format/writer_internal.h"

kv_trace_writer *kv_trace_create(const char *path, int force, int resume, const kv_trace_meta *meta, kv_error *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (kv_path_exists(path) && !force) {
        kv_fail(err, "%s: already exists (use --force to overwrite)", path);
        return NULL;
    }
    kv_trace_writer *w = kv_calloc(1, sizeof *w, err);
    if (!w) return NULL;
    w->meta = *meta;
    w->mfile = w->pfile = w->group = w->d_colsum = w->d_window = w->d_values = w->d_key_norm = w->d_attn =
        w->d_nearsum = -1;
    w->f16 = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(w->f16, 15, 10, 5, 0, 10);
    H5Tset_size(w->f16, 2);
    H5Tset_ebias(w->f16, 15);
    size_t n = strlen(path) + 8;
    w->path = strdup(path);
    w->parts = malloc(n);
    w->settings = kv_parts_settings(meta);
    if (!w->path || !w->parts || !w->settings) {
        kv_fail(err, "out of memory");
        goto fail;
    }
    snprintf(w->parts, n, "%s.parts", path);
    w->index_path = kv_parts_file(w, "index.h5");
    if (kv_path_exists(w->parts)) {
        if (resume) {
            int r = kv_parts_load(w, err);
            if (r < 0) goto fail;
            w->resumed = r == 0;
        } else if (force) {
            kv_parts_remove_dir(w->parts);
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
    w->direct = meta->n_prompts == 1 && !w->resumed;
    if (!w->resumed && kv_parts_create_model_file(w, err)) goto fail;
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

int kv_trace_n_prompts(const kv_trace_writer *w) { return w->direct ? 0 : w->n_done; } /* direct: none resumable */

const char *kv_trace_index_path(const kv_trace_writer *w) { return w->index_path; }

int kv_trace_write_wo(kv_trace_writer *w, int slot, const float *wo, kv_error *err) {
    if (w->mfile < 0) return 0; /* resumed: written by the interrupted run */
    hid_t d = H5Dopen2(w->mfile, "model/wo", H5P_DEFAULT);
    hsize_t start[3] = {(hsize_t)slot, 0, 0};
    hsize_t count[3] = {1, (hsize_t)w->meta.hidden_size, (hsize_t)w->meta.n_heads * w->meta.head_dim};
    int rc = d < 0 ? -1 : kv_h5_write_block(d, H5T_NATIVE_FLOAT, 3, start, count, wo);
    if (d >= 0) H5Dclose(d);
    return rc ? kv_fail(err, "%s: cannot write /model/wo", w->parts) : 0;
}

/* Closes the prompt in flight; with discard its temporary file goes too. */
static void close_prompt(kv_trace_writer *w, int discard) {
    hid_t *ids[] = {&w->d_colsum, &w->d_window, &w->d_values, &w->d_key_norm, &w->d_attn, &w->d_nearsum};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (*ids[i] >= 0) {
            H5Dclose(*ids[i]);
            *ids[i] = -1;
        }
    if (w->group >= 0) H5Gclose(w->group);
    w->group = -1;
    if (w->pfile >= 0) H5Fclose(w->pfile);
    w->pfile = -1;
    if (discard && w->ptmp && !w->direct) unlink(w->ptmp); /* direct: the trace's file, removed by abort */
    kv_map_queue_free(w);
    free(w->map_buf);
    free(w->ptmp);
    free(w->pname);
    free(w->pid);
    w->map_buf = NULL;
    w->ptmp = w->pname = w->pid = NULL;
}

int kv_trace_begin_prompt(kv_trace_writer *w, const kv_trace_prompt *p, kv_error *err) {
    const kv_trace_meta *m = &w->meta;
    if (kv_parts_finish_model_file(w, err)) return -1;
    int index = w->n_done ? w->done[w->n_done - 1].index + 1 : 0;
    char name[32], tmpname[40];
    snprintf(name, sizeof name, "prompt-%05d.h5", index);
    snprintf(tmpname, sizeof tmpname, "%s.tmp", name);
    w->pname = strdup(name);
    w->ptmp = w->direct ? strdup(w->mtmp) : kv_parts_file(w, tmpname);
    w->pid = strdup(p->id);
    w->n = p->n;
    w->wrows = m->window < p->n ? m->window : p->n;
    if (!w->pname || !w->ptmp || !w->pid) return kv_fail(err, "out of memory");
    if (w->direct && w->n_done) return kv_fail(err, "%s: a second prompt in a run of one", w->parts);
    if (!w->direct) w->pfile = H5Fcreate(w->ptmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t file = w->direct ? w->mfile : w->pfile;
    hid_t pg = file >= 0 ? H5Gcreate2(file, "prompts", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    w->group = pg >= 0 ? H5Gcreate2(pg, p->id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    if (pg >= 0) H5Gclose(pg);
    if (w->group < 0) {
        close_prompt(w, 1);
        return kv_fail(err, "%s: cannot create a file for prompt '%s'", w->parts, p->id);
    }
    hsize_t N = (hsize_t)p->n, L = (hsize_t)m->n_traced, H = (hsize_t)m->n_heads;
    int bad = kv_h5_write_int_attr(w->group, "n_tokens", p->n) || kv_h5_write_int_attr(w->group, "index", index) ||
              (p->text && kv_h5_write_string_attr(w->group, "text", p->text));
    bad = bad || kv_h5_write_all(w->group, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &N, p->tokens);
    const char **pieces = calloc(p->n, sizeof *pieces);
    uint8_t *flags = calloc(p->n, 1);
    if (!pieces || !flags) bad = 1;
    for (int i = 0; !bad && i < p->n; i++) {
        pieces[i] = p->pieces && p->pieces[i] ? p->pieces[i] : "";
        flags[i] = p->flags ? p->flags[i] : 0;
    }
    hid_t st = kv_h5_utf8_type();
    bad = bad || kv_h5_write_all(w->group, "pieces", st, st, 1, &N, pieces);
    bad = bad || kv_h5_write_all(w->group, "flags", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &N, flags);
    H5Tclose(st);
    free(pieces);
    free(flags);
    hsize_t cs_dims[3] = {L, H, N}, cs_chunk[3] = {1, H, N};
    hsize_t w_dims[4] = {L, H, (hsize_t)w->wrows, N}, w_chunk[4] = {1, 1, (hsize_t)w->wrows, N};
    hsize_t v_dims[4] = {L, (hsize_t)m->n_kv_heads, N, (hsize_t)m->head_dim};
    hsize_t v_chunk[4] = {1, 1, N, (hsize_t)m->head_dim};
    if (!bad) {
        w->d_colsum = kv_h5_make_dataset(w->group, "colsum", H5T_IEEE_F32LE, 3, cs_dims, cs_chunk, 0);
        w->d_window = kv_h5_make_dataset(w->group, "window", H5T_IEEE_F32LE, 4, w_dims, w_chunk, 0);
        w->d_values = kv_h5_make_dataset(w->group, "values", H5T_IEEE_F32LE, 4, v_dims, v_chunk, 0);
        hsize_t kn_dims[3] = {L, (hsize_t)m->n_kv_heads, N}, kn_chunk[3] = {1, (hsize_t)m->n_kv_heads, N};
        w->d_key_norm = kv_h5_make_dataset(w->group, "key_norm", H5T_IEEE_F32LE, 3, kn_dims, kn_chunk, 0);
        bad = w->d_colsum < 0 || w->d_window < 0 || w->d_values < 0 || w->d_key_norm < 0;
    }
    if (!bad && m->n_near > 0) {
        hsize_t ns_dims[4] = {L, (hsize_t)m->n_near, H, N}, ns_chunk[4] = {1, 1, H, N};
        w->d_nearsum = kv_h5_make_dataset(w->group, "nearsum", H5T_IEEE_F32LE, 4, ns_dims, ns_chunk, 0);
        bad = w->d_nearsum < 0 || !p->near_w ||
              kv_h5_write_int_array_attr(w->d_nearsum, "window_lengths", p->near_w, m->n_near);
    }
    if (!bad && m->full_maps) {
        hsize_t rows = N < KV_TRACE_MAP_BLOCK ? N : KV_TRACE_MAP_BLOCK;
        hsize_t a_dims[4] = {L, H, N, N}, a_chunk[4] = {1, 1, rows, N};
        w->d_attn = kv_h5_make_dataset(w->group, "attn", m->maps_f16 ? w->f16 : H5T_IEEE_F32LE, 4, a_dims, a_chunk,
                                 m->maps_deflate);
        w->map_buf = malloc(rows * N * (m->maps_f16 ? 2 : 4));
        bad = w->d_attn < 0 || !w->map_buf || ((m->maps_f16 || m->maps_deflate) && kv_map_queue_alloc(w));
    }
    if (bad) {
        close_prompt(w, 1);
        return kv_fail(err, "%s: cannot write prompt '%s'", w->parts, p->id);
    }
    return 0;
}

int kv_trace_write_layer(kv_trace_writer *w, int slot, const kv_trace_layer *layer, kv_error *err) {
    const kv_trace_meta *m = &w->meta;
    hsize_t N = (hsize_t)w->n, H = (hsize_t)m->n_heads;
    hsize_t s3[3] = {(hsize_t)slot, 0, 0}, c3[3] = {1, H, N};
    hsize_t s4[4] = {(hsize_t)slot, 0, 0, 0}, cw[4] = {1, H, (hsize_t)w->wrows, N};
    hsize_t cv[4] = {1, (hsize_t)m->n_kv_heads, N, (hsize_t)m->head_dim};
    if (kv_h5_write_block(w->d_colsum, H5T_NATIVE_FLOAT, 3, s3, c3, layer->colsum) ||
        kv_h5_write_block(w->d_window, H5T_NATIVE_FLOAT, 4, s4, cw, layer->window) ||
        kv_h5_write_block(w->d_values, H5T_NATIVE_FLOAT, 4, s4, cv, layer->values) ||
        kv_h5_write_block(w->d_key_norm, H5T_NATIVE_FLOAT, 3, s3, (hsize_t[3]){1, (hsize_t)m->n_kv_heads, N},
                          layer->key_norm) ||
        (m->n_near > 0 && (!layer->nearsum || kv_h5_write_block(w->d_nearsum, H5T_NATIVE_FLOAT, 4, s4,
                                                                (hsize_t[4]){1, (hsize_t)m->n_near, H, N},
                                                                layer->nearsum))))
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
            if (w->n_queue == w->cap_queue && kv_map_queue_flush(w, err)) return -1;
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
        if (kv_h5_write_block(w->d_attn, f16 ? w->f16 : H5T_NATIVE_FLOAT, 4, start, count, w->map_buf))
            return kv_fail(err, "%s: cannot write attention maps (disk full?)", w->ptmp);
    }
    return 0;
}

int kv_trace_write_logits(kv_trace_writer *w, const float *logits, kv_error *err) {
    hsize_t V = (hsize_t)w->meta.vocab_size;
    if (kv_h5_write_all(w->group, "last_logits", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &V, logits))
        return kv_fail(err, "%s: cannot write last_logits", w->ptmp);
    return 0;
}

int kv_trace_end_prompt(kv_trace_writer *w, kv_error *err) {
    if (kv_map_queue_flush(w, err)) return -1;
    if (w->direct) { /* the prompt is in the trace's own file: kv_trace_commit closes and renames it */
        char *id = strdup(w->pid);
        close_prompt(w, 0);
        int bad = !id || kv_parts_add_done(w, id, "trace.h5.tmp", 0);
        free(id);
        return bad ? kv_fail(err, "out of memory") : 0;
    }
    char *fin = kv_parts_file(w, w->pname);
    int index = w->n_done ? w->done[w->n_done - 1].index + 1 : 0;
    char *tmp = strdup(w->ptmp), *id = strdup(w->pid), *name = strdup(w->pname);
    close_prompt(w, 0);
    int bad = !fin || !tmp || !id || !name || rename(tmp, fin) || kv_parts_add_done(w, id, name, index);
    if (bad && tmp) unlink(tmp);
    free(fin);
    free(tmp);
    free(id);
    free(name);
    if (bad) return kv_fail(err, "%s: cannot finish the prompt's file", w->parts);
    return kv_parts_write_index(w, err);
}

static void free_writer(kv_trace_writer *w) {
    for (int i = 0; i < w->n_done; i++) {
        free(w->done[i].id);
        free(w->done[i].file);
    }
    free(w->done);
    if (w->f16 > 0) H5Tclose(w->f16);
    free(w->path);
    free(w->mtmp);
    free(w->parts);
    free(w->index_path);
    free(w->settings);
    free(w);
}

/* A run of one prompt: closes the trace's file and renames it into place. */
static int commit_direct(kv_trace_writer *w, kv_error *err) {
    herr_t r = H5Fclose(w->mfile);
    w->mfile = -1;
    int rc = 0;
    if (r < 0 || w->n_done != 1)
        rc = kv_fail(err, "%s: cannot finish the trace (disk full?)", w->mtmp);
    else if (rename(w->mtmp, w->path))
        rc = kv_fail(err, "%s: cannot move the finished trace into place: %s", w->path, strerror(errno));
    if (rc) unlink(w->mtmp);
    else kv_parts_remove_dir(w->parts);
    free_writer(w);
    return rc;
}

/* Copies the parts into one file under a temporary name, then renames it. */
int kv_trace_commit(kv_trace_writer *w, kv_error *err) {
    if (w->direct) return commit_direct(w, err);
    int rc = -1;
    /* assembled inside the parts directory, so a kill leaves nothing next to the output */
    char *tmp = kv_parts_file(w, "trace.h5.tmp"), *model = kv_parts_file(w, "model.h5");
    hid_t f = -1, mf = -1, pg = -1;
    if (!tmp || !model || kv_parts_finish_model_file(w, err)) goto done;
    f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    mf = H5Fopen(model, H5F_ACC_RDONLY, H5P_DEFAULT);
    int bad = f < 0 || mf < 0 || kv_parts_write_root_attrs(f, &w->meta) ||
              H5Ocopy(mf, "model", f, "model", H5P_DEFAULT, H5P_DEFAULT) < 0;
    pg = bad ? -1 : H5Gcreate2(f, "prompts", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad = bad || pg < 0;
    for (int i = 0; !bad && i < w->n_done; i++) {
        char *part = kv_parts_file(w, w->done[i].file);
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
    kv_parts_remove_dir(w->parts);
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
        if (w->mtmp) unlink(w->mtmp);
    }
    if (w->parts && (!keep_completed || kv_trace_n_prompts(w) == 0) && w->created_parts) kv_parts_remove_dir(w->parts);
    free_writer(w);
}
