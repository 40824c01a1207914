#include "analyzer/analyze.h"

#include "common/cli.h"

#include <cJSON.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "analyzer/concentration.h"
#include "analyzer/output.h"
#include "format/trace_read.h"
#include "policy/gqa.h"
#include "policy/policy_file.h"

enum { OUT_FASTGEN, OUT_LOSS, OUT_BUDGETS_CSV, OUT_CONC, OUT_POLICIES, OUT_BUDGETS_JSON, OUT_KEPT, OUT_N };
static const char *const out_names[OUT_N] = {"fastgen_heads.csv", "eviction_loss.csv", "budgets.csv",
                                             "concentration.csv", "policies.json", "budgets.json", "kept.jsonl"};

static const char *const alloc_name[] = {"uniform", "adaptive"};

/* Aggregates over prompts, sized by the trace. */
typedef struct {
    int L, H, KVH, nT, nB;
    int n_prompts;
    /* FastGen: [L, H+KVH, rung]; heads 0..H-1 query, H.. kv */
    double *rec_sum, *rec_min, *kept_sum;
    /* Ada-KV summary: [alloc, budget] */
    double l1[2][KV_MAX_LIST], bound[2][KV_MAX_LIST], kept[2][KV_MAX_LIST];
    long cnt[2][KV_MAX_LIST];
    /* adaptive shares: [budget, L, KVH] sum over prompts of head share; layer budget [budget, L] */
    double *share;
    double mean_tokens;
    int n_rows_all, n_rows_window; /* prompts profiled over all rows / over the window rows */
    int n_rows_accum;              /* of n_rows_all, those without full maps: from the nearsum accumulators */
} kv_agg;

static void agg_free(kv_agg *a) {
    free(a->rec_sum);
    free(a->rec_min);
    free(a->kept_sum);
    free(a->share);
}

typedef struct {
    const kv_analyze_opts *o;
    const kv_trace *t;
    kv_outset out;
    kv_agg agg;
    /* per-layer buffers */
    float *win;      /* [H, W', N] */
    float *colsum;   /* [H, N] */
    float *nearsum;  /* [H, N] the local-window mass of --r-local (traces without full maps) */
    float *values;   /* [KVH, N, hd] */
    float *key_norm; /* [KVH, N] (--scorer knorm only) */
    float *wo;       /* [D, H*hd] */
    double *scores;  /* [KVH, N] */
    double *stmp;    /* [3N] */
    int *head_order, *all_order; /* [KVH*N] */
    uint8_t *keep;   /* [KVH*N] */
    int *counts;     /* [KVH] */
    double t_read, t_fastgen, t_adakv, t_conc; /* seconds, for --timings (fastgen includes streaming attn) */
    /* progress (o->progress): prompts done before the one in flight, of n_prompts */
    int prompts_done, n_prompts, progress_shown;
    double t_start;
    char conventions[128]; /* the Ada-KV conventions of this run, a column of the CSV outputs */
} kv_run;

/* One line on stderr, rewritten after every layer: where the run is, its
 * rate and the time left (by prompts and layers done). */
static void show_progress(kv_run *R, const kv_prompt *p, int li) {
    double el = omp_get_wtime() - R->t_start;
    double frac = (R->prompts_done + (li + 1.0) / R->t->L) / R->n_prompts, left = frac > 0 ? el / frac - el : 0;
    fprintf(stderr, "\rkvanalyze: prompt %d/%d (%s, %d tokens) layer %d/%d  %.0f s, about %.0f s left   ",
            R->prompts_done + 1, R->n_prompts, p->id, p->n_tokens, li + 1, R->t->L, el, left);
    fflush(stderr);
    R->progress_shown = 1;
}

static int ensure(void **p, size_t *cap, size_t need, kv_error *err) {
    if (need <= *cap) return 0;
    free(*p);
    *p = kv_malloc(need, err);
    *cap = *p ? need : 0;
    return *p ? 0 : -1;
}

/* ------------------------------------------------------------ FastGen */

/* The FastGen accumulators of one KV group: its G query heads (tasks 0..G-1)
 * and, when G > 1, their combined map (task G). Each thread has its own
 * accumulators, added up once the group's rows are all seen. */
typedef struct {
    kv_fastgen_head *heads; /* [G + 1] */
    int G, N, gqa_max;
    float *comb;  /* [threads, N] one combined row */
    const float **rowp; /* [threads, G] the group's rows being combined */
    double *acc;  /* [threads, G + 1, 4] kept mass per rung */
    int *used;    /* [threads, G + 1] rows in the mean */
} fg_group;

/* kv_attn_block_fn: accumulates one block of rows of the group's G maps */
static void fg_block(void *ctx, int thread, int row0, int nrows, const float *const *rows) {
    fg_group *g = ctx;
    int G = g->G, N = g->N;
    double *acc = g->acc + (size_t)thread * (G + 1) * 4;
    int *used = g->used + (size_t)thread * (G + 1);
    for (int q = 0; q < G; q++) kv_fastgen_head_rows(&g->heads[q], rows[q], row0, nrows, acc + 4 * q, &used[q]);
    if (G == 1) return;
    float *c = g->comb + (size_t)thread * N;
    const float **rq = g->rowp + (size_t)thread * G;
    for (int r = 0; r < nrows; r++) {
        for (int q = 0; q < G; q++) rq[q] = rows[q] + (size_t)r * N;
        kv_gqa_combine(c, rq, G, row0 + r + 1, g->gqa_max); /* causal: the rest of the row is 0 */
        kv_fastgen_head_rows(&g->heads[G], c, row0 + r, 1, acc + 4 * G, &used[G]);
    }
}

