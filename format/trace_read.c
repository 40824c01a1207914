#include "format/trace_read.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/h5util.h"
#include "format/scan_internal.h"

_Static_assert(sizeof(hid_t) == sizeof(int64_t) && (hid_t)-1 < 0, "kv_trace keeps HDF5 ids as int64_t");

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
    t->path = kv_strdup(path, err);
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
    if (kv_h5_read_int_attr(f, "format_version", path, &ver, err)) goto fail;
    if (ver != KV_TRACE_FORMAT_VERSION) {
        kv_fail(err, "%s: unsupported format_version %d (this reader reads version %d)", path, ver,
                KV_TRACE_FORMAT_VERSION);
        goto fail;
    }
    if (!(t->model = kv_h5_read_string_attr(f, "model", path, err))) goto fail;
    t->config_json = H5Aexists(f, "config_json") > 0 ? kv_h5_read_string_attr(f, "config_json", path, err)
                                                     : kv_strdup("", err);
    if (!t->config_json) goto fail;
    t->created_by = H5Aexists(f, "created_by") > 0 ? kv_h5_read_string_attr(f, "created_by", path, err)
                                                   : kv_strdup("", err);
    if (!t->created_by) goto fail;
    if (kv_h5_read_int_attr(f, "window", path, &t->window, err)) goto fail;
    if (kv_h5_read_int_attr(f, "full_maps", path, &t->full_maps, err)) goto fail;
    if (H5Aexists(f, "nearsum_r_local") > 0) {
        if (kv_h5_read_double_array_attr(f, "nearsum_r_local", path, t->near_r_local, KV_MAX_NEAR, &t->n_near, err))
            goto fail;
        for (int k = 0; k < t->n_near; k++)
            if (!(t->near_r_local[k] > 0 && t->near_r_local[k] <= 1)) {
                kv_fail(err, "%s: attribute 'nearsum_r_local' holds %g, outside (0, 1]", path, t->near_r_local[k]);
                goto fail;
            }
    }
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
    int rc = kv_h5_read_int_attr(m, "n_layers", where, &t->n_layers, err) ||
             kv_h5_read_int_attr(m, "n_heads", where, &t->n_heads, err) ||
             kv_h5_read_int_attr(m, "n_kv_heads", where, &t->n_kv_heads, err) ||
             kv_h5_read_int_attr(m, "head_dim", where, &t->head_dim, err) ||
             kv_h5_read_int_attr(m, "hidden_size", where, &t->hidden_size, err) ||
             kv_h5_read_int_attr(m, "vocab_size", where, &t->vocab_size, err);
    if (!rc) {
        t->architecture = H5Aexists(m, "architecture") > 0 ? kv_h5_read_string_attr(m, "architecture", where, err)
                                                           : kv_strdup("", err);
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
        rc = kv_h5_read_int_attr(g, "index", where, &in[i].index, err);
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


/* --------------------------------------------------------------- prompt */

void kv_prompt_close(kv_prompt *p) {
    if (!p) return;
    if (p->d_attn >= 0) H5Dclose(p->d_attn);
    if (p->d_colsum >= 0) H5Dclose(p->d_colsum);
    if (p->d_window >= 0) H5Dclose(p->d_window);
    if (p->d_values >= 0) H5Dclose(p->d_values);
    if (p->d_key_norm >= 0) H5Dclose(p->d_key_norm);
    if (p->d_nearsum >= 0) H5Dclose(p->d_nearsum);
    if (p->group >= 0) H5Gclose(p->group);
    free(p->flags);
    kv_scan_scratch_free(p->scratch);
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
    p->group = p->d_attn = p->d_colsum = p->d_window = p->d_values = p->d_key_norm = p->d_nearsum = -1;
    snprintf(p->id, sizeof p->id, "%s", id);
    char gname[KV_PROMPT_ID_MAX + 16], where[1200];
    snprintf(gname, sizeof gname, "prompts/%s", id);
    snprintf(where, sizeof where, "%s: /prompts/%s", t->path, id);
    p->group = H5Gopen2(t->file, gname, H5P_DEFAULT);
    if (p->group < 0) {
        kv_fail(err, "%s: cannot open group", where);
        goto fail;
    }
    if (kv_h5_read_int_attr(p->group, "n_tokens", where, &p->n_tokens, err)) goto fail;
    if (kv_h5_read_int_attr(p->group, "index", where, &p->index, err)) goto fail;
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
        kv_scan_detect(p);
    } else if (t->full_maps) {
        kv_fail(err, "%s: missing dataset 'attn' (the file says full_maps = 1)", where);
        goto fail;
    }
    if (H5Lexists(p->group, "values", H5P_DEFAULT) > 0) {
        long long dv[4] = {L, KVH, N, hd};
        if ((p->d_values = open_dataset(p->group, "values", where, H5T_FLOAT, 4, dv, err)) < 0) goto fail;
        p->has_values = 1;
    }
    if (H5Lexists(p->group, "key_norm", H5P_DEFAULT) > 0) {
        long long dk[3] = {L, KVH, N};
        if ((p->d_key_norm = open_dataset(p->group, "key_norm", where, H5T_FLOAT, 3, dk, err)) < 0) goto fail;
        p->has_key_norm = 1;
    }
    if (t->n_near > 0 && H5Lexists(p->group, "nearsum", H5P_DEFAULT) > 0) {
        long long dn[4] = {L, t->n_near, H, N};
        if ((p->d_nearsum = open_dataset(p->group, "nearsum", where, H5T_FLOAT, 4, dn, err)) < 0) goto fail;
        int nw = 0;
        char wn[1300];
        snprintf(wn, sizeof wn, "%s/nearsum", where);
        if (kv_h5_read_int_array_attr(p->d_nearsum, "window_lengths", wn, p->near_w, KV_MAX_NEAR, &nw, err)) goto fail;
        for (int k = 0; k < t->n_near; k++)
            if (nw != t->n_near || p->near_w[k] < 0 || p->near_w[k] > N) {
                kv_fail(err, "%s: attribute 'window_lengths' must hold %d lengths from 0 to %lld", wn, t->n_near, N);
                goto fail;
            }
        p->has_nearsum = 1;
    }
    return p;
fail:
    kv_prompt_close(p);
    return NULL;
}

