/* Test helper for tests/test_tokenizer_golden.sh: encodes each text file
 * with kv_tokenizer and prints one JSON object per file (one per line):
 *   {"file", "ids" (post-processor applied), "ids_ns" (without),
 *    "dec" (decode(ids)), "dec_skip" (decode(ids, skip_special)),
 *    "dec_ns" (decode(ids_ns)), "ms" (encode time)}
 * usage: tok_dump TOKENIZER_JSON FILE... */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tokenizer/tokenizer.h"

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long L = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)L + 1);
    if (s && fread(s, 1, (size_t)L, f) != (size_t)L) L = 0;
    fclose(f);
    if (s) s[L] = 0;
    *n = (size_t)L;
    return s;
}

static cJSON *id_array(const int32_t *ids, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tok_dump TOKENIZER_JSON FILE...\n");
        return 2;
    }
    kv_error err;
    kv_tokenizer *t = kv_tokenizer_load(argv[1], &err);
    if (!t) {
        fprintf(stderr, "tok_dump: %s\n", err.msg);
        return 1;
    }
    for (int k = 2; k < argc; k++) {
        size_t n;
        char *text = slurp(argv[k], &n);
        if (!text) {
            fprintf(stderr, "tok_dump: cannot read %s\n", argv[k]);
            return 1;
        }
        int32_t *ids, *ids_ns;
        size_t n_ids, n_ns;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int rc = kv_tokenizer_encode(t, text, n, 1, &ids, &n_ids, &err);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (rc || kv_tokenizer_encode(t, text, n, 0, &ids_ns, &n_ns, &err)) {
            fprintf(stderr, "tok_dump: %s: %s\n", argv[k], err.msg);
            return 1;
        }
        char *dec = kv_tokenizer_decode(t, ids, n_ids, 0, &err);
        char *dec_skip = dec ? kv_tokenizer_decode(t, ids, n_ids, 1, &err) : NULL;
        char *dec_ns = dec_skip ? kv_tokenizer_decode(t, ids_ns, n_ns, 0, &err) : NULL;
        if (!dec_ns) {
            fprintf(stderr, "tok_dump: %s: %s\n", argv[k], err.msg);
            return 1;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", argv[k]);
        cJSON_AddItemToObject(o, "ids", id_array(ids, n_ids));
        cJSON_AddItemToObject(o, "ids_ns", id_array(ids_ns, n_ns));
        cJSON_AddStringToObject(o, "dec", dec);
        cJSON_AddStringToObject(o, "dec_skip", dec_skip);
        cJSON_AddStringToObject(o, "dec_ns", dec_ns);
        cJSON_AddNumberToObject(o, "ms", (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6);
        char *s = cJSON_PrintUnformatted(o);
        puts(s);
        free(s);
        cJSON_Delete(o);
        free(ids), free(ids_ns), free(dec), free(dec_skip), free(dec_ns), free(text);
    }
    kv_tokenizer_free(t);
    return 0;
}
