/* `kvtrace fidelity`: the command line around fidelity/fidelity.c
 * (docs/fidelity.md). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cli.h"
#include "common/fileio.h"
#include "fidelity/fidelity.h"
#include "model/forward.h"
#include "tokenizer/prompts.h"
#include "tokenizer/tokenizer.h"

#define MAX_SPECS 256
#define MAX_SPECIAL_TEXTS 64

typedef struct {
    const char *model_dir, *prompts_path, *out_path, *device;
    const char *per_token_path; /* --per-token FILE, or NULL */
    const char *spec_texts[MAX_SPECS];
    int n_specs;
    kv_fidelity_params p;
    int threads, force, timings;
    kv_rope_precision rope_precision;
    const char *special_texts[MAX_SPECIAL_TEXTS];
    int n_special_texts;
} fid_options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvtrace fidelity --model DIR --prompts FILE --spec SPEC [--spec SPEC ...] -o fidelity.csv\n"
            "                        [--continuation Q] [--layer L] [--obs-window W] [--preset kvpress|adakv]\n"
            "                        [--pool P] [--kernel K] [--gqa-order O] [--safeguard S] [--per-token FILE]\n"
            "                        [--device auto|cpu|cuda] [--threads N] [--special-text STR]...\n"
            "                        [--rope-precision f32|f64] [--timings] [--force]\n"
            "\n"
            "How far a KV-cache compression setting moves the model's own next-token predictions: each prompt's\n"
            "last Q tokens are predicted once with the full cache and once with every KV head keeping only its\n"
            "chosen context positions (docs/fidelity.md). One CSV row per prompt and spec.\n"
            "\n"
            "  SPEC                full | streaming:B | adakv:uniform:B | adakv:adaptive:B[:alpha]\n"
            "                      | fastgen:policies.json:T  (B entries per KV head; alpha default 0.2;\n"
            "                      policies.json from kvanalyze on the same model, T one of its thresholds)\n"
            "  --continuation Q    tokens at the end of each prompt that are predicted (default 64, >= 2)\n"
            "  --layer L           compress layer L only (default: every layer)\n"
            "  --obs-window W      Ada-KV's observation window, always kept, inside B (default 32)\n"
            "  --preset kvpress|adakv, --pool max|avg|avg-padded|none, --kernel K, --gqa-order\n"
            "  combine-pool|pool-combine, --safeguard protect|kvpress|blend\n"
            "                      the adakv specs' conventions, as for kvanalyze (docs/analyzer.md,\n"
            "                      Conventions; default max pooling 7, combine-pool, protect); a preset\n"
            "                      first, the options given with it override it\n"
            "  --per-token FILE    also write every continuation position's log-probabilities, KL and\n"
            "                      argmax, per prompt and spec (CSV)\n"
            "  --special-text STR  flag STR in the token stream as special for FastGen (repeatable)\n"
            "  --rope-precision P  f32 (default: RoPE rounded as transformers rounds it) or f64 (kvtrace --help)\n"
            "  --timings           also time a plain forward pass before each compressed one; times to stderr\n"
            "  --force             overwrite an existing output file\n");
}