/* Where a prompt's FastGen profile comes from (docs/analyzer.md). */
typedef enum { ROWS_MAPS, ROWS_ACCUM, ROWS_WINDOW } rows_source;

/* Index of r_local in the trace's nearsum, or -1. */
static int near_index(const kv_trace *t, double r_local) {
    for (int k = 0; k < t->n_near; k++)
        if (fabs(t->near_r_local[k] - r_local) < 1e-12) return k;
    return -1;
}

/* All rows from full maps; else all rows from the accumulators when the
 * trace has them, or an error when they cannot answer the options; else
 * (traces written without accumulators) the window rows. */
static int rows_source_of(const kv_trace *t, const kv_prompt *p, const kv_analyze_opts *o, rows_source *src,
                          kv_error *err) {
    if (p->has_attn) return *src = ROWS_MAPS, 0;
    if (!p->has_nearsum) return *src = ROWS_WINDOW, 0;
    const char *why = "%s: prompt '%s' has no full maps, and its FastGen profile over all rows comes from the "
                      "trace's local-window sums (nearsum), which cannot answer %s: re-trace with %s";
    char have[160] = "", opt[64];
    for (int k = 0; k < t->n_near; k++)
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%g", k ? "," : "", t->near_r_local[k]);
    int k = near_index(t, o->fg.r_local);
    if (k < 0) {
        char what[200];
        snprintf(what, sizeof what, "--r-local %g (it holds r_l %s)", o->fg.r_local, have);
        snprintf(opt, sizeof opt, "--local-ratio %g or --full-maps", o->fg.r_local);
        return kv_fail(err, why, t->path, p->id, what, opt);
    }
    if (p->near_w[k] != kv_local_window(o->fg.r_local, p->n_tokens))
        return kv_fail(err, "%s: prompt '%s': its nearsum window for r_l %g is %d positions, FastGen's is %d",
                       t->path, p->id, o->fg.r_local, p->near_w[k], kv_local_window(o->fg.r_local, p->n_tokens));
    if (o->gqa_max && t->n_heads > t->n_kv_heads)
        return kv_fail(err, why, t->path, p->id, "--gqa max (the max of a group's maps is not a sum)", "--full-maps");
    if (o->fg.skip_rows > 0)
        return kv_fail(err, why, t->path, p->id, "--skip-rows (the sums cover every row)", "--full-maps");
    return *src = ROWS_ACCUM, 0;
}

/* Profiles every query head and KV head of one layer, one KV group at a
 * time. With full maps the group's maps are streamed block by block
 * (kv_prompt_scan_attn) and never held whole; with accumulators only, each
 * head's colsum and nearsum give the same sums over all rows
 * (kv_fastgen_head_sums); with neither, the window rows already in R->win
 * are used. */
