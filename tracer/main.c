/* kvtrace: run a Hugging Face checkpoint's forward pass and write what every
 * attention head attends to into an HDF5 trace (docs/trace-format.md). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cli.h"
#include "common/fileio.h"
#include "format/trace_write.h"
#include "fidelity/fidelity.h"
#include "model/forward.h"
#include "tokenizer/prompts.h"
#include "policy/fastgen.h"
#include "tokenizer/tokenizer.h"

#define KVTRACE_VERSION "0.1.0"
#define MAX_SPECIAL_TEXTS 64

typedef struct {
    const char *model_dir;
    const char *prompts_path;
    const char *out_path;
    int full_maps;
    int window;
    int maps_f16;
    int maps_deflate;
    kv_rope_precision rope_precision;
    const char *layers_spec;
    const char *device;       /* auto, cpu, cuda */
    int threads;
    long max_tokens;          /* 0: the config's max_position_embeddings */
    double max_memory;        /* bytes; 0: MemAvailable */
    int force;
    int resume;
    int timing;               /* --timing: where the time went, one line at the end */
    const char *special_texts[MAX_SPECIAL_TEXTS];
    int n_special_texts;
    double local_ratios[KV_MAX_NEAR]; /* FastGen r_l values whose local-window mass is accumulated */
    int n_local_ratios;
} options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvtrace [--model DIR] [--prompts FILE] [-o trace.h5] [--full-maps] [--window W]\n"
            "               [--maps-dtype f32|f16] [--maps-compression deflate|none] [--layers LIST] [--threads N]\n"
            "               [--rope-precision f32|f64] [--local-ratio R[,R...]|none]\n"
            "               [--max-tokens N] [--max-memory SIZE]"
            " [--special-text STR]... [--device auto|cpu|cuda] [--resume] [--force] [--timing]\n"
            "       kvtrace tokenize (--model DIR | --tokenizer FILE) (--text STR | --file F) [--pieces] [--no-special]\n"
            "                        [--special-text STR]...\n"
            "       kvtrace devices     (which backends this build has and the GPUs they find)\n"
            "       kvtrace fidelity --model DIR --prompts FILE --spec SPEC... -o fidelity.csv  (docs/fidelity.md)\n"
            "\n"
            "Runs the model's forward pass (CPU or NVIDIA GPU) and writes every head's attention into an HDF5\n"
            "trace (format: docs/trace-format.md).\n"
            "\n"
            "  --model DIR         Hugging Face checkpoint (default: the bundled models/brown-llama):\n"
            "                      config.json, model.safetensors or a sharded set with\n"
            "                      model.safetensors.index.json, tokenizer.json for text prompts\n"
            "  --prompts FILE      JSONL, one {\"id\": ..., \"text\": ...} or {\"id\": ..., \"input_ids\": [...]}\n"
            "                      per line; default: a small built-in English prompt set\n"
            "  -o, --output FILE   trace to write (default trace.h5); never overwritten without --force\n"
            "  --full-maps         also store every full N x N attention map (dataset attn)\n"
            "  --window W          attention rows kept from the end of each prompt (default 64)\n"
            "  --maps-dtype T      f32 (default) or f16 for the full maps\n"
            "  --maps-compression C  deflate (default: shuffle + deflate, about half the size) or none\n"
            "                      (twice the size; h5py reads it about 2x faster, kvanalyze 1.6x)\n"
            "  --layers LIST       layers to trace, e.g. 0,3,8-11 (default: all)\n"
            "  --local-ratio R,..  FastGen's r_l values (default 0.3, at most 8): for each, every head's\n"
            "                      attention mass inside the local window is accumulated (dataset nearsum),\n"
            "                      so that kvanalyze profiles FastGen over all rows without --full-maps;\n"
            "                      none: accumulate nothing\n"
            "  --rope-precision P  f32 (default: RoPE angles rounded as transformers rounds them) or f64\n"
            "                      (angles in double; differs from transformers by ~1e-3 at 32k positions)\n"
            "  --device D          auto (default; the CPU until the CUDA backend is validated on a GPU), cpu\n"
            "                      or cuda\n"
            "  --threads N         CPU threads (default: all cores)\n"
            "  --max-memory SIZE   memory the run may use, e.g. 8G or 512M (default: what the system has\n"
            "                      available); a run that needs more is refused before it starts\n"
            "  --max-tokens N      longest prompt accepted (default: max_position_embeddings); longer\n"
            "                      prompts are an error, never truncated\n"
            "  --special-text STR  flag every occurrence of STR in the token stream as special (repeatable;\n"
            "                      for multi-token markers such as [INST])\n"
            "  --resume            continue an interrupted run: the prompts completed in OUTPUT.parts are kept\n"
            "                      and the others traced (same model, prompts and settings)\n"
            "  --force             overwrite an existing output file (and an interrupted run's parts)\n"
            "  --timing            print where the time went: loading, the forward pass, writing the trace\n"
            "                      (during the pass and after each prompt) and finishing it (merging the\n"
            "                      parts of a run of several prompts into OUTPUT)\n"
            "  -h, --help          this help\n"
            "  --version           print the version\n");
}

