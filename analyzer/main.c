/* kvanalyze: FastGen head policies and Ada-KV budget allocation over a
 * kvtrace file. See docs/analyzer.md. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analyzer/analyze.h"
#include "analyzer/check.h"
#include "common/cli.h"
#include "format/trace.h"

#define KVANALYZE_VERSION "0.1.0"

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: kvanalyze TRACE.h5 -o OUTDIR [options]\n"
            "       kvanalyze --check TRACE.h5\n"
            "\n"
            "FastGen head-policy profiling and Ada-KV uniform vs adaptive budget\n"
            "allocation over a kvtrace file (docs/analyzer.md).\n"
            "\n"
            "      --check             only verify the trace (format, shapes, rows summing to 1, nothing above\n"
            "                          the diagonal, colsum against attn, no NaN); exit 1 at the first fault\n"
            "  -o, --outdir DIR        output directory (created when missing)\n"
            "      --force             replace existing output files in DIR\n"
            "FastGen:\n"
            "  -t, --threshold T[,T..] recovery thresholds in (0, 1] (default 0.95)\n"
            "      --r-local R         local window fraction of N (default 0.3)\n"
            "      --r-frequent R      frequent-token fraction of N (default 0.3)\n"
            "      --aggregate mean|min  combine rung recoveries over prompts (default mean)\n"
            "      --skip-rows K       leave query rows i < K out of the recovery mean (default 0)\n"
            "Both:\n"
            "      --gqa mean|max      combine the query heads of a KV group (default mean)\n"
            "Ada-KV:\n"
            "  -b, --budgets B[,B..]   entries per KV head, window included (default 64,128,256,512,1024)\n"
            "      --scorer snapkv|h2o|tova|streaming|observed|knorm  score used to rank positions\n"
            "                          (default snapkv; tova: kvpress's TOVAPress, with --obs-window 1;\n"
            "                          observed, knorm: its ObservedAttentionPress, KnormPress, with\n"
            "                          --obs-window 0 --eval future:Q)\n"
            "      --obs-window W      observation window w, kept whole (default 32; 0: none, with\n"
            "                          --eval future:Q and a scorer other than snapkv)\n"
            "      --pool max|avg|avg-padded|none  pooling of snapkv scores (default max; avg divides edge\n"
            "                          windows by the positions inside, avg-padded by the kernel, as PyTorch)\n"
            "      --kernel K          pooling kernel, odd (default 7)\n"
            "      --gqa-order combine-pool|pool-combine  combine a group's query heads before pooling\n"
            "                          (default, FFY0/AdaKV) or after (kvpress)\n"
            "      --alpha A           adaptive safeguard share in [0, 1] (default 0.2)\n"
            "      --safeguard protect|kvpress|blend  the adaptive split's safeguard (default protect;\n"
            "                          docs/analyzer.md, Conventions)\n"
            "      --preset kvpress|adakv  every convention of NVIDIA kvpress 0.5.5 (window 64, avg-padded\n"
            "                          pooling 5, pool-combine, kvpress safeguard) or of the authors' code\n"
            "                          (window 32, max pooling 7, combine-pool, blend); options given\n"
            "                          with it override it\n"
            "      --pyramid[=adakv|kvpress]  PyramidKV per-layer budgets (beta = 20), with the schedule of\n"
            "                          the authors' code (integers; the default) or of kvpress (floats,\n"
            "                          rounded; the default with --preset kvpress)\n"
            "      --eval window|future:Q  evaluation rows (default window)\n"
            "      --kept              also write kept.jsonl: every selection's kept positions per KV head\n"
            "Input and run:\n"
            "      --prompts ID,...    only these prompts (default all)\n"
            "      --threads N         worker threads (default: all cores)\n"
            "      --max-memory SIZE   memory the run may use, e.g. 8G (default: what the system has\n"
            "                          available); a run that needs more is refused before it starts\n"
            "      --timings           print read/compute wall times to stderr\n"
            "  -h, --help              this help\n"
            "  -V, --version           print the version\n");
}

static int fail(const char *fmt, const char *a) {
    fprintf(stderr, "kvanalyze: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 2;
}

static int parse_int(const char *s, int *out) {
    long v;
    if (kv_parse_long(s, -2147483647L, 2147483647L, &v)) return -1;
    *out = (int)v;
    return 0;
}

/* splits a comma list in place */
static int split(char *s, char **parts, int max) {
    int n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max) return -1;
        parts[n++] = tok;
    }
    return n;
}