static int fastgen_layer(kv_run *R, const kv_prompt *p, int li, rows_source src, kv_error *err) {
    const kv_trace *t = R->t;
    const kv_analyze_opts *o = R->o;
    int H = t->n_heads, KVH = t->n_kv_heads, G = H / KVH, N = p->n_tokens, Wp = p->window_rows;
    int ntask = H + KVH, nt = omp_get_max_threads();
    int rows_all = src != ROWS_WINDOW, row0 = rows_all ? 0 : N - Wp, nrows = rows_all ? N : Wp;
    size_t n = (size_t)nrows * N;
    fg_group grp = {.G = G, .N = N, .gqa_max = o->gqa_max};
    kv_fastgen_result *res = kv_calloc((size_t)ntask, sizeof *res, err);
    int *cls = kv_malloc((size_t)N * sizeof *cls, err);
    float *ccs = kv_malloc((size_t)N * sizeof *ccs, err);
    float *cns = src == ROWS_ACCUM ? kv_malloc((size_t)N * sizeof *cns, err) : NULL; /* combined nearsum */
    grp.comb = kv_malloc((size_t)nt * N * sizeof *grp.comb, err);
    grp.acc = kv_malloc((size_t)nt * (G + 1) * 4 * sizeof *grp.acc, err);
    grp.used = kv_malloc((size_t)nt * (G + 1) * sizeof *grp.used, err);
    grp.heads = kv_calloc((size_t)G + 1, sizeof *grp.heads, err);
    grp.rowp = kv_malloc((size_t)nt * G * sizeof *grp.rowp, err);
    int rc = (!res || !cls || !ccs || !grp.comb || !grp.acc || !grp.used || !grp.heads || !grp.rowp ||
              (src == ROWS_ACCUM && !cns)) ? -1 : 0;
    for (int g = 0; !rc && g < KVH; g++) {
        const float *cs = R->colsum + (size_t)g * G * N;
        int ntg = G > 1 ? G + 1 : G, built = 0;
        for (int q = 0; !rc && q < G; q++, built++)
            if (kv_fastgen_head_build(&grp.heads[q], N, p->flags, cs + (size_t)q * N, &o->fg, cls))
                rc = kv_fail(err, "out of memory");
        if (!rc && G > 1) { /* the group's combined accumulated attention picks its frequent set */
            kv_gqa_combine_strided(ccs, cs, N, G, N, o->gqa_max);
            if (kv_fastgen_head_build(&grp.heads[G], N, p->flags, ccs, &o->fg, cls)) rc = kv_fail(err, "out of memory");
            built++;
        }
        memset(grp.acc, 0, (size_t)nt * (G + 1) * 4 * sizeof *grp.acc);
        memset(grp.used, 0, (size_t)nt * (G + 1) * sizeof *grp.used);
        if (!rc && src == ROWS_ACCUM) { /* thread 0's accumulators take the sums */
            const float *ns = R->nearsum + (size_t)g * G * N;
            for (int q = 0; !rc && q < G; q++)
                rc = kv_fastgen_head_sums(&grp.heads[q], cs + (size_t)q * N, ns + (size_t)q * N, grp.acc + 4 * q,
                                          &grp.used[q]);
            if (!rc && G > 1) {
                kv_gqa_combine_strided(cns, ns, N, G, N, 0);
                rc = kv_fastgen_head_sums(&grp.heads[G], ccs, cns, grp.acc + 4 * G, &grp.used[G]);
            }
            if (rc) rc = kv_fail(err, "%s: prompt '%s': --skip-rows needs the full maps", t->path, p->id);
        } else if (!rc && rows_all)
            rc = kv_prompt_scan_attn(p, li, g * G, G, fg_block, &grp, err);
        else if (!rc) { /* the window rows, spread over threads in blocks */
            int nomem = 0;
#pragma omp parallel reduction(| : nomem)
            {
                const float **blk = malloc((size_t)G * sizeof *blk);
                nomem = !blk;
#pragma omp for schedule(dynamic, 1)
                for (int r = 0; r < nrows; r += 4) {
                    if (!blk) continue;
                    for (int q = 0; q < G; q++) blk[q] = R->win + (size_t)(g * G + q) * n + (size_t)r * N;
                    fg_block(&grp, omp_get_thread_num(), row0 + r, nrows - r < 4 ? nrows - r : 4, blk);
                }
                free((void *)blk);
            }
            if (nomem) rc = kv_fail(err, "out of memory");
        }
        for (int k = 0; !rc && k < ntg; k++) {
            double acc[4] = {0, 0, 0, 0};
            int used = 0;
            for (int th = 0; th < nt; th++) {
                for (int c = 0; c < 4; c++) acc[c] += grp.acc[((size_t)th * (G + 1) + k) * 4 + c];
                used += grp.used[(size_t)th * (G + 1) + k];
            }
            kv_fastgen_head_result(&grp.heads[k], acc, used, &res[k < G ? g * G + k : H + g]);
        }
        if (!rc && G == 1) res[H + g] = res[g]; /* the combined map is the head's own map */
        for (int k = 0; k < built; k++) kv_fastgen_head_free(&grp.heads[k]);
    }
    free(cls);
    free(ccs);
    free(cns);
    free(grp.comb);
    free(grp.rowp);
    free(grp.acc);
    free(grp.used);
    free(grp.heads);
    if (!rc && res[0].rows_used == 0)
        rc = kv_fail(err, "%s: prompt '%s': --skip-rows %d leaves no query rows to profile", t->path, p->id,
                     o->fg.skip_rows);
    if (rc) {
        free(res);
        return -1;
    }
    FILE *fp = R->out.f[OUT_FASTGEN].fp;
    kv_agg *a = &R->agg;
    for (int task = 0; task < ntask; task++) {
        int kv = task >= H, head = kv ? task - H : task;
        const kv_fastgen_result *r = &res[task];
        for (int k = 0; k < o->n_thresholds; k++) {
            int c = kv_fastgen_choose(r->recovery, o->thresholds[k]);
            fprintf(fp, "%s,%d,%d,%s,%s,%.9g,%s,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g\n", p->id, t->layers[li], head,
                    kv ? "kv" : "query", rows_all ? "all" : "window", o->thresholds[k], kv_rung_policy[c],
                    r->kept_fraction[c], r->recovery[0], r->recovery[1], r->recovery[2], r->recovery[3],
                    r->recovery[4]);
        }
        for (int c = 0; c < KV_N_RUNGS; c++) {
            size_t ix = ((size_t)li * ntask + task) * KV_N_RUNGS + c;
            a->rec_sum[ix] += r->recovery[c];
            if (r->recovery[c] < a->rec_min[ix]) a->rec_min[ix] = r->recovery[c];
            a->kept_sum[ix] += r->kept_fraction[c];
        }
    }
    free(res);
    return 0;
}

/* ------------------------------------------------------------- Ada-KV */

/* kept.jsonl (--kept): one line per prompt, layer, allocation and budget with
 * each KV head's kept prefix positions, ascending (the observation window
 * [P, P + w) is kept as well). keep [KVH, P], NULL: everything kept. */
static int write_kept(kv_run *R, const char *prompt, int layer, int adaptive, int B, int b, int P, const uint8_t *keep,
                      kv_error *err) {
    int KVH = R->t->n_kv_heads;
    int *pos = kv_malloc((size_t)(P > 0 ? P : 1) * sizeof *pos, err);
    cJSON *o = cJSON_CreateObject(), *heads = o ? cJSON_AddArrayToObject(o, "kv_heads") : NULL;
    int bad = !pos || !heads;
    for (int g = 0; !bad && g < KVH; g++) {
        int n = 0;
        for (int j = 0; j < P; j++)
            if (!keep || keep[(size_t)g * P + j]) pos[n++] = j;
        cJSON *a = cJSON_CreateIntArray(pos, n);
        bad = !a || !cJSON_AddItemToArray(heads, a);
    }
    char *line = NULL;
    if (!bad) {
        cJSON_AddStringToObject(o, "prompt", prompt);
        cJSON_AddNumberToObject(o, "layer", layer);
        cJSON_AddStringToObject(o, "allocation", adaptive ? "adaptive" : "uniform");
        cJSON_AddNumberToObject(o, "budget", B);
        cJSON_AddNumberToObject(o, "prefix_budget", b);
        cJSON_AddNumberToObject(o, "window_start", P);
        line = cJSON_PrintUnformatted(o);
        bad = !line || cJSON_GetArraySize(heads) != KVH;
    }
    if (!bad) bad = fputs(line, R->out.f[OUT_KEPT].fp) < 0 || fputc('\n', R->out.f[OUT_KEPT].fp) == EOF;
    cJSON_free(line);
    cJSON_Delete(o);
    free(pos);
    return bad ? kv_fail(err, "cannot write kept.jsonl (out of memory or disk full)") : 0;
}

