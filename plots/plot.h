/* kvplot: the papers' figures from kvanalyze results (docs/plots.md).
 *
 * Each figure is made in two steps: a kvp_fig_* function reads its inputs
 * from the results directory (and the trace), writes NAME.dat and the filled
 * script NAME.gp into the work directory, and main.c then runs gnuplot on
 * the script, which draws NAME.png / .pdf / .svg next to it. */
#ifndef KVP_PLOT_H
#define KVP_PLOT_H

#include "common/error.h"
#include "policy/fastgen.h" /* the ladder: KV_N_RUNGS, kv_rung_policy */
#include "plots/gp.h"

#define KVP_VERSION "0.1.0"
#define KVP_MAX_LAYERS_SHOWN 16

typedef struct {
    const char *results;    /* RESULTS_DIR */
    const char *trace;      /* --trace, or NULL */
    const char *workdir;    /* where data, scripts and figures are written */
    const char *tpl_dir;    /* gnuplot templates */
    char formats[32];       /* e.g. "png pdf" (gnuplot word list) */
    double width_in;
    int dpi;
    double threshold;       /* --threshold, NAN when not given */
    long budget;            /* --budget, -1 when not given */
    const char *prompt;     /* --prompt for head_maps, or NULL */
    const char *head_kind;  /* "kv" or "query" for policy_by_layer */
    int n_layers_sel;       /* --layers for concentration (0: automatic) */
    int layers_sel[KVP_MAX_LAYERS_SHOWN];
    int max_cells;          /* head_maps: cells per side before pooling */
    int label_tokens;       /* head_maps: token labels up to this N */
} kvp_ctx;

/* What a figure function made (status 0) */
typedef struct {
    char name[32];
    double height_in;
    char note[256];         /* one-line remark printed with the figure, or "" */
} kvp_fig;

/* Return 0: made (data and script written); 1: skipped, err->msg says why;
 * -1: error (err filled). */
typedef int (*kvp_fig_fn)(const kvp_ctx *c, kvp_fig *f, kv_error *err);

int kvp_fig_policy_by_layer(const kvp_ctx *c, kvp_fig *f, kv_error *err);
int kvp_fig_head_maps(const kvp_ctx *c, kvp_fig *f, kv_error *err);
int kvp_fig_memory_vs_threshold(const kvp_ctx *c, kvp_fig *f, kv_error *err);
int kvp_fig_loss_vs_budget(const kvp_ctx *c, kvp_fig *f, kv_error *err);
int kvp_fig_loss_ratio_per_prompt(const kvp_ctx *c, kvp_fig *f, kv_error *err);
int kvp_fig_budget_heatmap(const kvp_ctx *c, kvp_fig *f, kv_error *err);
int kvp_fig_concentration(const kvp_ctx *c, kvp_fig *f, kv_error *err);

/* ---- helpers shared by the figure modules (figure.c) ---- */

extern const char *const kvp_policy_labels[KV_N_RUNGS]; /* short legend labels */

/* RESULTS_DIR/file when it exists, else NULL (malloc'd path). */
char *kvp_input(const kvp_ctx *c, const char *file);
/* WORKDIR/file (malloc'd) */
char *kvp_output(const kvp_ctx *c, const char *file, kv_error *err);

/* Sets the common variables (NAME, FORMATS, WIDTH_IN, HEIGHT_IN, DPI,
 * TITLE), fills TEMPLATE_DIR/<f->name>.gp and writes WORKDIR/<name>.gp. */
int kvp_write_script(const kvp_ctx *c, const kvp_fig *f, const char *title, kvp_vars *v, kv_error *err);
/* Writes WORKDIR/file with the buffer's text. */
int kvp_write_data(const kvp_ctx *c, const char *file, const kvp_buf *b, kv_error *err);

/* Label every step-th of n items, step from 1, 2, 5, 10, 20, 50, ...: the
 * smallest that leaves at most max_labels labels. */
int kvp_tic_step(int n, int max_labels);

/* q-quantile (0..1) of x[0..n) by linear interpolation; sorts x. */
double kvp_quantile(double *x, int n, double q);

#endif
