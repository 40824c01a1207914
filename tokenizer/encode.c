/* The encode pipeline, as Hugging Face tokenizers runs it: added tokens ->
 * normalizer -> pre-tokenizer -> BPE (bpe.c) -> post-processor. */
#include "tokenizer/tokenizer.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/internal.h"

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
            int32_t cp = kv_utf8_decode(s + i, n - i, &cl);
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
                    int32_t cp = kv_utf8_decode(s + st - back, back, &cl);
                    if (cp < 0 || !kv_is_ws_cp(cp)) break;
                    st -= back;
                }
            }
            if (a->rstrip) {
                while (en < n) {
                    size_t cl;
                    int32_t cp = kv_utf8_decode(s + en, n - en, &cl);
                    if (cp < 0 || !kv_is_ws_cp(cp)) break;
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
    size_t bad = kv_utf8_first_invalid(text, len);
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
