#include "tokenizer/prompts.h"

#include <limits.h>

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"
#include "format/trace.h"

/* A few short, varied English passages: prose with punctuation, a list, a
 * dialogue with quotes, and code-like text, so that every head kind shows. */
static const struct { const char *id, *text; } BUILTIN[] = {
    {"prose", "The river rose slowly through the night, and by morning the lower fields were under water. "
              "Farmers moved their animals to the hills, where the ground was dry; children watched from the "
              "church steps. Nobody had seen a flood like it since the winter of 1927."},
    {"dialogue", "\"Are you coming with us?\" she asked.\n\"Not today,\" he said. \"I have letters to write, and "
                 "the post leaves at four.\"\nShe laughed. \"Letters! Who writes letters any more?\""},
    {"list", "Things to pack for the trip:\n1. two warm sweaters,\n2. a rain jacket,\n3. the map (the old one),\n"
             "4. bread, cheese and apples.\nDo not forget the keys!"},
    {"facts", "Water boils at 100 degrees Celsius at sea level. At higher altitudes the air pressure is lower, so "
              "water boils at a lower temperature: about 90 degrees at 3,000 metres. This is why cooking takes "
              "longer in the mountains."},
};

void kv_prompts_free(kv_prompt_set *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->items[i].id);
        free(s->items[i].text);
        free(s->items[i].ids);
    }
    free(s->items);
    memset(s, 0, sizeof *s);
}

int kv_prompts_builtin(kv_prompt_set *s, kv_error *err) {
    memset(s, 0, sizeof *s);
    int n = (int)(sizeof BUILTIN / sizeof BUILTIN[0]);
    s->items = kv_calloc(n, sizeof *s->items, err);
    if (!s->items) return -1;
    for (int i = 0; i < n; i++) {
        s->items[i].id = strdup(BUILTIN[i].id);
        s->items[i].text = strdup(BUILTIN[i].text);
    }
    s->n = n;
    snprintf(s->source, sizeof s->source, "built-in prompts");
    return 0;
}

/* Whether the JSON text escapes U+0000 (\u0000 after an odd run of
 * backslashes): cJSON decodes it into a C string, which would end there. */
static int escapes_nul(const char *line, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (line[i] != '\\') continue;
        size_t run = 0;
        while (i < len && line[i] == '\\') i++, run++;
        if (run % 2 && i + 5 <= len && (line[i] == 'u' || line[i] == 'U') && !strncmp(line + i + 1, "0000", 4))
            return 1;
    }
    return 0;
}

static int parse_line(kv_prompt *p, const char *path, int lineno, const char *line, size_t len, kv_error *err) {
    if (escapes_nul(line, len)) return kv_fail(err, "%s:%d: U+0000 (\\u0000) in a prompt is not supported", path, lineno);
    cJSON *o = cJSON_ParseWithLength(line, len);
    int rc = -1;
    if (!cJSON_IsObject(o)) {
        kv_fail(err, "%s:%d: not a JSON object", path, lineno);
        goto done;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "input_ids");
    if (!cJSON_IsString(id)) {
        kv_fail(err, "%s:%d: missing string \"id\"", path, lineno);
        goto done;
    }
    if (!kv_prompt_id_valid(id->valuestring)) {
        kv_fail(err, "%s:%d: id \"%.60s\" is not usable as a group name (1-%d characters of A-Z a-z 0-9 _ . -)",
                path, lineno, id->valuestring, KV_PROMPT_ID_MAX);
        goto done;
    }
    if ((text != NULL) == (ids != NULL)) {
        kv_fail(err, "%s:%d: prompt '%s' needs exactly one of \"text\" and \"input_ids\"", path, lineno,
                id->valuestring);
        goto done;
    }
    p->id = strdup(id->valuestring);
    p->line = lineno;
    if (text) {
        if (!cJSON_IsString(text) || !text->valuestring[0]) {
            kv_fail(err, "%s:%d: prompt '%s': \"text\" must be a non-empty string", path, lineno, p->id);
            goto done;
        }
        p->text = strdup(text->valuestring);
    } else {
        int n = cJSON_IsArray(ids) ? cJSON_GetArraySize(ids) : -1;
        if (n <= 0) {
            kv_fail(err, "%s:%d: prompt '%s': \"input_ids\" must be a non-empty array of token ids", path, lineno,
                    p->id);
            goto done;
        }
        p->ids = kv_malloc((size_t)n * sizeof(int32_t), err);
        if (!p->ids) goto done;
        int i = 0;
        for (const cJSON *e = ids->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 2147483647.0 ||
                e->valuedouble != floor(e->valuedouble)) {
                kv_fail(err, "%s:%d: prompt '%s': input_ids[%d] is not a token id", path, lineno, p->id, i);
                goto done;
            }
            p->ids[i] = (int32_t)e->valuedouble;
        }
        p->n_ids = n;
    }
    rc = 0;
