/* Prompt sets: JSONL files, one {"id": ..., "text": ...} or
 * {"id": ..., "input_ids": [...]} object per line, or the built-in set. */
#ifndef KV_PROMPTS_H
#define KV_PROMPTS_H

#include <stdint.h>
#include "common/error.h"

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

#endif
