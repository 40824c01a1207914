/* The kernel checks (tests/kernel_checks.h) on the CUDA backend, the same
 * references the CPU backend is held to. Skipped (exit 77) without a GPU or
 * without a CUDA build. */
#include <stdio.h>

#include "tests/kernel_checks.h"

static void setup(void) {
    kv_error err;
    K = kv_kernels_cuda(0, &err);
    ck_assert_msg(K != NULL, "%s", err.msg);
}
static void teardown(void) { K->destroy(K); }

int main(void) {
    if (!kv_cuda_built()) {
        printf("SKIPPED: this build has no CUDA backend\n");
        return 77;
    }
    if (kv_cuda_device_count() == 0) {
        printf("SKIPPED: no GPU on this machine\n");
        return 77;
    }
    Suite *s = suite_create("kernels-cuda");
    TCase *tc = tcase_create("cuda");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    add_kernel_checks(tc);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* a CUDA context does not survive fork */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
