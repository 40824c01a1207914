/* Helpers shared by the figure modules: policy names, input and output
 * paths, writing data files and filled scripts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fileio.h"
#include "plots/plot.h"

const char *const kvp_policy_labels[KV_N_RUNGS] = {"special", "+punct", "+frequent", "+local", "full"};

char *kvp_input(const kvp_ctx *c, const char *file) {
    kv_error e;
    char *p = kv_path_join(c->results, file, &e);
    struct stat st;
    if (p && stat(p, &st) == 0 && S_ISREG(st.st_mode)) return p;
    free(p);
    return NULL;
}

char *kvp_output(const kvp_ctx *c, const char *file, kv_error *err) {
    return kv_path_join(c->workdir, file, err);
}

int kvp_write_data(const kvp_ctx *c, const char *file, const kvp_buf *b, kv_error *err) {
    if (b->oom) return kv_fail(err, "%s: out of memory", file);
    char *p = kvp_output(c, file, err);
    if (!p) return -1;
    int rc = kvp_write_text(p, b->s ? b->s : "", b->len, err);
    free(p);
    return rc;
}

int kvp_write_script(const kvp_ctx *c, const kvp_fig *f, const char *title, kvp_vars *v, kv_error *err) {
    kvp_vars_str(v, "NAME", f->name);
    kvp_vars_str(v, "FORMATS", c->formats);
    kvp_vars_set(v, "WIDTH_IN", "%.3g", c->width_in);
    kvp_vars_set(v, "HEIGHT_IN", "%.3g", f->height_in);
    kvp_vars_set(v, "DPI", "%d", c->dpi);
    kvp_vars_str(v, "TITLE", title);
    char tpl[64], out[64];
    snprintf(tpl, sizeof tpl, "%s.gp", f->name);
    snprintf(out, sizeof out, "%s.gp", f->name);
    char *script = kvp_template_fill(c->tpl_dir, tpl, v, err);
    if (!script) return -1;
    char *p = kvp_output(c, out, err);
    int rc = p ? kvp_write_text(p, script, strlen(script), err) : -1;
    free(p);
    free(script);
    return rc;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int kvp_tic_step(int n, int max_labels) {
    static const int mantissa[] = {1, 2, 5};
    for (int scale = 1;; scale *= 10)
        for (int i = 0; i < 3; i++)
            if ((n + mantissa[i] * scale - 1) / (mantissa[i] * scale) <= max_labels) return mantissa[i] * scale;
}

double kvp_quantile(double *x, int n, double q) {
    if (n <= 0) return NAN;
    qsort(x, n, sizeof *x, cmp_double);
    double pos = q * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1) return x[n - 1];
    double t = pos - i;
    return x[i] * (1 - t) + x[i + 1] * t;
}
