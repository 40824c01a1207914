/* tokenizer.json loading: model, normalizer, pre-tokenizer, post-processor,
 * decoder and added tokens into a kv_tokenizer (Hugging Face tokenizers'
 * semantics; what is supported: tokenizer.h). */
#include "tokenizer/tokenizer.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/internal.h"

/* GPT-2 split pattern of the ByteLevel pre-tokenizer (use_regex). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static int is_null(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* a {"String": s} or {"Regex": r} pattern */
static int load_pattern(const cJSON *o, const char *what, char **lit, size_t *lit_len, pcre2_code **re,
                        kv_error *err) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *s;
    if ((s = jstr(p, "String"))) {
        if (!(*lit = kv_tok_strdup(s))) return kv_fail(err, "out of memory");
        *lit_len = strlen(s);
        return 0;
    }
    if ((s = jstr(p, "Regex"))) {
        *re = kv_tok_compile_re(s, 0, what, err);
        return *re ? 0 : -1;
    }
    return kv_fail(err, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", what);
}

static int replacement_char(const cJSON *o, const char *what, char *out, size_t *len, kv_error *err) {
    const char *r = jstr(o, "replacement");
    if (!r) r = "\xE2\x96\x81";
    size_t n = strlen(r), cl;
    if (n == 0 || n > 4 || kv_utf8_decode(r, n, &cl) < 0 || cl != n)
        return kv_fail(err, "%s: replacement must be one character", what);
    memcpy(out, r, n);
    *len = n;
    return 0;
}

/* prepend_scheme (new) or add_prefix_space (old) of Metaspace */
static int prepend_scheme(const cJSON *o, const char *what, kv_error *err) {
    const char *s = jstr(o, "prepend_scheme");
    if (!s) return jbool(o, "add_prefix_space", 1) ? KV_PREPEND_ALWAYS : KV_PREPEND_NEVER;
    if (!strcmp(s, "first")) return KV_PREPEND_FIRST;
    if (!strcmp(s, "always")) return KV_PREPEND_ALWAYS;
    if (!strcmp(s, "never")) return KV_PREPEND_NEVER;
    return kv_fail(err, "%s: unknown prepend_scheme '%s'", what, s), -1;
}

static int add_norm(kv_tokenizer *t, const cJSON *o, const char *name, kv_error *err) {
    if (is_null(o)) return 0;
    const char *type = jstr(o, "type");
    if (!type) return kv_fail(err, "%s: normalizer without a \"type\"", name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(o, "normalizers"))
            if (add_norm(t, it, name, err)) return -1;
        return 0;
    }
    if (t->n_norms == KV_TOK_MAX_STEPS) return kv_fail(err, "%s: too many normalizers", name);
    kv_norm *n = &t->norms[t->n_norms++]; /* counted now: a step that fails half-way is still freed */
    memset(n, 0, sizeof *n);
    char what[256];
    snprintf(what, sizeof what, "%s: normalizer %s", name, type);
    if (!strcmp(type, "NFC")) n->type = KV_NORM_NFC;
    else if (!strcmp(type, "NFD")) n->type = KV_NORM_NFD;
    else if (!strcmp(type, "NFKC")) n->type = KV_NORM_NFKC;
    else if (!strcmp(type, "NFKD")) n->type = KV_NORM_NFKD;
    else if (!strcmp(type, "Prepend")) {
        n->type = KV_NORM_PREPEND;
        const char *p = jstr(o, "prepend");
        if (!p) return kv_fail(err, "%s: missing \"prepend\"", what);
        if (!(n->b = kv_tok_strdup(p))) return kv_fail(err, "out of memory");
        n->blen = strlen(p);
    } else if (!strcmp(type, "Replace")) {
        n->type = KV_NORM_REPLACE;
        if (load_pattern(o, what, &n->a, &n->alen, &n->re, err)) return -1;
        const char *c = jstr(o, "content");
        if (!c) return kv_fail(err, "%s: missing \"content\"", what);
        if (!(n->b = kv_tok_strdup(c))) return kv_fail(err, "out of memory");
        n->blen = strlen(c);
    } else {
        return kv_fail(err, "%s: normalizer type '%s' is not supported", name, type);
    }
    return 0;
}