/* "0,3,8-11" -> mask[n_layers]; -1 with err on a bad list. */
static int parse_layers(const char *spec, int n_layers, unsigned char *mask, kv_error *err) {
    memset(mask, 0, n_layers);
    char *copy = strdup(spec), *save = NULL;
    int rc = 0, any = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long a, b;
        char *dash = strchr(tok, '-');
        if (dash) {
            *dash = 0;
            if (kv_parse_long(tok, 0, INT_MAX, &a) || kv_parse_long(dash + 1, 0, INT_MAX, &b) || b < a) rc = -1;
        } else if (kv_parse_long(tok, 0, INT_MAX, &a)) {
            rc = -1;
        } else {
            b = a;
        }
        if (rc) {
            kv_fail(err, "--layers '%s': expected a list such as 0,3,8-11", spec);
            break;
        }
        if (b >= n_layers) {
            rc = kv_fail(err, "--layers '%s': layer %ld does not exist (the model has %d layers, 0-%d)", spec, b,
                         n_layers, n_layers - 1);
            break;
        }
        for (long l = a; l <= b; l++) mask[l] = 1;
        any = 1;
    }
    if (!rc && !any) rc = kv_fail(err, "--layers '%s': no layers given", spec);
    free(copy);
    return rc;
}

/* The default model: models/brown-llama next to the program (bin/../models),
 * else relative to the working directory. NULL when neither exists. */
#define BUNDLED_MODEL "models/brown-llama"
static const char *bundled_model(void) {
    static char path[4096];
    char exe[4000];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(path, sizeof path, "%s/../%s/config.json", exe, BUNDLED_MODEL);
        if (kv_path_exists(path)) {
            path[strlen(path) - strlen("/config.json")] = 0;
            return path;
        }
    }
    return kv_path_exists(BUNDLED_MODEL "/config.json") ? BUNDLED_MODEL : NULL;
}

