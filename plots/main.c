/* kvplot: the FastGen and Ada-KV papers' figures from kvanalyze results,
 * drawn by gnuplot. See docs/plots.md.
 *
 * Everything is made in a work directory inside FIGDIR (data files, filled
 * scripts, figures, figures.pdf) and moved into FIGDIR only when every
 * figure succeeded, so a failed run leaves no partial figure behind. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cli.h"
#include "common/fileio.h"
#include "plots/fig_fidelity.h"
#include "plots/plot.h"

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: kvplot RESULTS_DIR -o FIGDIR [--trace TRACE.h5] [options]\n"
            "\n"
            "Draws the FastGen and Ada-KV figures from a kvanalyze output directory\n"
            "with gnuplot: one file per figure and format, the data file and the\n"
            "filled gnuplot script next to each (gnuplot FIGDIR/NAME.gp re-makes it),\n"
            "and figures.pdf with every figure on its own page (docs/plots.md).\n"
            "\n"
            "  -o, --outdir DIR       figure directory (created when missing)\n"
            "      --trace FILE       the trace, for head_maps (needs kvtrace --full-maps)\n"
            "      --fidelity FILE    kvtrace fidelity's CSV, for fidelity_vs_memory and l1_vs_kl\n"
            "  -f, --format LIST      png,pdf,svg (default png,pdf)\n"
            "  -t, --threshold T      FastGen threshold to show (default 0.95 when\n"
            "                         in the results, else the first)\n"
            "  -b, --budget B         Ada-KV budget for budget_heatmap and\n"
            "                         loss_ratio_per_prompt (default: the smallest)\n"
            "      --width-in W       figure width in inches (default 3.3)\n"
            "      --dpi N            PNG pixels per inch (default 200)\n"
            "      --heads kv|query   heads counted in policy_by_layer (default kv)\n"
            "      --prompt ID        prompt for head_maps (default: the shortest with maps)\n"
            "      --layers L,L,...   layers for concentration (default: up to 4 spread out)\n"
            "      --max-cells N      head_maps: pool maps larger than N x N (default 256)\n"
            "      --label-tokens N   head_maps: token labels when N <= this (default 32)\n"
            "      --only LIST        make only these figures (comma-separated names)\n"
            "      --templates DIR    gnuplot templates (default: plots/ next to bin/)\n"
            "      --force            replace existing files in FIGDIR\n"
            "  -h, --help             this help\n"
            "  -V, --version          print the version\n"
            "\n"
            "Figures: policy_by_layer head_maps memory_vs_threshold loss_vs_budget\n"
            "         loss_ratio_per_prompt budget_heatmap concentration\n"
            "         fidelity_vs_memory l1_vs_kl (with --fidelity)\n");
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static int die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvplot: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static const struct {
    const char *name;
    kvp_fig_fn fn;
} FIGS[] = {
    {"policy_by_layer", kvp_fig_policy_by_layer},
    {"head_maps", kvp_fig_head_maps},
    {"memory_vs_threshold", kvp_fig_memory_vs_threshold},
    {"loss_vs_budget", kvp_fig_loss_vs_budget},
    {"loss_ratio_per_prompt", kvp_fig_loss_ratio_per_prompt},
    {"budget_heatmap", kvp_fig_budget_heatmap},
    {"concentration", kvp_fig_concentration},
    {"fidelity_vs_memory", kvp_fig_fidelity_vs_memory},
    {"l1_vs_kl", kvp_fig_l1_vs_kl},
};
#define N_FIGS ((int)(sizeof FIGS / sizeof FIGS[0]))

/* Removes the work directory and everything in it (one level). */
static void remove_workdir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[PATH_MAX + 256];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int mkdir_p(const char *path) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    if (mkdir(tmp, 0777) && errno != EEXIST) return -1;
    struct stat st;
    return stat(tmp, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static int in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* The cairo terminals (and svg) this gnuplot must have for the formats asked
 * for; figures.pdf always needs pdfcairo. */
static int check_terminals(const kvp_ctx *c, const char *gnuplot, kv_error *err) {
    char script[PATH_MAX + 32];
    snprintf(script, sizeof script, "%s/terminals.gp", c->workdir);
    const char *text = "print GPVAL_TERMINALS\n";
    if (kvp_write_text(script, text, strlen(text), err)) return -1;
    char *msgs = NULL;
    int rc = kvp_gnuplot_run(gnuplot, script, &msgs, err);
    unlink(script);
    if (rc) return -1;
    const char *need[3] = {"pdfcairo", NULL, NULL};
    int n = 1;
    if (strstr(c->formats, "png")) need[n++] = "pngcairo";
    if (strstr(c->formats, "svg")) need[n++] = "svg";
    for (int i = 0; i < n; i++) {
        int found = 0;
        size_t l = strlen(need[i]);
        for (const char *p = msgs; p && (p = strstr(p, need[i])); p += l)
            if ((p == msgs || p[-1] == ' ' || p[-1] == '\n') && (p[l] == 0 || p[l] == ' ' || p[l] == '\n'))
                found = 1;
        if (!found) {
            free(msgs);
            return kv_fail(err, "%s has no '%s' terminal; install a gnuplot built with cairo "
                                "(Debian: apt-get install gnuplot-nox)", gnuplot, need[i]);
        }
    }
    free(msgs);
    return 0;
}

/* The multi-page PDF: loads every figure's script with kv_pages set. */
static int write_figures_gp(const kvp_ctx *c, const kvp_fig *figs, int n, kv_error *err) {
    double hmax = 0;
    for (int i = 0; i < n; i++)
        if (figs[i].height_in > hmax) hmax = figs[i].height_in;
    kvp_buf b = {0};
    kvp_buf_printf(&b,
                   "# figures.pdf: every kvplot figure on its own page (made by kvplot %s).\n"
                   "# Re-make: gnuplot figures.gp (from any directory). Each page loads the\n"
                   "# figure's own script with kv_pages set, so restyling NAME.gp changes its page.\n"
                   "# Pages share one size (the tallest figure); shorter figures sit at the top.\n"
                   "kv_dir = \"\"\n"
                   "if (exists(\"ARG0\") && strlen(ARG0) > 0) {\n"
                   "    kv_i = strlen(ARG0)\n"
                   "    while (kv_i > 0 && ARG0[kv_i:kv_i] ne \"/\") { kv_i = kv_i - 1 }\n"
                   "    if (kv_i > 0) { kv_dir = ARG0[1:kv_i] }\n"
                   "}\n"
                   "kv_figures_dir = kv_dir\n"
                   "kv_pages = 1\n"
                   "kv_page_h = %.3g   # inches\n"
                   "set encoding utf8\n"
                   "set terminal pdfcairo size %.3g, kv_page_h enhanced font \"Sans,7\" fontscale 0.75 linewidth 1\n"
                   "set output kv_figures_dir . \"figures.pdf\"\n",
                   KVP_VERSION, hmax, c->width_in);
    for (int i = 0; i < n; i++) kvp_buf_printf(&b, "load kv_figures_dir . \"%s.gp\"\n", figs[i].name);
    kvp_buf_printf(&b, "unset output\n");
    int rc = kvp_write_data(c, "figures.gp", &b, err);
    kvp_buf_free(&b);
    return rc;
}

int main(int argc, char **argv) {
    kvp_ctx c = {0};
    c.width_in = 3.3;
    c.dpi = 200;
    c.threshold = NAN;
    c.budget = -1;
    c.head_kind = "kv";
    c.max_cells = 256;
    c.label_tokens = 32;
    const char *outdir = NULL, *formats = "png,pdf", *only = NULL, *tpl_given = NULL;
    int force = 0;
    enum { O_TRACE = 256, O_WIDTH, O_DPI, O_HEADS, O_PROMPT, O_LAYERS, O_MAXCELLS, O_LABELS, O_ONLY, O_TPL, O_FORCE, O_FIDELITY };
    static const struct option opts[] = {
        {"outdir", required_argument, 0, 'o'},     {"trace", required_argument, 0, O_TRACE},
        {"format", required_argument, 0, 'f'},     {"threshold", required_argument, 0, 't'},
        {"budget", required_argument, 0, 'b'},     {"width-in", required_argument, 0, O_WIDTH},
        {"dpi", required_argument, 0, O_DPI},      {"heads", required_argument, 0, O_HEADS},
        {"prompt", required_argument, 0, O_PROMPT}, {"layers", required_argument, 0, O_LAYERS},
        {"max-cells", required_argument, 0, O_MAXCELLS}, {"label-tokens", required_argument, 0, O_LABELS},
        {"only", required_argument, 0, O_ONLY},    {"templates", required_argument, 0, O_TPL},
        {"force", no_argument, 0, O_FORCE},        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},          {"fidelity", required_argument, 0, O_FIDELITY},
        {0, 0, 0, 0}};
    int ch;
    long lv;
    while ((ch = getopt_long(argc, argv, "o:f:t:b:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': outdir = optarg; break;
        case O_TRACE: c.trace = optarg; break;
        case O_FIDELITY: kvp_fidelity_csv = optarg; break;
        case 'f': formats = optarg; break;
        case 't':
            if (kv_parse_double(optarg, &c.threshold) || c.threshold <= 0 || c.threshold > 1)
                return die("--threshold '%s': expected a number in (0, 1]", optarg);
            break;
        case 'b':
            if (kv_parse_long(optarg, LONG_MIN, LONG_MAX, &c.budget) || c.budget <= 0)
                return die("--budget '%s': expected a positive integer", optarg);
            break;
        case O_WIDTH:
            if (kv_parse_double(optarg, &c.width_in) || c.width_in < 1 || c.width_in > 20)
                return die("--width-in '%s': expected inches in [1, 20]", optarg);
            break;
        case O_DPI:
            if (kv_parse_long(optarg, LONG_MIN, LONG_MAX, &lv) || lv < 50 || lv > 1200)
                return die("--dpi '%s': expected an integer in [50, 1200]", optarg);
            c.dpi = (int)lv;
            break;
        case O_HEADS:
            if (strcmp(optarg, "kv") && strcmp(optarg, "query"))
                return die("--heads '%s': expected kv or query", optarg);
            c.head_kind = optarg;
            break;
        case O_PROMPT: c.prompt = optarg; break;
        case O_LAYERS: {
            char *s = optarg, *end;
            c.n_layers_sel = 0;
            while (*s) {
                errno = 0;
                long l = strtol(s, &end, 10);
                if (end == s || errno || l < 0 || (*end && *end != ','))
                    return die("--layers '%s': expected layer numbers separated by commas", optarg);
                if (c.n_layers_sel == KVP_MAX_LAYERS_SHOWN)
                    return die("--layers '%s': at most %d layers", optarg, KVP_MAX_LAYERS_SHOWN);
                c.layers_sel[c.n_layers_sel++] = (int)l;
                s = *end ? end + 1 : end;
            }
            if (!c.n_layers_sel) return die("--layers: empty list");
            break;
        }
        case O_MAXCELLS:
            if (kv_parse_long(optarg, LONG_MIN, LONG_MAX, &lv) || lv < 8 || lv > 4096)
                return die("--max-cells '%s': expected an integer in [8, 4096]", optarg);
            c.max_cells = (int)lv;
            break;
        case O_LABELS:
            if (kv_parse_long(optarg, LONG_MIN, LONG_MAX, &lv) || lv < 0 || lv > 1000)
                return die("--label-tokens '%s': expected an integer in [0, 1000]", optarg);
            c.label_tokens = (int)lv;
            break;
        case O_ONLY: only = optarg; break;
        case O_TPL: tpl_given = optarg; break;
        case O_FORCE: force = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("kvplot %s\n", KVP_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    c.results = argv[optind];
    if (!outdir) return die("no figure directory given (-o FIGDIR)");
    /* formats */
    {
        char fl[32] = "";
        const char *known[] = {"png", "pdf", "svg"};
        for (int k = 0; k < 3; k++)
            if (in_list(formats, known[k])) snprintf(fl + strlen(fl), sizeof fl - strlen(fl), "%s%s", *fl ? " " : "", known[k]);
        for (const char *p = formats; *p;) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (!((l == 3) && (!strncmp(p, "png", 3) || !strncmp(p, "pdf", 3) || !strncmp(p, "svg", 3))))
                return die("--format '%s': expected a comma-separated list of png, pdf, svg", formats);
            p = e ? e + 1 : p + l;
        }
        if (!*fl) return die("--format '%s': expected a comma-separated list of png, pdf, svg", formats);
        snprintf(c.formats, sizeof c.formats, "%s", fl);
    }
    if (only)
        for (const char *p = only; *p;) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            int ok = 0;
            for (int i = 0; i < N_FIGS; i++)
                if (strlen(FIGS[i].name) == l && !strncmp(FIGS[i].name, p, l)) ok = 1;
            if (!ok) return die("--only '%s': unknown figure '%.*s' (see --help)", only, (int)l, p);
            p = e ? e + 1 : p + l;
        }
    struct stat st;
    if (stat(c.results, &st) != 0 || !S_ISDIR(st.st_mode))
        return die("%s: not a directory (expected kvanalyze's output directory)", c.results);
    if (c.trace && access(c.trace, R_OK) != 0) return die("%s: cannot read the trace: %s", c.trace, strerror(errno));

    kv_error err;
    char gnuplot[PATH_MAX], tpl_dir[PATH_MAX];
    if (kvp_find_gnuplot(gnuplot, sizeof gnuplot, &err)) return die("%s", err.msg);
    if (kvp_template_dir(tpl_given, tpl_dir, sizeof tpl_dir, &err)) return die("%s", err.msg);
    c.tpl_dir = tpl_dir;
    int created = !kv_path_exists(outdir);
    if (mkdir_p(outdir)) return die("%s: cannot create the figure directory: %s", outdir, strerror(errno));
    char work[PATH_MAX];
    snprintf(work, sizeof work, "%s/.kvplot-XXXXXX", outdir);
    if (!mkdtemp(work)) return die("%s: cannot create a work directory: %s", outdir, strerror(errno));
    c.workdir = work;

    int status = 1;
    kvp_fig figs[N_FIGS];
    if (check_terminals(&c, gnuplot, &err)) {
        die("%s", err.msg);
        remove_workdir(work);
        if (created) rmdir(outdir);
        return 1;
    }
    int n_made = 0;
    char *msgs = NULL;
    /* 1. data and scripts */
    for (int i = 0; i < N_FIGS; i++) {
        if (only && !in_list(only, FIGS[i].name)) continue;
        kvp_fig f = {0};
        int rc = FIGS[i].fn(&c, &f, &err);
        if (rc < 0) {
            die("%s: %s", FIGS[i].name, err.msg);
            goto out;
        }
        if (rc == 1) {
            fprintf(stderr, "kvplot: skipping %s: %s\n", FIGS[i].name, err.msg);
            continue;
        }
        figs[n_made++] = f;
    }
    if (!n_made) {
        die("%s: no figure could be made from these results", c.results);
        goto out;
    }
    if (write_figures_gp(&c, figs, n_made, &err)) {
        die("%s", err.msg);
        goto out;
    }
    /* 2. refuse to replace existing files */
    DIR *d = opendir(work);
    struct dirent *e;
    if (!force && d) {
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char dst[PATH_MAX + 256];
            snprintf(dst, sizeof dst, "%s/%s", outdir, e->d_name);
            if (kv_path_exists(dst)) {
                closedir(d);
                die("%s exists (use --force to replace the figures in %s)", dst, outdir);
                goto out;
            }
        }
    }
    if (d) closedir(d);
    /* 3. gnuplot */
    for (int i = 0; i <= n_made; i++) {
        const char *name = i < n_made ? figs[i].name : "figures";
        char script[PATH_MAX + 64];
        snprintf(script, sizeof script, "%s/%s.gp", work, name);
        if (kvp_gnuplot_run(gnuplot, script, &msgs, &err)) {
            die("%s: %s", name, err.msg);
            goto out;
        }
        if (msgs && *msgs) fprintf(stderr, "kvplot: %s: gnuplot says: %s\n", name, msgs);
        free(msgs);
        msgs = NULL;
        /* every promised file must be there */
        char fl[32];
        snprintf(fl, sizeof fl, "%s", i < n_made ? c.formats : "pdf");
        for (char *save = NULL, *fmt = strtok_r(fl, " ", &save); fmt; fmt = strtok_r(NULL, " ", &save)) {
            char out[PATH_MAX + 64];
            snprintf(out, sizeof out, "%s/%s.%s", work, name, fmt);
            if (stat(out, &st) != 0 || st.st_size == 0) {
                die("%s: gnuplot did not write %s.%s", name, name, fmt);
                goto out;
            }
        }
    }
    /* 4. move everything into FIGDIR */
    d = opendir(work);
    if (!d) {
        die("%s: %s", work, strerror(errno));
        goto out;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char src[PATH_MAX + 256], dst[PATH_MAX + 256];
        snprintf(src, sizeof src, "%s/%s", work, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", outdir, e->d_name);
        if (rename(src, dst)) {
            die("%s: cannot move into place: %s", dst, strerror(errno));
            closedir(d);
            goto out;
        }
    }
    closedir(d);
    char exts[32];
    snprintf(exts, sizeof exts, "%s", c.formats);
    for (char *x = exts; *x; x++)
        if (*x == ' ') *x = ',';
    for (int i = 0; i < n_made; i++)
        fprintf(stderr, "kvplot: %s/%s.{%s} (data .dat, script .gp)%s%s\n", outdir, figs[i].name, exts,
                figs[i].note[0] ? "; note: " : "", figs[i].note);
    fprintf(stderr, "kvplot: %s/figures.pdf (%d page%s)\n", outdir, n_made, n_made == 1 ? "" : "s");
    status = 0;
out:
    free(msgs);
    remove_workdir(work);
    if (status && created) rmdir(outdir); /* only when empty: a failed run leaves nothing */
    return status;
}
