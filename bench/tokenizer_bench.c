/* Tokenizer benchmark: encodes a text file with a tokenizer.json and reports
 * the best of R runs (load time separately).
 * usage: tokenizer_bench TOKENIZER_JSON TEXT_FILE [RUNS]
 * prints: one line "tokenizer_bench <name>: load X s; encode N bytes -> M ids:
 *         best T s (MB/s), with post-processor" */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tokenizer/tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tokenizer_bench TOKENIZER_JSON TEXT_FILE [RUNS]\n");
        return 2;
    }
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "tokenizer_bench: cannot open %s\n", argv[2]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "tokenizer_bench: cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);
    kv_error err;
    double t0 = now();
    kv_tokenizer *t = kv_tokenizer_load(argv[1], &err);
    double load = now() - t0;
    if (!t) {
        fprintf(stderr, "tokenizer_bench: %s\n", err.msg);
        return 1;
    }
    double best = 1e30;
    size_t n_ids = 0;
    for (int r = 0; r < runs; r++) {
        int32_t *ids;
        t0 = now();
        if (kv_tokenizer_encode(t, text, (size_t)n, 1, &ids, &n_ids, &err)) {
            fprintf(stderr, "tokenizer_bench: %s\n", err.msg);
            return 1;
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
        free(ids);
    }
    printf("kv_tokenizer: load %.3f s; encode %ld bytes -> %zu ids: best of %d %.3f s (%.2f MB/s)\n", load, n,
           n_ids, runs, best, n / best / 1e6);
    kv_tokenizer_free(t);
    free(text);
    return 0;
}
