/* fidelity_vs_memory and l1_vs_kl: kvtrace fidelity's measured KL against
 * the KV memory kept, and against the analyzer's L1 loss, one point per
 * setting (spec), averaged over the prompts of the CSV. */
#include "plots/fig_fidelity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plots/csv.h"

const char *kvp_fidelity_csv;

/* curves, in legend order */
enum { K_FASTGEN, K_UNIFORM, K_ADAPTIVE, K_STREAMING, K_FULL, N_KINDS };
static const char *const kind_word[N_KINDS] = {"fastgen", "uniform", "adaptive", "streaming", "full"};

typedef struct {
    const char *spec;  /* into the table */
    int kind;          /* K_* */
    double param;      /* budget or threshold */
    int n;             /* prompts */
    double mem, kl, max_kl, top1, l1, nll;
} setting;

typedef struct {
    kvp_csv *t;
    setting *s;        /* [n] in first-appearance order */
    int n;
} fid_table;

static void fid_free(fid_table *ft) {
    free(ft->s);
    kvp_csv_free(ft->t);
}

/* Reads the CSV and averages each spec over its prompts. 1: skip. */
static int fid_read(fid_table *ft, kv_error *err) {
    memset(ft, 0, sizeof *ft);
    if (!kvp_fidelity_csv) {
        kv_fail(err, "no fidelity CSV given (kvtrace fidelity ... -o fidelity.csv; kvplot --fidelity fidelity.csv)");
        return 1;
    }
    if (!(ft->t = kvp_csv_read(kvp_fidelity_csv, err))) return -1;
    kvp_csv *t = ft->t;
    int c_spec = kvp_csv_col(t, "spec", err), c_kind = kvp_csv_col(t, "kind", err),
        c_alloc = kvp_csv_col(t, "allocation", err), c_budget = kvp_csv_col(t, "budget", err),
        c_thr = kvp_csv_col(t, "threshold", err), c_mem = kvp_csv_col(t, "memory_kept", err),
        c_kl = kvp_csv_col(t, "mean_kl", err), c_max = kvp_csv_col(t, "max_kl", err),
        c_top = kvp_csv_col(t, "top1_agreement", err), c_l1 = kvp_csv_col(t, "l1", err),
        c_nll = kvp_csv_col(t, "nll_change", err);
    if (c_spec < 0 || c_kind < 0 || c_alloc < 0 || c_budget < 0 || c_thr < 0 || c_mem < 0 || c_kl < 0 || c_max < 0 ||
        c_top < 0 || c_l1 < 0 || c_nll < 0)
        return -1;
    if (!t->nrows) return kv_fail(err, "%s: no rows", kvp_fidelity_csv);
    if (!(ft->s = calloc(t->nrows, sizeof *ft->s))) return kv_fail(err, "out of memory");
    for (int r = 0; r < t->nrows; r++) {
        const char *spec = kvp_csv_str(t, r, c_spec), *kind = kvp_csv_str(t, r, c_kind);
        int i = 0;
        while (i < ft->n && strcmp(ft->s[i].spec, spec)) i++;
        setting *s = &ft->s[i];
        if (i == ft->n) {
            ft->n++;
            s->spec = spec;
            if (!strcmp(kind, "fastgen")) s->kind = K_FASTGEN;
            else if (!strcmp(kind, "streaming")) s->kind = K_STREAMING;
            else if (!strcmp(kind, "full")) s->kind = K_FULL;
            else if (!strcmp(kind, "adakv"))
                s->kind = !strcmp(kvp_csv_str(t, r, c_alloc), "adaptive") ? K_ADAPTIVE : K_UNIFORM;
            else
                return kv_fail(err, "%s: line %d: unknown kind '%s'", kvp_fidelity_csv, r + 2, kind);
            int pc = s->kind == K_FASTGEN ? c_thr : c_budget;
            if (s->kind != K_FULL && kvp_csv_num(t, r, pc, &s->param, err)) return -1;
        }
        double v[6];
        if (kvp_csv_num(t, r, c_mem, &v[0], err) || kvp_csv_num(t, r, c_kl, &v[1], err) ||
            kvp_csv_num(t, r, c_max, &v[2], err) || kvp_csv_num(t, r, c_top, &v[3], err) ||
            kvp_csv_num(t, r, c_l1, &v[4], err) || kvp_csv_num(t, r, c_nll, &v[5], err))
            return -1;
        s->n++;
        s->mem += v[0], s->kl += v[1], s->max_kl = v[2] > s->max_kl ? v[2] : s->max_kl, s->top1 += v[3];
        s->l1 += v[4], s->nll += v[5];
    }
    for (int i = 0; i < ft->n; i++) {
        setting *s = &ft->s[i];
        s->mem /= s->n, s->kl /= s->n, s->top1 /= s->n, s->l1 /= s->n, s->nll /= s->n;
    }
    return 0;
}

static int by_memory(const void *a, const void *b) {
    const setting *x = a, *y = b;
    if (x->kind != y->kind) return x->kind - y->kind;
    return (x->mem > y->mem) - (x->mem < y->mem);
}

/* Writes one data block per kind present (gnuplot index 0, 1, ...) and the
 * list of kinds present as a gnuplot string. */
