/* Ada-KV figures from eviction_loss.csv, budgets.json and concentration.csv:
 * loss_vs_budget, loss_ratio_per_prompt, budget_heatmap, concentration. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plots/csv.h"
#include "plots/plot.h"
#include "policy/policy_file.h"

/* ---- eviction_loss.csv, reduced to one (scorer, pyramid, eval) setting ---- */

typedef struct {
    int n;
    int *prompt;         /* index into prompts */
    int *layer;
    int *adaptive;       /* 0 uniform, 1 adaptive */
    int *evicts;         /* 0 when the budget evicts nothing (kept_mass 1) */
    long *budget;
    double *bound, *actual;
    int n_prompts;
    char **prompts;      /* ids, in first-seen order (pointers into the csv) */
    int n_budgets;
    long *budgets;       /* ascending */
    char setting[160];   /* "scorer snapkv, eval window" */
    int other_settings;  /* rows of other settings left out */
} loss_rows;

static void loss_free(loss_rows *r) {
    free(r->prompt);
    free(r->layer);
    free(r->adaptive);
    free(r->evicts);
    free(r->budget);
    free(r->bound);
    free(r->actual);
    free(r->prompts);
    free(r->budgets);
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* Returns the csv (kept alive for the prompt ids), NULL with *rc = 1 when
 * the file is missing, NULL with *rc = -1 on error. */
static kvp_csv *loss_read(const kvp_ctx *c, loss_rows *r, int *rc, kv_error *err) {
    memset(r, 0, sizeof *r);
    char *path = kvp_input(c, "eviction_loss.csv");
    if (!path) {
        *rc = 1;
        kv_fail(err, "no eviction_loss.csv in %s", c->results);
        return NULL;
    }
    *rc = -1;
    kvp_csv *t = kvp_csv_read(path, err);
    free(path);
    if (!t) return NULL;
    int cp = kvp_csv_col(t, "prompt", err), cl = cp < 0 ? -1 : kvp_csv_col(t, "layer", err);
    int cs = cl < 0 ? -1 : kvp_csv_col(t, "scorer", err), ca = cs < 0 ? -1 : kvp_csv_col(t, "allocation", err);
    int cy = ca < 0 ? -1 : kvp_csv_col(t, "pyramid", err), cb = cy < 0 ? -1 : kvp_csv_col(t, "budget", err);
    int ce = cb < 0 ? -1 : kvp_csv_col(t, "eval", err), cbd = ce < 0 ? -1 : kvp_csv_col(t, "bound", err);
    int cx = cbd < 0 ? -1 : kvp_csv_col(t, "actual_l1", err);
    int ck = cx < 0 ? -1 : kvp_csv_col(t, "kept_mass", err);
    if (ck < 0) goto fail;
    if (t->nrows == 0) {
        *rc = 1;
        kv_fail(err, "%s has no rows", t->path);
        goto fail;
    }
    int n = t->nrows;
    r->prompt = calloc(n, sizeof *r->prompt);
    r->layer = calloc(n, sizeof *r->layer);
    r->adaptive = calloc(n, sizeof *r->adaptive);
    r->evicts = calloc(n, sizeof *r->evicts);
    r->budget = calloc(n, sizeof *r->budget);
    r->bound = calloc(n, sizeof *r->bound);
    r->actual = calloc(n, sizeof *r->actual);
    r->prompts = calloc(n, sizeof *r->prompts);
    r->budgets = calloc(n, sizeof *r->budgets);
    if (!r->prompt || !r->layer || !r->adaptive || !r->evicts || !r->budget || !r->bound || !r->actual || !r->prompts ||
        !r->budgets) {
        kv_fail(err, "out of memory");
        goto fail;
    }
    const char *s0 = kvp_csv_str(t, 0, cs), *y0 = kvp_csv_str(t, 0, cy), *e0 = kvp_csv_str(t, 0, ce);
    snprintf(r->setting, sizeof r->setting, "scorer %s, %seval %s", s0, strcmp(y0, "0") ? "pyramid, " : "", e0);
    for (int i = 0; i < n; i++) {
        if (strcmp(kvp_csv_str(t, i, cs), s0) || strcmp(kvp_csv_str(t, i, cy), y0) ||
            strcmp(kvp_csv_str(t, i, ce), e0)) {
            r->other_settings++;
            continue;
        }
        const char *alloc = kvp_csv_str(t, i, ca);
        int ad = !strcmp(alloc, "adaptive") ? 1 : !strcmp(alloc, "uniform") ? 0 : -1;
        if (ad < 0) {
            kv_fail(err, "%s: data row %d: allocation '%s' (expected uniform or adaptive)", t->path, i + 1, alloc);
            goto fail;
        }
        double l, b, bd, x, km;
        if (kvp_csv_num(t, i, cl, &l, err) || kvp_csv_num(t, i, cb, &b, err) || kvp_csv_num(t, i, cbd, &bd, err) ||
            kvp_csv_num(t, i, cx, &x, err) || kvp_csv_num(t, i, ck, &km, err))
            goto fail;
        const char *pid = kvp_csv_str(t, i, cp);
        int pi = -1;
        for (int k = r->n_prompts - 1; k >= 0 && pi < 0; k--)
            if (!strcmp(r->prompts[k], pid)) pi = k;
        if (pi < 0) {
            pi = r->n_prompts++;
            r->prompts[pi] = (char *)pid;
        }
        int j = r->n++;
        r->prompt[j] = pi;
        r->layer[j] = (int)l;
        r->adaptive[j] = ad;
        r->budget[j] = (long)b;
        r->bound[j] = bd;
        r->actual[j] = x;
        r->evicts[j] = km < 1.0; /* kept_mass is exactly 1 when nothing is evicted */
        int seen = 0;
        for (int k = 0; k < r->n_budgets && !seen; k++) seen = r->budgets[k] == (long)b;
        if (!seen) r->budgets[r->n_budgets++] = (long)b;
    }
    qsort(r->budgets, r->n_budgets, sizeof *r->budgets, cmp_long);
    *rc = 0;
    return t;
fail:
    loss_free(r);
    kvp_csv_free(t);
    return NULL;
}

static void model_suffix(const kvp_ctx *c, char *out, size_t n) {
    out[0] = 0;
    char *path = kvp_input(c, "policies.json");
    if (!path) path = kvp_input(c, "budgets.json");
    if (!path) return;
    kv_error e;
    kv_policy_file *p = strstr(path, "policies") ? kv_policies_read(path, &e) : NULL;
    if (p && *p->model) snprintf(out, n, " (%s)", p->model);
    kv_policies_free(p);
    if (!p) {
        kv_budget_file *b = kv_budgets_read(path, &e);
        if (b && *b->model) snprintf(out, n, " (%s)", b->model);
        kv_budgets_free(b);
    }
    free(path);
}

/* ---- loss_vs_budget ---- */

int kvp_fig_loss_vs_budget(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    loss_rows r;
    int rc;
    kvp_csv *t = loss_read(c, &r, &rc, err);
    if (!t) return rc;
    double *xa = malloc((r.n + 1) * sizeof *xa), *xb = malloc((r.n + 1) * sizeof *xb);
    if (!xa || !xb) {
        free(xa);
        free(xb);
        loss_free(&r);
        kvp_csv_free(t);
        return kv_fail(err, "out of memory");
    }
    kvp_buf d = {0};
    kvp_buf_printf(&d,
                   "# Ada-KV eviction loss against the budget B (%s), over %d prompt(s) and their layers.\n"
                   "# actual = L1 loss |y - y^|_1, bound = 2C sum_h (1 - F_h); mean over the (prompt, layer) rows\n"
                   "# where the budget evicts something (kept_mass < 1); q25/q75 = their interquartile range;\n"
                   "# NaN where no row evicts anything.\n"
                   "# budget uni_mean uni_q25 uni_q75 uni_bound ada_mean ada_q25 ada_q75 ada_bound\n",
                   r.setting, r.n_prompts);
    int points = 0;
    for (int bi = 0; bi < r.n_budgets; bi++) {
        kvp_buf_printf(&d, "%ld", r.budgets[bi]);
        for (int ad = 0; ad < 2; ad++) {
            int n = 0;
            double sa = 0, sb = 0;
            for (int i = 0; i < r.n; i++)
                if (r.budget[i] == r.budgets[bi] && r.adaptive[i] == ad && r.evicts[i]) {
                    xa[n] = r.actual[i];
                    xb[n] = r.bound[i];
                    sa += r.actual[i];
                    sb += r.bound[i];
                    n++;
                }
            double ma = n ? sa / n : 0, mb = n ? sb / n : 0;
            double q25 = kvp_quantile(xa, n, 0.25), q75 = kvp_quantile(xa, n, 0.75);
            if (ma > 0) points++;
            if (ma > 0) kvp_buf_printf(&d, " %.6g %.6g %.6g", ma, q25, q75);
            else kvp_buf_printf(&d, " NaN NaN NaN");
            if (mb > 0) kvp_buf_printf(&d, " %.6g", mb);
            else kvp_buf_printf(&d, " NaN");
        }
        kvp_buf_printf(&d, "\n");
    }
    free(xa);
    free(xb);
    if (!points) {
        kvp_buf_free(&d);
        loss_free(&r);
        kvp_csv_free(t);
        kv_fail(err, "eviction_loss.csv: every loss is 0 (no budget evicts anything)");
        return 1;
    }
    /* each budget's tic says how many prompts it evicts from: the means above are over those only,
     * so a line can rise where long prompts alone remain */
    kvp_buf xt = {0};
    kvp_buf_printf(&xt, "(");
    for (int bi = 0; bi < r.n_budgets; bi++) {
        int evicted = 0;
        for (int p = 0; p < r.n_prompts; p++) {
            int any = 0;
            for (int i = 0; i < r.n && !any; i++) any = r.prompt[i] == p && r.budget[i] == r.budgets[bi] && r.evicts[i];
            evicted += any;
        }
        kvp_buf_printf(&xt, "%s\"%ld\\n%d/%d\" %ld", bi ? ", " : "", r.budgets[bi], evicted, r.n_prompts,
                       r.budgets[bi]);
    }
    kvp_buf_printf(&xt, ")");
    snprintf(f->name, sizeof f->name, "loss_vs_budget");
    f->height_in = 0.85 * c->width_in;
    if (r.other_settings)
        snprintf(f->note, sizeof f->note, "shows %s; %d rows of other settings left out", r.setting,
                 r.other_settings);
    rc = kvp_write_data(c, "loss_vs_budget.dat", &d, err);
    kvp_buf_free(&d);
    if (!rc) {
        kvp_vars v = {0};
        char title[400], ms[300];
        model_suffix(c, ms, sizeof ms);
        snprintf(title, sizeof title, "Eviction loss vs budget%s", ms);
        kvp_vars_set(&v, "XTICS", "%s", xt.s ? xt.s : "()");
        kvp_vars_set(&v, "XMIN", "%g", r.budgets[0] / 1.25);
        kvp_vars_set(&v, "XMAX", "%g", r.budgets[r.n_budgets - 1] * 1.25);
        rc = kvp_write_script(c, f, title, &v, err);
        kvp_vars_free(&v);
    }
    kvp_buf_free(&xt);
    loss_free(&r);
    kvp_csv_free(t);
    return rc;
}

/* ---- loss_ratio_per_prompt ---- */

int kvp_fig_loss_ratio_per_prompt(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    loss_rows r;
    int rc;
    kvp_csv *t = loss_read(c, &r, &rc, err);
    if (!t) return rc;
    /* the two budgets: B (given or the smallest) and the next one */
    int b1 = 0;
    if (c->budget > 0) {
        b1 = -1;
        for (int i = 0; i < r.n_budgets; i++)
            if (r.budgets[i] == c->budget) b1 = i;
        if (b1 < 0) {
            rc = kv_fail(err, "%s/eviction_loss.csv: no rows with budget %ld (run kvanalyze --budgets %ld)",
                         c->results, c->budget, c->budget);
            goto out;
        }
    }
    int nb = r.n_budgets > 1 ? 2 : 1;
    long bs[2] = {r.budgets[b1], 0};
    if (nb == 2) bs[1] = b1 + 1 < r.n_budgets ? r.budgets[b1 + 1] : r.budgets[b1 - 1];
    if (nb == 2 && bs[1] < bs[0]) {
        long x = bs[0];
        bs[0] = bs[1];
        bs[1] = x;
    }
    kvp_buf d = {0};
    kvp_buf_printf(&d,
                   "# Per prompt: adaptive actual L1 loss / uniform actual L1 loss (%s);\n"
                   "# each loss is the mean over the prompt's layers; NaN where the uniform loss is 0.\n"
                   "# index prompt ratio_B%ld", r.setting, bs[0]);
    if (nb == 2) kvp_buf_printf(&d, " ratio_B%ld", bs[1]);
    kvp_buf_printf(&d, "\n");
    int finite = 0;
    for (int p = 0; p < r.n_prompts; p++) {
        kvp_buf_printf(&d, "%d %s", p, r.prompts[p]);
        for (int k = 0; k < nb; k++) {
            double su = 0, sa = 0;
            int nu = 0, na = 0;
            for (int i = 0; i < r.n; i++)
                if (r.prompt[i] == p && r.budget[i] == bs[k]) {
                    if (r.adaptive[i]) sa += r.actual[i], na++;
                    else su += r.actual[i], nu++;
                }
            if (nu && na && su > 0) {
                kvp_buf_printf(&d, " %.6g", (sa / na) / (su / nu));
                finite++;
            } else {
                kvp_buf_printf(&d, " NaN");
            }
        }
        kvp_buf_printf(&d, "\n");
    }
    if (!finite) {
        kvp_buf_free(&d);
        kv_fail(err, "eviction_loss.csv: the uniform loss is 0 at budget %ld for every prompt", bs[0]);
        rc = 1;
        goto out;
    }
    snprintf(f->name, sizeof f->name, "loss_ratio_per_prompt");
    /* one row per prompt, its id written out on the left: the figure grows with the prompts */
    int rows_shown = (r.n_prompts + kvp_tic_step(r.n_prompts, 40) - 1) / kvp_tic_step(r.n_prompts, 40);
    f->height_in = 0.9 + 0.14 * (rows_shown < r.n_prompts ? rows_shown : r.n_prompts);
    if (f->height_in < 0.5 * c->width_in) f->height_in = 0.5 * c->width_in;
    rc = kvp_write_data(c, "loss_ratio_per_prompt.dat", &d, err);
    kvp_buf_free(&d);
    if (!rc) {
        kvp_vars v = {0};
        kvp_vars_set(&v, "NB", "%d", nb);
        kvp_vars_set(&v, "B1", "%ld", bs[0]);
        kvp_vars_set(&v, "B2", "%ld", nb == 2 ? bs[1] : 0L);
        kvp_vars_set(&v, "NP", "%d", r.n_prompts);
        kvp_vars_set(&v, "YTIC_STEP", "%d", kvp_tic_step(r.n_prompts, 40));
        char title[400], ms[300];
        model_suffix(c, ms, sizeof ms);
        snprintf(title, sizeof title, "Adaptive / uniform loss per prompt%s", ms);
        rc = kvp_write_script(c, f, title, &v, err);
        kvp_vars_free(&v);
    }
out:
    loss_free(&r);
    kvp_csv_free(t);
    return rc;
}

/* ---- budget_heatmap ---- */

int kvp_fig_budget_heatmap(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    char *path = kvp_input(c, "budgets.json");
    if (!path) {
        kv_fail(err, "no budgets.json in %s", c->results);
        return 1;
    }
    kv_budget_file *b = kv_budgets_read(path, err);
    free(path);
    if (!b) return -1;
    const kv_budget_set *s = &b->sets[0];
    for (int i = 1; i < b->n; i++)
        if (b->sets[i].budget < s->budget) s = &b->sets[i];
    if (c->budget > 0) {
        s = NULL;
        for (int i = 0; i < b->n; i++)
            if (b->sets[i].budget == c->budget) s = &b->sets[i];
        if (!s) {
            kv_budgets_free(b);
            return kv_fail(err, "%s/budgets.json: no budget %ld (run kvanalyze --budgets %ld)", c->results,
                           c->budget, c->budget);
        }
    }
    int maxkv = 0;
    double m = log2(1.25);
    kvp_buf d = {0};
    kvp_buf_printf(&d,
                   "# Adaptive (Ada-KV) budget of every (layer, KV head) at B = %ld, from budgets.json\n"
                   "# (mean over prompts), relative to the layer's uniform budget.\n"
                   "# kv_head row layer kv_budget layer_budget ratio\n",
                   s->budget);
    for (int l = 0; l < s->n_layers; l++) {
        const kv_budget_layer *lb = &s->layers[l];
        if (lb->n_kv > maxkv) maxkv = lb->n_kv;
        for (int g = 0; g < lb->n_kv; g++) {
            double ratio = lb->layer_budget > 0 ? (double)lb->kv_budgets[g] / lb->layer_budget : 1;
            if (ratio <= 0) ratio = 1e-3;
            if (fabs(log2(ratio)) > m) m = fabs(log2(ratio));
            kvp_buf_printf(&d, "%d %d %d %d %d %.6g\n", g, l, lb->layer, lb->kv_budgets[g], lb->layer_budget, ratio);
        }
        kvp_buf_printf(&d, "\n");
    }
    snprintf(f->name, sizeof f->name, "budget_heatmap");
    double h = 0.75 + 0.14 * s->n_layers;
    f->height_in = h < 0.6 * c->width_in ? 0.6 * c->width_in : h > 9 ? 9 : h;
    int rc = kvp_write_data(c, "budget_heatmap.dat", &d, err);
    kvp_buf_free(&d);
    if (!rc) {
        kvp_vars v = {0};
        kvp_vars_set(&v, "BUDGET", "%ld", s->budget);
        kvp_vars_set(&v, "NL", "%d", s->n_layers);
        kvp_vars_set(&v, "NKV", "%d", maxkv);
        kvp_vars_set(&v, "CBMAX", "%.4g", pow(2, m));
        kvp_vars_set(&v, "LABELS", "%d", s->n_layers * maxkv <= 128 ? 1 : 0);
        kvp_vars_set(&v, "YTIC_STEP", "%d", (s->n_layers + 23) / 24);
        char title[300];
        snprintf(title, sizeof title, "Adaptive budgets, B = %ld%s%s%s", s->budget, *b->model ? " (" : "", b->model,
                 *b->model ? ")" : "");
        rc = kvp_write_script(c, f, title, &v, err);
        kvp_vars_free(&v);
    }
    kv_budgets_free(b);
    return rc;
}

/* ---- concentration ---- */

int kvp_fig_concentration(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    char *path = kvp_input(c, "concentration.csv");
    if (!path) {
        kv_fail(err, "no concentration.csv in %s", c->results);
        return 1;
    }
    kvp_csv *t = kvp_csv_read(path, err);
    free(path);
    if (!t) return -1;
    int rc = -1;
    double *sum = NULL;
    int *cnt = NULL, *layers = NULL;
    kv_policy_file *pol = NULL;
    kvp_buf d = {0};
    int cl = kvp_csv_col(t, "layer", err), ch = cl < 0 ? -1 : kvp_csv_col(t, "head", err);
    int cx = ch < 0 ? -1 : kvp_csv_col(t, "percent", err), cm = cx < 0 ? -1 : kvp_csv_col(t, "mass", err);
    if (cm < 0) goto out;
    if (!t->nrows) {
        kv_fail(err, "%s has no rows", t->path);
        rc = 1;
        goto out;
    }
    /* extents */
    int maxl = 0, maxh = 0, maxx = 0;
    for (int i = 0; i < t->nrows; i++) {
        double l, h, x;
        if (kvp_csv_num(t, i, cl, &l, err) || kvp_csv_num(t, i, ch, &h, err) || kvp_csv_num(t, i, cx, &x, err))
            goto out;
        if (l < 0 || h < 0 || x < 1 || l > 100000 || h > 100000 || x > 100) {
            kv_fail(err, "%s: data row %d: layer, head or percent out of range", t->path, i + 1);
            goto out;
        }
        if (l > maxl) maxl = (int)l;
        if (h > maxh) maxh = (int)h;
        if (x > maxx) maxx = (int)x;
    }
    int NL = maxl + 1, NH = maxh + 1, NX = maxx + 1;
    sum = calloc((size_t)NL * NH * NX, sizeof *sum);
    cnt = calloc((size_t)NL * NH * NX, sizeof *cnt);
    layers = calloc(NL, sizeof *layers);
    if (!sum || !cnt || !layers) {
        kv_fail(err, "out of memory");
        goto out;
    }
    for (int i = 0; i < t->nrows; i++) {
        double l, h, x, m;
        kvp_csv_num(t, i, cl, &l, err);
        kvp_csv_num(t, i, ch, &h, err);
        kvp_csv_num(t, i, cx, &x, err);
        if (kvp_csv_num(t, i, cm, &m, err)) goto out;
        size_t k = ((size_t)l * NH + (size_t)h) * NX + (size_t)x;
        sum[k] += m;
        cnt[k]++;
        layers[(int)l] = 1;
    }
    /* layers to show */
    int show[KVP_MAX_LAYERS_SHOWN], ns = 0;
    int nlay = 0;
    for (int l = 0; l < NL; l++) nlay += layers[l];
    if (c->n_layers_sel) {
        for (int i = 0; i < c->n_layers_sel; i++) {
            int l = c->layers_sel[i];
            if (l >= NL || !layers[l]) {
                kv_fail(err, "--layers: layer %d is not in %s/concentration.csv", l, c->results);
                goto out;
            }
            show[ns++] = l;
        }
    } else {
        int want = nlay < 4 ? nlay : 4;
        for (int k = 0; k < want; k++) {
            int target = want == 1 ? 0 : (int)lround((double)k * (nlay - 1) / (want - 1)), seen = 0;
            for (int l = 0; l < NL; l++)
                if (layers[l] && seen++ == target) show[ns++] = l;
        }
    }
    /* colour each head by its FastGen policy when policies.json is there */
    char *pp = kvp_input(c, "policies.json");
    const kv_threshold_policy *tp = NULL;
    if (pp) {
        pol = kv_policies_read(pp, err);
        free(pp);
        if (!pol) goto out;
        tp = isnan(c->threshold) ? kv_policies_at(pol, 0.95) : kv_policies_at(pol, c->threshold);
        if (!tp) tp = &pol->thr[0];
    }
    int used[KV_N_RUNGS + 1] = {0};
    kvp_buf_printf(&d,
                   "# Attention mass captured by the top x%% of positions (concentration.csv, mean over prompts)\n"
                   "# one block per layer shown (gnuplot index), one sub-block per query head.\n"
                   "# percent mass head policy (FastGen rung index 0..4 at T = %g, -1 unknown)\n",
                   tp ? tp->threshold : NAN);
    for (int si = 0; si < ns; si++) {
        int l = show[si];
        kvp_buf_printf(&d, "# layer %d\n", l);
        for (int h = 0; h < NH; h++) {
            int policy = -1;
            for (int li = 0; tp && li < tp->n_layers; li++)
                if (tp->layers[li].layer == l)
                    for (int q = 0; q < tp->layers[li].n_q; q++)
                        if (tp->layers[li].q[q].head == h) policy = tp->layers[li].q[q].policy;
            int any = 0;
            for (int x = 1; x < NX; x++) {
                size_t k = ((size_t)l * NH + h) * NX + x;
                if (!cnt[k]) continue;
                any = 1;
                kvp_buf_printf(&d, "%d %.6g %d %d\n", x, sum[k] / cnt[k], h, policy);
            }
            if (any) {
                used[policy + 1] = 1;
                kvp_buf_printf(&d, "\n");
            }
        }
        kvp_buf_printf(&d, "\n");
    }
    char pres[64] = "";
    for (int k = 0; k <= KV_N_RUNGS; k++)
        if (used[k]) snprintf(pres + strlen(pres), sizeof pres - strlen(pres), "%s%d", *pres ? " " : "", k - 1);
    char lays[256] = "";
    for (int i = 0; i < ns; i++) snprintf(lays + strlen(lays), sizeof lays - strlen(lays), "%s%d", i ? " " : "", show[i]);
    snprintf(f->name, sizeof f->name, "concentration");
    int rows = ns > 2 ? 2 : 1;
    f->height_in = (rows == 1 ? 0.55 : 0.9) * c->width_in + 0.3;
    rc = kvp_write_data(c, "concentration.dat", &d, err);
    if (!rc) {
        kvp_vars v = {0};
        kvp_vars_str(&v, "PRESENT", pres);
        kvp_vars_str(&v, "LAYERS", lays);
        kvp_vars_set(&v, "NPANELS", "%d", ns);
        kvp_vars_set(&v, "THRESHOLD", "%g", tp ? tp->threshold : 0.0);
        char title[300];
        snprintf(title, sizeof title, "Attention concentration per head%s%s%s", pol && *pol->model ? " (" : "",
                 pol ? pol->model : "", pol && *pol->model ? ")" : "");
        rc = kvp_write_script(c, f, title, &v, err);
        kvp_vars_free(&v);
    }
out:
    kvp_buf_free(&d);
    free(sum);
    free(cnt);
    free(layers);
    kv_policies_free(pol);
    kvp_csv_free(t);
    return rc;
}
