/* kvanalyze's JSON outputs as kvplot needs them (docs/analyzer.md):
 * policies.json (per threshold, per layer, per KV / query head: the policy
 * and rung recoveries; memory kept) and budgets.json (adaptive per-KV-head
 * budgets per budget and layer). */
#ifndef KVP_RESULTS_H
#define KVP_RESULTS_H

#include "common/error.h"
#include "plots/plot.h"

typedef struct {
    int head;
    int policy;                      /* index into kvp_policy_names */
    double kept_fraction;
    double recovery[KVP_N_POLICIES];
} kvp_head_pol;

typedef struct {
    int layer;
    int n_kv, n_q;
    kvp_head_pol *kv, *q;
} kvp_layer_pol;

typedef struct {
    double threshold;
    int n_layers;
    kvp_layer_pol *layers;
    double mem_kept_fraction;        /* memory.kept_fraction */
    double kv_bytes_full, kv_bytes_kept;
} kvp_thr_pol;

typedef struct {
    char model[256];
    int n_thr;
    kvp_thr_pol *thr;                /* in file order */
} kvp_policies;

kvp_policies *kvp_policies_read(const char *path, kv_error *err);
void kvp_policies_free(kvp_policies *p);
/* The entry for threshold t (|diff| < 1e-9), or NULL. */
const kvp_thr_pol *kvp_policies_at(const kvp_policies *p, double t);

typedef struct {
    int layer, layer_budget, n_kv;
    int *kv_budgets;
} kvp_layer_budget;

typedef struct {
    long budget;
    int n_layers;
    kvp_layer_budget *layers;
} kvp_budget_set;

typedef struct {
    char model[256];
    int n;
    kvp_budget_set *sets;
} kvp_budgets;

kvp_budgets *kvp_budgets_read(const char *path, kv_error *err);
void kvp_budgets_free(kvp_budgets *b);

#endif