static int adakv_layer(kv_run *R, const kv_prompt *p, int li, kv_error *err) {
    const kv_trace *t = R->t;
    const kv_analyze_opts *o = R->o;
    const kv_adakv_params *ap = &o->ada;
    int H = t->n_heads, KVH = t->n_kv_heads, N = p->n_tokens, Wp = p->window_rows;
    int w = ap->obs_window, Nc = N - ap->future_q, P = Nc - w;
    kv_loss_ctx lc;
    kv_layer_view view = {R->win, Wp, R->values, R->wo, N, H, KVH, t->head_dim, t->hidden_size};
    if (kv_loss_ctx_build(&lc, &view, w, ap->future_q, err)) return -1;
    if (P > 0) {
        kv_adakv_scores(R->win, Wp, R->colsum, R->key_norm, N, H, KVH, ap, R->scores, R->stmp);
        if (kv_adakv_orders(R->scores, KVH, P, R->head_order, R->all_order, err)) {
            kv_loss_ctx_free(&lc);
            return -1;
        }
    }
    char evalname[32];
    if (ap->future_q) snprintf(evalname, sizeof evalname, "future:%d", ap->future_q);
    else snprintf(evalname, sizeof evalname, "window");
    int layer = t->layers[li];
    kv_agg *a = &R->agg;
    for (int al = 0; al < 2; al++)
        for (int bi = 0; bi < o->n_budgets; bi++) {
            int B = o->budgets[bi], b = B - w;
            int bl = o->pyramid ? kv_pyramid_prefix_budget(ap->pyramid, b, w, layer, t->n_layers, P) : b;
            kv_loss loss;
            if (bl >= P) {
                for (int g = 0; g < KVH; g++) R->counts[g] = P > 0 ? P : 0;
                kv_loss_eval(&lc, NULL, &loss);
            } else {
                kv_split split = {al ? KV_ALLOC_ADAPTIVE : KV_ALLOC_UNIFORM, ap->alpha, ap->safeguard, w};
                kv_adakv_select(&split, R->head_order, R->all_order, KVH, P, bl, R->keep, R->counts);
                kv_loss_eval(&lc, R->keep, &loss);
            }
            if (o->kept && write_kept(R, p->id, layer, al, B, bl, P, bl >= P ? NULL : R->keep, err)) {
                kv_loss_ctx_free(&lc);
                return -1;
            }
            fprintf(R->out.f[OUT_LOSS].fp, "%s,%d,%s,%s,%d,%d,%s,%.9g,%.9g,%.9g,%.9g,%.9g,%s\n", p->id, layer,
                    kv_scorer_names[ap->scorer], alloc_name[al], o->pyramid, B, evalname, loss.bound,
                    loss.bound_per_head, loss.actual_l1, loss.relative_l1, loss.kept_mass, R->conventions);
            a->l1[al][bi] += loss.actual_l1;
            a->bound[al][bi] += loss.bound;
            a->kept[al][bi] += loss.kept_mass;
            a->cnt[al][bi]++;
            if (al == 1) {
                long tot = 0;
                for (int g = 0; g < KVH; g++) tot += R->counts[g];
                for (int g = 0; g < KVH; g++) {
                    fprintf(R->out.f[OUT_BUDGETS_CSV].fp, "%s,%d,%s,%d,%d,%d,%d,%d,%s\n", p->id, layer,
                            kv_scorer_names[ap->scorer], o->pyramid, B, bl + w, g, R->counts[g] + w, R->conventions);
                    a->share[((size_t)bi * a->L + li) * KVH + g] += tot > 0 ? (double)R->counts[g] / tot : 1.0 / KVH;
                }
            }
        }
    kv_loss_ctx_free(&lc);
    return 0;
}

static int concentration_layer(kv_run *R, const kv_prompt *p, int li, kv_error *err) {
    const kv_trace *t = R->t;
    int H = t->n_heads, N = p->n_tokens, Wp = p->window_rows, nt = omp_get_max_threads();
    double *mass = kv_malloc((size_t)H * KV_CONC_MAX * sizeof *mass, err);
    int *pos = kv_malloc((size_t)H * KV_CONC_MAX * sizeof *pos, err);
    uint32_t *scratch = kv_malloc((size_t)nt * 2 * N * sizeof *scratch, err); /* [threads, 2N] */
    if (!mass || !pos || !scratch) {
        free(mass), free(pos), free(scratch);
        return -1;
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int h = 0; h < H; h++)
        kv_concentration(R->win + (size_t)h * Wp * N, Wp, N, mass + (size_t)h * KV_CONC_MAX,
                         pos + (size_t)h * KV_CONC_MAX, scratch + (size_t)omp_get_thread_num() * 2 * N);
    for (int h = 0; h < H; h++)
        for (int x = 0; x < KV_CONC_MAX; x++)
            fprintf(R->out.f[OUT_CONC].fp, "%s,%d,%d,%d,%d,%.9g\n", p->id, t->layers[li], h, x + 1,
                    pos[(size_t)h * KV_CONC_MAX + x], mass[(size_t)h * KV_CONC_MAX + x]);
    free(mass);
    free(pos);
    free(scratch);
    return 0;
}

/* ------------------------------------------------------------- prompt */