static int parse_options(int argc, char **argv, options *o) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},  {"prompts", required_argument, 0, 'p'},
        {"output", required_argument, 0, 'o'}, {"full-maps", no_argument, 0, 'F'},
        {"window", required_argument, 0, 'w'}, {"maps-dtype", required_argument, 0, 'd'},
        {"layers", required_argument, 0, 'l'}, {"threads", required_argument, 0, 't'},
        {"max-tokens", required_argument, 0, 'n'}, {"special-text", required_argument, 0, 's'},
        {"force", no_argument, 0, 'f'},        {"help", no_argument, 0, 'h'},
        {"device", required_argument, 0, 'D'}, {"maps-compression", required_argument, 0, 'C'},
        {"max-memory", required_argument, 0, 'M'}, {"resume", no_argument, 0, 'R'},
        {"version", no_argument, 0, 'V'},      {"rope-precision", required_argument, 0, 'r'},
        {"local-ratio", required_argument, 0, 'L'}, {"timing", no_argument, 0, 'T'},
        {0, 0, 0, 0},
    };
    *o = (options){.out_path = "trace.h5", .window = 64, .device = "auto", .maps_deflate = 1,
                   .local_ratios = {KV_DEFAULT_LOCAL_RATIO}, .n_local_ratios = 1};
    long v;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_dir = optarg; break;
        case 'p': o->prompts_path = optarg; break;
        case 'o': o->out_path = optarg; break;
        case 'F': o->full_maps = 1; break;
        case 'f': o->force = 1; break;
        case 'R': o->resume = 1; break;
        case 'T': o->timing = 1; break;
        case 'l': o->layers_spec = optarg; break;
        case 'L': {
            if (!strcmp(optarg, "none")) {
                o->n_local_ratios = 0;
                break;
            }
            char *copy = strdup(optarg), *save = NULL;
            int n = 0, bad = !copy;
            for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok && !bad; tok = strtok_r(NULL, ",", &save)) {
                double r;
                bad = n == KV_MAX_NEAR || kv_parse_double(tok, &r) || !(r > 0 && r <= 1);
                for (int q = 0; !bad && q < n; q++) bad = o->local_ratios[q] == r;
                if (!bad) o->local_ratios[n++] = r;
            }
            free(copy);
            if (bad || !n) {
                fprintf(stderr, "kvtrace: --local-ratio '%s': expected 1 to %d different numbers in (0, 1], "
                                "comma-separated\n", optarg, KV_MAX_NEAR);
                return 2;
            }
            o->n_local_ratios = n;
            break;
        }
        case 'M':
            if (kv_parse_size(optarg, &o->max_memory)) {
                fprintf(stderr, "kvtrace: --max-memory '%s': expected a size such as 8G or 512M\n", optarg);
                return 2;
            }
            break;
        case 'C':
            if (!strcmp(optarg, "deflate")) o->maps_deflate = 1;
            else if (!strcmp(optarg, "none")) o->maps_deflate = 0;
            else {
                fprintf(stderr, "kvtrace: --maps-compression '%s': expected deflate or none\n", optarg);
                return 2;
            }
            break;
        case 'D':
            if (strcmp(optarg, "auto") && strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
                fprintf(stderr, "kvtrace: --device '%s': expected auto, cpu or cuda\n", optarg);
                return 2;
            }
            o->device = optarg;
            break;
        case 'w':
            if (kv_parse_long(optarg, 1, 1 << 24, &v)) {
                fprintf(stderr, "kvtrace: --window '%s': expected a positive integer\n", optarg);
                return 2;
            }
            o->window = (int)v;
            break;
        case 'r':
            if (kv_rope_precision_parse(optarg, &o->rope_precision)) {
                fprintf(stderr, "kvtrace: --rope-precision '%s': expected f32 or f64\n", optarg);
                return 2;
            }
            break;
        case 'd':
            if (!strcmp(optarg, "f32")) o->maps_f16 = 0;
            else if (!strcmp(optarg, "f16")) o->maps_f16 = 1;
            else {
                fprintf(stderr, "kvtrace: --maps-dtype '%s': expected f32 or f16\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (kv_parse_long(optarg, 1, 1024, &v)) {
                fprintf(stderr, "kvtrace: --threads '%s': expected an integer from 1 to 1024\n", optarg);
                return 2;
            }
            o->threads = (int)v;
            break;
        case 'n':
            if (kv_parse_long(optarg, 1, INT_MAX, &v)) {
                fprintf(stderr, "kvtrace: --max-tokens '%s': expected a positive integer\n", optarg);
                return 2;
            }
            o->max_tokens = v;
            break;
        case 's':
            if (o->n_special_texts == MAX_SPECIAL_TEXTS || !optarg[0]) {
                fprintf(stderr, "kvtrace: --special-text: empty, or more than %d given\n", MAX_SPECIAL_TEXTS);
                return 2;
            }
            o->special_texts[o->n_special_texts++] = optarg;
            break;
        case 'h': usage(stdout); return -1;
        case 'V': printf("kvtrace %s\n", KVTRACE_VERSION); return -1;
        case ':': fprintf(stderr, "kvtrace: option %s needs a value (see --help)\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "kvtrace: unknown option '%s' (see --help)\n", argv[optind - 1]); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvtrace: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (!o->model_dir && !(o->model_dir = bundled_model())) {
        fprintf(stderr, "kvtrace: no --model given and the bundled model %s was not found next to the program or "
                        "in the working directory\n", BUNDLED_MODEL);
        return 2;
    }
    return 0;
}

/* ---- tracing ---------------------------------------------------------- */

