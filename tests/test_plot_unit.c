/* Unit tests of kvplot's building blocks: gnuplot string literals (token
 * pieces shown as themselves), template filling, the CSV reader, results
 * JSON readers and quantiles. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plots/csv.h"
#include "plots/gp.h"
#include "plots/plot.h"
#include "policy/policy_file.h"

static char *lit(const char *s, int mode) {
    kvp_buf b = {0};
    kvp_gp_string(&b, s, mode);
    return b.s;
}

START_TEST(string_literals) {
    char *s;
    s = lit("it's", 0);
    ck_assert_str_eq(s, "'it''s'");
    free(s);
    s = lit("50%", KVP_GP_FORMAT);
    ck_assert_str_eq(s, "'50%%'");
    free(s);
    s = lit("50%", 0);
    ck_assert_str_eq(s, "'50%'");
    free(s);
    s = lit("a\\b\"c", KVP_GP_DQUOTE);
    ck_assert_str_eq(s, "\"a\\\\b\\\"c\"");
    free(s);
    s = lit("\n", KVP_GP_DQUOTE); /* a newline piece shows as backslash-n */
    ck_assert_str_eq(s, "\"\\\\n\"");
    free(s);
    s = lit("\n\x01", 0);
    ck_assert_str_eq(s, "'\\n\\x01'");
    free(s);
    s = lit("▁café_{x}^@&", KVP_GP_DQUOTE); /* UTF-8 and markup characters pass through */
    ck_assert_str_eq(s, "\"▁café_{x}^@&\"");
    free(s);
}
END_TEST