int main(int argc, char **argv) {
    kv_prefer_passive_waiting(argv);
    kv_analyze_opts o;
    memset(&o, 0, sizeof o);
    o.thresholds[0] = 0.95;
    o.n_thresholds = 1;
    o.fg.r_local = 0.3;
    o.fg.r_frequent = 0.3;
    int defb[] = {64, 128, 256, 512, 1024};
    memcpy(o.budgets, defb, sizeof defb);
    o.n_budgets = 5;
    o.ada.scorer = KV_SCORER_SNAPKV;
    o.ada.pool = KV_POOL_MAX;
    o.ada.kernel = 7;
    o.ada.obs_window = 32;
    o.ada.alpha = 0.2;
    int threads = 0, check_only = 0;
    char *prompt_list = NULL;
    char *parts[KV_MAX_LIST];

    enum { O_RL = 256, O_RF, O_GQA, O_AGG, O_SKIP, O_SCORER, O_OBS, O_POOL, O_KERNEL, O_ALPHA, O_PYR, O_EVAL,
           O_PROMPTS, O_THREADS, O_FORCE, O_TIMINGS, O_CHECK, O_MAXMEM, O_SAFEGUARD, O_GQA_ORDER, O_PRESET, O_KEPT };
    static const struct option lo[] = {
        {"outdir", required_argument, 0, 'o'},   {"threshold", required_argument, 0, 't'},
        {"r-local", required_argument, 0, O_RL}, {"r-frequent", required_argument, 0, O_RF},
        {"gqa", required_argument, 0, O_GQA},    {"aggregate", required_argument, 0, O_AGG},
        {"skip-rows", required_argument, 0, O_SKIP}, {"budgets", required_argument, 0, 'b'},
        {"scorer", required_argument, 0, O_SCORER}, {"obs-window", required_argument, 0, O_OBS},
        {"pool", required_argument, 0, O_POOL},  {"kernel", required_argument, 0, O_KERNEL},
        {"alpha", required_argument, 0, O_ALPHA}, {"pyramid", optional_argument, 0, O_PYR},
        {"eval", required_argument, 0, O_EVAL},  {"prompts", required_argument, 0, O_PROMPTS},
        {"threads", required_argument, 0, O_THREADS}, {"force", no_argument, 0, O_FORCE}, {"timings", no_argument, 0, O_TIMINGS},
        {"check", no_argument, 0, O_CHECK},       {"max-memory", required_argument, 0, O_MAXMEM},
        {"safeguard", required_argument, 0, O_SAFEGUARD}, {"gqa-order", required_argument, 0, O_GQA_ORDER},
        {"preset", required_argument, 0, O_PRESET}, {"kept", no_argument, 0, O_KEPT},
        {"help", no_argument, 0, 'h'},           {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0}};
    /* a preset first, wherever it is given: the options given with it override it */
    const char *preset = kv_option_value(argc, argv, "--preset");
    if (preset && kv_adakv_preset(preset, &o.ada))
        return fail("--preset: expected kvpress or adakv, got '%s'", preset);
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:t:b:hV", lo, NULL)) != -1) {
        switch (c) {
        case 'o': o.outdir = optarg; break;
        case 't': {
            int n = split(optarg, parts, KV_MAX_LIST);
            if (n <= 0) return fail("--threshold: expected T[,T...], got '%s'", optarg);
            for (int i = 0; i < n; i++)
                if (kv_parse_double(parts[i], &o.thresholds[i]) || !(o.thresholds[i] > 0 && o.thresholds[i] <= 1))
                    return fail("--threshold: '%s' is not a number in (0, 1]", parts[i]);
            o.n_thresholds = n;
            break;
        }
        case O_RL:
            if (kv_parse_double(optarg, &o.fg.r_local) || !(o.fg.r_local >= 0 && o.fg.r_local <= 1))
                return fail("--r-local: '%s' is not a number in [0, 1]", optarg);
            break;
        case O_RF:
            if (kv_parse_double(optarg, &o.fg.r_frequent) || !(o.fg.r_frequent >= 0 && o.fg.r_frequent <= 1))
                return fail("--r-frequent: '%s' is not a number in [0, 1]", optarg);
            break;
        case O_GQA:
            if (!strcmp(optarg, "mean")) o.gqa_max = 0;
            else if (!strcmp(optarg, "max")) o.gqa_max = 1;
            else return fail("--gqa: expected mean or max, got '%s'", optarg);
            break;
        case O_AGG:
            if (!strcmp(optarg, "mean")) o.aggregate_min = 0;
            else if (!strcmp(optarg, "min")) o.aggregate_min = 1;
            else return fail("--aggregate: expected mean or min, got '%s'", optarg);
            break;
        case O_SKIP:
            if (parse_int(optarg, &o.fg.skip_rows) || o.fg.skip_rows < 0)
                return fail("--skip-rows: '%s' is not a non-negative integer", optarg);
            break;
        case 'b': {
            int n = split(optarg, parts, KV_MAX_LIST);
            if (n <= 0) return fail("--budgets: expected B[,B...], got '%s'", optarg);
            for (int i = 0; i < n; i++)
                if (parse_int(parts[i], &o.budgets[i]) || o.budgets[i] < 1)
                    return fail("--budgets: '%s' is not a positive integer", parts[i]);
            o.n_budgets = n;
            break;
        }
        case O_SCORER:
        {
            int k = kv_name_index(kv_scorer_names, KV_N_SCORERS, optarg);
            if (k < 0) return fail("--scorer: expected snapkv, h2o, tova, streaming, observed or knorm, got '%s'", optarg);
            o.ada.scorer = (kv_scorer)k;
            break;
        }
        case O_OBS:
            if (parse_int(optarg, &o.ada.obs_window) || o.ada.obs_window < 0)
                return fail("--obs-window: '%s' is not a non-negative integer", optarg);
            break;
        case O_PRESET: break; /* applied before the loop */
        case O_KEPT: o.kept = 1; break;
        case O_POOL: {
            int k = kv_name_index(kv_pool_names, KV_N_POOLS, optarg);
            if (k < 0) return fail("--pool: expected max, avg, avg-padded or none, got '%s'", optarg);
            o.ada.pool = (kv_pool)k;
            break;
        }
        case O_SAFEGUARD: {
            int k = kv_name_index(kv_safeguard_names, KV_N_SAFEGUARDS, optarg);
            if (k < 0) return fail("--safeguard: expected protect, kvpress or blend, got '%s'", optarg);
            o.ada.safeguard = (kv_safeguard)k;
            break;
        }
        case O_GQA_ORDER: {
            int k = kv_name_index(kv_gqa_order_names, KV_N_GQA_ORDERS, optarg);
            if (k < 0) return fail("--gqa-order: expected combine-pool or pool-combine, got '%s'", optarg);
            o.ada.gqa_order = (kv_gqa_order)k;
            break;
        }
        case O_KERNEL:
            if (parse_int(optarg, &o.ada.kernel) || o.ada.kernel < 1 || o.ada.kernel % 2 == 0)
                return fail("--kernel: '%s' is not a positive odd integer", optarg);
            break;
        case O_ALPHA:
            if (kv_parse_double(optarg, &o.ada.alpha) || !(o.ada.alpha >= 0 && o.ada.alpha <= 1))
                return fail("--alpha: '%s' is not a number in [0, 1]", optarg);
            break;
        case O_PYR: {
            o.pyramid = 1;
            int k = optarg ? kv_name_index(kv_pyramid_names, KV_N_PYRAMIDS, optarg) : (int)o.ada.pyramid;
            if (k < 0) return fail("--pyramid: expected adakv or kvpress (--pyramid=kvpress), got '%s'", optarg);
            o.ada.pyramid = (kv_pyramid_schedule)k;
            break;
        }
        case O_EVAL:
            if (!strcmp(optarg, "window")) o.ada.future_q = 0;
            else if (!strncmp(optarg, "future:", 7) && !parse_int(optarg + 7, &o.ada.future_q) && o.ada.future_q >= 1)
                ;
            else return fail("--eval: expected window or future:Q with Q >= 1, got '%s'", optarg);
            break;
        case O_PROMPTS: prompt_list = optarg; break;
        case O_THREADS:
            if (parse_int(optarg, &threads) || threads < 1)
                return fail("--threads: '%s' is not a positive integer", optarg);
            break;
        case O_FORCE: o.force = 1; break;
        case O_TIMINGS: o.timings = 1; break;
        case O_CHECK: check_only = 1; break;
        case O_MAXMEM:
            if (kv_parse_size(optarg, &o.max_memory))
                return fail("--max-memory: '%s' is not a size such as 8G or 512M", optarg);
            break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("kvanalyze %s (trace format %d)\n", KVANALYZE_VERSION, KV_TRACE_FORMAT_VERSION); return 0;
        case ':': return fail("option %s needs a value (see --help)", argv[optind - 1]);
        default: return fail("unknown option %s (see --help)", argv[optind - 1]);
        }
    }
    if (optind >= argc) return fail("%s", "missing TRACE.h5 (see --help)");
    if (optind + 1 < argc) return fail("unexpected argument '%s' (see --help)", argv[optind + 1]);
    o.trace_path = argv[optind];
    o.ada.gqa_max = o.gqa_max;
    if (check_only) {
        kv_error cerr = {{0}};
        if (kv_check_trace(o.trace_path, stdout, &cerr)) {
            fprintf(stderr, "kvanalyze: %s\n", cerr.msg);
            return 1;
        }
        return 0;
    }
    if (!o.outdir) return fail("%s", "missing -o OUTDIR (see --help)");
    if (o.ada.obs_window == 0 && o.ada.scorer == KV_SCORER_SNAPKV)
        return fail("%s", "--obs-window 0 leaves snapkv no rows to score (use --scorer h2o, tova, streaming, observed or knorm)");
    if (o.ada.obs_window == 0 && !o.ada.future_q)
        return fail("%s", "--obs-window 0 leaves --eval window no rows to evaluate (use --eval future:Q)");
    for (int i = 0; i < o.n_budgets; i++)
        if (o.budgets[i] <= o.ada.obs_window) {
            char msg[128];
            snprintf(msg, sizeof msg, "%d must exceed the observation window %d", o.budgets[i], o.ada.obs_window);
            return fail("--budgets: %s", msg);
        }
    char *ids[KV_MAX_LIST];
    if (prompt_list) {
        int n = split(prompt_list, ids, KV_MAX_LIST);
        if (n <= 0) return fail("--prompts: expected ID[,ID...], got '%s'", prompt_list);
        for (int i = 0; i < n; i++) {
            if (!kv_prompt_id_valid(ids[i])) return fail("--prompts: '%s' is not a valid prompt id", ids[i]);
            for (int k = 0; k < i; k++)
                if (!strcmp(ids[k], ids[i])) return fail("--prompts: '%s' is given twice", ids[i]);
        }
        o.prompts = ids;
        o.n_prompts = n;
    }
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    kv_error err = {{0}};
    o.progress = isatty(2);
    if (kv_analyze(&o, stdout, &err)) {
        fprintf(stderr, "kvanalyze: %s\n", err.msg);
        return 1;
    }
    return 0;
}
