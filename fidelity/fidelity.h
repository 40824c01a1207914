/* kvtrace fidelity: what a KV-cache compression setting does to the model's
 * own next-token predictions, measured offline by a compressed forward pass
 * (docs/fidelity.md). A prompt of N tokens is a context (the first
 * Nc = N - Q) and a continuation (the last Q). The reference pass is the
 * plain forward pass; the compressed pass is the same pass with, per layer
 * and KV head, a mask of the context positions kept for the continuation
 * rows. Kept sets come from a spec: full, streaming:B,
 * adakv:uniform|adaptive:B[:alpha], fastgen:policies.json:T. */
#ifndef KV_FIDELITY_H
#define KV_FIDELITY_H

#include <stdint.h>

#include "model/model.h"
#include "policy/policy_file.h" /* KV_COMP_* */

#include "policy/adakv.h" /* KV_STREAMING_SINKS */

typedef enum { KV_SPEC_FULL, KV_SPEC_STREAMING, KV_SPEC_ADAKV, KV_SPEC_FASTGEN } kv_spec_kind;

typedef struct {
    char text[1024];      /* the spec as given */
    kv_spec_kind kind;
    int budget;           /* streaming, adakv: B entries per KV head (the window included for adakv) */
    int adaptive;         /* adakv: 1 adaptive, 0 uniform */
    double alpha;         /* adakv: safeguard share (default 0.2) */
    double threshold;     /* fastgen: T */
    /* fastgen, from policies.json */
    double r_local, r_frequent;
    int gqa_max;          /* parameters.gqa == "max" */
    int n_layers, n_kv_heads;
    uint8_t *components;  /* [n_layers, KVH] KV_COMP_* of each KV head (layers absent from the file: full) */
} kv_spec;

/* Parses and checks a spec against the model (budgets against the window
 * obs_window, a policies file against the config). */
int kv_spec_parse(kv_spec *s, const char *text, const kv_config *cfg, int obs_window, kv_error *err);
void kv_spec_free(kv_spec *s);
/* "full", "streaming", "adakv", "fastgen" */
const char *kv_spec_kind_name(kv_spec_kind k);

typedef struct {
    int continuation;     /* Q >= 2 */
    int layer;            /* -1: every layer compressed; else only this one */
    /* the adakv specs' SnapKV scoring and safeguard conventions (docs/analyzer.md,
     * "Conventions"): obs_window w (always kept), pool, kernel, gqa_order,
     * safeguard; scorer is snapkv, alpha comes from each spec */
    kv_adakv_params ada;
} kv_fidelity_params;

/* One prompt and spec: the CSV row's numbers. */
typedef struct {
    double memory_kept;   /* kept context entries / all context entries, over every layer and KV head */
    double mean_kl, max_kl; /* KL(reference || compressed) over the Q continuation positions, nats */
    double top1;          /* fraction of the Q positions whose argmax agrees */
    double nll_ref, nll_comp; /* mean NLL of the actual next token, over the Q - 1 positions that have one */
    double l1, relative_l1; /* the analyzer's actual L1 loss (and relative), mean over compressed layers */
} kv_fidelity_row;

/* Everything one prompt needs across specs: the reference pass's logits and
 * every spec's masks (the reference pass runs once per prompt). */
typedef struct {
    int n, n_ctx, Q, n_layers, n_kv_heads, vocab;
    int n_specs;
    float *ref_logits;    /* [Q, V] */
    uint8_t **masks;      /* [n_specs * n_layers] -> [KVH, Nc], NULL for a layer not compressed */
    double *kept;         /* [n_specs] kept context entries over the compressed layers */
    double *l1, *rel_l1;  /* [n_specs] summed over compressed layers */
    int n_compressed;     /* layers compressed */
    double t_reference;   /* seconds, the whole pass */
    double t_select;      /* seconds of it spent choosing kept sets and computing the L1 loss */
} kv_fidelity_state;

/* The shortest prompt the specs accept: N >= Q + 1, and for Ada-KV a context
 * longer than the observation window. */
int kv_fidelity_min_tokens(const kv_spec *specs, int n_specs, const kv_fidelity_params *p);

/* Reference pass over ids[0..n) (flags [n]: KV_FLAG_* of each token, for
 * FastGen's special and punctuation components), and every spec's masks. */
int kv_fidelity_reference(kv_model *m, const int32_t *ids, int n, const uint8_t *flags, const kv_spec *specs,
                          int n_specs, const kv_fidelity_params *p, kv_fidelity_state *st, kv_error *err);
/* The compressed pass of spec s: logits [Q, V]. */
int kv_fidelity_compressed(kv_model *m, const int32_t *ids, const kv_fidelity_state *st, int s, float *logits,
                           kv_error *err);
/* One continuation position i = Nc + r of one prompt and spec. */
typedef struct {
    double logp_ref, logp_comp; /* log-probability of the actual next token ids[i + 1] (NaN at i = N - 1) */
    double kl;                  /* KL(reference || compressed), nats */
    int top_ref, top_comp;      /* argmax of each distribution */
} kv_fidelity_token;

/* Compares the passes: fills row (memory and L1 from st) and, unless NULL,
 * tokens [Q], position by position. */
int kv_fidelity_metrics(const kv_fidelity_state *st, int s, const int32_t *ids, const float *comp_logits,
                        kv_fidelity_row *row, kv_fidelity_token *tokens, kv_error *err); /* -1: out of memory */
void kv_fidelity_state_free(kv_fidelity_state *st);

/* `kvtrace fidelity ...` (fidelity/cli.c) */
int kv_fidelity_main(int argc, char **argv);

#endif