static int run_prompt(kv_run *R, const char *id, kv_error *err) {
    const kv_trace *t = R->t;
    kv_prompt *p = kv_prompt_open(t, id, err);
    if (!p) return -1;
    int H = t->n_heads, KVH = t->n_kv_heads, N = p->n_tokens, Wp = p->window_rows;
    size_t cap_win = 0, cap_cs = 0, cap_v = 0, cap_wo = 0, cap_s = 0, cap_t = 0, cap_o1 = 0,
           cap_o2 = 0, cap_k = 0, cap_c = 0, cap_ns = 0, cap_kn = 0;
    void *win = NULL, *cs = NULL, *val = NULL, *wo = NULL, *sc = NULL, *st = NULL, *o1 = NULL,
         *o2 = NULL, *kp = NULL, *cn = NULL, *ns = NULL, *kn = NULL;
    int knorm = R->o->ada.scorer == KV_SCORER_KNORM;
    rows_source src;
    int rc = rows_source_of(t, p, R->o, &src, err);
    int near_k = src == ROWS_ACCUM ? near_index(t, R->o->fg.r_local) : -1;
    if (ensure(&win, &cap_win, (size_t)H * Wp * N * sizeof(float), err) ||
        ensure(&cs, &cap_cs, (size_t)H * N * sizeof(float), err) ||
        ensure(&val, &cap_v, (size_t)KVH * N * t->head_dim * sizeof(float), err) ||
        ensure(&wo, &cap_wo, (size_t)t->hidden_size * H * t->head_dim * sizeof(float), err) ||
        ensure(&sc, &cap_s, (size_t)KVH * N * sizeof(double), err) ||
        ensure(&st, &cap_t, (size_t)3 * N * sizeof(double), err) ||
        ensure(&o1, &cap_o1, (size_t)KVH * N * sizeof(int), err) ||
        ensure(&o2, &cap_o2, (size_t)KVH * N * sizeof(int), err) ||
        ensure(&kp, &cap_k, (size_t)KVH * N, err) || ensure(&cn, &cap_c, (size_t)KVH * sizeof(int), err) ||
        (src == ROWS_ACCUM && ensure(&ns, &cap_ns, (size_t)H * N * sizeof(float), err)) ||
        (knorm && ensure(&kn, &cap_kn, (size_t)KVH * N * sizeof(float), err)))
        rc = -1;
    R->win = win, R->colsum = cs, R->nearsum = ns, R->values = val, R->wo = wo, R->scores = sc, R->stmp = st;
    R->key_norm = kn;
    R->head_order = o1, R->all_order = o2, R->keep = kp, R->counts = cn;
    R->agg.mean_tokens += N;
    if (src == ROWS_WINDOW) R->agg.n_rows_window++;
    else R->agg.n_rows_all++;
    if (src == ROWS_ACCUM) R->agg.n_rows_accum++;
    for (int li = 0; !rc && li < t->L; li++) {
        double t0 = omp_get_wtime();
        if (kv_prompt_read_colsum(p, li, R->colsum, err) || kv_prompt_read_window(p, li, R->win, err) ||
            kv_prompt_read_values(p, li, R->values, err) || kv_trace_read_wo(t, li, R->wo, err) ||
            (src == ROWS_ACCUM && kv_prompt_read_nearsum(p, li, near_k, R->nearsum, err)) ||
            (knorm && kv_prompt_read_key_norm(p, li, R->key_norm, err))) {
            rc = -1;
            break;
        }
        double t1 = omp_get_wtime();
        rc = fastgen_layer(R, p, li, src, err); /* streams attn: its reading counts as fastgen time */
        double t2 = omp_get_wtime();
        if (!rc) rc = adakv_layer(R, p, li, err);
        double t3 = omp_get_wtime();
        if (!rc) rc = concentration_layer(R, p, li, err);
        double t4 = omp_get_wtime();
        R->t_read += t1 - t0, R->t_fastgen += t2 - t1, R->t_adakv += t3 - t2, R->t_conc += t4 - t3;
        if (!rc && R->o->progress) show_progress(R, p, li);
    }
    free(win);
    free(cs);
    free(val);
    free(wo);
    free(sc);
    free(st);
    free(o1);
    free(o2);
    free(kp);
    free(cn);
    free(ns);
    free(kn);
    R->key_norm = NULL;
    kv_prompt_close(p);
    return rc;
}

/* ---------------------------------------------------------- JSON files */

/* Where the all-rows profiles came from: "" (none), "maps", "sums" or "maps and sums". */
static const char *rows_from(const kv_agg *a) {
    int sums = a->n_rows_accum, maps = a->n_rows_all - a->n_rows_accum;
    return !sums && !maps ? "" : !sums ? "maps" : !maps ? "sums" : "maps and sums";
}

/* One head's aggregated recoveries and the rung they choose at T. */
static void head_policy(const kv_run *R, int li, int task, double T, kv_head_policy *out) {
    const kv_agg *a = &R->agg;
    int ntask = a->H + a->KVH;
    double kept[KV_N_RUNGS];
    out->head = task >= a->H ? task - a->H : task;
    for (int c = 0; c < KV_N_RUNGS; c++) {
        size_t ix = ((size_t)li * ntask + task) * KV_N_RUNGS + c;
        out->recovery[c] = R->o->aggregate_min ? a->rec_min[ix] : a->rec_sum[ix] / a->n_prompts;
        kept[c] = a->kept_sum[ix] / a->n_prompts;
    }
    out->recovery[KV_RUNG_FULL] = 1.0;
    out->policy = kv_fastgen_choose(out->recovery, T);
    out->components = kv_rung_components(out->policy);
    out->kept_fraction = kept[out->policy];
}

