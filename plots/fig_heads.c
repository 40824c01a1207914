#include "plots/plot.h"
int kvp_fig_head_maps(const kvp_ctx *c, kvp_fig *f, kv_error *err) { (void)c; (void)f; kv_fail(err, "todo"); return 1; }
