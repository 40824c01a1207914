/* libFuzzer: tokenizer.json loading together with encoding arbitrary text.
 * Input: a tokenizer.json document, a NUL byte, then the text to encode
 * (no NUL: the whole input is the document and the text is fixed). */
#include "tests/fuzz/fuzz_common.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "Hello, world! 123 \xc3\xa9t\xc3\xa9 \xe2\x80\x94 ok.\n";
    size_t text_len = nul ? size - json_len - 1 : strlen(text);
    kv_error err;
    kv_tokenizer *t = kv_tokenizer_load_json((const char *)data, json_len, "fuzz.json", &err);
    if (!t) return 0;
    int32_t *ids = NULL;
    size_t n = 0;
    for (int special = 0; special < 2; special++) {
        if (kv_tokenizer_encode(t, text, text_len, special, &ids, &n, &err) == 0) {
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= kv_tokenizer_vocab_size(t)) abort();
            char *back = kv_tokenizer_decode(t, ids, n, 0, &err);
            free(back);
            char **pieces = NULL;
            uint8_t *flags = malloc(n ? n : 1);
            const char *marks[1] = {"[INST]"};
            if (kv_tokenizer_token_info(t, ids, n, NULL, 0, marks, 1, &pieces, flags, &err) == 0 && pieces) {
                for (size_t i = 0; i < n; i++) free(pieces[i]);
                free(pieces);
            }
            free(flags);
            free(ids);
            ids = NULL;
        }
    }
    kv_tokenizer_free(t);
    return 0;
}
