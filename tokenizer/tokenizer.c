/* tokenizer.json loading, the encode pipeline (added tokens -> normalizer ->
 * pre-tokenizer -> BPE -> post-processor) and decoding, following Hugging
 * Face tokenizers. Decoding and token flags live in decode.c, the BPE model in
 * bpe.c. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/tokenizer.h"

#include <cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/internal.h"

/* GPT-2 split pattern of the ByteLevel pre-tokenizer (use_regex). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ------------------------------------------------------------ utilities */

size_t kv_utf8_valid_prefix(const unsigned char *s, size_t n, size_t i, size_t *bad_len) {
    /* returns the length of the valid character at i, or 0 (then *bad_len is
     * the length of the maximal invalid subpart, >= 1) */
    unsigned char c = s[i];
    if (c < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad_len = 1;
        return 0;
    }
    size_t k = 1;
    for (; k <= need; k++) {
        if (i + k >= n) break;
        unsigned char d = s[i + k];
        if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) break;
    }
    if (k == need + 1) return need + 1;
    *bad_len = k;
    return 0;
}

/* offset of the first invalid byte, or n when s is valid UTF-8 */
static size_t utf8_first_invalid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad, l = kv_utf8_valid_prefix(u, n, i, &bad);
        if (!l) return i;
        i += l;
    }
    return n;
}

/* Rust's String::from_utf8_lossy: each maximal invalid subpart -> U+FFFD */
int kv_utf8_lossy(kv_buf *out, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t bad, l = kv_utf8_valid_prefix(u, n, i, &bad);
        if (l) {
            if (kv_buf_put(out, s + i, l)) return -1;
            i += l;
        } else {
            if (kv_buf_put(out, "\xEF\xBF\xBD", 3)) return -1;
            i += bad;
        }
    }
    return kv_buf_put(out, "", 0);
}

static int32_t utf8_decode(const char *s, size_t n, size_t *len) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (l <= 0) {
        *len = 1;
        return -1;
    }
    *len = (size_t)l;
    return cp;
}

/* Rust char::is_whitespace */
static int is_ws_cp(int32_t c) {
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85) return 1;
    if (c < 0x80) return 0;
    return utf8proc_category(c) == UTF8PROC_CATEGORY_ZS || c == 0x2028 || c == 0x2029;
}

static char *xstrndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static pcre2_code *compile_re(const char *pat, int literal, const char *what, kv_error *err) {
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        kv_fail(err, "%s: regex /%s/ does not compile at offset %zu: %s", what, pat, (size_t)eo,
                (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort; falls back to the interpreter */
    return re;
}

/* GPT-2 bytes_to_unicode */
static void byte_level_tables(kv_tokenizer *t) {
    int cp_of[256], n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        cp_of[b] = printable ? b : 256 + n++;
    }
    for (int i = 0; i < 324; i++) t->bl_dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        kv_buf tmp = {0};
        kv_buf_put_cp(&tmp, cp_of[b]);
        memcpy(t->bl_enc[b], tmp.s, tmp.n);
        t->bl_len[b] = (uint8_t)tmp.n;
        free(tmp.s);
        t->bl_dec[cp_of[b]] = (int16_t)b;
    }
}

/* ---------------------------------------------------------------- loading */

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
        *re = compile_re(s, 0, what, err);
        return *re ? 0 : -1;
    }
    return kv_fail(err, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", what);
}

char *kv_tok_strdup(const char *s) { return xstrndup(s, strlen(s)); }

