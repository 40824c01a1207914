/* The two files that carry a profile out of kvanalyze (docs/analyzer.md):
 * policies.json (FastGen: per threshold, layer and head, the rung chosen, its
 * components, kept fraction and every rung's recovery; the memory kept) and
 * budgets.json (Ada-KV: per budget and layer, each KV head's budget). Their
 * one writer (kvanalyze) and their one reader (kvtrace fidelity, kvplot). */
#ifndef KV_POLICY_FILE_H
#define KV_POLICY_FILE_H

#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "policy/fastgen.h"

/* component bits of a head's kept set (policies.json "components") */
enum { KV_COMP_SPECIAL = 1, KV_COMP_PUNCT = 2, KV_COMP_FREQUENT = 4, KV_COMP_LOCAL = 8, KV_COMP_FULL = 16 };
/* The components of a rung: special .. that rung's component, or full. */
uint8_t kv_rung_components(int rung);

typedef struct {
    int head;
    int policy;                      /* rung (KV_RUNG_*): kv_rung_policy[policy] */
    uint8_t components;              /* KV_COMP_* */
    double kept_fraction;
    double recovery[KV_N_RUNGS];
} kv_head_policy;

typedef struct {
    int layer;                       /* model layer index */
    int n_kv, n_q;
    kv_head_policy *kv, *q;          /* [n_kv], [n_q] */
} kv_layer_policy;

typedef struct {
    double threshold;
    int n_layers;
    kv_layer_policy *layers;         /* [n_layers] */
    double mem_kept_fraction;        /* memory.kept_fraction */
    double mean_tokens;              /* memory.mean_tokens */
    double kv_bytes_full, kv_bytes_kept; /* NaN when the file has none */
} kv_threshold_policy;

typedef struct {
    /* parameters */
    double r_local, r_frequent;
    int gqa_max, aggregate_min, skip_rows;
    char rows[8];                    /* all | window | mixed */
    char rows_from[16];              /* what the all-rows profiles came from: maps | sums | "maps and sums" | "" */
    char trace[1024];
    char model[256];
    char **prompts;                  /* [n_prompts] */
    int n_prompts;
    /* model */
    int n_layers, n_heads, n_kv_heads, head_dim, hidden_size;
    int *traced;                     /* [n_traced] model layer indices */
    int n_traced;
    /* policies, in file order */
    int n_thr;
    kv_threshold_policy *thr;        /* [n_thr] */
} kv_policy_file;

kv_policy_file *kv_policies_read(const char *path, kv_error *err);
int kv_policies_write(FILE *fp, const kv_policy_file *p, kv_error *err);
void kv_policies_free(kv_policy_file *p);
/* The entry for threshold t (|diff| < 1e-9), or NULL. */
const kv_threshold_policy *kv_policies_at(const kv_policy_file *p, double t);

typedef struct {
    int layer, layer_budget, n_kv;
    int *kv_budgets;                 /* [n_kv] */
} kv_budget_layer;

typedef struct {
    long budget;
    int n_layers;
    kv_budget_layer *layers;         /* [n_layers] */
} kv_budget_set;

typedef struct {
    /* parameters */
    char scorer[16], pool[16], eval[32], safeguard[16], gqa_order[16], pyramid_schedule[16];
    int kernel, obs_window, gqa_max, pyramid;
    double alpha;
    char trace[1024];
    char model[256];
    char **prompts;                  /* [n_prompts] */
    int n_prompts;
    /* budgets, in file order */
    int n;
    kv_budget_set *sets;             /* [n] */
} kv_budget_file;

kv_budget_file *kv_budgets_read(const char *path, kv_error *err);
int kv_budgets_write(FILE *fp, const kv_budget_file *b, kv_error *err);
void kv_budgets_free(kv_budget_file *b);

#endif