static char *tmpdir_with(const char *name, const char *text) {
    char *dir = strdup("/tmp/kvplot-unit-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return dir;
}

static void rmfile(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

START_TEST(template_fill) {
    char *dir = tmpdir_with("common.gp", "#@@ header\nname = @NAME@\n#@@ begin\ndo {\n#@@ end\n}\n");
    char p[512];
    snprintf(p, sizeof p, "%s/fig.gp", dir);
    FILE *f = fopen(p, "w");
    fputs("# a@b.c stays\n@HEADER@x = @X@\n@BEGIN@plot x\n@END@", f);
    fclose(f);
    kvp_vars v = {0};
    kvp_vars_str(&v, "NAME", "fig");
    kvp_vars_set(&v, "X", "%d", 42);
    kv_error err;
    char *out = kvp_template_fill(dir, "fig.gp", &v, &err);
    ck_assert_ptr_nonnull(out);
    ck_assert_str_eq(out, "# a@b.c stays\nname = 'fig'\nx = 42\ndo {\nplot x\n}\n");
    free(out);
    /* a placeholder without a value is an error naming it */
    f = fopen(p, "w");
    fputs("@HEADER@y = @MISSING@\n", f);
    fclose(f);
    ck_assert_ptr_null(kvp_template_fill(dir, "fig.gp", &v, &err));
    ck_assert(strstr(err.msg, "@MISSING@") != NULL);
    kvp_vars_free(&v);
    rmfile(dir, "fig.gp");
    rmfile(dir, "common.gp");
    rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(csv_reader) {
    char *dir = tmpdir_with("t.csv", "a,b,c\r\n1,x,2.5\n3,y,nan\n\n");
    char p[512];
    snprintf(p, sizeof p, "%s/t.csv", dir);
    kv_error err;
    kvp_csv *t = kvp_csv_read(p, &err);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->nrows, 2);
    ck_assert_int_eq(t->ncols, 3);
    int c = kvp_csv_col(t, "c", &err);
    ck_assert_int_eq(c, 2);
    double v;
    ck_assert_int_eq(kvp_csv_num(t, 0, c, &v, &err), 0);
    ck_assert_double_eq(v, 2.5);
    ck_assert_int_eq(kvp_csv_num(t, 1, c, &v, &err), -1);
    ck_assert(strstr(err.msg, "column 'c'") && strstr(err.msg, "nan"));
    ck_assert_int_eq(kvp_csv_col(t, "zzz", &err), -1);
    ck_assert(strstr(err.msg, "no column 'zzz'"));
    ck_assert_str_eq(kvp_csv_str(t, 1, 1), "y");
    kvp_csv_free(t);
    FILE *f = fopen(p, "w");
    fputs("a,b\n1,2,3\n", f);
    fclose(f);
    ck_assert_ptr_null(kvp_csv_read(p, &err));
    ck_assert(strstr(err.msg, "line 2 has 3 fields"));
    rmfile(dir, "t.csv");
    rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(policies_json) {
    const char *js =
        "{\"parameters\": {\"model\": \"m\", \"r_local\": 0.3, \"r_frequent\": 0.3, \"gqa\": \"mean\"},"
        " \"model\": {\"n_layers\": 4, \"n_heads\": 2, \"n_kv_heads\": 1, \"head_dim\": 8, \"hidden_size\": 16},"
        " \"policies\": [{\"threshold\": 0.95, \"memory\": {\"kept_fraction\": 0.4},"
        " \"layers\": [{\"layer\": 3, \"kv_heads\": [{\"head\": 0, \"policy\": \"special+punct\","
        " \"components\": [\"special\", \"punct\"], \"kept_fraction\": 0.1,"
        " \"recovery\": {\"special\": 0.5, \"punct\": 0.96, \"frequent\": 0.97, \"local\": 0.99, \"full\": 1}}],"
        " \"query_heads\": []}]}]}";
    char *dir = tmpdir_with("policies.json", js);
    char p[512];
    snprintf(p, sizeof p, "%s/policies.json", dir);
    kv_error err;
    kv_policy_file *pol = kv_policies_read(p, &err);
    ck_assert_ptr_nonnull(pol);
    ck_assert_str_eq(pol->model, "m");
    ck_assert_int_eq(pol->n_thr, 1);
    const kv_threshold_policy *t = kv_policies_at(pol, 0.95);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->layers[0].layer, 3);
    ck_assert_int_eq(t->layers[0].kv[0].policy, 1);
    ck_assert_int_eq(t->layers[0].kv[0].components, KV_COMP_SPECIAL | KV_COMP_PUNCT);
    ck_assert_int_eq(pol->n_kv_heads, 1);
    ck_assert_double_eq(t->layers[0].kv[0].recovery[1], 0.96);
    ck_assert_double_eq(t->mem_kept_fraction, 0.4);
    ck_assert_ptr_null(kv_policies_at(pol, 0.9));
    kv_policies_free(pol);
    FILE *f = fopen(p, "w");
    fputs("{\"parameters\": {\"r_local\": 0.3, \"r_frequent\": 0.3, \"gqa\": \"mean\"},"
          " \"model\": {\"n_layers\": 4, \"n_heads\": 2, \"n_kv_heads\": 1, \"head_dim\": 8, \"hidden_size\": 16},"
          " \"policies\": [{\"threshold\": 0.9, \"memory\": {\"kept_fraction\": 1}, \"layers\": [{\"layer\": 0,"
          " \"kv_heads\": [{\"head\": 0, \"policy\": \"weird\"}], \"query_heads\": []}]}]}",
          f);
    fclose(f);
    ck_assert_ptr_null(kv_policies_read(p, &err));
    ck_assert(strstr(err.msg, "unknown policy 'weird'"));
    rmfile(dir, "policies.json");
    rmdir(dir);
    free(dir);
}
END_TEST

/* The one writer and the one reader agree: what is written reads back the same. */
START_TEST(policies_round_trip) {
    kv_head_policy heads[3] = {
        {.head = 0, .policy = KV_RUNG_LOCAL, .components = kv_rung_components(KV_RUNG_LOCAL), .kept_fraction = 0.25,
         .recovery = {0.1, 0.2, 0.3, 0.97, 1}},
        {.head = 0, .policy = KV_RUNG_SPECIAL, .components = kv_rung_components(KV_RUNG_SPECIAL), .kept_fraction = 0.01,
         .recovery = {0.99, 0.995, 0.999, 1, 1}},
        {.head = 1, .policy = KV_RUNG_FULL, .components = kv_rung_components(KV_RUNG_FULL), .kept_fraction = 1,
         .recovery = {0.1, 0.2, 0.3, 0.4, 1}}};
    kv_layer_policy layer = {.layer = 2, .n_kv = 1, .n_q = 2, .kv = heads, .q = heads + 1};
    kv_threshold_policy thr = {.threshold = 0.93, .n_layers = 1, .layers = &layer, .mem_kept_fraction = 0.25,
                               .mean_tokens = 100, .kv_bytes_full = 1e4, .kv_bytes_kept = 2.5e3};
    char *ids[] = {"a", "b"};
    int traced[] = {2};
    kv_policy_file p = {.r_local = 0.25, .r_frequent = 0.1, .gqa_max = 1, .skip_rows = 3, .rows = "all",
                        .trace = "t.h5", .model = "m", .prompts = ids, .n_prompts = 2, .n_layers = 3, .n_heads = 2,
                        .n_kv_heads = 1, .head_dim = 4, .hidden_size = 8, .traced = traced, .n_traced = 1,
                        .n_thr = 1, .thr = &thr};
    char *dir = tmpdir_with("x", "");
    char path[512];
    snprintf(path, sizeof path, "%s/policies.json", dir);
    FILE *f = fopen(path, "w");
    kv_error err;
    ck_assert_int_eq(kv_policies_write(f, &p, &err), 0);
    fclose(f);
    kv_policy_file *q = kv_policies_read(path, &err);
    ck_assert_msg(q != NULL, "%s", err.msg);
    ck_assert_double_eq(q->r_local, 0.25);
    ck_assert_double_eq(q->r_frequent, 0.1);
    ck_assert_int_eq(q->gqa_max, 1);
    ck_assert_int_eq(q->skip_rows, 3);
    ck_assert_str_eq(q->rows, "all");
    ck_assert_int_eq(q->n_prompts, 2);
    ck_assert_str_eq(q->prompts[1], "b");
    ck_assert_int_eq(q->n_traced, 1);
    ck_assert_int_eq(q->traced[0], 2);
    const kv_threshold_policy *t = kv_policies_at(q, 0.93);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->layers[0].layer, 2);
    ck_assert_int_eq(t->layers[0].n_q, 2);
    for (int i = 0; i < 3; i++) {
        const kv_head_policy *a = i == 0 ? &t->layers[0].kv[0] : &t->layers[0].q[i - 1], *b = &heads[i];
        ck_assert_int_eq(a->head, b->head);
        ck_assert_int_eq(a->policy, b->policy);
        ck_assert_int_eq(a->components, b->components);
        ck_assert_double_eq(a->kept_fraction, b->kept_fraction);
        for (int r = 0; r < KV_N_RUNGS; r++) ck_assert_double_eq(a->recovery[r], b->recovery[r]);
    }
    ck_assert_double_eq(t->kv_bytes_kept, 2.5e3);
    kv_policies_free(q);

    int kb[2] = {40, 24};
    kv_budget_layer bl = {.layer = 2, .layer_budget = 32, .n_kv = 2, .kv_budgets = kb};
    kv_budget_set bs = {.budget = 32, .n_layers = 1, .layers = &bl};
    kv_budget_file b = {.scorer = "snapkv", .pool = "max", .eval = "future:8", .kernel = 7, .obs_window = 8,
                        .alpha = 0.2, .trace = "t.h5", .model = "m", .n = 1, .sets = &bs};
    snprintf(path, sizeof path, "%s/budgets.json", dir);
    f = fopen(path, "w");
    ck_assert_int_eq(kv_budgets_write(f, &b, &err), 0);
    fclose(f);
    kv_budget_file *c = kv_budgets_read(path, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_str_eq(c->eval, "future:8");
    ck_assert_int_eq(c->obs_window, 8);
    ck_assert_int_eq(c->sets[0].layers[0].layer_budget, 32);
    ck_assert_int_eq(c->sets[0].layers[0].n_kv, 2);
    ck_assert_int_eq(c->sets[0].layers[0].kv_budgets[1], 24);
    kv_budgets_free(c);
    rmfile(dir, "policies.json");
    rmfile(dir, "budgets.json");
    rmfile(dir, "x");
    rmdir(dir);
    free(dir);
}
END_TEST

/* tic steps of 1, 2, 5, 10, ...: a 30-layer model gets 0, 5, ..., 25 */
START_TEST(tic_steps) {
    ck_assert_int_eq(kvp_tic_step(6, 8), 1);
    ck_assert_int_eq(kvp_tic_step(8, 8), 1);
    ck_assert_int_eq(kvp_tic_step(16, 8), 2);
    ck_assert_int_eq(kvp_tic_step(30, 8), 5);
    ck_assert_int_eq(kvp_tic_step(80, 8), 10);
    ck_assert_int_eq(kvp_tic_step(81, 8), 20);
    ck_assert_int_eq(kvp_tic_step(1, 40), 1);
}
END_TEST

START_TEST(quantiles) {
    double x[] = {4, 1, 3, 2};
    ck_assert_double_eq_tol(kvp_quantile(x, 4, 0.25), 1.75, 1e-12); /* numpy's linear rule */
    ck_assert_double_eq_tol(kvp_quantile(x, 4, 0.5), 2.5, 1e-12);
    ck_assert_double_eq_tol(kvp_quantile(x, 4, 1.0), 4, 1e-12);
    double one[] = {7};
    ck_assert_double_eq(kvp_quantile(one, 1, 0.75), 7);
    ck_assert(isnan(kvp_quantile(one, 0, 0.5)));
}
END_TEST

int main(void) {
    Suite *s = suite_create("plot_unit");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, string_literals);
    tcase_add_test(tc, template_fill);
    tcase_add_test(tc, csv_reader);
    tcase_add_test(tc, policies_json);
    tcase_add_test(tc, policies_round_trip);
    tcase_add_test(tc, quantiles);
    tcase_add_test(tc, tic_steps);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf ? 1 : 0;
}
