/* head_maps: attention maps of example heads, one per FastGen policy that
 * occurs (FastGen Fig. 1 and 4). Policies and recoveries come from
 * fastgen_heads.csv (query heads, the shown prompt, threshold T); the maps
 * come from the trace's `attn` dataset (kvtrace --full-maps). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/trace_read.h"
#include "plots/csv.h"
#include "plots/plot.h"

typedef struct {
    int found;
    int layer, head;
    double margin, rec;
} pick;

/* How typical a head is of its policy k at threshold T: it passes its own
 * rung by rec_k - T and fails the cheaper rung by T - rec_{k-1}; the margin
 * is the smaller of the two (only the first for "special"). */
static double typical_margin(const double *rec, int k, double T) {
    double m = rec[k] - T;
    if (k > 0 && T - rec[k - 1] < m) m = T - rec[k - 1];
    return m;
}

/* Pools an N x N causal map into M x M cells of f x f positions: the mean of
 * the entries with j <= i in the cell, or -1 where the cell has none. */
static void pool_map(const float *a, int N, int f, int M, double *out) {
    for (int bi = 0; bi < M; bi++)
        for (int bj = 0; bj < M; bj++) {
            double s = 0;
            long n = 0;
            for (int i = bi * f; i < N && i < (bi + 1) * f; i++)
                for (int j = bj * f; j < N && j < (bj + 1) * f && j <= i; j++) {
                    s += a[(long)i * N + j];
                    n++;
                }
            out[(long)bi * M + bj] = n ? s / n : -1;
        }
}