static int add_pretok(kv_tokenizer *t, const cJSON *o, const char *name, kv_error *err) {
    if (is_null(o)) return 0;
    const char *type = jstr(o, "type");
    if (!type) return kv_fail(err, "%s: pre_tokenizer without a \"type\"", name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(o, "pretokenizers"))
            if (add_pretok(t, it, name, err)) return -1;
        return 0;
    }
    if (t->n_pretoks == KV_TOK_MAX_STEPS) return kv_fail(err, "%s: too many pre-tokenizers", name);
    kv_pretok *p = &t->pretoks[t->n_pretoks++]; /* counted now: a step that fails half-way is still freed */
    memset(p, 0, sizeof *p);
    char what[256];
    snprintf(what, sizeof what, "%s: pre_tokenizer %s", name, type);
    if (!strcmp(type, "Split")) {
        p->type = KV_PRETOK_SPLIT;
        const char *beh = jstr(o, "behavior");
        if (!beh || strcmp(beh, "Isolated"))
            return kv_fail(err, "%s: behavior '%s' is not supported (only Isolated)", what,
                           beh ? beh : "(none)");
        if (jbool(o, "invert", 0)) return kv_fail(err, "%s: invert=true is not supported", what);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const char *s;
        if ((s = jstr(pat, "Regex"))) p->re = kv_tok_compile_re(s, 0, what, err);
        else if ((s = jstr(pat, "String"))) p->re = kv_tok_compile_re(s, 1, what, err);
        else return kv_fail(err, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", what);
        if (!p->re) return -1;
    } else if (!strcmp(type, "ByteLevel")) {
        p->type = KV_PRETOK_BYTELEVEL;
        p->add_prefix_space = jbool(o, "add_prefix_space", 1);
        p->use_regex = jbool(o, "use_regex", 1);
        if (p->use_regex && !t->gpt2_re && !(t->gpt2_re = kv_tok_compile_re(GPT2_PATTERN, 0, what, err)))
            return -1;
    } else if (!strcmp(type, "Metaspace")) {
        p->type = KV_PRETOK_METASPACE;
        if (replacement_char(o, what, p->repl, &p->repl_len, err)) return -1;
        if ((p->prepend = prepend_scheme(o, what, err)) < 0) return -1;
        p->split = jbool(o, "split", 1);
    } else if (!strcmp(type, "Digits")) {
        p->type = KV_PRETOK_DIGITS;
        p->individual = jbool(o, "individual_digits", 0);
    } else {
        return kv_fail(err, "%s: pre_tokenizer type '%s' is not supported", name, type);
    }
    return 0;
}