static int replacement_char(const cJSON *o, const char *what, char *out, size_t *len, kv_error *err) {
    const char *r = jstr(o, "replacement");
    if (!r) r = "\xE2\x96\x81";
    size_t n = strlen(r), cl;
    if (n == 0 || n > 4 || utf8_decode(r, n, &cl) < 0 || cl != n)
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
        if ((s = jstr(pat, "Regex"))) p->re = compile_re(s, 0, what, err);
        else if ((s = jstr(pat, "String"))) p->re = compile_re(s, 1, what, err);
        else return kv_fail(err, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", what);
        if (!p->re) return -1;
    } else if (!strcmp(type, "ByteLevel")) {
        p->type = KV_PRETOK_BYTELEVEL;
        p->add_prefix_space = jbool(o, "add_prefix_space", 1);
        p->use_regex = jbool(o, "use_regex", 1);
        if (p->use_regex && !t->gpt2_re && !(t->gpt2_re = compile_re(GPT2_PATTERN, 0, what, err)))
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
        if (!c || !*c || utf8_decode(c, strlen(c), &cl) < 0 || cl != strlen(c))
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
    byte_level_tables(t);
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

int kv_tokenizer_is_special(const kv_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && t->special[id];
}

/* ---------------------------------------------------------------- encode */

typedef struct {
    const kv_tokenizer *t;
    kv_ivec *out;
    kv_bpe_scratch scratch;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    kv_buf stage[KV_TOK_MAX_STEPS][2]; /* per pre-tokenizer stage scratch */
    kv_error *err;
} enc_ctx;

static int pretok(enc_ctx *c, size_t stage, const char *s, size_t n, int first);

/* calls pretok(stage+1) on every match of re and every gap between matches */
static int split_isolated(enc_ctx *c, const pcre2_code *re, size_t next, const char *s, size_t n,
                          int first) {
    size_t pos = 0, last = 0;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md, c->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return kv_fail(c->err, "pre-tokenizer regex failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: no piece */
            pos = ms + kv_utf8_len((unsigned char)s[ms]);
            continue;
        }
        if (ms > last && pretok(c, next, s + last, ms - last, first && last == 0)) return -1;
        if (pretok(c, next, s + ms, me - ms, first && ms == 0)) return -1;
        last = pos = me;
    }
    if (last < n && pretok(c, next, s + last, n - last, first && last == 0)) return -1;
    return 0;
}

static int byte_level_map(const kv_tokenizer *t, kv_buf *out, const char *s, size_t n) {
    out->n = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        if (kv_buf_put(out, t->bl_enc[b], t->bl_len[b])) return -1;
    }
    return kv_buf_put(out, "", 0);
}

static int is_numeric_cp(int32_t cp) {
    int cat = utf8proc_category(cp);
    return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

static int pretok(enc_ctx *c, size_t stage, const char *s, size_t n, int first) {
    const kv_tokenizer *t = c->t;
    if (n == 0) return 0;
    if (stage == t->n_pretoks) return kv_bpe_encode_word(&t->bpe, s, n, &c->scratch, c->out, c->err);
    const kv_pretok *p = &t->pretoks[stage];
    kv_buf *b0 = &c->stage[stage][0], *b1 = &c->stage[stage][1];
    switch (p->type) {
    case KV_PRETOK_SPLIT:
        return split_isolated(c, p->re, stage + 1, s, n, first);
    case KV_PRETOK_BYTELEVEL: {
        if (p->add_prefix_space && s[0] != ' ') {
            b0->n = 0;
            if (kv_buf_putc(b0, ' ') || kv_buf_put(b0, s, n)) return kv_fail(c->err, "out of memory");
            s = b0->s, n = b0->n;
        }
        if (!p->use_regex) {
            if (byte_level_map(t, b1, s, n)) return kv_fail(c->err, "out of memory");
            return pretok(c, stage + 1, b1->s, b1->n, first);
        }
        /* split on the raw text, then map each piece */
        size_t pos = 0, last = 0;
        while (pos <= n) {
            size_t ms = n, me = n;
            if (pos < n) {
                int rc = pcre2_match(t->gpt2_re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md, c->mctx);
                if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
                    return kv_fail(c->err, "ByteLevel regex failed (error %d)", rc);
                if (rc >= 0) {
                    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
                    ms = ov[0], me = ov[1];
                }
            }
            if (ms == me && ms < n) {
                pos = ms + kv_utf8_len((unsigned char)s[ms]);
                continue;
            }
            size_t segs[2][2] = {{last, ms}, {ms, me}};
            for (int k = 0; k < 2; k++) {
                if (segs[k][1] <= segs[k][0]) continue;
                if (byte_level_map(t, b1, s + segs[k][0], segs[k][1] - segs[k][0]))
                    return kv_fail(c->err, "out of memory");
                /* b1 is reused by the next piece only after the recursion returns */
                if (pretok(c, stage + 1, b1->s, b1->n, first && segs[k][0] == 0)) return -1;
            }
            if (me >= n) break;
            last = pos = me;
        }
        return 0;
    }
    case KV_PRETOK_METASPACE: {
        b0->n = 0;
        int starts = n >= p->repl_len && !memcmp(s, p->repl, p->repl_len);
        if (!starts && s[0] != ' ' &&
            (p->prepend == KV_PREPEND_ALWAYS || (p->prepend == KV_PREPEND_FIRST && first)))
            kv_buf_put(b0, p->repl, p->repl_len);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ' ? kv_buf_put(b0, p->repl, p->repl_len) : kv_buf_putc(b0, s[i]))
                return kv_fail(c->err, "out of memory");
        }
        /* note: a leading ' ' became the replacement, so no prepend (as in HF) */
        if (!p->split) return pretok(c, stage + 1, b0->s, b0->n, first);
        /* split before every replacement character (MergedWithNext) */
        size_t start = 0;
        for (size_t i = 0; i + p->repl_len <= b0->n; i++) {
            if (i > start && !memcmp(b0->s + i, p->repl, p->repl_len)) {
                if (pretok(c, stage + 1, b0->s + start, i - start, first && start == 0)) return -1;
                start = i;
            }
        }
        return pretok(c, stage + 1, b0->s + start, b0->n - start, first && start == 0);
    }
    case KV_PRETOK_DIGITS: {
        size_t start = 0, i = 0;
        int prev_digit = -1;
        while (i < n) {
            size_t cl;
            int32_t cp = utf8_decode(s + i, n - i, &cl);
            int d = cp >= 0 && is_numeric_cp(cp);
            if (prev_digit >= 0 && (d != prev_digit || (d && p->individual))) {
                if (pretok(c, stage + 1, s + start, i - start, first && start == 0)) return -1;
                start = i;
            }
            prev_digit = d;
            i += cl;
        }
        return pretok(c, stage + 1, s + start, n - start, first && start == 0);
    }
    }
    return kv_fail(c->err, "unknown pre-tokenizer");
}

