/* libFuzzer: the prompt JSONL reader. */
#include "format/trace.h"
#include "tests/fuzz/fuzz_common.h"
#include "tokenizer/prompts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("prompts.jsonl", data, size);
    kv_prompt_set ps;
    kv_error err;
    if (kv_prompts_load(&ps, path, &err) == 0) {
        for (int i = 0; i < ps.n; i++) {
            const kv_prompt *p = &ps.items[i];
            if (!kv_prompt_id_valid(p->id) || (!p->text == !p->ids)) abort(); /* the reader's promises */
            for (int j = 0; j < i; j++)
                if (!strcmp(ps.items[j].id, p->id)) abort();
        }
        kv_prompts_free(&ps);
    }
    return 0;
}