static void write_blocks(fid_table *ft, kvp_buf *d, char *kinds, size_t kinds_size) {
    qsort(ft->s, ft->n, sizeof *ft->s, by_memory);
    kinds[0] = 0;
    int block = 0;
    for (int k = 0; k < N_KINDS; k++) {
        int any = 0;
        for (int i = 0; i < ft->n; i++) {
            const setting *s = &ft->s[i];
            if (s->kind != k) continue;
            if (!any) {
                if (block++) kvp_buf_printf(d, "\n\n");
                kvp_buf_printf(d, "# %s\n", kind_word[k]);
                snprintf(kinds + strlen(kinds), kinds_size - strlen(kinds), "%s%s", kinds[0] ? " " : "",
                         kind_word[k]);
                any = 1;
            }
            kvp_buf_printf(d, "%.6g %.6g %.6g %.6g %.6g %.6g %.6g %d %s=%g\n", s->mem, s->kl, s->max_kl, s->top1,
                           s->l1, s->nll, s->param, s->n, k == K_FASTGEN ? "T" : "B", s->param);
        }
    }
}

static const char *DATA_HEADER =
    "# columns: memory_kept mean_kl max_kl top1_agreement l1 nll_change param prompts label\n"
    "# (means over the prompts of %s; max_kl is the max; param = budget B or threshold T)\n"
    "# one block per curve, in the order of the script's 'kinds'\n";

int kvp_fig_fidelity_vs_memory(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    fid_table ft;
    int rc = fid_read(&ft, err);
    if (rc) {
        fid_free(&ft);
        return rc;
    }
    /* the finding the paper claims: adaptive at most uniform's KL at equal memory */
    int pairs = 0, better = 0;
    for (int i = 0; i < ft.n; i++)
        for (int j = 0; j < ft.n; j++)
            if (ft.s[i].kind == K_ADAPTIVE && ft.s[j].kind == K_UNIFORM && ft.s[i].param == ft.s[j].param) {
                pairs++;
                better += ft.s[i].kl <= ft.s[j].kl;
            }
    if (pairs)
        snprintf(f->note, sizeof f->note, "adaptive budgets give a mean KL at most uniform's at %d of %d budgets",
                 better, pairs);
    kvp_buf d = {0};
    kvp_buf_printf(&d, "# fidelity_vs_memory: measured KL(reference || compressed) against the KV memory kept\n");
    kvp_buf_printf(&d, DATA_HEADER, kvp_fidelity_csv);
    char kinds[128];
    write_blocks(&ft, &d, kinds, sizeof kinds);
    snprintf(f->name, sizeof f->name, "fidelity_vs_memory");
    f->height_in = 0.75 * c->width_in;
    rc = kvp_write_data(c, "fidelity_vs_memory.dat", &d, err);
    kvp_buf_free(&d);
    if (!rc) {
        kvp_vars v = {0};
        kvp_vars_str(&v, "KINDS", kinds);
        rc = kvp_write_script(c, f, "Next-token KL vs KV memory kept", &v, err);
        kvp_vars_free(&v);
    }
    fid_free(&ft);
    return rc;
}

/* Spearman rank correlation (average ranks for ties) */
static void ranks(const double *x, int n, double *r) {
    for (int i = 0; i < n; i++) {
        int less = 0, eq = 0;
        for (int j = 0; j < n; j++) less += x[j] < x[i], eq += x[j] == x[i];
        r[i] = less + (eq + 1) / 2.0;
    }
}

static double spearman(const double *x, const double *y, int n) {
    double *rx = malloc(n * sizeof *rx), *ry = malloc(n * sizeof *ry), mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    ranks(x, n, rx);
    ranks(y, n, ry);
    for (int i = 0; i < n; i++) mx += rx[i] / n, my += ry[i] / n;
    for (int i = 0; i < n; i++)
        sxy += (rx[i] - mx) * (ry[i] - my), sxx += (rx[i] - mx) * (rx[i] - mx), syy += (ry[i] - my) * (ry[i] - my);
    free(rx);
    free(ry);
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

int kvp_fig_l1_vs_kl(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    fid_table ft;
    int rc = fid_read(&ft, err);
    if (rc) {
        fid_free(&ft);
        return rc;
    }
    double *x = malloc(ft.n * sizeof *x), *y = malloc(ft.n * sizeof *y);
    for (int i = 0; i < ft.n; i++) x[i] = ft.s[i].l1, y[i] = ft.s[i].kl;
    double rho = ft.n > 2 ? spearman(x, y, ft.n) : NAN;
    free(x);
    free(y);
    if (!isnan(rho))
        snprintf(f->note, sizeof f->note, "Spearman rank correlation of L1 loss and mean KL over %d settings: %.3f",
                 ft.n, rho);
    kvp_buf d = {0};
    kvp_buf_printf(&d, "# l1_vs_kl: the analyzer's actual L1 loss (continuation rows, mean over compressed layers)\n"
                       "# against the measured KL, one point per setting\n");
    kvp_buf_printf(&d, DATA_HEADER, kvp_fidelity_csv);
    char kinds[128];
    write_blocks(&ft, &d, kinds, sizeof kinds);
    snprintf(f->name, sizeof f->name, "l1_vs_kl");
    f->height_in = 0.75 * c->width_in;
    rc = kvp_write_data(c, "l1_vs_kl.dat", &d, err);
    kvp_buf_free(&d);
    if (!rc) {
        kvp_vars v = {0};
        kvp_vars_str(&v, "KINDS", kinds);
        if (isnan(rho)) kvp_vars_str(&v, "RHO", "");
        else {
            char s[64];
            snprintf(s, sizeof s, "Spearman {/Symbol r} = %.2f", rho);
            kvp_vars_str(&v, "RHO", s);
        }
        rc = kvp_write_script(c, f, "Does the L1 eviction loss predict the KL?", &v, err);
        kvp_vars_free(&v);
    }
    fid_free(&ft);
    return rc;
}
