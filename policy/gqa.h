/* Grouped-query attention: a cache decision is per KV head, so the G query
 * heads that share one KV head are combined into one row before FastGen or
 * Ada-KV choose its kept set (docs/analyzer.md, "GQA"). The one definition
 * kvanalyze and kvtrace fidelity both use. */
#ifndef KV_GQA_H
#define KV_GQA_H

/* out[j] = mean over q of rows[q][j] (summed in float, then times 1/G), or
 * with use_max the max, for j < n. out may be rows[0]. */
void kv_gqa_combine(float *out, const float *const *rows, int G, int n, int use_max);

/* The same for G rows stored one after another, stride floats apart. */
void kv_gqa_combine_strided(float *out, const float *first, long stride, int G, int n, int use_max);

#endif
