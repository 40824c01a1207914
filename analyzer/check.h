/* kvanalyze --check: verifies a trace before anyone relies on it. */
#ifndef KV_CHECK_H
#define KV_CHECK_H

#include <stdio.h>

#include "common/error.h"

/* Checks format and version, every dataset's shape against /model, that
 * every stored attention row (attn and window) sums to 1 within tolerance
 * and has nothing above the diagonal (or outside a sliding window's reach,
 * which is zero too), that colsum equals the column sums of attn where both
 * are stored, and that no value is NaN or infinite. Stops at the first
 * fault, returning -1 with err naming the file, prompt, layer, head and
 * position; on success prints one summary line to report. */
int kv_check_trace(const char *path, FILE *report, kv_error *err);

#endif