typedef struct {
    kv_trace_writer *w;
    const kv_config *cfg;
    const int *slot_of_layer;  /* [n_layers] traced slot or -1 */
    int full_maps;
    int n;                     /* tokens of the current prompt */
    int near_w[KV_MAX_NEAR];   /* its local windows, one per --local-ratio */
    float *values;             /* [KVH, N, hd] staging for the transpose */
    float *key_norm;           /* [KVH, N] */
    kv_map_sink sink;
    int sink_slot;
    /* progress */
    int progress, prompt_index, n_prompts;
    const char *prompt_id;
    double t_start;
    long tokens_done;
    double write_s; /* seconds spent writing the trace (layers, map blocks, each prompt's end) */
} trace_ctx;

/* Host memory a CPU run needs: float32 weights plus the activations of the
 * longest prompt (model/forward.c) and, with full maps, the writer's chunk
 * queue, against MemAvailable or --max-memory. */
static int check_memory(const kv_config *c, const kv_prompt_set *ps, const options *o, const kv_kernels *k,
                        kv_error *err) {
    if (strcmp(k->name, "cpu")) return 0; /* the GPU backend reports failed device allocations itself */
    int longest = 0;
    for (int i = 0; i < ps->n; i++) longest = ps->items[i].n_ids > longest ? ps->items[i].n_ids : longest;
    double D = c->hidden_size, I = c->intermediate_size, QD = (double)c->n_heads * c->head_dim,
           KVD = (double)c->n_kv_heads * c->head_dim;
    double params = c->vocab_size * D * (c->tie_word_embeddings ? 1 : 2) +
                    c->n_layers * (D * (QD + 2 * KVD) + QD * D + 3 * D * I + 2 * D);
    double need = params * 4 + (double)kv_forward_bytes(c, longest, o->window, o->n_local_ratios) +
                  (o->full_maps ? (double)kv_trace_map_queue_bytes(longest, o->maps_f16, omp_get_max_threads()) : 0);
    double avail = o->max_memory;
    const char *source = "--max-memory";
    if (avail <= 0) {
        source = "system";
        if ((avail = kv_mem_available()) <= 0) return 0; /* cannot tell: do not guess */
    }
    if (need > avail) {
        char a[32], b[32];
        kv_format_bytes(need, a, sizeof a);
        kv_format_bytes(avail, b, sizeof b);
        return kv_fail(err, "this run needs about %s of memory (weights as float32 and the activations of a %d-token "
                            "prompt) but %s %s; use --max-memory to override",
                       a, longest, b, source[0] == '-' ? "is allowed by --max-memory" : "is available");
    }
    return 0;
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { interrupted = sig; }

static int want_layer(void *p, int layer) { return ((trace_ctx *)p)->slot_of_layer[layer] >= 0; }

static int map_block(void *p, int head, int row0, int rows, const float *probs, int n_keys, kv_error *err) {
    trace_ctx *t = p;
    if (interrupted) return kv_fail(err, "interrupted by signal %d", (int)interrupted);
    double t0 = kv_now_s();
    int rc = kv_trace_write_map_block(t->w, t->sink_slot, head, row0, rows, probs, n_keys, err);
    t->write_s += kv_now_s() - t0;
    return rc;
}

static kv_map_sink *map_sink(void *p, int layer) {
    trace_ctx *t = p;
    if (!t->full_maps || t->slot_of_layer[layer] < 0) return NULL;
    t->sink_slot = t->slot_of_layer[layer];
    t->sink = (kv_map_sink){.block = map_block, .ctx = t};
    return &t->sink;
}

static int layer_done(void *p, int layer, const kv_layer_capture *cap, kv_error *err) {
    trace_ctx *t = p;
    if (interrupted) return kv_fail(err, "interrupted by signal %d", (int)interrupted);
    double t0 = kv_now_s();
    int n = t->n, kvh = t->cfg->n_kv_heads, hd = t->cfg->head_dim;
    for (int g = 0; g < kvh; g++) /* [N, KVH·hd] -> [KVH, N, hd]; the keys' L2 norms [KVH, N] */
        for (int i = 0; i < n; i++) {
            memcpy(t->values + ((size_t)g * n + i) * hd, cap->v + ((size_t)i * kvh + g) * hd, hd * sizeof(float));
            const float *k = cap->k + ((size_t)i * kvh + g) * hd;
            double ss = 0;
            for (int d = 0; d < hd; d++) ss += (double)k[d] * k[d];
            t->key_norm[(size_t)g * n + i] = (float)sqrt(ss);
        }
    kv_trace_layer out = {cap->colsum, cap->window, cap->nearsum, t->values, t->key_norm};
    int rc = kv_trace_write_layer(t->w, t->slot_of_layer[layer], &out, err);
    t->write_s += kv_now_s() - t0;
    return rc;
}

static void progress(void *p, int layer) {
    trace_ctx *t = p;
    if (!t->progress) return;
    double el = kv_now_s() - t->t_start;
    double done = t->tokens_done + (double)t->n * (layer + 1) / t->cfg->n_layers;
    fprintf(stderr, "\rkvtrace: prompt %d/%d (%s, %d tokens) layer %d/%d  %.0f tokens/s   ", t->prompt_index + 1,
            t->n_prompts, t->prompt_id, t->n, layer + 1, t->cfg->n_layers, el > 0 ? done / el : 0.0);
    fflush(stderr);
}

/* Tokenizes text prompts and checks every prompt against the model. */
static int trace_prompt(kv_model *m, trace_ctx *t, const kv_prompt *p, const kv_tokenizer *tok,
                        const options *o, float *logits, kv_error *err) {
    const kv_config *c = &m->cfg;
    char **pieces = NULL;
    uint8_t *flags = NULL;
    int rc = -1;
    if (tok) {
        flags = kv_malloc(p->n_ids, err);
        if (!flags || kv_tokenizer_token_info(tok, p->ids, p->n_ids, c->special_ids, (size_t)c->n_special_ids, o->special_texts,
                                              o->n_special_texts, &pieces, flags, err))
            goto done;
    }
    /* FastGen's local window of each r_l for this prompt's length (policy/fastgen.h) */
    for (int q = 0; q < o->n_local_ratios; q++) t->near_w[q] = kv_local_window(o->local_ratios[q], p->n_ids);
    kv_trace_prompt tp = {.id = p->id, .text = p->text, .tokens = p->ids, .n = p->n_ids, .pieces = pieces,
                          .flags = flags, .near_w = t->near_w};
    t->n = p->n_ids;
    t->prompt_id = p->id;
    t->values = kv_malloc((size_t)c->n_kv_heads * p->n_ids * c->head_dim * sizeof(float), err);
    t->key_norm = kv_malloc((size_t)c->n_kv_heads * p->n_ids * sizeof(float), err);
    if (!t->values || !t->key_norm || kv_trace_begin_prompt(t->w, &tp, err)) goto done;
    kv_capture_hooks hooks = {.ctx = t, .window = o->window, .n_near = o->n_local_ratios, .near_w = t->near_w,
                              .want_keys = 1,
                              .want_layer = want_layer, .map_sink = map_sink, .layer_done = layer_done,
                              .progress = progress};
    if (kv_forward(m, p->ids, p->n_ids, &hooks, logits, err)) {
        kv_wrap(err, "prompt '%s'", p->id);
        goto done;
    }
    double t0 = kv_now_s();
    if (kv_trace_write_logits(t->w, logits, err) || kv_trace_end_prompt(t->w, err)) goto done;
    t->write_s += kv_now_s() - t0;
    t->tokens_done += p->n_ids;
    rc = 0;
done:
    if (pieces) {
        for (int i = 0; i < p->n_ids; i++) free(pieces[i]);
        free(pieces);
    }
    free(flags);
    free(t->values);
    free(t->key_norm);
    t->values = t->key_norm = NULL;
    return rc;
}

static int run(const options *o) {
    kv_error err = {{0}};
    int rc = 1;
    kv_kernels *k = NULL;
    kv_model m = {0};
    kv_prompt_set ps = {0};
    kv_tokenizer *tok = NULL;
    kv_trace_writer *w = NULL;
    unsigned char *mask = NULL;
    int *slot_of_layer = NULL, *layers = NULL;
    float *wo = NULL, *logits = NULL;
    char *tok_path = NULL;

    char parts[4096];
    snprintf(parts, sizeof parts, "%s.parts", o->out_path);
    if (o->resume && !o->force && kv_path_exists(o->out_path) && kv_path_exists(parts)) {
        /* the last run was stopped after its trace was in place, while it removed its parts */
        kv_trace_remove_parts(parts);
        fprintf(stderr, "kvtrace: %s is already complete; removed the leftover %s\n", o->out_path, parts);
        return 0;
    }
    if (kv_path_exists(o->out_path) && !o->force) {
        fprintf(stderr, "kvtrace: %s: already exists (use --force to overwrite)\n", o->out_path);
        return 1;
    }
    if (kv_path_exists(parts) && !o->resume && !o->force) {
        if (kv_trace_parts_completed(parts) > 0)
            fprintf(stderr, "kvtrace: %s: an interrupted run's completed prompts are here; use --resume to continue "
                            "it or --force to start over\n", parts);
        else
            fprintf(stderr, "kvtrace: %s: left by a run that was interrupted before it completed a prompt (or is "
                            "still running); use --resume or --force to start over\n", parts);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double t_begin = kv_now_s();
    /* Everything that can be checked without the weights comes first: the
     * config, the prompts, and whether the run fits in memory. */
    kv_config cfg0 = {0};
    char *cfg_path = kv_path_join(o->model_dir, "config.json", &err);
    int cfg_rc = cfg_path ? kv_config_load(&cfg0, cfg_path, &err) : -1;
    free(cfg_path);
    if (cfg_rc) goto fail;
    if (!(tok_path = kv_path_join(o->model_dir, "tokenizer.json", &err))) goto fail_cfg;
    if (kv_path_exists(tok_path) && !(tok = kv_tokenizer_load(tok_path, &err))) goto fail_cfg;
    if (o->prompts_path ? kv_prompts_load(&ps, o->prompts_path, &err) : kv_prompts_builtin(&ps, &err)) goto fail_cfg;
    long max_tokens = o->max_tokens ? o->max_tokens : cfg0.max_position_embeddings;
    char max_what[64];
    snprintf(max_what, sizeof max_what, "--max-tokens %ld", max_tokens);
    if (kv_prompts_prepare(&ps, tok, tok_path, cfg0.vocab_size, max_tokens, max_what, &err)) goto fail_cfg;
    if (!(k = kv_kernels_open(o->device, o->threads, &err))) goto fail_cfg;
    if (check_memory(&cfg0, &ps, o, k, &err)) goto fail_cfg;
    kv_config_free(&cfg0);
    if (kv_model_build(&m, o->model_dir, k, &err)) goto fail;
    m.rope_precision = o->rope_precision;
    const kv_config *c = &m.cfg;

    mask = kv_malloc(c->n_layers, &err);
    slot_of_layer = kv_malloc(c->n_layers * sizeof(int), &err);
    layers = kv_malloc(c->n_layers * sizeof(int), &err);
    if (!mask || !slot_of_layer || !layers) goto fail;
    if (o->layers_spec) {
        if (parse_layers(o->layers_spec, c->n_layers, mask, &err)) goto fail;
    } else {
        memset(mask, 1, c->n_layers);
    }
    int n_traced = 0;
    for (int l = 0; l < c->n_layers; l++) {
        slot_of_layer[l] = mask[l] ? n_traced : -1;
        if (mask[l]) layers[n_traced++] = l;
    }

    char model_name[256];
    kv_basename(o->model_dir, model_name, sizeof model_name);
    kv_trace_meta meta = {
        .model_name = model_name, .config_json = c->json, .architecture = c->architecture,
        .created_by = "kvtrace " KVTRACE_VERSION, .n_layers = c->n_layers, .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim, .hidden_size = c->hidden_size,
        .vocab_size = c->vocab_size, .layers = layers, .n_traced = n_traced, .window = o->window,
        .rope_precision = kv_rope_precision_name(o->rope_precision), .full_maps = o->full_maps, .maps_f16 = o->maps_f16, .maps_deflate = o->maps_deflate,
        .near_r_local = o->local_ratios, .n_near = o->n_local_ratios, .n_prompts = ps.n,
    };
    if (!(w = kv_trace_create(o->out_path, o->force, o->resume, &meta, &err))) goto fail;
    wo = kv_malloc((size_t)c->hidden_size * c->n_heads * c->head_dim * sizeof(float), &err);
    logits = kv_malloc((size_t)c->vocab_size * sizeof(float), &err);
    if (!wo || !logits) goto fail;
    for (int s = 0; s < n_traced; s++)
        if (kv_model_read_wo(&m, layers[s], wo, &err) || kv_trace_write_wo(w, s, wo, &err)) goto fail;

    trace_ctx t = {.w = w, .cfg = c, .slot_of_layer = slot_of_layer, .full_maps = o->full_maps,
                   .progress = isatty(2), .n_prompts = ps.n, .t_start = kv_now_s()};
    double load_s = t.t_start - t_begin;
    int resumed = kv_trace_n_prompts(w);
    for (int i = 0; i < ps.n; i++) {
        t.prompt_index = i;
        if (kv_trace_has_prompt(w, ps.items[i].id)) continue; /* done by the interrupted run */
        if (interrupted || trace_prompt(&m, &t, &ps.items[i], tok, o, logits, &err)) goto fail;
    }
    if (resumed && t.progress) fprintf(stderr, "\nkvtrace: %d prompts were already done by the interrupted run", resumed);
    if (t.progress) fprintf(stderr, "\n");
    double t_commit = kv_now_s();
    int r = kv_trace_commit(w, &err);
    w = NULL;
    if (r) goto fail;
    if (o->timing)
        fprintf(stderr,
                "kvtrace: timing: %.3f s loading (config, prompts, weights), %.3f s forward pass on %s, %.3f s "
                "writing the trace, %.3f s finishing %s (%ld tokens)\n",
                load_s, t_commit - t.t_start - t.write_s, k->name, t.write_s, kv_now_s() - t_commit, o->out_path,
                t.tokens_done);
    if (t.progress)
        fprintf(stderr, "kvtrace: wrote %s (%d prompts, %ld tokens, %d layers)\n", o->out_path, ps.n, t.tokens_done,
                n_traced);
    rc = 0;
    goto done;
fail_cfg:
    kv_config_free(&cfg0);
fail:
    if (isatty(2)) fprintf(stderr, "\n");
    if (interrupted && w && kv_trace_n_prompts(w) > 0) {
        /* keep what is complete: the same command with --resume finishes it */
        fprintf(stderr, "kvtrace: interrupted by signal %d after %d of %d prompts; the trace so far is %s; run the "
                        "same command with --resume to finish it\n",
                (int)interrupted, kv_trace_n_prompts(w), ps.n, kv_trace_index_path(w));
        kv_trace_abort(w, 1);
        w = NULL;
    } else if (interrupted) {
        fprintf(stderr, "kvtrace: interrupted by signal %d before any prompt was traced\n", (int)interrupted);
    } else {
        fprintf(stderr, "kvtrace: %s\n", err.msg);
    }
done:
    if (w) kv_trace_abort(w, 0);
    free(wo);
    free(logits);
    free(mask);
    free(slot_of_layer);
    free(layers);
    free(tok_path);
    kv_prompts_free(&ps);
    if (tok) kv_tokenizer_free(tok);
    kv_model_free(&m);
    if (k) k->destroy(k);
    return rc;
}

/* `kvtrace devices`: which backends this build has and what they find. */
static int devices_main(void) {
    printf("cpu: available\n");
    if (!kv_cuda_built()) printf("cuda: not built (nvcc was not found at build time, or CUDA=0)\n");
    else if (kv_cuda_unavailable()) printf("cuda: built, but unavailable: %s\n", kv_cuda_unavailable());
    else if (kv_cuda_device_count() == 0) printf("cuda: built, no GPU found\n");
    else printf("cuda: built, %d GPU(s); not validated on a GPU yet, so --device auto uses the CPU\n",
                kv_cuda_device_count());
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "tokenize")) return kv_tokenize_main(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "fidelity")) {
        kv_prefer_passive_waiting(argv);
        return kv_fidelity_main(argc - 1, argv + 1);
    }
    if (argc == 2 && !strcmp(argv[1], "devices")) return devices_main();
    options o;
    int r = parse_options(argc, argv, &o);
    if (r) return r < 0 ? 0 : r;
    return run(&o);
}