static int add_decoder(kv_tokenizer *t, const cJSON *o, const char *name, kv_error *err) {
    if (is_null(o)) return 0;
    const char *type = jstr(o, "type");
    if (!type) return kv_fail(err, "%s: decoder without a \"type\"", name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(o, "decoders"))
            if (add_decoder(t, it, name, err)) return -1;
        return 0;
    }
    if (t->n_decs == KV_TOK_MAX_STEPS) return kv_fail(err, "%s: too many decoders", name);
    kv_dec *d = &t->decs[t->n_decs++]; /* counted now: a step that fails half-way is still freed */
    memset(d, 0, sizeof *d);
    char what[256];
    snprintf(what, sizeof what, "%s: decoder %s", name, type);
    if (!strcmp(type, "ByteLevel")) d->type = KV_DEC_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback")) d->type = KV_DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d->type = KV_DEC_FUSE;
    else if (!strcmp(type, "Replace")) {
        d->type = KV_DEC_REPLACE;
        if (load_pattern(o, what, &d->a, &d->alen, &d->re, err)) return -1;
        const char *c = jstr(o, "content");
        if (!c) return kv_fail(err, "%s: missing \"content\"", what);
        if (!(d->b = kv_tok_strdup(c))) return kv_fail(err, "out of memory");
        d->blen = strlen(c);
    } else if (!strcmp(type, "Strip")) {
        d->type = KV_DEC_STRIP;
        const char *c = jstr(o, "content");
        size_t cl;
        if (!c || !*c || kv_utf8_decode(c, strlen(c), &cl) < 0 || cl != strlen(c))
            return kv_fail(err, "%s: \"content\" must be one character", what);
        if (!(d->b = kv_tok_strdup(c))) return kv_fail(err, "out of memory");
        d->blen = cl;
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "start");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "stop");
        d->start = cJSON_IsNumber(st) ? st->valueint : 0;
        d->stop = cJSON_IsNumber(sp) ? sp->valueint : 0;
    } else if (!strcmp(type, "Metaspace")) {
        d->type = KV_DEC_METASPACE;
        if (replacement_char(o, what, d->repl, &d->repl_len, err)) return -1;
        if ((d->prepend = prepend_scheme(o, what, err)) < 0) return -1;
    } else {
        return kv_fail(err, "%s: decoder type '%s' is not supported", name, type);
    }
    return 0;
}

static int32_t lookup_any(const kv_tokenizer *t, const char *s) {
    for (size_t i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, s)) return t->added[i].id;
    return kv_strmap_get(&t->bpe.vocab, s, strlen(s));
}

static int add_post(kv_tokenizer *t, const cJSON *o, const char *name, kv_error *err) {
    if (is_null(o)) return 0;
    const char *type = jstr(o, "type");
    if (!type) return kv_fail(err, "%s: post_processor without a \"type\"", name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(o, "processors"))
            if (add_post(t, it, name, err)) return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) return 0; /* offsets only; ids unchanged */
    if (strcmp(type, "TemplateProcessing"))
        return kv_fail(err, "%s: post_processor type '%s' is not supported", name, type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    if (!cJSON_IsArray(single))
        return kv_fail(err, "%s: TemplateProcessing without a \"single\" template", name);
    kv_ivec tmpl = {0};
    const cJSON *it;
    cJSON_ArrayForEach(it, single) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (seq) {
            const char *sid = jstr(seq, "id");
            if (!sid || strcmp(sid, "A")) {
                free(tmpl.v);
                return kv_fail(err, "%s: TemplateProcessing single template uses sequence '%s'", name,
                               sid ? sid : "?");
            }
            kv_ivec_push(&tmpl, KV_TMPL_SEQ);
        } else if (sp) {
            const char *sid = jstr(sp, "id");
            const cJSON *entry = sid ? cJSON_GetObjectItemCaseSensitive(specials, sid) : NULL;
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(entry, "ids");
            if (!cJSON_IsArray(ids)) {
                free(tmpl.v);
                return kv_fail(err, "%s: TemplateProcessing special token '%s' has no ids", name,
                               sid ? sid : "?");
            }
            const cJSON *x;
            cJSON_ArrayForEach(x, ids) {
                /* an id the vocabulary does not have would reach the model's embedding table */
                if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= t->n_ids ||
                    x->valuedouble != (double)(int32_t)x->valuedouble) {
                    free(tmpl.v);
                    return kv_fail(err, "%s: TemplateProcessing special token '%s' has id %g, which is not in the "
                                        "vocabulary (0-%d)", name, sid, cJSON_IsNumber(x) ? x->valuedouble : -1.0,
                                   t->n_ids - 1);
                }
                kv_ivec_push(&tmpl, (int32_t)x->valuedouble);
            }
        } else {
            free(tmpl.v);
            return kv_fail(err, "%s: TemplateProcessing item is neither Sequence nor SpecialToken", name);
        }
    }
    if (t->n_tmpls == KV_TOK_MAX_STEPS) {
        free(tmpl.v);
        return kv_fail(err, "%s: too many post-processors", name);
    }
    t->tmpls[t->n_tmpls++] = tmpl;
    return 0;
}

