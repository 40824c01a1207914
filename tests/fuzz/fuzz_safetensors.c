/* libFuzzer: the safetensors header reader and the tensors it accepts. */
#include "tests/fuzz/fuzz_common.h"
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("model.safetensors", data, size);
    kv_checkpoint ck;
    memset(&ck, 0, sizeof ck);
    kv_error err;
    if (kv_checkpoint_add_file(&ck, path, &err) == 0) {
        /* every accepted range must be readable and convertible */
        float buf[256];
        for (int i = 0; i < ck.n_tensors; i++) {
            const kv_tensor *t = &ck.tensors[i];
            if (kv_checkpoint_find(&ck, t->name) != t) abort();
            if (t->dtype == KV_F32 || t->dtype == KV_F16 || t->dtype == KV_BF16) {
                size_t n = (size_t)t->numel < 256 ? (size_t)t->numel : 256;
                kv_to_f32(buf, t->data, t->dtype, n);
                if (t->numel > 0) { /* and the last element of the range */
                    size_t es = kv_dtype_size(t->dtype);
                    kv_to_f32(buf, (const char *)t->data + (size_t)(t->numel - 1) * es, t->dtype, 1);
                }
            }
        }
    }
    kv_checkpoint_close(&ck);
    return 0;
}
