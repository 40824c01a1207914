/* Small helpers the command-line tools share: number and size parsing,
 * human-readable sizes, and how much memory the system has available. */
#ifndef KV_CLI_H
#define KV_CLI_H

#include <stddef.h>

/* A decimal integer in [lo, hi], the whole string; 0 or -1. */
int kv_parse_long(const char *s, long lo, long hi, long *out);
/* A finite decimal floating-point number, the whole string; 0 or -1. */
int kv_parse_double(const char *s, double *out);
/* A size such as 512M, 8G, 1.5GB or 4096 (bytes); 0 or -1. */
int kv_parse_size(const char *s, double *bytes);
/* The value of the last `--name VALUE` or `--name=VALUE` in argv, or NULL:
 * for an option that must act before the others are parsed, wherever it is
 * given (a preset that the options given with it override). name includes
 * the dashes. */
const char *kv_option_value(int argc, char **argv, const char *name);
/* "35.2 GiB", "100 MiB", "12 KiB" */
void kv_format_bytes(double bytes, char *out, size_t out_size);
/* Seconds on the monotonic clock (for timings and progress lines). */
double kv_now_s(void);
/* MemAvailable from /proc/meminfo in bytes, or 0 when it cannot be told. */
double kv_mem_available(void);

/* OpenMP threads that spin while waiting take the CPU from the threads doing
 * the work when the machine is shared (measured at load 5 on 2 cores: Ada-KV
 * 8 s spinning vs 1.5 s passive; fidelity's loss contexts 2.3 s vs 0.3 s).
 * libgomp reads OMP_WAIT_POLICY when it is loaded, so when the user has not
 * chosen one, this sets it to passive and re-executes the program with argv
 * (the program's own, argv[0] included). Returns only when it did not. */
void kv_prefer_passive_waiting(char **argv);

#endif