static int parse_options(int argc, char **argv, fid_options *o) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},        {"prompts", required_argument, 0, 'p'},
        {"output", required_argument, 0, 'o'},       {"spec", required_argument, 0, 's'},
        {"continuation", required_argument, 0, 'q'}, {"layer", required_argument, 0, 'l'},
        {"obs-window", required_argument, 0, 'w'},   {"device", required_argument, 0, 'D'},
        {"threads", required_argument, 0, 't'},      {"special-text", required_argument, 0, 'S'},
        {"timings", no_argument, 0, 'T'},            {"force", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},               {"rope-precision", required_argument, 0, 'r'},
        {"preset", required_argument, 0, 'P'},       {"pool", required_argument, 0, 'L'},
        {"kernel", required_argument, 0, 'K'},       {"gqa-order", required_argument, 0, 'G'},
        {"safeguard", required_argument, 0, 'A'},    {"per-token", required_argument, 0, 'O'},
        {0, 0, 0, 0},
    };
    *o = (fid_options){.out_path = "fidelity.csv", .device = "auto",
                       .p = {.continuation = 64, .layer = -1,
                             .ada = {.scorer = KV_SCORER_SNAPKV, .pool = KV_POOL_MAX, .kernel = 7, .obs_window = 32,
                                     .alpha = 0.2, .safeguard = KV_SAFEGUARD_PROTECT,
                                     .gqa_order = KV_GQA_COMBINE_POOL}}};
    long v;
    int c, k;
    /* a preset first, wherever it is given: the options given with it override it */
    const char *preset = kv_option_value(argc, argv, "--preset");
    if (preset && kv_adakv_preset(preset, &o->p.ada)) {
        fprintf(stderr, "kvtrace fidelity: --preset '%s': expected kvpress or adakv\n", preset);
        return 2;
    }
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_dir = optarg; break;
        case 'p': o->prompts_path = optarg; break;
        case 'o': o->out_path = optarg; break;
        case 'f': o->force = 1; break;
        case 'T': o->timings = 1; break;
        case 's':
            if (o->n_specs == MAX_SPECS) {
                fprintf(stderr, "kvtrace fidelity: more than %d --spec options\n", MAX_SPECS);
                return 2;
            }
            o->spec_texts[o->n_specs++] = optarg;
            break;
        case 'q':
            if (kv_parse_long(optarg, 2, 1 << 24, &v)) {
                fprintf(stderr, "kvtrace fidelity: --continuation '%s': expected an integer >= 2\n", optarg);
                return 2;
            }
            o->p.continuation = (int)v;
            break;
        case 'l':
            if (kv_parse_long(optarg, 0, INT_MAX, &v)) {
                fprintf(stderr, "kvtrace fidelity: --layer '%s': expected a layer index\n", optarg);
                return 2;
            }
            o->p.layer = (int)v;
            break;
        case 'w':
            if (kv_parse_long(optarg, 1, 1 << 24, &v)) {
                fprintf(stderr, "kvtrace fidelity: --obs-window '%s': expected a positive integer\n", optarg);
                return 2;
            }
            o->p.ada.obs_window = (int)v;
            break;
        case 'P': break; /* applied before the loop */
        case 'O': o->per_token_path = optarg; break;
        case 'L':
            if ((k = kv_name_index(kv_pool_names, KV_N_POOLS, optarg)) < 0) {
                fprintf(stderr, "kvtrace fidelity: --pool '%s': expected max, avg, avg-padded or none\n", optarg);
                return 2;
            }
            o->p.ada.pool = (kv_pool)k;
            break;
        case 'K':
            if (kv_parse_long(optarg, 1, 1 << 20, &v) || v % 2 == 0) {
                fprintf(stderr, "kvtrace fidelity: --kernel '%s': expected a positive odd integer\n", optarg);
                return 2;
            }
            o->p.ada.kernel = (int)v;
            break;
        case 'G':
            if ((k = kv_name_index(kv_gqa_order_names, KV_N_GQA_ORDERS, optarg)) < 0) {
                fprintf(stderr, "kvtrace fidelity: --gqa-order '%s': expected combine-pool or pool-combine\n", optarg);
                return 2;
            }
            o->p.ada.gqa_order = (kv_gqa_order)k;
            break;
        case 'A':
            if ((k = kv_name_index(kv_safeguard_names, KV_N_SAFEGUARDS, optarg)) < 0) {
                fprintf(stderr, "kvtrace fidelity: --safeguard '%s': expected protect, kvpress or blend\n", optarg);
                return 2;
            }
            o->p.ada.safeguard = (kv_safeguard)k;
            break;
        case 'D':
            if (strcmp(optarg, "auto") && strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
                fprintf(stderr, "kvtrace fidelity: --device '%s': expected auto, cpu or cuda\n", optarg);
                return 2;
            }
            o->device = optarg;
            break;
        case 't':
            if (kv_parse_long(optarg, 1, 1024, &v)) {
                fprintf(stderr, "kvtrace fidelity: --threads '%s': expected an integer from 1 to 1024\n", optarg);
                return 2;
            }
            o->threads = (int)v;
            break;
        case 'r':
            if (kv_rope_precision_parse(optarg, &o->rope_precision)) {
                fprintf(stderr, "kvtrace fidelity: --rope-precision '%s': expected f32 or f64\n", optarg);
                return 2;
            }
            break;
        case 'S':
            if (o->n_special_texts == MAX_SPECIAL_TEXTS || !optarg[0]) {
                fprintf(stderr, "kvtrace fidelity: --special-text: empty, or more than %d given\n", MAX_SPECIAL_TEXTS);
                return 2;
            }
            o->special_texts[o->n_special_texts++] = optarg;
            break;
        case 'h': usage(stdout); return -1;
        case ':':
            fprintf(stderr, "kvtrace fidelity: option %s needs a value (see --help)\n", argv[optind - 1]);
            return 2;
        default: fprintf(stderr, "kvtrace fidelity: unknown option '%s' (see --help)\n", argv[optind - 1]); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvtrace fidelity: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (!o->model_dir) {
        fprintf(stderr, "kvtrace fidelity: --model DIR is required (see --help)\n");
        return 2;
    }
    if (!o->n_specs) {
        fprintf(stderr, "kvtrace fidelity: at least one --spec is required (see --help)\n");
        return 2;
    }
    return 0;
}

