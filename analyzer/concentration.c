#include "analyzer/concentration.h"

#include <stdlib.h>
#include <string.h>

#include "analyzer/fastgen.h"

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : (x < y);
}

void kv_concentration(const float *rows, int nrows, int N, double *mass, int *positions, float *s) {
    for (int x = 1; x <= KV_CONC_MAX; x++) {
        positions[x - 1] = kv_ceil_frac(x / 100.0, N);
        mass[x - 1] = 0;
    }
    for (int r = 0; r < nrows; r++) {
        memcpy(s, rows + (size_t)r * N, (size_t)N * sizeof *s);
        qsort(s, (size_t)N, sizeof *s, cmp_desc);
        double cum = 0;
        int k = 0;
        for (int x = 1; x <= KV_CONC_MAX; x++) {
            for (; k < positions[x - 1]; k++) cum += s[k];
            mass[x - 1] += cum;
        }
    }
    for (int x = 0; x < KV_CONC_MAX; x++) mass[x] = nrows ? mass[x] / nrows : 0;
}
