#include "analyzer/concentration.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/fastgen.h"

/* Order-preserving map of a float's bits to an unsigned key. */
static inline uint32_t fkey(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* LSD radix sort of keys, ascending, 3 passes of 11 bits; tmp [n]. */
static void radix_sort(uint32_t *k, uint32_t *tmp, int n) {
    for (int shift = 0; shift < 33; shift += 11) {
        int cnt[2049] = {0};
        for (int i = 0; i < n; i++) cnt[((k[i] >> shift) & 2047) + 1]++;
        for (int b = 0; b < 2048; b++) cnt[b + 1] += cnt[b];
        for (int i = 0; i < n; i++) tmp[cnt[(k[i] >> shift) & 2047]++] = k[i];
        memcpy(k, tmp, (size_t)n * sizeof *k);
    }
}

static inline float unkey(uint32_t k) {
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void kv_concentration(const float *rows, int nrows, int N, double *mass, int *positions, uint32_t *scratch) {
    uint32_t *k = scratch, *tmp = scratch + N;
    for (int x = 1; x <= KV_CONC_MAX; x++) {
        positions[x - 1] = kv_ceil_frac(x / 100.0, N);
        mass[x - 1] = 0;
    }
    for (int r = 0; r < nrows; r++) {
        const float *a = rows + (size_t)r * N;
        for (int j = 0; j < N; j++) k[j] = fkey(a[j]);
        radix_sort(k, tmp, N);
        double cum = 0;
        int q = 0; /* q largest entries taken so far (from the end) */
        for (int x = 1; x <= KV_CONC_MAX; x++) {
            for (; q < positions[x - 1]; q++) cum += unkey(k[N - 1 - q]);
            mass[x - 1] += cum;
        }
    }
    for (int x = 0; x < KV_CONC_MAX; x++) mass[x] = nrows ? mass[x] / nrows : 0;
}