static int write_policies(kv_run *R, char **ids, int nids, kv_error *err, double *kept_total) {
    const kv_trace *t = R->t;
    const kv_analyze_opts *o = R->o;
    int H = t->n_heads, KVH = t->n_kv_heads, rc = -1;
    kv_policy_file p = {.r_local = o->fg.r_local, .r_frequent = o->fg.r_frequent, .gqa_max = o->gqa_max,
                        .aggregate_min = o->aggregate_min, .skip_rows = o->fg.skip_rows, .prompts = ids,
                        .n_prompts = nids, .n_layers = t->n_layers, .n_heads = H, .n_kv_heads = KVH,
                        .head_dim = t->head_dim, .hidden_size = t->hidden_size, .traced = t->layers,
                        .n_traced = t->L, .n_thr = o->n_thresholds};
    snprintf(p.rows, sizeof p.rows, "%s", R->agg.n_rows_window == 0 ? "all" : R->agg.n_rows_all == 0 ? "window" : "mixed");
    snprintf(p.rows_from, sizeof p.rows_from, "%s", rows_from(&R->agg));
    snprintf(p.trace, sizeof p.trace, "%s", o->trace_path);
    snprintf(p.model, sizeof p.model, "%s", t->model);
    double mean_tokens = R->agg.mean_tokens / R->agg.n_prompts;
    double full = 2.0 * t->L * KVH * t->head_dim * mean_tokens * 2; /* K and V, fp16 */
    kv_layer_policy *layers = kv_calloc((size_t)o->n_thresholds * t->L, sizeof *layers, err);
    kv_head_policy *heads = kv_calloc((size_t)o->n_thresholds * t->L * (H + KVH), sizeof *heads, err);
    p.thr = kv_calloc(o->n_thresholds, sizeof *p.thr, err);
    if (!layers || !heads || !p.thr) goto done;
    for (int k = 0; k < o->n_thresholds; k++) {
        kv_threshold_policy *tp = &p.thr[k];
        *tp = (kv_threshold_policy){.threshold = o->thresholds[k], .n_layers = t->L,
                                    .layers = layers + (size_t)k * t->L, .mean_tokens = mean_tokens,
                                    .kv_bytes_full = full};
        double kept = 0;
        for (int li = 0; li < t->L; li++) {
            kv_head_policy *hp = heads + ((size_t)k * t->L + li) * (H + KVH);
            tp->layers[li] = (kv_layer_policy){.layer = t->layers[li], .n_kv = KVH, .n_q = H, .kv = hp + H, .q = hp};
            for (int task = 0; task < H + KVH; task++) head_policy(R, li, task, o->thresholds[k], &hp[task]);
            for (int g = 0; g < KVH; g++) kept += hp[H + g].kept_fraction;
        }
        kept /= (double)t->L * KVH;
        kept_total[k] = tp->mem_kept_fraction = kept;
        tp->kv_bytes_kept = kept * full;
    }
    rc = kv_policies_write(R->out.f[OUT_POLICIES].fp, &p, err);
done:
    free(layers);
    free(heads);
    free(p.thr);
    return rc;
}

static int write_budgets_json(kv_run *R, char **ids, int nids, kv_error *err) {
    const kv_trace *t = R->t;
    const kv_analyze_opts *o = R->o;
    const kv_adakv_params *ap = &o->ada;
    int KVH = t->n_kv_heads, w = ap->obs_window, rc = -1;
    kv_budget_file b = {.kernel = ap->kernel, .obs_window = w, .alpha = ap->alpha, .gqa_max = o->gqa_max,
                        .pyramid = o->pyramid, .prompts = ids, .n_prompts = nids, .n = o->n_budgets};
    snprintf(b.scorer, sizeof b.scorer, "%s", kv_scorer_names[ap->scorer]);
    snprintf(b.pool, sizeof b.pool, "%s", kv_pool_names[ap->pool]);
    snprintf(b.safeguard, sizeof b.safeguard, "%s", kv_safeguard_names[ap->safeguard]);
    snprintf(b.gqa_order, sizeof b.gqa_order, "%s", kv_gqa_order_names[ap->gqa_order]);
    snprintf(b.pyramid_schedule, sizeof b.pyramid_schedule, "%s", kv_pyramid_names[ap->pyramid]);
    if (ap->future_q) snprintf(b.eval, sizeof b.eval, "future:%d", ap->future_q);
    else snprintf(b.eval, sizeof b.eval, "window");
    snprintf(b.trace, sizeof b.trace, "%s", o->trace_path);
    snprintf(b.model, sizeof b.model, "%s", t->model);
    size_t nl = (size_t)o->n_budgets * t->L;
    b.sets = kv_calloc(o->n_budgets, sizeof *b.sets, err);
    kv_budget_layer *layers = kv_calloc(nl, sizeof *layers, err);
    int *kb = kv_malloc(nl * KVH * sizeof *kb, err);
    double *rem = kv_malloc((size_t)KVH * sizeof *rem, err);
    if (!b.sets || !layers || !kb || !rem) goto done;
    for (int bi = 0; bi < o->n_budgets; bi++) {
        b.sets[bi] = (kv_budget_set){.budget = o->budgets[bi], .n_layers = t->L, .layers = layers + (size_t)bi * t->L};
        for (int li = 0; li < t->L; li++) {
            /* the runtime schedule does not depend on a prompt's length: no clamp to P */
            int bp = o->budgets[bi] - w;
            int lb = (o->pyramid ? kv_pyramid_prefix_budget(o->ada.pyramid, bp, w, t->layers[li], t->n_layers, INT_MAX) : bp) + w;
            int *k = kb + ((size_t)bi * t->L + li) * KVH;
            long total = (long)KVH * (lb - w), given = 0;
            for (int g = 0; g < KVH; g++) {
                double share = R->agg.share[((size_t)bi * t->L + li) * KVH + g] / R->agg.n_prompts;
                double x = share * total;
                k[g] = (int)floor(x);
                rem[g] = x - k[g];
                given += k[g];
            }
            while (given < total) { /* largest remainder, ties lower head */
                int best = 0;
                for (int g = 1; g < KVH; g++)
                    if (rem[g] > rem[best]) best = g;
                k[best]++;
                rem[best] = -1;
                given++;
            }
            for (int g = 0; g < KVH; g++) k[g] += w;
            b.sets[bi].layers[li] = (kv_budget_layer){.layer = t->layers[li], .layer_budget = lb, .n_kv = KVH, .kv_budgets = k};
        }
    }
    rc = kv_budgets_write(R->out.f[OUT_BUDGETS_JSON].fp, &b, err);
done:
    free(b.sets);
    free(layers);
    free(kb);
    free(rem);
    return rc;
}