/* Tokenizes text prompts and checks every prompt against the model and the specs. */
static int token_flags(const kv_tokenizer *tok, const kv_config *c, const kv_prompt *q, const fid_options *o,
                       uint8_t *flags, kv_error *err) {
    memset(flags, 0, q->n_ids);
    if (!tok) return 0;
    return kv_tokenizer_token_info(tok, q->ids, q->n_ids, c->special_ids, (size_t)c->n_special_ids, o->special_texts, o->n_special_texts, NULL,
                                   flags, err);
}

static void write_row(FILE *f, const char *prompt, const kv_spec *s, const fid_options *o, int n,
                      const kv_fidelity_row *r) {
    fprintf(f, "%s,%s,%s,%s,", prompt, s->text, kv_spec_kind_name(s->kind),
            s->kind == KV_SPEC_ADAKV ? (s->adaptive ? "adaptive" : "uniform") : "");
    if (s->kind == KV_SPEC_STREAMING || s->kind == KV_SPEC_ADAKV) fprintf(f, "%d", s->budget);
    fputc(',', f);
    if (s->kind == KV_SPEC_ADAKV) fprintf(f, "%.9g", s->alpha);
    fputc(',', f);
    if (s->kind == KV_SPEC_FASTGEN) fprintf(f, "%.9g", s->threshold);
    fputc(',', f);
    if (o->p.layer < 0) fprintf(f, "all");
    else fprintf(f, "%d", o->p.layer);
    char conventions[128] = "";
    if (s->kind == KV_SPEC_ADAKV) {
        kv_adakv_params ap = o->p.ada;
        ap.alpha = s->adaptive ? s->alpha : ap.alpha;
        kv_adakv_conventions(&ap, 0, conventions, sizeof conventions);
    }
    fprintf(f, ",%d,%d,%d,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%s\n", n, n - o->p.continuation,
            o->p.continuation, r->memory_kept, r->mean_kl, r->max_kl, r->top1, r->nll_ref, r->nll_comp,
            r->nll_comp - r->nll_ref, r->l1, r->relative_l1, conventions);
}

/* --per-token: one line per continuation position */
static void write_tokens(FILE *f, const char *prompt, const kv_spec *s, const int32_t *ids, int n, int Q,
                         const kv_fidelity_token *t) {
    for (int r = 0; r < Q; r++) {
        int i = n - Q + r;
        fprintf(f, "%s,%s,%d,", prompt, s->text, i);
        if (i + 1 < n) fprintf(f, "%d,%.9g,%.9g", ids[i + 1], t[r].logp_ref, t[r].logp_comp);
        else fprintf(f, ",,");
        fprintf(f, ",%.9g,%d,%d\n", t[r].kl, t[r].top_ref, t[r].top_comp);
    }
}

