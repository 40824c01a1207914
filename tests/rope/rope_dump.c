/* Writes kvtrace's RoPE tables for a config.json, for tests/test_rope_hf.py
 * and tools/rope_precision.py:
 *     rope_dump CONFIG.json N f32|f64 OUT.bin
 * OUT.bin holds cos [N, hd/2] then sin [N, hd/2], float32, for an N-token pass. */
#include <stdio.h>
#include <stdlib.h>

#include "model/config.h"

int main(int argc, char **argv) {
    kv_config cfg;
    kv_error err = {{0}};
    kv_rope_precision prec;
    int n = argc == 5 ? atoi(argv[2]) : 0;
    if (argc != 5 || n < 1 || kv_rope_precision_parse(argv[3], &prec)) {
        fprintf(stderr, "usage: rope_dump CONFIG.json N f32|f64 OUT.bin\n");
        return 2;
    }
    if (kv_config_load(&cfg, argv[1], &err)) {
        fprintf(stderr, "rope_dump: %s\n", err.msg);
        return 1;
    }
    size_t count = (size_t)n * (cfg.head_dim / 2);
    float *cs = malloc(count * sizeof(float)), *sn = malloc(count * sizeof(float));
    FILE *f = fopen(argv[4], "wb");
    int rc = !cs || !sn || !f || kv_rope_tables(&cfg, n, prec, cs, sn, &err) || fwrite(cs, sizeof(float), count, f) != count ||
             fwrite(sn, sizeof(float), count, f) != count;
    if (f && fclose(f)) rc = 1;
    if (rc) fprintf(stderr, "rope_dump: %s\n", err.msg[0] ? err.msg : "cannot write the tables");
    free(cs);
    free(sn);
    kv_config_free(&cfg);
    return rc;
}