static void pwhere(const kv_prompt *p, char *buf, size_t n) {
    snprintf(buf, n, "%s: /prompts/%s", p->trace->path, p->id);
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

int kv_prompt_read_key_norm(const kv_prompt *p, int li, float *out, kv_error *err) {
    char where[1200];
    pwhere(p, where, sizeof where);
    if (!p->has_key_norm) return kv_fail(err, "%s: missing dataset 'key_norm' (traced before kvtrace wrote it)", where);
    hsize_t start[3] = {(hsize_t)li, 0, 0};
    hsize_t count[3] = {1, (hsize_t)p->trace->n_kv_heads, (hsize_t)p->n_tokens};
    return read_slab(p->d_key_norm, 3, start, count, out, where, "key_norm", err);
}

int kv_prompt_read_nearsum(const kv_prompt *p, int li, int k, float *out, kv_error *err) {
    char where[1200];
    pwhere(p, where, sizeof where);
    if (!p->has_nearsum) return kv_fail(err, "%s: missing dataset 'nearsum'", where);
    hsize_t start[4] = {(hsize_t)li, (hsize_t)k, 0, 0};
    hsize_t count[4] = {1, 1, (hsize_t)p->trace->n_heads, (hsize_t)p->n_tokens};
    return read_slab(p->d_nearsum, 4, start, count, out, where, "nearsum", err);
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
            if (!(out[i] = kv_strdup("", err))) {
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
            if (!(out[i] = kv_strdup(raw[i] ? raw[i] : "", err))) rc = -1;
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
