/* The crash-safe parts directory of a trace in progress (docs/trace-format.md):
 * model.h5, one file per completed prompt, index.h5 linking them. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"
#include "format/h5util.h"
#include "format/trace.h"
#include "format/writer_internal.h"

char *kv_parts_file(const kv_trace_writer *w, const char *name) { return kv_path_join(w->parts, name, NULL); }

/* The file attributes of docs/trace-format.md (model.h5, index.h5, the final file). */
int kv_parts_write_root_attrs(hid_t root, const kv_trace_meta *m) {
    return kv_h5_write_string_attr(root, "format", KV_TRACE_FORMAT) || kv_h5_write_int_attr(root, "format_version", KV_TRACE_FORMAT_VERSION) ||
                   kv_h5_write_string_attr(root, "model", m->model_name) || kv_h5_write_string_attr(root, "config_json", m->config_json) ||
                   kv_h5_write_string_attr(root, "created_by", m->created_by) || kv_h5_write_int_attr(root, "window", m->window) ||
                   kv_h5_write_string_attr(root, "rope_precision", m->rope_precision) || kv_h5_write_int_attr(root, "full_maps", m->full_maps) ||
                   (m->n_near > 0 && kv_h5_write_double_array_attr(root, "nearsum_r_local", m->near_r_local, m->n_near))
               ? -1
               : 0;
}

/* Everything that changes a trace's content besides the prompts. */
char *kv_parts_settings(const kv_trace_meta *m) {
    size_t cap = 256 + (size_t)m->n_traced * 12 + (size_t)m->n_near * 26;
    char *s = malloc(cap);
    if (!s) return NULL;
    int k = snprintf(s, cap, "model %s, window %d, rope %s, full maps %s, layers ", m->model_name, m->window,
                     m->rope_precision,
                     !m->full_maps ? "no" : m->maps_f16 ? (m->maps_deflate ? "f16 deflate" : "f16 raw")
                                                         : (m->maps_deflate ? "f32 deflate" : "f32 raw"));
    for (int i = 0; i < m->n_traced && k < (int)cap - 12; i++) k += snprintf(s + k, cap - k, i ? ",%d" : "%d", m->layers[i]);
    k += snprintf(s + k, cap - k, ", local ratios ");
    for (int i = 0; i < m->n_near; i++) k += snprintf(s + k, cap - k, i ? ",%.17g" : "%.17g", m->near_r_local[i]);
    return s;
}

int kv_parts_remove_dir(const char *dir) {
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

int kv_trace_remove_parts(const char *parts_dir) { return kv_parts_remove_dir(parts_dir); }

/* a completed prompt's file: prompt-NNNNN.h5 (its temporary name ends in .tmp) */
static int is_prompt_file(const char *name) {
    size_t len = strlen(name);
    return !strncmp(name, "prompt-", 7) && len > 10 && !strcmp(name + len - 3, ".h5");
}

int kv_trace_parts_completed(const char *parts_dir) {
    DIR *d = opendir(parts_dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += is_prompt_file(e->d_name);
    closedir(d);
    return n;
}

int kv_parts_add_done(kv_trace_writer *w, const char *id, const char *file, int index) {
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
int kv_parts_load(kv_trace_writer *w, kv_error *err) {
    char *model = kv_parts_file(w, "model.h5");
    hid_t f = model ? H5Fopen(model, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    free(model);
    if (f < 0) return 1; /* killed before the model file was complete: nothing to resume */
    kv_error ignored; /* a missing attribute means: not a parts directory, said below */
    char *settings = kv_h5_read_string_attr(f, "run_settings", w->parts, &ignored),
         *config = kv_h5_read_string_attr(f, "config_json", w->parts, &ignored);
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
        char *p = kv_parts_file(w, e->d_name);
        if (len > 4 && !strcmp(e->d_name + len - 4, ".tmp")) {
            unlink(p); /* in flight when the run stopped */
        } else if (is_prompt_file(e->d_name)) {
            hid_t pf = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
            hid_t g = pf >= 0 ? H5Gopen2(pf, "prompts", H5P_DEFAULT) : -1;
            first_child c = {{0}, 0};
            if (g >= 0) H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, take_child, &c);
            hid_t pg = c.count == 1 ? H5Gopen2(g, c.name, H5P_DEFAULT) : -1;
            int index;
            if (pg < 0 || kv_h5_read_int_attr(pg, "index", p, &index, err))
                rc = kv_wrap(err, "%s: not a complete prompt file", p);
            else if (kv_parts_add_done(w, c.name, e->d_name, index))
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
int kv_parts_write_index(kv_trace_writer *w, kv_error *err) {
    char *tmp = kv_parts_file(w, "index.h5.tmp");
    if (!tmp) return kv_fail(err, "out of memory");
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    int bad = f < 0 || kv_parts_write_root_attrs(f, &w->meta) ||
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

/* model.h5.tmp with the file attributes, the run's settings and /model (wo
 * filled in later); when direct, trace.h5.tmp with the file attributes and
 * /model, which the prompt joins. */
int kv_parts_create_model_file(kv_trace_writer *w, kv_error *err) {
    const kv_trace_meta *m = &w->meta;
    w->mtmp = kv_parts_file(w, w->direct ? "trace.h5.tmp" : "model.h5.tmp");
    w->mfile = w->mtmp ? H5Fcreate(w->mtmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT) : -1;
    if (w->mfile < 0) return kv_fail(err, "%s: cannot create files in it", w->parts);
    hid_t g = H5Gcreate2(w->mfile, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int bad = kv_parts_write_root_attrs(w->mfile, m) ||
              (!w->direct && kv_h5_write_string_attr(w->mfile, "run_settings", w->settings)) || g < 0 ||
              kv_h5_write_int_attr(g, "n_layers", m->n_layers) || kv_h5_write_int_attr(g, "n_heads", m->n_heads) ||
              kv_h5_write_int_attr(g, "n_kv_heads", m->n_kv_heads) || kv_h5_write_int_attr(g, "head_dim", m->head_dim) ||
              kv_h5_write_int_attr(g, "hidden_size", m->hidden_size) || kv_h5_write_int_attr(g, "vocab_size", m->vocab_size) ||
              kv_h5_write_string_attr(g, "architecture", m->architecture);
    hsize_t nl = (hsize_t)m->n_traced;
    bad = bad || kv_h5_write_all(g, "layers", H5T_STD_I32LE, H5T_NATIVE_INT, 1, &nl, m->layers);
    hsize_t wo_dims[3] = {nl, (hsize_t)m->hidden_size, (hsize_t)m->n_heads * m->head_dim};
    hid_t d = bad ? -1 : kv_h5_make_dataset(g, "wo", H5T_IEEE_F32LE, 3, wo_dims, NULL, 0);
    if (d >= 0) H5Dclose(d);
    if (g >= 0) H5Gclose(g);
    return bad || d < 0 ? kv_fail(err, "%s: cannot write model.h5", w->parts) : 0;
}

int kv_parts_finish_model_file(kv_trace_writer *w, kv_error *err) {
    if (w->mfile < 0 || w->direct) return 0; /* direct: the trace itself, closed by kv_trace_commit */
    herr_t r = H5Fclose(w->mfile);
    w->mfile = -1;
    char *tmp = kv_parts_file(w, "model.h5.tmp"), *fin = kv_parts_file(w, "model.h5");
    int bad = r < 0 || !tmp || !fin || rename(tmp, fin);
    free(tmp);
    free(fin);
    if (bad) return kv_fail(err, "%s: cannot finish model.h5", w->parts);
    return kv_parts_write_index(w, err);
}