int kvp_fig_head_maps(const kvp_ctx *c, kvp_fig *f, kv_error *err) {
    if (!c->trace) {
        kv_fail(err, "no --trace given (head_maps needs a trace written with kvtrace --full-maps)");
        return 1;
    }
    char *cpath = kvp_input(c, "fastgen_heads.csv");
    if (!cpath) {
        kv_fail(err, "no fastgen_heads.csv in %s", c->results);
        return 1;
    }
    int rc = -1;
    kvp_csv *t = kvp_csv_read(cpath, err);
    free(cpath);
    kv_trace *tr = NULL;
    kv_prompt *pr = NULL;
    float *map = NULL;
    double *cells = NULL;
    char **pieces = NULL;
    int32_t *tokens = NULL;
    kvp_buf d = {0}, tics = {0};
    kvp_vars v = {0};
    if (!t) return -1;
    int cp = kvp_csv_col(t, "prompt", err), cl = cp < 0 ? -1 : kvp_csv_col(t, "layer", err);
    int ch = cl < 0 ? -1 : kvp_csv_col(t, "head", err), ck = ch < 0 ? -1 : kvp_csv_col(t, "head_kind", err);
    int ct = ck < 0 ? -1 : kvp_csv_col(t, "threshold", err), cpol = ct < 0 ? -1 : kvp_csv_col(t, "policy", err);
    int crec[KV_N_RUNGS];
    static const char *recn[KV_N_RUNGS] = {"rec_special", "rec_punct", "rec_frequent", "rec_local", "rec_full"};
    for (int k = 0; k < KV_N_RUNGS; k++) crec[k] = cpol < 0 || (k && crec[k - 1] < 0) ? -1 : kvp_csv_col(t, recn[k], err);
    if (crec[KV_N_RUNGS - 1] < 0) goto out;

    tr = kv_trace_open(c->trace, err);
    if (!tr) goto out;
    /* threshold: --threshold, else 0.95 when present, else the first row's */
    double T = c->threshold;
    if (isnan(T)) {
        for (int i = 0; i < t->nrows; i++) {
            double x;
            if (kvp_csv_num(t, i, ct, &x, err)) goto out;
            if (isnan(T)) T = x;
            if (fabs(x - 0.95) < 1e-9) T = 0.95;
        }
        if (isnan(T)) {
            kv_fail(err, "%s/fastgen_heads.csv has no rows", c->results);
            rc = 1;
            goto out;
        }
    }
    /* the prompt: --prompt, else the shortest one with maps and rows */
    int best = -1, bestN = 0;
    for (int pi = 0; pi < tr->n_prompts; pi++) {
        const char *id = tr->prompt_ids[pi];
        if (c->prompt && strcmp(id, c->prompt)) continue;
        int rows = 0;
        for (int i = 0; i < t->nrows && !rows; i++) rows = !strcmp(kvp_csv_str(t, i, cp), id);
        if (!rows) continue;
        kv_prompt *p = kv_prompt_open(tr, id, err);
        if (!p) goto out;
        int ok = p->has_attn, N = p->n_tokens;
        kv_prompt_close(p);
        if (ok && (best < 0 || N < bestN)) best = pi, bestN = N;
    }
    if (c->prompt && kv_trace_find_prompt(tr, c->prompt) < 0) {
        kv_fail(err, "%s: no prompt '%s'", c->trace, c->prompt);
        goto out;
    }
    if (best < 0) {
        kv_fail(err, "%s: no prompt%s%s with attention maps (attn) and rows in fastgen_heads.csv; "
                     "trace with kvtrace --full-maps",
                c->trace, c->prompt ? " " : "", c->prompt ? c->prompt : "");
        rc = 1;
        goto out;
    }
    const char *pid = tr->prompt_ids[best];
    /* the most typical query head of each policy */
    pick picks[KV_N_RUNGS] = {0};
    for (int i = 0; i < t->nrows; i++) {
        if (strcmp(kvp_csv_str(t, i, cp), pid) || strcmp(kvp_csv_str(t, i, ck), "query")) continue;
        double x, l, h, rec[KV_N_RUNGS];
        if (kvp_csv_num(t, i, ct, &x, err)) goto out;
        if (fabs(x - T) > 1e-9) continue;
        int k = kv_rung_index(kvp_csv_str(t, i, cpol));
        if (k < 0) {
            kv_fail(err, "%s/fastgen_heads.csv: data row %d: unknown policy '%s'", c->results, i + 1,
                    kvp_csv_str(t, i, cpol));
            goto out;
        }
        if (kvp_csv_num(t, i, cl, &l, err) || kvp_csv_num(t, i, ch, &h, err)) goto out;
        for (int r = 0; r < KV_N_RUNGS; r++)
            if (kvp_csv_num(t, i, crec[r], &rec[r], err)) goto out;
        double m = typical_margin(rec, k, T);
        if (!picks[k].found || m > picks[k].margin)
            picks[k] = (pick){1, (int)l, (int)h, m, rec[k]};
    }
    int n = 0;
    for (int k = 0; k < KV_N_RUNGS; k++) n += picks[k].found;
    if (!n) {
        kv_fail(err, "%s/fastgen_heads.csv: no query-head rows for prompt %s at threshold %g", c->results, pid, T);
        rc = isnan(c->threshold) ? 1 : -1; /* a threshold asked for is an error */
        goto out;
    }
    pr = kv_prompt_open(tr, pid, err);
    if (!pr) goto out;
    int N = pr->n_tokens;
    int fct = (N + c->max_cells - 1) / c->max_cells, M = (N + fct - 1) / fct;
    map = malloc((size_t)N * N * sizeof *map);
    cells = malloc((size_t)M * M * sizeof *cells);
    if (!map || !cells) {
        kv_fail(err, "%s: prompt %s: out of memory for a %d x %d map", c->trace, pid, N, N);
        goto out;
    }
    kvp_buf_printf(&d,
                   "# Attention maps of example query heads of prompt %s (N = %d tokens), one per FastGen\n"
                   "# policy at T = %g: the head with the largest margin min(rec_own - T, T - rec_cheaper).\n"
                   "# %s. One index block per panel;\n"
                   "# columns: key position j, query position i, attention (-1: above the diagonal).\n",
                   pid, N, T,
                   fct > 1 ? "Pooled: each cell is the mean of the causal entries of a block of positions"
                           : "One cell per (query, key) entry");
    if (fct > 1) kvp_buf_printf(&d, "# block size %d x %d positions\n", fct, fct);
    kvp_buf panels = {0}, titles = {0}, heads = {0};
    for (int k = 0; k < KV_N_RUNGS; k++) {
        if (!picks[k].found) continue;
        int li = -1;
        for (int x = 0; x < tr->L; x++)
            if (tr->layers[x] == picks[k].layer) li = x;
        if (li < 0 || picks[k].head >= tr->n_heads) {
            kv_fail(err, "%s: layer %d head %d (from fastgen_heads.csv) is not in the trace", c->trace,
                    picks[k].layer, picks[k].head);
            kvp_buf_free(&panels);
            kvp_buf_free(&titles);
            kvp_buf_free(&heads);
            goto out;
        }
        if (kv_prompt_read_attn(pr, li, picks[k].head, 1, map, err)) {
            kvp_buf_free(&panels);
            kvp_buf_free(&titles);
            kvp_buf_free(&heads);
            goto out;
        }
        pool_map(map, N, fct, M, cells);
        kvp_buf_printf(&d, "# panel: policy %s, layer %d, head %d, recovery %.4g, margin %.4g\n",
                       kv_rung_policy[k], picks[k].layer, picks[k].head, picks[k].rec, picks[k].margin);
        for (int bi = 0; bi < M; bi++) {
            for (int bj = 0; bj < M; bj++)
                kvp_buf_printf(&d, "%g %g %.6g\n", bj * fct + (fct - 1) / 2.0, bi * fct + (fct - 1) / 2.0,
                               cells[(long)bi * M + bj]);
            kvp_buf_printf(&d, "\n");
        }
        kvp_buf_printf(&d, "\n");
        kvp_buf_printf(&panels, "%s%d", panels.len ? " " : "", k);
        kvp_buf_printf(&titles, "%s%d", titles.len ? " " : "", picks[k].layer);
        kvp_buf_printf(&heads, "%s%d", heads.len ? " " : "", picks[k].head);
    }
    /* token labels for short prompts */
    int labels = N <= c->label_tokens;
    if (labels) {
        pieces = kv_prompt_read_pieces(pr, err);
        if (!pieces) goto out;
        int any = 0;
        for (int i = 0; i < N; i++) any |= pieces[i][0] != 0;
        if (!any) {
            tokens = malloc(N * sizeof *tokens);
            if (!tokens || kv_prompt_read_tokens(pr, tokens, err)) goto out;
        }
        kvp_buf_printf(&tics, "[");
        for (int i = 0; i < N; i++) {
            char idbuf[32];
            snprintf(idbuf, sizeof idbuf, "%d", tokens ? (int)tokens[i] : 0);
            kvp_gp_string(&tics, tokens ? idbuf : pieces[i], KVP_GP_DQUOTE);
            kvp_buf_printf(&tics, "%s", i + 1 < N ? ", " : "");
        }
        kvp_buf_printf(&tics, "]");
    } else {
        kvp_buf_printf(&tics, "[\"\"]");
    }
    snprintf(f->name, sizeof f->name, "head_maps");
    int cols = n > 1 ? 2 : 1, rows = (n + cols - 1) / cols;
    /* the template's layout: panels between 0.14 and 0.83 of the width, gaps
     * of 0.06; 0.45 in above, a row gap and the bottom band below */
    double panel_in = c->width_in * (0.83 - 0.14 - 0.06 * (cols - 1)) / cols;
    double gap_in = labels ? 0.55 : 0.45;
    f->height_in = 0.45 + rows * panel_in + (rows - 1) * gap_in + gap_in + 0.1;
    rc = kvp_write_data(c, "head_maps.dat", &d, err);
    if (!rc) {
        kvp_vars_str(&v, "PANELS", panels.s);
        kvp_vars_str(&v, "PANEL_LAYERS", titles.s);
        kvp_vars_str(&v, "PANEL_HEADS", heads.s);
        kvp_vars_set(&v, "NPANELS", "%d", n);
        kvp_vars_set(&v, "NTOK", "%d", N);
        kvp_vars_set(&v, "NCELLS", "%d", M);
        kvp_vars_str(&v, "PROMPT", pid);
        kvp_vars_set(&v, "THRESHOLD", "%g", T);
        kvp_vars_set(&v, "LABELS", "%d", labels);
        kvp_vars_set(&v, "TOKENS", "%s", tics.s ? tics.s : "[\"\"]");
        kvp_vars_set(&v, "NLABELS", "%d", labels ? N : 1);
        char title[400];
        snprintf(title, sizeof title, "Attention maps per policy, prompt %s", pid);
        rc = kvp_write_script(c, f, title, &v, err);
    }
    kvp_buf_free(&panels);
    kvp_buf_free(&titles);
    kvp_buf_free(&heads);
out:
    kvp_vars_free(&v);
    kvp_buf_free(&d);
    kvp_buf_free(&tics);
    if (pieces && pr) kv_strings_free(pieces, pr->n_tokens);
    free(tokens);
    free(map);
    free(cells);
    kv_prompt_close(pr);
    kv_trace_close(tr);
    kvp_csv_free(t);
    return rc;
}
