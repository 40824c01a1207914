/* kvplot figures from kvtrace fidelity's CSV (docs/fidelity.md):
 * fidelity_vs_memory and l1_vs_kl. Made when kvplot is given
 * --fidelity FILE, skipped with a reason otherwise. */
#ifndef KVP_FIG_FIDELITY_H
#define KVP_FIG_FIDELITY_H

#include "plots/plot.h"

/* --fidelity FILE, or NULL (set by plots/main.c) */
extern const char *kvp_fidelity_csv;

int kvp_fig_fidelity_vs_memory(const kvp_ctx *c, kvp_fig *f, kv_error *err);
int kvp_fig_l1_vs_kl(const kvp_ctx *c, kvp_fig *f, kv_error *err);

#endif
