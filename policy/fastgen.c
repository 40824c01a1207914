#include "policy/fastgen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format/trace.h"

const char *const kv_rung_policy[KV_N_RUNGS] = {
    "special", "special+punct", "special+punct+frequent", "special+punct+frequent+local", "full"};
const char *const kv_rung_component[KV_N_RUNGS] = {"special", "punct", "frequent", "local", "full"};

int kv_rung_index(const char *name) {
    for (int i = 0; i < KV_N_RUNGS; i++)
        if (!strcmp(name, kv_rung_policy[i])) return i;
    return -1;
}

int kv_ceil_frac(double r, int N) {
    double x = ceil(r * (double)N - 1e-9);
    if (x < 0) x = 0;
    if (x > N) x = N;
    return (int)x;
}

int kv_local_window(double r_local, int N) { return kv_ceil_frac(r_local, N); }

/* qsort has no context argument; a small comparator on (score, position) pairs keeps it thread-safe */
typedef struct {
    float s;
    int j;
} sj;
static int cmp_sj(const void *a, const void *b) {
    const sj *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->j < y->j ? -1 : (x->j > y->j);
}

int kv_fastgen_head_build(kv_fastgen_head *hd, int N, const uint8_t *flags, const float *colsum,
                          const kv_fastgen_params *p, int *cls) {
    memset(hd, 0, sizeof *hd);
    int nS = 0, nP = 0, nF = 0, n_cand = 0;
    for (int j = 0; j < N; j++) {
        if (flags[j] & KV_FLAG_SPECIAL) cls[j] = 0, nS++;
        else if (flags[j] & KV_FLAG_PUNCT) cls[j] = 1, nP++;
        else cls[j] = 3, n_cand++;
    }
    int kf = kv_ceil_frac(p->r_frequent, N);
    if (kf > n_cand) kf = n_cand;
    if (kf > 0) {
        sj *c = malloc((size_t)n_cand * sizeof *c);
        if (!c) return -1;
        int m = 0;
        for (int j = 0; j < N; j++)
            if (cls[j] == 3) c[m].s = colsum[j], c[m].j = j, m++;
        qsort(c, (size_t)m, sizeof *c, cmp_sj);
        for (int q = 0; q < kf; q++) cls[c[q].j] = 2;
        free(c);
        nF = kf;
    }
    int nl = kv_local_window(p->r_local, N);
    /* 0/1 masks per class so that each row is four vectorisable dot products */
    hd->mask = malloc((size_t)4 * N * sizeof *hd->mask);
    if (!hd->mask) return -1;
    for (int j = 0; j < N; j++)
        for (int c = 0; c < 4; c++) hd->mask[(size_t)c * N + j] = (cls[j] == c);
    hd->N = N;
    hd->n_local = nl;
    hd->skip_rows = p->skip_rows;
    int nlocal_extra = 0; /* "other" positions inside the last row's local window */
    for (int j = N - nl; j < N; j++)
        if (j >= 0 && cls[j] == 3) nlocal_extra++;
    hd->kept_fraction[KV_RUNG_SPECIAL] = (double)nS / N;
    hd->kept_fraction[KV_RUNG_PUNCT] = (double)(nS + nP) / N;
    hd->kept_fraction[KV_RUNG_FREQUENT] = (double)(nS + nP + nF) / N;
    hd->kept_fraction[KV_RUNG_LOCAL] = (double)(nS + nP + nF + nlocal_extra) / N;
    hd->kept_fraction[KV_RUNG_FULL] = 1.0;
    return 0;
}

void kv_fastgen_head_free(kv_fastgen_head *hd) {
    free(hd->mask);
    hd->mask = NULL;
}

void kv_fastgen_head_rows(const kv_fastgen_head *hd, const float *A, int row0, int nrows, double acc[4],
                          int *used) {
    int N = hd->N;
    const float *m0 = hd->mask, *m1 = m0 + N, *m2 = m0 + 2 * (size_t)N, *m3 = m0 + 3 * (size_t)N;
    for (int r = 0; r < nrows; r++) {
        int i = row0 + r;
        if (i < hd->skip_rows) continue;
        const float *a = A + (size_t)r * N;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int lo = i - hd->n_local + 1; /* local: i - j < n_local */
        if (lo < 0) lo = 0;
#pragma omp simd reduction(+ : s0, s1, s2)
        for (int j = 0; j <= i; j++) {
            s0 += a[j] * m0[j];
            s1 += a[j] * m1[j];
            s2 += a[j] * m2[j];
        }
#pragma omp simd reduction(+ : s3)
        for (int j = lo; j <= i; j++) s3 += a[j] * m3[j];
        acc[0] += s0;
        acc[1] += (double)s0 + s1;
        acc[2] += (double)s0 + s1 + s2;
        acc[3] += (double)s0 + s1 + s2 + s3;
        (*used)++;
    }
}

int kv_fastgen_head_sums(const kv_fastgen_head *hd, const float *colsum, const float *nearsum, double acc[4],
                         int *used) {
    if (hd->skip_rows > 0) return -1;
    int N = hd->N;
    const float *m0 = hd->mask, *m1 = m0 + N, *m2 = m0 + 2 * (size_t)N, *m3 = m0 + 3 * (size_t)N;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int j = 0; j < N; j++) {
        s0 += (double)colsum[j] * m0[j];
        s1 += (double)colsum[j] * m1[j];
        s2 += (double)colsum[j] * m2[j];
        s3 += (double)nearsum[j] * m3[j];
    }
    acc[0] = s0;
    acc[1] = s0 + s1;
    acc[2] = s0 + s1 + s2;
    acc[3] = s0 + s1 + s2 + s3;
    *used = N;
    return 0;
}

void kv_fastgen_head_result(const kv_fastgen_head *hd, const double acc[4], int used, kv_fastgen_result *out) {
    out->rows_used = used;
    for (int k = 0; k < 4; k++) out->recovery[k] = used ? acc[k] / used : 0.0;
    out->recovery[KV_RUNG_FULL] = 1.0;
    memcpy(out->kept_fraction, hd->kept_fraction, sizeof out->kept_fraction);
}

int kv_fastgen_profile(const float *A, int row0, int nrows, int N, const uint8_t *flags,
                       const float *colsum, const kv_fastgen_params *p, int *cls,
                       kv_fastgen_result *out) {
    kv_fastgen_head hd;
    if (kv_fastgen_head_build(&hd, N, flags, colsum, p, cls)) {
        kv_fastgen_head_free(&hd);
        return -1;
    }
    double acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
    int used = 0;
    /* rows in parallel (row i costs O(i): dynamic schedule) */
#pragma omp parallel for schedule(dynamic, 16) reduction(+ : acc0, acc1, acc2, acc3, used)
    for (int r = 0; r < nrows; r++) {
        double a[4] = {0, 0, 0, 0};
        kv_fastgen_head_rows(&hd, A + (size_t)r * N, row0 + r, 1, a, &used);
        acc0 += a[0], acc1 += a[1], acc2 += a[2], acc3 += a[3];
    }
    double acc[4] = {acc0, acc1, acc2, acc3};
    kv_fastgen_head_result(&hd, acc, used, out);
    kv_fastgen_head_free(&hd);
    return 0;
}

int kv_fastgen_choose(const double *recovery, double T) {
    for (int k = 0; k < KV_RUNG_FULL; k++)
        if (recovery[k] >= T) return k;
    return KV_RUNG_FULL;
}
