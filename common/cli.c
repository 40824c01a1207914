#include "common/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int kv_parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int kv_parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

double kv_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int kv_parse_size(const char *s, double *bytes) {
    static const struct { const char *suffix; double unit; } units[] = {
        {"", 1},           {"B", 1},           {"K", 1024.0},          {"KB", 1024.0},
        {"M", 1048576.0},  {"MB", 1048576.0},  {"G", 1073741824.0},    {"GB", 1073741824.0},
        {"T", 1099511627776.0}, {"TB", 1099511627776.0},
    };
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(end, units[i].suffix)) {
            *bytes = v * units[i].unit;
            return 0;
        }
    return -1;
}

void kv_format_bytes(double b, char *out, size_t n) {
    if (b >= 1073741824.0) snprintf(out, n, "%.1f GiB", b / 1073741824.0);
    else if (b >= 1048576.0) snprintf(out, n, "%.0f MiB", b / 1048576.0);
    else snprintf(out, n, "%.0f KiB", b / 1024.0);
}

double kv_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

void kv_prefer_passive_waiting(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the default policy */
}

const char *kv_option_value(int argc, char **argv, const char *name) {
    size_t len = strlen(name);
    const char *value = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], name) && i + 1 < argc) value = argv[++i];
        else if (!strncmp(argv[i], name, len) && argv[i][len] == '=') value = argv[i] + len + 1;
    }
    return value;
}
