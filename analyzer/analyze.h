/* kvanalyze's driver: streams a trace one prompt and one layer at a time
 * through FastGen profiling, Ada-KV allocation + loss and concentration, and
 * writes the output files of docs/analyzer.md. */
#ifndef KV_ANALYZE_H
#define KV_ANALYZE_H

#include <stdio.h>

#include "policy/adakv.h"
#include "policy/fastgen.h"
#include "policy/loss.h"
#include "common/error.h"

#define KV_MAX_LIST 64

typedef struct {
    const char *trace_path;
    const char *outdir;
    double thresholds[KV_MAX_LIST];
    int n_thresholds;
    kv_fastgen_params fg;
    int gqa_max;       /* --gqa max (FastGen and Ada-KV) */
    int aggregate_min; /* --aggregate min */
    int budgets[KV_MAX_LIST];
    int n_budgets;
    kv_adakv_params ada;
    int pyramid;
    int kept;          /* --kept: also write kept.jsonl, every selection's kept positions */
    char **prompts; /* selected ids, NULL = all */
    int n_prompts;
    int force;
    int timings; /* print per-phase wall times to stderr */
    int progress; /* a progress line on stderr after every layer (kvanalyze: when stderr is a terminal) */
    double max_memory; /* bytes the run may use; 0: what the system has available */
} kv_analyze_opts;

/* Runs the whole analysis; prints the summary table to summary. Returns -1
 * with err filled (and no outputs left behind) on failure. */
int kv_analyze(const kv_analyze_opts *o, FILE *summary, kv_error *err);

#endif