static int run(const fid_options *o) {
    kv_error err = {{0}};
    int rc = 1, n_specs = 0;
    kv_kernels *k = NULL;
    kv_model m = {0};
    kv_prompt_set ps = {0};
    kv_tokenizer *tok = NULL;
    kv_config cfg = {0};
    kv_spec *specs = NULL;
    kv_fidelity_row *sum = NULL;
    char *tok_path = NULL, *cfg_path = NULL, tmp[4096] = "", tok_tmp[4096] = "";
    FILE *out = NULL, *tok_out = NULL;
    kv_fidelity_token *tokens = NULL;
    float *comp = NULL, *plain = NULL;
    uint8_t *flags = NULL;

    const char *outputs[] = {o->out_path, o->per_token_path};
    for (int i = 0; i < 2; i++)
        if (outputs[i] && kv_path_exists(outputs[i]) && !o->force) {
            fprintf(stderr, "kvtrace fidelity: %s: already exists (use --force to overwrite)\n", outputs[i]);
            return 1;
        }
    if (o->per_token_path && !strcmp(o->per_token_path, o->out_path)) {
        fprintf(stderr, "kvtrace fidelity: --per-token %s: the same file as -o\n", o->per_token_path);
        return 2;
    }
    /* everything that can be checked without the weights comes first */
    if (!(cfg_path = kv_path_join(o->model_dir, "config.json", &err)) || kv_config_load(&cfg, cfg_path, &err))
        goto fail;
    if (o->p.layer >= cfg.n_layers) {
        kv_fail(&err, "--layer %d: the model has %d layers (0-%d)", o->p.layer, cfg.n_layers, cfg.n_layers - 1);
        goto fail;
    }
    if (!(specs = kv_calloc(o->n_specs, sizeof *specs, &err)) || !(sum = kv_calloc(o->n_specs, sizeof *sum, &err)))
        goto fail;
    for (; n_specs < o->n_specs; n_specs++)
        if (kv_spec_parse(&specs[n_specs], o->spec_texts[n_specs], &cfg, o->p.ada.obs_window, &err)) goto fail;
    if (!(tok_path = kv_path_join(o->model_dir, "tokenizer.json", &err))) goto fail;
    if (kv_path_exists(tok_path) && !(tok = kv_tokenizer_load(tok_path, &err))) goto fail;
    if (o->prompts_path ? kv_prompts_load(&ps, o->prompts_path, &err) : kv_prompts_builtin(&ps, &err)) goto fail;
    int min_tokens = kv_fidelity_min_tokens(specs, n_specs, &o->p);
    char max_what[80];
    snprintf(max_what, sizeof max_what, "the model's max_position_embeddings %d", cfg.max_position_embeddings);
    if (kv_prompts_prepare(&ps, tok, tok_path, cfg.vocab_size, cfg.max_position_embeddings, max_what, &err)) goto fail;
    for (int i = 0; i < ps.n; i++)
        if (ps.items[i].n_ids < min_tokens) {
            kv_fail(&err, "%s: prompt '%s' has %d tokens; --continuation %d%s needs at least %d", ps.source,
                    ps.items[i].id, ps.items[i].n_ids, o->p.continuation,
                    min_tokens > o->p.continuation + 1 ? " and Ada-KV's observation window" : "", min_tokens);
            goto fail;
        }
    if (!(k = kv_kernels_open(o->device, o->threads, &err)) || kv_model_build(&m, o->model_dir, k, &err)) goto fail;
    m.rope_precision = o->rope_precision;
    const kv_config *c = &m.cfg;
    int longest = 0;
    for (int i = 0; i < ps.n; i++) longest = ps.items[i].n_ids > longest ? ps.items[i].n_ids : longest;
    comp = kv_malloc((size_t)o->p.continuation * c->vocab_size * sizeof(float), &err);
    plain = kv_malloc((size_t)o->p.continuation * c->vocab_size * sizeof(float), &err);
    flags = kv_malloc(longest, &err);
    tokens = kv_malloc((size_t)o->p.continuation * sizeof *tokens, &err);
    if (!comp || !plain || !flags || !tokens) goto fail;

    snprintf(tmp, sizeof tmp, "%s.tmp", o->out_path);
    if (!(out = fopen(tmp, "w"))) {
        kv_fail(&err, "%s: cannot create: %s", tmp, strerror(errno));
        tmp[0] = 0;
        goto fail;
    }
    fprintf(out, "prompt,spec,kind,allocation,budget,alpha,threshold,layers,n_tokens,context,continuation,"
                 "memory_kept,mean_kl,max_kl,top1_agreement,nll_ref,nll_compressed,nll_change,l1,relative_l1,"
                 "conventions\n");
    if (o->per_token_path) {
        snprintf(tok_tmp, sizeof tok_tmp, "%s.tmp", o->per_token_path);
        if (!(tok_out = fopen(tok_tmp, "w"))) {
            kv_fail(&err, "%s: cannot create: %s", tok_tmp, strerror(errno));
            tok_tmp[0] = 0;
            goto fail;
        }
        fprintf(tok_out, "prompt,spec,position,next_token,logp_ref,logp_compressed,kl,top1_ref,top1_compressed\n");
    }
    int progress = isatty(2);
    double t_plain = 0, t_ref = 0, t_comp = 0, t_sel = 0;
    for (int i = 0; i < ps.n; i++) {
        const kv_prompt *q = &ps.items[i];
        kv_fidelity_state st;
        if (token_flags(tok, c, q, o, flags, &err) ||
            kv_fidelity_reference(&m, q->ids, q->n_ids, flags, specs, n_specs, &o->p, &st, &err)) {
            kv_wrap(&err, "%s: prompt '%s'", ps.source, q->id);
            goto fail;
        }
        t_ref += st.t_reference;
        t_sel += st.t_select;
        for (int s = 0; s < n_specs; s++) {
            if (progress)
                fprintf(stderr, "\rkvtrace fidelity: prompt %d/%d (%s), spec %d/%d   ", i + 1, ps.n, q->id, s + 1,
                        n_specs);
            double t0 = kv_now_s();
            if (o->timings) { /* a plain pass right before each compressed one: paired timings */
                if (kv_forward_ex(&m, q->ids, q->n_ids, NULL, NULL, o->p.continuation, plain, &err)) {
                    kv_fidelity_state_free(&st);
                    goto fail;
                }
                t_plain += kv_now_s() - t0;
                t0 = kv_now_s();
            }
            if (kv_fidelity_compressed(&m, q->ids, &st, s, comp, &err)) {
                kv_wrap(&err, "%s: prompt '%s', spec '%s'", ps.source, q->id, specs[s].text);
                kv_fidelity_state_free(&st);
                goto fail;
            }
            t_comp += kv_now_s() - t0;
            kv_fidelity_row r;
            if (kv_fidelity_metrics(&st, s, q->ids, comp, &r, tokens, &err)) {
                kv_fidelity_state_free(&st);
                goto fail;
            }
            write_row(out, q->id, &specs[s], o, q->n_ids, &r);
            if (tok_out) write_tokens(tok_out, q->id, &specs[s], q->ids, q->n_ids, o->p.continuation, tokens);
            sum[s].memory_kept += r.memory_kept / ps.n;
            sum[s].mean_kl += r.mean_kl / ps.n;
            sum[s].max_kl = r.max_kl > sum[s].max_kl ? r.max_kl : sum[s].max_kl;
            sum[s].top1 += r.top1 / ps.n;
            sum[s].nll_ref += r.nll_ref / ps.n;
            sum[s].nll_comp += r.nll_comp / ps.n;
            sum[s].l1 += r.l1 / ps.n;
        }
        kv_fidelity_state_free(&st);
    }
    if (progress) fprintf(stderr, "\n");
    if (ferror(out) | fclose(out)) {
        out = NULL;
        kv_fail(&err, "%s: write error", tmp);
        goto fail;
    }
    out = NULL;
    if (tok_out) {
        int bad = ferror(tok_out) | fclose(tok_out);
        tok_out = NULL;
        if (bad) {
            kv_fail(&err, "%s: write error", tok_tmp);
            goto fail;
        }
        if (rename(tok_tmp, o->per_token_path)) {
            kv_fail(&err, "%s: cannot rename to %s: %s", tok_tmp, o->per_token_path, strerror(errno));
            goto fail;
        }
        tok_tmp[0] = 0;
    }
    if (rename(tmp, o->out_path)) {
        kv_fail(&err, "%s: cannot rename to %s: %s", tmp, o->out_path, strerror(errno));
        goto fail;
    }
    tmp[0] = 0;
    printf("%-40s %8s %10s %10s %7s %10s %10s\n", "spec", "memory", "mean KL", "max KL", "top-1", "dNLL", "L1");
    for (int s = 0; s < n_specs; s++)
        printf("%-40s %8.3f %10.3g %10.3g %7.3f %10.3g %10.3g\n", specs[s].text, sum[s].memory_kept, sum[s].mean_kl,
               sum[s].max_kl, sum[s].top1, sum[s].nll_comp - sum[s].nll_ref, sum[s].l1);
    if (o->timings)
        fprintf(stderr,
                "kvtrace fidelity: %d prompts x %d specs: plain pass %.3f s, compressed pass %.3f s (%.2fx the plain "
                "pass), reference pass with captures %.3f s (once per prompt; %.3f s of it choosing kept sets and "
                "computing L1 losses)\n",
                ps.n, n_specs, t_plain / ps.n / n_specs, t_comp / ps.n / n_specs, t_plain > 0 ? t_comp / t_plain : 0.0,
                t_ref / ps.n, t_sel / ps.n);
    rc = 0;
    goto done;
fail:
    if (isatty(2)) fprintf(stderr, "\n");
    fprintf(stderr, "kvtrace fidelity: %s\n", err.msg);
done:
    if (out) fclose(out);
    if (tok_out) fclose(tok_out);
    if (tmp[0]) unlink(tmp);
    if (tok_tmp[0]) unlink(tok_tmp);
    free(tokens);
    for (int s = 0; specs && s < o->n_specs; s++) kv_spec_free(&specs[s]);
    free(specs);
    free(sum);
    free(comp);
    free(plain);
    free(flags);
    free(tok_path);
    free(cfg_path);
    kv_config_free(&cfg);
    kv_prompts_free(&ps);
    if (tok) kv_tokenizer_free(tok);
    kv_model_free(&m);
    if (k) k->destroy(k);
    return rc;
}

int kv_fidelity_main(int argc, char **argv) {
    fid_options o;
    int r = parse_options(argc, argv, &o);
    if (r) return r < 0 ? 0 : r;
    return run(&o);
}
