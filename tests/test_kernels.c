/* The kernel checks (tests/kernel_checks.h) on the CPU backend. */
#include "tests/kernel_checks.h"

static void setup(void) { K = kv_kernels_cpu(2, NULL); }
static void teardown(void) { K->destroy(K); }

int main(void) {
    Suite *s = suite_create("kernels-cpu");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    add_kernel_checks(tc);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