/* ---------------------------------------------------------------- main */

static void print_summary(kv_run *R, FILE *fp, const double *kept_total, int nids) {
    const kv_trace *t = R->t;
    const kv_analyze_opts *o = R->o;
    const kv_agg *a = &R->agg;
    int H = t->n_heads, KVH = t->n_kv_heads, ntask = H + KVH;
    fprintf(fp, "kvanalyze: %s: model %s, %d traced layers, %d heads, %d KV heads, %d prompt%s\n", o->trace_path,
            t->model, t->L, H, KVH, nids, nids == 1 ? "" : "s");
    int from_maps = a->n_rows_all - a->n_rows_accum;
    fprintf(fp, "FastGen rows: all rows of %d prompt%s from full maps, all rows of %d from the local-window sums "
                "(r_l %g), the last window rows only of %d\n",
            from_maps, from_maps == 1 ? "" : "s", a->n_rows_accum, o->fg.r_local, a->n_rows_window);
    fprintf(fp, "\nFastGen policies of KV heads (%s over prompts)\n", o->aggregate_min ? "min" : "mean");
    fprintf(fp, "%-9s %8s %8s %10s %8s %6s %8s\n", "T", "special", "+punct", "+frequent", "+local", "full",
            "kv_kept");
    for (int k = 0; k < o->n_thresholds; k++) {
        int n[KV_N_RUNGS] = {0};
        for (int li = 0; li < t->L; li++)
            for (int g = 0; g < KVH; g++) {
                double rec[KV_N_RUNGS];
                for (int c = 0; c < KV_N_RUNGS; c++) {
                    size_t ix = ((size_t)li * ntask + H + g) * KV_N_RUNGS + c;
                    rec[c] = o->aggregate_min ? a->rec_min[ix] : a->rec_sum[ix] / a->n_prompts;
                }
                rec[KV_RUNG_FULL] = 1;
                n[kv_fastgen_choose(rec, o->thresholds[k])]++;
            }
        fprintf(fp, "%-9.4g %8d %8d %10d %8d %6d %8.4f\n", o->thresholds[k], n[0], n[1], n[2], n[3], n[4],
                kept_total[k]);
    }
    fprintf(fp, "\nAda-KV eviction loss (scorer %s, %s, means over prompts and layers)\n",
            kv_scorer_names[o->ada.scorer], o->pyramid ? "pyramid" : "flat");
    fprintf(fp, "%-7s %12s %12s %12s %12s %10s %10s\n", "budget", "uni_l1", "ada_l1", "uni_bound", "ada_bound",
            "uni_kept", "ada_kept");
    for (int bi = 0; bi < o->n_budgets; bi++) {
        double c0 = a->cnt[0][bi] ? a->cnt[0][bi] : 1, c1 = a->cnt[1][bi] ? a->cnt[1][bi] : 1;
        fprintf(fp, "%-7d %12.6g %12.6g %12.6g %12.6g %10.6f %10.6f\n", o->budgets[bi], a->l1[0][bi] / c0,
                a->l1[1][bi] / c1, a->bound[0][bi] / c0, a->bound[1][bi] / c1, a->kept[0][bi] / c0,
                a->kept[1][bi] / c1);
    }
}

/* Bytes the per-layer buffers take for the largest selected prompt: the
 * window rows, colsum, values, wo, scores and masks, and the loss context
 * (evaluation rows and their products); with full maps, one batch of stored
 * chunks of a KV group (at most their uncompressed size) and each thread's
 * decoded row block of the group (kv_prompt_scan_attn). The aggregates over layers
 * and prompts are small. */
static double analyze_bytes(const kv_trace *t, const kv_prompt *p) {
    double H = t->n_heads, KVH = t->n_kv_heads, hd = t->head_dim, D = t->hidden_size;
    double N = p->n_tokens, Wp = p->window_rows, G = H / KVH;
    double per_layer = 4 * (2 * H * Wp * N + H * N + KVH * N * hd + D * H * hd + H * Wp * D) +
                       KVH * N * (8 + 4 + 4 + 4 + 1) + 16.0 * N; /* scores, orders, key norms, keep */
    double maps = 0;
    if (p->has_attn) {
        double rows = p->attn_fast ? p->attn_chunk_rows : 64, elem = p->attn_fast ? p->attn_elem : 4;
        maps = kv_prompt_scan_batch_chunks(p, (int)G) * G * rows * N * elem +
               omp_get_max_threads() * (G * rows * N * 4 + rows * N * elem);
    }
    return per_layer + maps;
}

