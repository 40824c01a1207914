/* Small helpers the command-line tools share: number and size parsing,
 * human-readable sizes, and how much memory the system has available. */
#ifndef KV_CLI_H
#define KV_CLI_H

#include <stddef.h>

/* A decimal integer in [lo, hi], the whole string; 0 or -1. */
int kv_parse_long(const char *s, long lo, long hi, long *out);
/* A size such as 512M, 8G, 1.5GB or 4096 (bytes); 0 or -1. */
int kv_parse_size(const char *s, double *bytes);
/* "35.2 GiB", "100 MiB", "12 KiB" */
void kv_format_bytes(double bytes, char *out, size_t out_size);
/* MemAvailable from /proc/meminfo in bytes, or 0 when it cannot be told. */
double kv_mem_available(void);

#endif
