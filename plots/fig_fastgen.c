/* FastGen figures from policies.json: policy_by_layer (Fig. 3) and
 * memory_vs_threshold (Table 1 as a curve). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plots/plot.h"
#include "policy/policy_file.h"

/* policies.json or a "skip" (1) with the reason. */
static kv_policy_file *load_policies(const kvp_ctx *c, int *rc, kv_error *err) {
    char *path = kvp_input(c, "policies.json");
    if (!path) {
        kv_fail(err, "no policies.json in %s", c->results);
        *rc = 1;
        return NULL;
    }
    kv_policy_file *p = kv_policies_read(path, err);
    free(path);
    *rc = p ? 0 : -1;
    return p;
}

/* The threshold a figure uses: --threshold (must be in the file), else 0.95
 * when present, else the first. */
static const kv_threshold_policy *pick_threshold(const kvp_ctx *c, const kv_policy_file *p, kv_error *err) {
    if (!isnan(c->threshold)) {
        const kv_threshold_policy *t = kv_policies_at(p, c->threshold);
        if (t) return t;
        char list[256] = "";
        for (int i = 0; i < p->n_thr && strlen(list) < 200; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%g", i ? "," : "", p->thr[i].threshold);
        kv_fail(err, "%s/policies.json: no threshold %g (it has %s; run kvanalyze --threshold %g)", c->results,
                c->threshold, list, c->threshold);
        return NULL;
    }
    const kv_threshold_policy *t = kv_policies_at(p, 0.95);
    return t ? t : &p->thr[0];
}

/* ---- policy_by_layer ---- */

int kvp_fig_policy_by_layer(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    int rc;
    kv_policy_file *p = load_policies(c, &rc, err);
    if (!p) return rc;
    const kv_threshold_policy *t = pick_threshold(c, p, err);
    if (!t) {
        kv_policies_free(p);
        return -1;
    }
    int use_q = strcmp(c->head_kind, "query") == 0;
    kvp_buf d = {0};
    kvp_buf_printf(&d, "# FastGen policy distribution per layer at threshold T = %g (%s heads)\n", t->threshold,
                   use_q ? "query" : "KV");
    kvp_buf_printf(&d, "# share of heads on each rung; columns: layer");
    for (int k = 0; k < KV_N_RUNGS; k++) kvp_buf_printf(&d, " %s", kv_rung_policy[k]);
    kvp_buf_printf(&d, " heads\n");
    for (int l = 0; l < t->n_layers; l++) {
        const kv_layer_policy *lp = &t->layers[l];
        int n = use_q ? lp->n_q : lp->n_kv;
        const kv_head_policy *h = use_q ? lp->q : lp->kv;
        int cnt[KV_N_RUNGS] = {0};
        for (int i = 0; i < n; i++) cnt[h[i].policy]++;
        kvp_buf_printf(&d, "%d", lp->layer);
        for (int k = 0; k < KV_N_RUNGS; k++) kvp_buf_printf(&d, " %.6g", n ? (double)cnt[k] / n : 0.0);
        kvp_buf_printf(&d, " %d\n", n);
    }
    snprintf(f->name, sizeof f->name, "policy_by_layer");
    f->height_in = 0.7 * c->width_in;
    int rc2 = kvp_write_data(c, "policy_by_layer.dat", &d, err);
    kvp_buf_free(&d);
    if (!rc2) {
        kvp_vars v = {0};
        kvp_vars_set(&v, "THRESHOLD", "%g", t->threshold);
        kvp_vars_str(&v, "HEADS", use_q ? "query heads" : "KV heads");
        kvp_vars_set(&v, "XTIC_STEP", "%d", kvp_tic_step(t->n_layers, 8));
        char title[400];
        snprintf(title, sizeof title, "FastGen policies per layer, T = %g%s%s%s", t->threshold,
                 *p->model ? " (" : "", p->model, *p->model ? ")" : "");
        rc2 = kvp_write_script(c, f, title, &v, err);
        kvp_vars_free(&v);
    }
    kv_policies_free(p);
    return rc2;
}

/* ---- memory_vs_threshold ---- */

int kvp_fig_memory_vs_threshold(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    int rc;
    kv_policy_file *p = load_policies(c, &rc, err);
    if (!p) return rc;
    /* thresholds in increasing order */
    int *order = malloc(p->n_thr * sizeof *order);
    if (!order) {
        kv_policies_free(p);
        return kv_fail(err, "out of memory");
    }
    for (int i = 0; i < p->n_thr; i++) order[i] = i;
    for (int i = 1; i < p->n_thr; i++)
        for (int j = i; j > 0 && p->thr[order[j]].threshold < p->thr[order[j - 1]].threshold; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    kvp_buf d = {0};
    kvp_buf_printf(&d, "# KV memory kept (fraction of the full cache, traced layers) against the FastGen threshold T,\n"
                       "# and the share of KV heads on each rung. columns: T kept_fraction");
    for (int k = 0; k < KV_N_RUNGS; k++) kvp_buf_printf(&d, " %s", kv_rung_policy[k]);
    kvp_buf_printf(&d, " kv_bytes_full kv_bytes_kept\n");
    for (int oi = 0; oi < p->n_thr; oi++) {
        const kv_threshold_policy *t = &p->thr[order[oi]];
        int cnt[KV_N_RUNGS] = {0}, n = 0;
        for (int l = 0; l < t->n_layers; l++)
            for (int i = 0; i < t->layers[l].n_kv; i++, n++) cnt[t->layers[l].kv[i].policy]++;
        kvp_buf_printf(&d, "%g %.6g", t->threshold, t->mem_kept_fraction);
        for (int k = 0; k < KV_N_RUNGS; k++) kvp_buf_printf(&d, " %.6g", n ? (double)cnt[k] / n : 0.0);
        kvp_buf_printf(&d, " %.6g %.6g\n", t->kv_bytes_full, t->kv_bytes_kept);
    }
    free(order);
    snprintf(f->name, sizeof f->name, "memory_vs_threshold");
    f->height_in = 0.7 * c->width_in;
    if (p->n_thr == 1)
        snprintf(f->note, sizeof f->note,
                 "policies.json has one threshold; run kvanalyze --threshold 0.9,0.92,0.94,0.95,0.96,0.98 for a curve");
    int rc2 = kvp_write_data(c, "memory_vs_threshold.dat", &d, err);
    kvp_buf_free(&d);
    if (!rc2) {
        kvp_vars v = {0};
        kvp_vars_set(&v, "NT", "%d", p->n_thr);
        char title[400];
        snprintf(title, sizeof title, "KV memory kept vs threshold%s%s%s", *p->model ? " (" : "", p->model,
                 *p->model ? ")" : "");
        rc2 = kvp_write_script(c, f, title, &v, err);
        kvp_vars_free(&v);
    }
    kv_policies_free(p);
    return rc2;
}