static int set_token(kv_tokenizer *t, char ***arr, int32_t id, const char *s, kv_error *err) {
    if (id < 0 || id >= t->n_ids) return kv_fail(err, "token id %d out of range", id);
    free((*arr)[id]);
    if (!((*arr)[id] = kv_tok_strdup(s))) return kv_fail(err, "out of memory");
    return 0;
}

static int load_model(kv_tokenizer *t, const cJSON *m, const cJSON *added, const char *name,
                      kv_error *err) {
    const char *type = jstr(m, "type");
    if (type && strcmp(type, "BPE"))
        return kv_fail(err, "%s: model type '%s' is not supported (only BPE)", name, type);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!cJSON_IsObject(vocab)) return kv_fail(err, "%s: model has no \"vocab\" object", name);
    if (!is_null(merges) && !cJSON_IsArray(merges))
        return kv_fail(err, "%s: model \"merges\" is not an array", name);
    const char *bad[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *v = jstr(m, bad[i]);
        if (v && *v) return kv_fail(err, "%s: BPE %s is not supported", name, bad[i]);
    }
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0.0 && dropout->valuedouble != 1.0)
        return kv_fail(err, "%s: BPE dropout is not supported", name);
    kv_bpe *b = &t->bpe;
    b->byte_fallback = jbool(m, "byte_fallback", 0);
    b->fuse_unk = jbool(m, "fuse_unk", 0);
    b->ignore_merges = jbool(m, "ignore_merges", 0);

    /* id space: model vocab and added tokens */
    int32_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e8)
            return kv_fail(err, "%s: vocab entry '%s' has no valid id", name, it->string);
        if ((int32_t)it->valuedouble > max_id) max_id = (int32_t)it->valuedouble;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e8 || !jstr(it, "content"))
            return kv_fail(err, "%s: added_tokens entry without a valid id and content", name);
        if ((int32_t)id->valuedouble > max_id) max_id = (int32_t)id->valuedouble;
    }
    t->n_ids = max_id + 1;
    t->model_tok = calloc((size_t)t->n_ids + 1, sizeof *t->model_tok);
    t->added_tok = calloc((size_t)t->n_ids + 1, sizeof *t->added_tok);
    t->special = calloc((size_t)t->n_ids + 1, 1);
    if (!t->model_tok || !t->added_tok || !t->special) return kv_fail(err, "out of memory");
    if (kv_strmap_init(&b->vocab, (size_t)cJSON_GetArraySize(vocab)))
        return kv_fail(err, "out of memory");
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = (int32_t)it->valuedouble;
        if (set_token(t, &t->model_tok, id, it->string, err)) return -1;
    }
    /* keys borrowed from model_tok: insert after all strings are final */
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = (int32_t)it->valuedouble;
        if (strcmp(t->model_tok[id], it->string)) continue; /* duplicate id: last string wins */
        if (kv_strmap_put(&b->vocab, t->model_tok[id], (uint32_t)strlen(it->string), id))
            return kv_fail(err, "out of memory");
    }
    b->unk_id = -1;
    const char *unk = jstr(m, "unk_token");
    if (unk) {
        b->unk_id = kv_strmap_get(&b->vocab, unk, strlen(unk));
        if (b->unk_id < 0) return kv_fail(err, "%s: unk_token '%s' is not in the vocab", name, unk);
    }
    for (int i = 0; i < 256; i++) {
        char tok[8];
        snprintf(tok, sizeof tok, "<0x%02X>", i);
        b->byte_ids[i] = kv_strmap_get(&b->vocab, tok, 6);
    }

    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    if (kv_pairmap_init(&b->merges, n_merges) || kv_pairmap_init(&b->cross, 1024))
        return kv_fail(err, "out of memory");
    kv_buf cat = {0};
    int32_t rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *l = NULL, *r = NULL;
        size_t ll = 0, rl = 0;
        if (cJSON_IsString(it)) {
            const char *sp = strchr(it->valuestring, ' ');
            if (!sp) {
                free(cat.s);
                return kv_fail(err, "%s: merge %d '%s' is not \"left right\"", name, rank, it->valuestring);
            }
            l = it->valuestring, ll = (size_t)(sp - l);
            r = sp + 1, rl = strlen(r);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            l = cJSON_GetArrayItem(it, 0)->valuestring, ll = strlen(l);
            r = cJSON_GetArrayItem(it, 1)->valuestring, rl = strlen(r);
        } else {
            free(cat.s);
            return kv_fail(err, "%s: merge %d is neither a string nor a pair of strings", name, rank);
        }
        int32_t a = kv_strmap_get(&b->vocab, l, ll), c = kv_strmap_get(&b->vocab, r, rl);
        cat.n = 0;
        kv_buf_put(&cat, l, ll);
        kv_buf_put(&cat, r, rl);
        int32_t ab = cat.s ? kv_strmap_get(&b->vocab, cat.s, cat.n) : -1;
        if (a < 0 || c < 0 || ab < 0) {
            int e = kv_fail(err, "%s: merge %d ('%.*s' '%.*s'): %s is not in the vocab", name, rank,
                            (int)ll, l, (int)rl, r, a < 0 ? "left token" : c < 0 ? "right token" : "merged token");
            free(cat.s);
            return e;
        }
        if (kv_pairmap_put(&b->merges, a, c, rank, ab) || kv_bpe_add_cross(b, l, ll, r, rl)) {
            free(cat.s);
            return kv_fail(err, "out of memory");
        }
        rank++;
    }
    free(cat.s);

    /* added tokens */
    t->added = calloc((size_t)cJSON_GetArraySize(added) + 1, sizeof *t->added);
    if (!t->added) return kv_fail(err, "out of memory");
    cJSON_ArrayForEach(it, added) {
        kv_added *a = &t->added[t->n_added];
        const char *content = jstr(it, "content");
        a->id = (int32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
        if (!*content) return kv_fail(err, "%s: added token %d has empty content", name, a->id);
        if (jbool(it, "single_word", 0))
            return kv_fail(err, "%s: added token '%s': single_word=true is not supported", name, content);
        if (!(a->content = kv_tok_strdup(content))) return kv_fail(err, "out of memory");
        a->len = strlen(content);
        a->special = (uint8_t)jbool(it, "special", 0);
        a->lstrip = (uint8_t)jbool(it, "lstrip", 0);
        a->rstrip = (uint8_t)jbool(it, "rstrip", 0);
        a->normalized = (uint8_t)jbool(it, "normalized", !a->special);
        if (set_token(t, &t->added_tok, a->id, content, err)) return -1;
        t->special[a->id] = a->special;
        t->n_added++;
    }
    return 0;
}