/* replace every occurrence of a literal or regex (left to right) */
int kv_tok_replace_all(kv_buf *out, const char *s, size_t n, const char *lit, size_t lit_len,
                       const pcre2_code *re, const char *with, size_t with_len, pcre2_match_data *md) {
    out->n = 0;
    size_t pos = 0;
    while (pos < n) {
        size_t ms, me;
        if (re) {
            int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            ms = ov[0], me = ov[1];
            if (me == ms) { /* empty match: copy one character */
                size_t cl = kv_utf8_len((unsigned char)s[ms]);
                if (kv_buf_put(out, s + pos, ms + cl - pos)) return -1;
                pos = ms + cl;
                continue;
            }
        } else {
            if (!lit_len) break;
            const char *f = memmem(s + pos, n - pos, lit, lit_len);
            if (!f) break;
            ms = (size_t)(f - s), me = ms + lit_len;
        }
        if (kv_buf_put(out, s + pos, ms - pos) || kv_buf_put(out, with, with_len)) return -1;
        pos = me;
    }
    if (pos < n && kv_buf_put(out, s + pos, n - pos)) return -1;
    return kv_buf_put(out, "", 0);
}

/* normalizer chain; result in *res (a view into one of the two buffers or s) */
static int normalize(const kv_tokenizer *t, const char *s, size_t n, kv_buf bufs[2],
                     pcre2_match_data *md, const char **res, size_t *res_n, kv_error *err) {
    int cur = -1;
    for (size_t k = 0; k < t->n_norms; k++) {
        const kv_norm *nm = &t->norms[k];
        kv_buf *o = &bufs[cur == 0 ? 1 : 0];
        o->n = 0;
        switch (nm->type) {
        case KV_NORM_NFC:
        case KV_NORM_NFD:
        case KV_NORM_NFKC:
        case KV_NORM_NFKD: {
            int opt = UTF8PROC_STABLE;
            opt |= (nm->type == KV_NORM_NFC || nm->type == KV_NORM_NFKC) ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
            if (nm->type == KV_NORM_NFKC || nm->type == KV_NORM_NFKD) opt |= UTF8PROC_COMPAT;
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t r = n ? utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                                  (utf8proc_option_t)opt)
                                   : 0;
            if (r < 0) return kv_fail(err, "normalizer: %s", utf8proc_errmsg(r));
            int e = kv_buf_put(o, dst ? (const char *)dst : "", (size_t)r);
            free(dst);
            if (e) return kv_fail(err, "out of memory");
            break;
        }
        case KV_NORM_PREPEND:
            if (n && kv_buf_put(o, nm->b, nm->blen)) return kv_fail(err, "out of memory");
            if (kv_buf_put(o, s, n)) return kv_fail(err, "out of memory");
            break;
        case KV_NORM_REPLACE:
            if (kv_tok_replace_all(o, s, n, nm->a, nm->alen, nm->re, nm->b, nm->blen, md))
                return kv_fail(err, "out of memory");
            break;
        }
        cur = cur == 0 ? 1 : 0;
        s = bufs[cur].s ? bufs[cur].s : "";
        n = bufs[cur].n;
    }
    *res = s;
    *res_n = n;
    return 0;
}

/* finds the next added token of one pass in s[from, n): leftmost, longest;
 * returns its index in t->added and the (stripped) span, or -1 */
