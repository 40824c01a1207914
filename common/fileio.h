/* Small file helpers shared by the tools. */
#ifndef KV_FILEIO_H
#define KV_FILEIO_H

#include <stddef.h>
#include "common/error.h"

/* Reads a whole file into a NUL-terminated malloc'd buffer; *len (optional)
 * gets its size without the NUL. max_bytes bounds what is accepted. */
char *kv_read_file(const char *path, size_t max_bytes, size_t *len, kv_error *err);

int kv_path_exists(const char *path);

/* The last component of a path, ignoring trailing slashes, copied into out. */
void kv_basename(const char *path, char *out, size_t out_size);

/* Joins dir and name with one '/'. Returns malloc'd string or NULL. */
char *kv_path_join(const char *dir, const char *name, kv_error *err);

#endif