/* added tokens of one pass (raw or normalized), ordered by first byte, then
 * longest first, so a scan tries the longest candidate first */
static int cmp_added(const void *x, const void *y, void *ctx) {
    const kv_added *a = (const kv_added *)ctx + *(const int32_t *)x;
    const kv_added *b = (const kv_added *)ctx + *(const int32_t *)y;
    if ((unsigned char)a->content[0] != (unsigned char)b->content[0])
        return (unsigned char)a->content[0] - (unsigned char)b->content[0];
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return *(const int32_t *)x - *(const int32_t *)y;
}

static int index_added(kv_tokenizer *t, kv_error *err) {
    for (int pass = 0; pass < 2; pass++) {
        kv_added_index *ix = &t->added_ix[pass];
        ix->order = calloc(t->n_added + 1, sizeof *ix->order);
        if (!ix->order) return kv_fail(err, "out of memory");
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].normalized == pass) ix->order[ix->n++] = (int32_t)i;
        qsort_r(ix->order, ix->n, sizeof *ix->order, cmp_added, t->added);
        for (int c = 0; c <= 256; c++) ix->first[c] = (int32_t)ix->n;
        for (size_t k = ix->n; k-- > 0;)
            ix->first[(unsigned char)t->added[ix->order[k]].content[0]] = (int32_t)k;
        for (int c = 255; c >= 0; c--)
            if (ix->first[c] > ix->first[c + 1]) ix->first[c] = ix->first[c + 1];
    }
    return 0;
}

