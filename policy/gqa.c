#include "policy/gqa.h"

#include <string.h>

/* out = max(out, a) or out += a */
static void fold(float *out, const float *a, int n, int use_max) {
    if (use_max)
        for (int j = 0; j < n; j++) out[j] = a[j] > out[j] ? a[j] : out[j];
    else
        for (int j = 0; j < n; j++) out[j] += a[j];
}

static void finish(float *out, int G, int n, int use_max) {
    if (use_max || G == 1) return;
    float inv = 1.0f / G;
    for (int j = 0; j < n; j++) out[j] *= inv;
}

void kv_gqa_combine(float *out, const float *const *rows, int G, int n, int use_max) {
    if (out != rows[0]) memmove(out, rows[0], (size_t)n * sizeof *out);
    for (int q = 1; q < G; q++) fold(out, rows[q], n, use_max);
    finish(out, G, n, use_max);
}

void kv_gqa_combine_strided(float *out, const float *first, long stride, int G, int n, int use_max) {
    if (out != first) memmove(out, first, (size_t)n * sizeof *out);
    for (int q = 1; q < G; q++) fold(out, first + q * stride, n, use_max);
    finish(out, G, n, use_max);
}