int kv_analyze(const kv_analyze_opts *o, FILE *summary, kv_error *err) {
    kv_trace *t = kv_trace_open(o->trace_path, err);
    if (!t) return -1;
    int rc = -1;
    kv_run R;
    memset(&R, 0, sizeof R);
    R.o = o;
    R.t = t;
    char **ids = o->prompts ? o->prompts : t->prompt_ids;
    int nids = o->prompts ? o->n_prompts : t->n_prompts;
    int w = o->ada.obs_window, Q = o->ada.future_q;
    double *kept_total = calloc((size_t)o->n_thresholds + 1, sizeof *kept_total);

    /* validate every selected prompt before any output is created */
    for (int i = 0; i < nids; i++) {
        if (kv_trace_find_prompt(t, ids[i]) < 0) {
            kv_fail(err, "%s: no prompt with id '%s'", o->trace_path, ids[i]);
            goto done;
        }
        kv_prompt *p = kv_prompt_open(t, ids[i], err);
        if (!p) goto done;
        rows_source src;
        int bad = rows_source_of(t, p, o, &src, err); /* what FastGen can answer without maps */
        if (!bad && !p->has_values)
            bad = kv_fail(err, "%s: /prompts/%s: missing dataset 'values'", o->trace_path, p->id);
        else if (!bad && o->ada.scorer == KV_SCORER_KNORM && !p->has_key_norm)
            bad = kv_fail(err, "%s: /prompts/%s: --scorer knorm needs dataset 'key_norm', which kvtrace writes since "
                               "2026-12-07: re-trace", o->trace_path, p->id);
        else if (!bad && p->window_rows < w + Q) {
            if (Q)
                bad = kv_fail(err, "%s: /prompts/%s: --eval future:%d with --obs-window %d needs %d window rows, the trace has %d",
                              o->trace_path, p->id, Q, w, w + Q, p->window_rows);
            else
                bad = kv_fail(err, "%s: /prompts/%s: --obs-window %d needs %d window rows, the trace has %d",
                              o->trace_path, p->id, w, w, p->window_rows);
        }
        if (!bad) {
            double need = analyze_bytes(t, p);
            double avail = o->max_memory > 0 ? o->max_memory : kv_mem_available();
            if (avail > 0 && need > avail) {
                char a[32], b[32];
                kv_format_bytes(need, a, sizeof a);
                kv_format_bytes(avail, b, sizeof b);
                bad = kv_fail(err, "%s: prompt '%s' (%d tokens) needs about %s of memory but %s %s; use "
                                   "--max-memory to override",
                              o->trace_path, p->id, p->n_tokens, a, b,
                              o->max_memory > 0 ? "is allowed by --max-memory" : "is available");
            }
        }
        kv_prompt_close(p);
        if (bad) goto done;
    }

    kv_agg *a = &R.agg;
    a->L = t->L, a->H = t->n_heads, a->KVH = t->n_kv_heads, a->nT = o->n_thresholds, a->nB = o->n_budgets;
    a->n_prompts = nids;
    size_t nrec = (size_t)t->L * (t->n_heads + t->n_kv_heads) * KV_N_RUNGS;
    a->rec_sum = kv_calloc(nrec, sizeof(double), err);
    a->rec_min = kv_calloc(nrec, sizeof(double), err);
    a->kept_sum = kv_calloc(nrec, sizeof(double), err);
    a->share = kv_calloc((size_t)o->n_budgets * t->L * t->n_kv_heads, sizeof(double), err);
    if (!a->rec_sum || !a->rec_min || !a->kept_sum || !a->share || !kept_total) goto done;
    for (size_t k = 0; k < nrec; k++) a->rec_min[k] = INFINITY;

    if (kv_outset_begin(&R.out, o->outdir, out_names, o->kept ? OUT_N : OUT_KEPT, o->force, err)) goto done;
    fprintf(R.out.f[OUT_FASTGEN].fp,
            "prompt,layer,head,head_kind,rows,threshold,policy,kept_fraction,rec_special,rec_punct,rec_frequent,rec_local,rec_full\n");
    fprintf(R.out.f[OUT_LOSS].fp,
            "prompt,layer,scorer,allocation,pyramid,budget,eval,bound,bound_per_head,actual_l1,relative_l1,kept_mass,"
            "conventions\n");
    fprintf(R.out.f[OUT_BUDGETS_CSV].fp, "prompt,layer,scorer,pyramid,budget,layer_budget,kv_head,kv_budget,conventions\n");
    const kv_adakv_params *ap = &o->ada;
    kv_adakv_conventions(ap, o->pyramid, R.conventions, sizeof R.conventions);
    fprintf(R.out.f[OUT_CONC].fp, "prompt,layer,head,percent,positions,mass\n");
    R.n_prompts = nids;
    R.t_start = omp_get_wtime();
    for (int i = 0; i < nids; i++, R.prompts_done++)
        if (run_prompt(&R, ids[i], err)) {
            kv_outset_abort(&R.out);
            goto done;
        }
    if (R.progress_shown) fputc('\n', stderr);
    R.progress_shown = 0;
    if (write_policies(&R, ids, nids, err, kept_total) || write_budgets_json(&R, ids, nids, err)) {
        kv_outset_abort(&R.out);
        goto done;
    }
    if (kv_outset_commit(&R.out, err)) goto done;
    print_summary(&R, summary, kept_total, nids);
    if (o->timings)
        fprintf(stderr, "kvanalyze: timings: read %.2f s, fastgen %.2f s, adakv %.2f s, concentration %.2f s\n",
                R.t_read, R.t_fastgen, R.t_adakv, R.t_conc);
    rc = 0;
done:
    if (R.progress_shown) fputc('\n', stderr); /* the progress line ends before any message */
    free(kept_total);
    agg_free(&R.agg);
    kv_trace_close(t);
    return rc;
}
