/* The kernel checks (tests/kernel_checks.h) on the CPU backend. */
#include "tests/kernel_checks.h"

static void setup(void) { K = kv_kernels_cpu(2, NULL); }
static void teardown(void) { K->destroy(K); }

/* --device auto means the CPU until the CUDA backend is validated on a GPU (kernels/backend.c) */
START_TEST(auto_is_the_cpu) {
    kv_error err = {{0}};
    kv_kernels *k = kv_kernels_open("auto", 1, &err);
    ck_assert_msg(k != NULL, "%s", err.msg);
    ck_assert_str_eq(k->name, "cpu");
    k->destroy(k);
}
END_TEST

int main(void) {
    Suite *s = suite_create("kernels-cpu");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    add_kernel_checks(tc);
    tcase_add_test(tc, auto_is_the_cpu);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
