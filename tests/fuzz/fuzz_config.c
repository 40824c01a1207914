/* libFuzzer: config.json reading (architectures, sizes, rope scaling). */
#include "tests/fuzz/fuzz_common.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("config.json", data, size);
    kv_config cfg;
    kv_error err;
    if (kv_config_load(&cfg, path, &err) == 0) {
        if (cfg.head_dim <= 0 || cfg.n_heads % cfg.n_kv_heads) abort(); /* accepted configs are consistent */
        if (cfg.head_dim <= 4096) {
            double inv[2048], scale;
            kv_rope_inv_freq(&cfg, 4 * cfg.max_position_embeddings, KV_ROPE_F32, inv, &scale);
        }
        kv_config_free(&cfg);
    }
    return 0;
}
