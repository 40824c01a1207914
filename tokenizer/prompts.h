/* Prompt sets: JSONL files, one {"id": ..., "text": ...} or
 * {"id": ..., "input_ids": [...]} object per line, or the built-in set. */
#ifndef KV_PROMPTS_H
#define KV_PROMPTS_H

#include <stdint.h>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    char *id;
    char *text;       /* NULL when given as input_ids */
    int32_t *ids;     /* [n_ids]; NULL for text prompts until tokenized */
    int n_ids;
    int line;         /* 1-based line in the file, 0 for built-in prompts */
} kv_prompt;

typedef struct {
    kv_prompt *items; /* [n] */
    int n;
    char source[512]; /* file path or "built-in prompts" */
} kv_prompt_set;

int kv_prompts_load(kv_prompt_set *s, const char *path, kv_error *err);
int kv_prompts_builtin(kv_prompt_set *s, kv_error *err);
void kv_prompts_free(kv_prompt_set *s);

/* Encodes every text prompt with tok (NULL when there is no tokenizer.json:
 * then only input_ids prompts are accepted; tok_path names the missing file)
 * and checks each prompt: at least one token, at most max_tokens (max_what
 * says where that limit comes from, e.g. "--max-tokens 8192"; prompts are
 * never truncated), every id inside the vocabulary [0, vocab_size). */
int kv_prompts_prepare(kv_prompt_set *s, const kv_tokenizer *tok, const char *tok_path, int vocab_size,
                       long max_tokens, const char *max_what, kv_error *err);

#endif