done:
    cJSON_Delete(o);
    return rc;
}

int kv_prompts_load(kv_prompt_set *s, const char *path, kv_error *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->source, sizeof s->source, "%s", path);
    size_t len;
    char *buf = kv_read_file(path, (size_t)1 << 31, &len, err);
    if (!buf) return -1;
    int cap = 0, lineno = 0, rc = -1;
    for (char *line = buf; line < buf + len;) {
        char *end = memchr(line, '\n', buf + len - line);
        if (!end) end = buf + len;
        lineno++;
        size_t n = end - line;
        int blank = 1;
        for (size_t i = 0; i < n; i++)
            if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r') blank = 0;
        if (!blank) {
            if (s->n == cap) {
                cap = cap ? cap * 2 : 16;
                kv_prompt *items = realloc(s->items, cap * sizeof *items);
                if (!items) {
                    kv_fail(err, "out of memory reading %s", path);
                    goto done;
                }
                s->items = items;
            }
            kv_prompt *p = &s->items[s->n];
            memset(p, 0, sizeof *p);
            s->n++;
            if (parse_line(p, path, lineno, line, n, err)) goto done;
            for (int i = 0; i < s->n - 1; i++)
                if (!strcmp(s->items[i].id, p->id)) {
                    kv_fail(err, "%s:%d: duplicate prompt id '%s' (first on line %d)", path, lineno, p->id,
                            s->items[i].line);
                    goto done;
                }
        }
        line = end + 1;
    }
    if (s->n == 0) {
        kv_fail(err, "%s: no prompts (expected one JSON object per line)", path);
        goto done;
    }
    rc = 0;
done:
    free(buf);
    if (rc) {
        kv_prompts_free(s);
        snprintf(s->source, sizeof s->source, "%s", path);
    }
    return rc;
}

int kv_prompts_prepare(kv_prompt_set *s, const kv_tokenizer *tok, const char *tok_path, int vocab_size,
                       long max_tokens, const char *max_what, kv_error *err) {
    for (int i = 0; i < s->n; i++) {
        kv_prompt *p = &s->items[i];
        if (p->text) {
            if (!tok)
                return kv_fail(err, "%s: prompt '%s' is text, but %s does not exist (give input_ids instead)",
                               s->source, p->id, tok_path);
            size_t n;
            if (kv_tokenizer_encode(tok, p->text, strlen(p->text), 1, &p->ids, &n, err))
                return kv_wrap(err, "%s: prompt '%s'", s->source, p->id);
            if (n > INT_MAX) return kv_fail(err, "%s: prompt '%s' is too long", s->source, p->id);
            p->n_ids = (int)n;
        }
        if (p->n_ids == 0) return kv_fail(err, "%s: prompt '%s' has no tokens", s->source, p->id);
        if (p->n_ids > max_tokens)
            return kv_fail(err, "%s: prompt '%s' has %d tokens, more than %s (prompts are never truncated)",
                           s->source, p->id, p->n_ids, max_what);
        for (int j = 0; j < p->n_ids; j++)
            if (p->ids[j] < 0 || p->ids[j] >= vocab_size)
                return kv_fail(err, "%s: prompt '%s': token id %d at position %d is outside the vocabulary (0-%d)",
                               s->source, p->id, p->ids[j], j, vocab_size - 1);
    }
    return 0;
}
