/* Small HDF5 helpers of the trace format's reader and writer. */
#include "format/h5util.h"

#include <stdlib.h>
#include <string.h>

hid_t kv_h5_utf8_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

int kv_h5_write_string_attr(hid_t loc, const char *name, const char *value) {
    hid_t t = kv_h5_utf8_type(), sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, t, &value) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

int kv_h5_write_int_attr(hid_t loc, const char *name, int value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, H5T_NATIVE_INT, &value) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
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
        out = kv_strdup(s ? s : "", err);
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

static int write_array_attr(hid_t loc, const char *name, hid_t filetype, hid_t memtype, const void *v, int n) {
    hsize_t dim = (hsize_t)n;
    hid_t sp = H5Screate_simple(1, &dim, NULL);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, filetype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, memtype, v) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

int kv_h5_write_double_array_attr(hid_t loc, const char *name, const double *v, int n) {
    return write_array_attr(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v, n);
}

int kv_h5_write_int_array_attr(hid_t loc, const char *name, const int *v, int n) {
    return write_array_attr(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, v, n);
}

static int read_array_attr(hid_t obj, const char *name, const char *where, hid_t memtype, void *v, int cap, int *n,
                           kv_error *err) {
    if (H5Aexists(obj, name) <= 0) return kv_fail(err, "%s: missing attribute '%s'", where, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = a < 0 ? -1 : H5Aget_type(a), sp = a < 0 ? -1 : H5Aget_space(a);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    H5T_class_t cls = ft < 0 ? H5T_NO_CLASS : H5Tget_class(ft);
    int rc = 0;
    if (a < 0 || ft < 0 || sp < 0 || (cls != H5T_INTEGER && cls != H5T_FLOAT) || np < 1 || np > cap ||
        H5Sget_simple_extent_ndims(sp) > 1)
        rc = kv_fail(err, "%s: attribute '%s' is not a list of 1 to %d numbers", where, name, cap);
    else if (H5Aread(a, memtype, v) < 0)
        rc = kv_fail(err, "%s: cannot read attribute '%s'", where, name);
    else
        *n = (int)np;
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    return rc;
}

int kv_h5_read_double_array_attr(hid_t obj, const char *name, const char *where, double *v, int cap, int *n,
                                 kv_error *err) {
    return read_array_attr(obj, name, where, H5T_NATIVE_DOUBLE, v, cap, n, err);
}

int kv_h5_read_int_array_attr(hid_t obj, const char *name, const char *where, int *v, int cap, int *n,
                              kv_error *err) {
    return read_array_attr(obj, name, where, H5T_NATIVE_INT, v, cap, n, err);
}

/* Reads a scalar numeric attribute as int; -1 with err when missing. */
int kv_h5_read_int_attr(hid_t obj, const char *name, const char *where, int *v, kv_error *err) {
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

/* Creates a dataset; chunk == NULL: contiguous. deflate: shuffle + deflate. */
hid_t kv_h5_make_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
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
int kv_h5_write_block(hid_t d, hid_t memtype, int rank, const hsize_t *start, const hsize_t *count,
                       const void *buf) {
    hid_t fs = H5Dget_space(d);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(rank, count, NULL);
    herr_t r = H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return r < 0 ? -1 : 0;
}

int kv_h5_write_all(hid_t loc, const char *name, hid_t filetype, hid_t memtype, int rank, const hsize_t *dims,
                     const void *buf) {
    hid_t d = kv_h5_make_dataset(loc, name, filetype, rank, dims, NULL, 0);
    if (d < 0) return -1;
    herr_t r = H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Dclose(d);
    return r < 0 ? -1 : 0;
}

/* ---- the writer ------------------------------------------------------------ */