static int next_added(const kv_tokenizer *t, int pass, const char *s, size_t n, size_t from,
                      size_t floor, size_t *ms, size_t *me) {
    const kv_added_index *ix = &t->added_ix[pass];
    if (ix->n == 0) return -1;
    for (size_t i = from; i < n; i++) {
        unsigned char c0 = (unsigned char)s[i];
        for (int32_t k = ix->first[c0]; k < ix->first[c0 + 1]; k++) {
            const kv_added *a = &t->added[ix->order[k]];
            if (a->len > n - i || memcmp(s + i, a->content, a->len)) continue;
            size_t st = i, en = i + a->len;
            if (a->lstrip) {
                while (st > floor) {
                    size_t back = 1;
                    while (back < st - floor && back < 4 && ((unsigned char)s[st - back] & 0xC0) == 0x80) back++;
                    size_t cl;
                    int32_t cp = utf8_decode(s + st - back, back, &cl);
                    if (cp < 0 || !is_ws_cp(cp)) break;
                    st -= back;
                }
            }
            if (a->rstrip) {
                while (en < n) {
                    size_t cl;
                    int32_t cp = utf8_decode(s + en, n - en, &cl);
                    if (cp < 0 || !is_ws_cp(cp)) break;
                    en += cl;
                }
            }
            *ms = st, *me = en;
            return ix->order[k];
        }
    }
    return -1;
}

/* normalized text of one non-added segment: split on normalized added tokens */
static int encode_segment(enc_ctx *c, const char *s, size_t n, int first, kv_buf nb[2]) {
    const kv_tokenizer *t = c->t;
    const char *ns = "";
    size_t nn = 0;
    if (normalize(t, s, n, nb, c->md, &ns, &nn, c->err)) return -1;
    size_t pos = 0, ms, me;
    int k;
    while ((k = next_added(t, 1, ns, nn, pos, pos, &ms, &me)) >= 0) {
        if (ms > pos && pretok(c, 0, ns + pos, ms - pos, first && pos == 0)) return -1;
        if (kv_ivec_push(c->out, t->added[k].id)) return kv_fail(c->err, "out of memory");
        pos = me;
    }
    return pretok(c, 0, ns + pos, nn - pos, first && pos == 0);
}

int kv_tokenizer_encode(const kv_tokenizer *t, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n_ids, kv_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return kv_fail(err, "text: NULL");
    if (!text) text = "";
    size_t bad = utf8_first_invalid(text, len);
    if (bad < len) return kv_fail(err, "invalid UTF-8 in the text at byte %zu (0x%02X)", bad, (unsigned char)text[bad]);
    kv_ivec out = {0};
    enc_ctx c = {.t = t, .out = &out, .err = err};
    kv_buf nb[2] = {{0}, {0}};
    int rc = 0;
    c.md = pcre2_match_data_create(4, NULL);
    c.mctx = pcre2_match_context_create(NULL);
    c.jit = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!c.md || !c.mctx) rc = kv_fail(err, "out of memory");
    if (!rc && c.jit) pcre2_jit_stack_assign(c.mctx, NULL, c.jit);
    size_t pos = 0, ms, me;
    int k;
    while (!rc && (k = next_added(t, 0, text, len, pos, pos, &ms, &me)) >= 0) {
        if (ms > pos) rc = encode_segment(&c, text + pos, ms - pos, pos == 0, nb);
        if (!rc && kv_ivec_push(&out, t->added[k].id)) rc = kv_fail(err, "out of memory");
        pos = me;
    }
    if (!rc && pos < len) rc = encode_segment(&c, text + pos, len - pos, pos == 0, nb);
    if (!rc && add_special) {
        for (size_t i = 0; i < t->n_tmpls && !rc; i++) {
            kv_ivec res = {0};
            const kv_ivec *tm = &t->tmpls[i];
            for (size_t j = 0; j < tm->n && !rc; j++) {
                if (tm->v[j] == KV_TMPL_SEQ) {
                    for (size_t q = 0; q < out.n && !rc; q++)
                        if (kv_ivec_push(&res, out.v[q])) rc = kv_fail(err, "out of memory");
                } else if (kv_ivec_push(&res, tm->v[j])) {
                    rc = kv_fail(err, "out of memory");
                }
            }
            free(out.v);
            out = res;
        }
    }
    kv_bpe_scratch_free(&c.scratch);
    for (size_t i = 0; i < KV_TOK_MAX_STEPS; i++) free(c.stage[i][0].s), free(c.stage[i][1].s);
    free(nb[0].s);
    free(nb[1].s);
    pcre2_match_data_free(c.md);
    pcre2_match_context_free(c.mctx);
    if (c.jit) pcre2_jit_stack_free(c.jit);
    if (rc) {
        free(out.v);
        return -1;
    }
    if (!out.v && !(out.v = malloc(sizeof(int32_t)))) return kv_fail(err, "out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}
