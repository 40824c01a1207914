/* Small HDF5 helpers shared by the trace reader and writer (format/ only:
 * no other folder includes <hdf5.h>). */
#ifndef KV_H5UTIL_H
#define KV_H5UTIL_H

#include <hdf5.h>

#include "common/error.h"

/* variable-length UTF-8 string type (close with H5Tclose) */
hid_t kv_h5_utf8_type(void);
/* scalar attributes; 0 or -1 */
int kv_h5_write_string_attr(hid_t loc, const char *name, const char *value);
int kv_h5_write_int_attr(hid_t loc, const char *name, int value);
/* 1-D array attributes of n >= 1 values; 0 or -1 */
int kv_h5_write_double_array_attr(hid_t loc, const char *name, const double *v, int n);
int kv_h5_write_int_array_attr(hid_t loc, const char *name, const int *v, int n);
/* Reads a 1-D numeric array attribute of 1 to cap values into v (as double
 * or int); *n gets its length. -1 with err when missing or malformed. */
int kv_h5_read_double_array_attr(hid_t obj, const char *name, const char *where, double *v, int cap, int *n,
                                 kv_error *err);
int kv_h5_read_int_array_attr(hid_t obj, const char *name, const char *where, int *v, int cap, int *n,
                              kv_error *err);
/* Reads a string attribute (variable-length or fixed-length) of an object;
 * returns a malloc'd copy or NULL (err filled; where names the object). */
char *kv_h5_read_string_attr(hid_t obj, const char *name, const char *where, kv_error *err);
/* Reads a scalar integer attribute; -1 with err when missing or not an integer. */
int kv_h5_read_int_attr(hid_t obj, const char *name, const char *where, int *v, kv_error *err);

/* Creates a dataset; chunk == NULL: contiguous. deflate: shuffle + deflate. */
hid_t kv_h5_make_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                         const hsize_t *chunk, int deflate);
/* Writes the hyperslab [start, start + count) of d from buf; 0 or -1. */
int kv_h5_write_block(hid_t d, hid_t memtype, int rank, const hsize_t *start, const hsize_t *count,
                      const void *buf);
/* Creates a contiguous dataset and writes all of it; 0 or -1. */
int kv_h5_write_all(hid_t loc, const char *name, hid_t filetype, hid_t memtype, int rank, const hsize_t *dims,
                    const void *buf);

#endif
