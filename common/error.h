/* Errors as values: library code fills a kv_error and returns -1 (or NULL),
 * tools print the message on one line and exit non-zero. Messages name the
 * input and what is wrong with it, e.g.
 *   "model.safetensors: tensor 'lm_head.weight' ends past the end of the file" */
#ifndef KV_ERROR_H
#define KV_ERROR_H

#include <stddef.h>

typedef struct {
    char msg[1024];
} kv_error;

/* Sets err->msg (printf-style) and returns -1, so callers can write
 *   return kv_fail(err, "%s: ...", path); */
int kv_fail(kv_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message: "<prefix>: <old message>". Returns -1. */
int kv_wrap(kv_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation helpers that report through kv_error instead of aborting. */
void *kv_malloc(size_t n, kv_error *err);
void *kv_calloc(size_t count, size_t size, kv_error *err);
char *kv_strdup(const char *s, kv_error *err);

#endif
