#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kv_fail(kv_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int kv_wrap(kv_error *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 3);
    size_t room = sizeof err->msg - n - 3;
    strncpy(err->msg + n + 2, old, room);
    err->msg[sizeof err->msg - 1] = 0;
    return -1;
}

void *kv_malloc(size_t n, kv_error *err) {
    void *p = malloc(n ? n : 1);
    if (!p) kv_fail(err, "out of memory allocating %zu bytes", n);
    return p;
}

void *kv_calloc(size_t count, size_t size, kv_error *err) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) kv_fail(err, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

char *kv_strdup(const char *s, kv_error *err) {
    size_t n = strlen(s);
    char *c = kv_malloc(n + 1, err);
    if (c) memcpy(c, s, n + 1);
    return c;
}
