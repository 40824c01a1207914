/* Per-head attention concentration: mass captured by each head's top x% of
 * positions, x = 1..KV_CONC_MAX (docs/analyzer.md). */
#ifndef KV_CONCENTRATION_H
#define KV_CONCENTRATION_H

#include <stdint.h>

#define KV_CONC_MAX 50

/* rows [nrows, N] of one head -> mass[x-1] (mean over rows), positions[x-1];
 * scratch [2N] (the sort's keys and buffer). */
void kv_concentration(const float *rows, int nrows, int N, double *mass, int *positions, uint32_t *scratch);

#endif
