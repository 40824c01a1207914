/* FastGen head-policy profiling (Ge et al., ICLR 2024); definitions in
 * docs/analyzer.md. One call profiles one head's map (or its combined GQA
 * group map) of one prompt and one layer. */
#ifndef KV_FASTGEN_H
#define KV_FASTGEN_H

#include <stdint.h>

/* ladder rungs, cheapest first */
enum { KV_RUNG_SPECIAL, KV_RUNG_PUNCT, KV_RUNG_FREQUENT, KV_RUNG_LOCAL, KV_RUNG_FULL, KV_N_RUNGS };

/* "special", "special+punct", ..., "full" */
extern const char *const kv_rung_policy[KV_N_RUNGS];
/* the component each rung adds: "special", "punct", "frequent", "local", "full" */
extern const char *const kv_rung_component[KV_N_RUNGS];

typedef struct {
    double r_local;    /* local window = ceil(r_local * N) positions */
    double r_frequent; /* frequent set = ceil(r_frequent * N) positions */
    int skip_rows;     /* query rows i < skip_rows are left out of the mean */
} kv_fastgen_params;

typedef struct {
    double recovery[KV_N_RUNGS];      /* mean kept mass per rung (full = 1) */
    double kept_fraction[KV_N_RUNGS]; /* |kept| / N at the last row */
    int rows_used;                    /* query rows in the mean */
} kv_fastgen_result;

/* ceil(r*N - 1e-9), clamped to [0, N] */
int kv_ceil_frac(double r, int N);

/* Profiles one map.
 *   A       [nrows, N] attention rows of query positions row0 .. row0+nrows-1
 *   flags   [N] token flags (KV_FLAG_SPECIAL, KV_FLAG_PUNCT)
 *   colsum  [N] accumulated attention, the "frequent" score
 *   cls     [N] scratch (int) */
void kv_fastgen_profile(const float *A, int row0, int nrows, int N, const uint8_t *flags,
                        const float *colsum, const kv_fastgen_params *p, int *cls,
                        kv_fastgen_result *out);

/* The first rung whose recovery is >= T (full always passes). */
int kv_fastgen_choose(const double *recovery, double T);

#endif