kv_tokenizer *kv_tokenizer_load_json(const char *json, size_t len, const char *name, kv_error *err) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        kv_fail(err, "%s: not valid JSON (near byte %ld)", name, at ? (long)(at - json) : -1L);
        return NULL;
    }
    kv_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(root);
        kv_fail(err, "out of memory");
        return NULL;
    }
    kv_tok_byte_level_tables(t);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *trunc = cJSON_GetObjectItemCaseSensitive(root, "truncation");
    int rc = 0;
    if (!cJSON_IsObject(model)) rc = kv_fail(err, "%s: no \"model\" object", name);
    else if (!is_null(trunc)) rc = kv_fail(err, "%s: truncation is not supported", name);
    else if (!is_null(added) && !cJSON_IsArray(added))
        rc = kv_fail(err, "%s: \"added_tokens\" is not an array", name);
    if (!rc) rc = load_model(t, model, added, name, err);
    if (!rc) rc = index_added(t, err);
    if (!rc) rc = add_norm(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), name, err);
    if (!rc) rc = add_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), name, err);
    if (!rc) rc = add_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), name, err);
    if (!rc) rc = add_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), name, err);
    cJSON_Delete(root);
    if (rc) {
        kv_tokenizer_free(t);
        return NULL;
    }
    return t;
}

kv_tokenizer *kv_tokenizer_load(const char *path, kv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        kv_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    kv_buf b = {0};
    char chunk[1 << 16];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (kv_buf_put(&b, chunk, got)) {
            fclose(f);
            free(b.s);
            kv_fail(err, "%s: out of memory reading the file", path);
            return NULL;
        }
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(b.s);
        kv_fail(err, "%s: read error", path);
        return NULL;
    }
    kv_tokenizer *t = kv_tokenizer_load_json(b.s ? b.s : "", b.n, path, err);
    free(b.s);
    return t;
}

void kv_tokenizer_free(kv_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_ids; i++) {
        if (t->model_tok) free(t->model_tok[i]);
        if (t->added_tok) free(t->added_tok[i]);
    }
    free(t->model_tok);
    free(t->added_tok);
    free(t->special);
    kv_strmap_free(&t->bpe.vocab);
    kv_pairmap_free(&t->bpe.merges);
    kv_pairmap_free(&t->bpe.cross);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    for (int p = 0; p < 2; p++) free(t->added_ix[p].order);
    for (size_t i = 0; i < t->n_norms; i++) {
        free(t->norms[i].a);
        free(t->norms[i].b);
        if (t->norms[i].re) pcre2_code_free(t->norms[i].re);
    }
    for (size_t i = 0; i < t->n_pretoks; i++)
        if (t->pretoks[i].re) pcre2_code_free(t->pretoks[i].re);
    for (size_t i = 0; i < t->n_decs; i++) {
        free(t->decs[i].a);
        free(t->decs[i].b);
        if (t->decs[i].re) pcre2_code_free(t->decs[i].re);
    }
    for (size_t i = 0; i < t->n_tmpls; i++) free(t->tmpls[i].v);
    if (t->gpt2_re) pcre2_code_free(t->gpt2_re);
    free(t);
}

int kv_tokenizer_vocab_size(const kv_tokenizer *t) { return t->n_ids; }

const char *kv_tokenizer_id_to_token(const kv_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_ids) return NULL;
    return t->added_tok[id] ? t->added_tok[id] : t->model_tok[id];
}

int32_t kv_tokenizer_token_to_id(const kv_tokenizer *t, const char *token) { return lookup_any(t, token); }

