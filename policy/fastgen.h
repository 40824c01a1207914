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
/* the rung whose policy name (kv_rung_policy) is name, or -1 */
int kv_rung_index(const char *name);

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

#define KV_DEFAULT_LOCAL_RATIO 0.3 /* the paper's r_l */
/* FastGen's local window of a prompt of N tokens, in positions: row i keeps
 * keys j with 0 <= i - j < kv_local_window(r_local, N) = ceil(r_local N). */
int kv_local_window(double r_local, int N);

/* One head's (or GQA group's) components, set up once per prompt and layer;
 * its map rows can then be accumulated block by block, in any order, by
 * several threads with their own accumulators. */
typedef struct {
    float *mask;         /* [4, N] 0/1: special, punct (not special), frequent, other */
    int N;
    int n_local;         /* ceil(r_local * N) */
    int skip_rows;
    double kept_fraction[KV_N_RUNGS];
} kv_fastgen_head;

/* Chooses the components from flags [N] and colsum [N]; cls [N] scratch (int),
 * left holding each position's class (0 special, 1 punct, 2 frequent, 3 other).
 * Returns 0, or -1 when out of memory. Free with kv_fastgen_head_free. */
int kv_fastgen_head_build(kv_fastgen_head *hd, int N, const uint8_t *flags, const float *colsum,
                          const kv_fastgen_params *p, int *cls);
void kv_fastgen_head_free(kv_fastgen_head *hd);

/* Adds the kept mass of rows row0 .. row0+nrows-1 (A [nrows, N]) to acc[0..3]
 * (rungs special .. local) and the number of rows used to *used. */
void kv_fastgen_head_rows(const kv_fastgen_head *hd, const float *A, int row0, int nrows, double acc[4],
                          int *used);

/* The same sums over all N rows, without the rows (docs/analyzer.md, "All
 * rows without full maps"): for a column set X that is the same for every
 * row, Σ_i Σ_{j∈X} A[i, j] = Σ_{j∈X} colsum[j]; the local rung adds, for
 * each column j outside X, nearsum[j] = Σ_{i: 0 <= i - j < n_local} A[i, j].
 * colsum, nearsum [N]; nearsum must be for hd's n_local. Sets acc[0..3] and
 * *used = N. Returns -1 (nothing set) when hd skips rows (--skip-rows). */
int kv_fastgen_head_sums(const kv_fastgen_head *hd, const float *colsum, const float *nearsum, double acc[4],
                         int *used);

/* Recovery = acc / used per rung (full = 1), and the kept fractions. */
void kv_fastgen_head_result(const kv_fastgen_head *hd, const double acc[4], int used, kv_fastgen_result *out);

/* Profiles one map: build, rows in parallel, result. A may be NULL with
 * nrows = 0 to get the classes in cls only.
 *   A       [nrows, N] attention rows of query positions row0 .. row0+nrows-1
 *   flags   [N] token flags (KV_FLAG_SPECIAL, KV_FLAG_PUNCT)
 *   colsum  [N] accumulated attention, the "frequent" score
 *   cls     [N] scratch (int) */
int kv_fastgen_profile(const float *A, int row0, int nrows, int N, const uint8_t *flags,
                       const float *colsum, const kv_fastgen_params *p, int *cls,
                       kv_fastgen_result *out);

/* The first rung whose recovery is >= T (full always passes). */
int kv_fastgen_choose(const double *recovery, double T);

#endif
