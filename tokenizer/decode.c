/* Decoding (Hugging Face decoder chain), per-token pieces and token flags
 * (docs/tokens.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/internal.h"

/* a list of token strings, as the decoders see them */
typedef struct {
    kv_buf *v;
    size_t n;
} strlist;

static void strlist_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i].s);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* byte-level characters -> bytes; the raw token when a character is not in
 * the byte-level alphabet (as Hugging Face does) */
static int byte_level_unmap(const kv_tokenizer *t, kv_buf *out, const char *s, size_t n) {
    size_t start = out->n;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (l <= 0 || cp >= 324 || t->bl_dec[cp] < 0) {
            out->n = start;
            return kv_buf_put(out, s, n);
        }
        if (kv_buf_putc(out, (char)t->bl_dec[cp])) return -1;
        i += (size_t)l;
    }
    return kv_buf_put(out, "", 0);
}

/* "<0xAB>" -> 0xAB, else -1 */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int flush_bytes(strlist *out, kv_buf *bytes) {
    if (!bytes->n) return 0;
    size_t bad, i = 0;
    int valid = 1;
    while (i < bytes->n) {
        size_t l = kv_utf8_valid_prefix((const unsigned char *)bytes->s, bytes->n, i, &bad);
        if (!l) {
            valid = 0;
            break;
        }
        i += l;
    }
    if (valid) {
        out->v[out->n++] = *bytes;
        *bytes = (kv_buf){0};
        return 0;
    }
    for (size_t k = 0; k < bytes->n; k++) {
        kv_buf r = {0};
        if (kv_buf_put(&r, "\xEF\xBF\xBD", 3)) return -1;
        out->v[out->n++] = r;
    }
    bytes->n = 0;
    return 0;
}

/* one decoder step: in -> out (in is consumed) */
static int decode_step(const kv_tokenizer *t, const kv_dec *d, strlist *in, strlist *out,
                       pcre2_match_data *md) {
    /* ByteFallback can produce one string per byte: reserve for the worst case */
    size_t cap = in->n + 1;
    if (d->type == KV_DEC_BYTEFALLBACK) cap = in->n * 1 + 1;
    out->v = calloc(cap, sizeof *out->v);
    out->n = 0;
    if (!out->v) return -1;
    switch (d->type) {
    case KV_DEC_BYTELEVEL:
    case KV_DEC_FUSE: {
        kv_buf all = {0};
        for (size_t i = 0; i < in->n; i++) {
            int e = d->type == KV_DEC_FUSE ? kv_buf_put(&all, in->v[i].s, in->v[i].n)
                                           : byte_level_unmap(t, &all, in->v[i].s, in->v[i].n);
            if (e) return free(all.s), -1;
        }
        if (d->type == KV_DEC_BYTELEVEL) {
            kv_buf lossy = {0};
            if (kv_utf8_lossy(&lossy, all.s ? all.s : "", all.n)) return free(all.s), -1;
            free(all.s);
            all = lossy;
        } else if (kv_buf_put(&all, "", 0)) {
            return free(all.s), -1;
        }
        out->v[out->n++] = all;
        return 0;
    }
    case KV_DEC_BYTEFALLBACK: {
        /* each byte token yields at most one string, so in->n + 1 slots suffice */
        kv_buf bytes = {0};
        for (size_t i = 0; i < in->n; i++) {
            int b = byte_token(in->v[i].s, in->v[i].n);
            if (b >= 0) {
                if (kv_buf_putc(&bytes, (char)b)) return free(bytes.s), -1;
                continue;
            }
            if (flush_bytes(out, &bytes)) return free(bytes.s), -1;
            out->v[out->n++] = in->v[i];
            in->v[i] = (kv_buf){0};
        }
        int e = flush_bytes(out, &bytes);
        free(bytes.s);
        return e;
    }
    case KV_DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            kv_buf r = {0};
            if (kv_tok_replace_all(&r, in->v[i].s ? in->v[i].s : "", in->v[i].n, d->a, d->alen, d->re, d->b,
                                   d->blen, md))
                return free(r.s), -1;
            if (kv_buf_put(&r, "", 0)) return free(r.s), -1;
            out->v[out->n++] = r;
        }
        return 0;
    case KV_DEC_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->v[i].s ? in->v[i].s : "";
            size_t a = 0, b = in->v[i].n;
            for (int k = 0; k < d->start && b - a >= d->blen && !memcmp(s + a, d->b, d->blen); k++) a += d->blen;
            for (int k = 0; k < d->stop && b - a >= d->blen && !memcmp(s + b - d->blen, d->b, d->blen); k++)
                b -= d->blen;
            kv_buf r = {0};
            if (kv_buf_put(&r, s + a, b - a)) return -1;
            out->v[out->n++] = r;
        }
        return 0;
    case KV_DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->v[i].s ? in->v[i].s : "";
            kv_buf r = {0};
            if (kv_buf_put(&r, "", 0)) return -1;
            for (size_t j = 0; j < in->v[i].n;) {
                if (in->v[i].n - j >= d->repl_len && !memcmp(s + j, d->repl, d->repl_len)) {
                    if (!(i == 0 && d->prepend != KV_PREPEND_NEVER) && kv_buf_putc(&r, ' ')) return free(r.s), -1;
                    j += d->repl_len;
                } else {
                    if (kv_buf_putc(&r, s[j])) return free(r.s), -1;
                    j++;
                }
            }
            out->v[out->n++] = r;
        }
        return 0;
    }
    return -1;
}

char *kv_tokenizer_decode(const kv_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                          kv_error *err) {
    strlist cur = {calloc(n + 1, sizeof(kv_buf)), 0};
    if (!cur.v) return kv_fail(err, "out of memory"), NULL;
    for (size_t i = 0; i < n; i++) {
        const char *tok = kv_tokenizer_id_to_token(t, ids[i]);
        if (!tok) {
            strlist_free(&cur);
            kv_fail(err, "decode: token id %d at position %zu is not in the vocabulary (size %d)", ids[i], i,
                    t->n_ids);
            return NULL;
        }
        if (skip_special && t->special[ids[i]]) continue;
        kv_buf b = {0};
        if (kv_buf_put(&b, tok, strlen(tok))) {
            strlist_free(&cur);
            return kv_fail(err, "out of memory"), NULL;
        }
        cur.v[cur.n++] = b;
    }
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    for (size_t k = 0; k < t->n_decs; k++) {
        strlist next = {0};
        int e = decode_step(t, &t->decs[k], &cur, &next, md);
        strlist_free(&cur);
        cur = next;
        if (e) {
            strlist_free(&cur);
            pcre2_match_data_free(md);
            return kv_fail(err, "out of memory while decoding"), NULL;
        }
    }
    pcre2_match_data_free(md);
    kv_buf all = {0};
    int e = kv_buf_put(&all, "", 0);
    for (size_t i = 0; i < cur.n && !e; i++) {
        if (t->n_decs == 0 && i > 0) e = kv_buf_putc(&all, ' ');
        if (!e) e = kv_buf_put(&all, cur.v[i].s, cur.v[i].n);
    }
    strlist_free(&cur);
    if (e) {
        free(all.s);
        return kv_fail(err, "out of memory"), NULL;
    }
    return all.s;
}

/* decoded bytes of one token into out (appended) */
static int token_bytes_buf(const kv_tokenizer *t, int32_t id, kv_buf *out, pcre2_match_data *md) {
    const char *tok = kv_tokenizer_id_to_token(t, id);
    if (!tok) return -1;
    if (t->added_tok[id]) return kv_buf_put(out, tok, strlen(tok));
    kv_buf cur = {0}, nx = {0};
    if (kv_buf_put(&cur, tok, strlen(tok))) return -1;
    for (size_t k = 0; k < t->n_decs; k++) {
        const kv_dec *d = &t->decs[k];
        nx.n = 0;
        int b, e = 0;
        switch (d->type) {
        case KV_DEC_BYTELEVEL:
            e = byte_level_unmap(t, &nx, cur.s, cur.n);
            break;
        case KV_DEC_BYTEFALLBACK:
            if ((b = byte_token(cur.s, cur.n)) < 0) continue;
            e = kv_buf_putc(&nx, (char)b);
            break;
        case KV_DEC_REPLACE:
            e = kv_tok_replace_all(&nx, cur.s, cur.n, d->a, d->alen, d->re, d->b, d->blen, md);
            break;
        case KV_DEC_METASPACE:
            e = kv_tok_replace_all(&nx, cur.s, cur.n, d->repl, d->repl_len, NULL, " ", 1, md);
            break;
        default:
            continue; /* Fuse, Strip: sequence-level */
        }
        if (e) {
            free(cur.s), free(nx.s);
            return -1;
        }
        kv_buf tmp = cur;
        cur = nx;
        nx = tmp;
    }
    int e = kv_buf_put(out, cur.s, cur.n);
    free(cur.s), free(nx.s);
    return e;
}

static int is_space_byte(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

uint8_t kv_tokenizer_text_flags(const char *s, size_t n) {
    if (n == 0) return 0;
    size_t i;
    for (i = 0; i < n && is_space_byte(s[i]); i++);
    if (i == n) return KV_FLAG_SPACE;
    /* one leading space marker */
    if (s[0] == ' ') s++, n--;
    else if (n >= 3 && !memcmp(s, "\xE2\x96\x81", 3)) s += 3, n -= 3; /* ▁ */
    else if (n >= 2 && !memcmp(s, "\xC4\xA0", 2)) s += 2, n -= 2;     /* Ġ */
    if (n == 0) return 0;
    for (i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (l <= 0) return 0;
        i += (size_t)l;
        if (cp < 0x80 && strchr("$+<=>^`|~", (int)cp) && cp) continue;
        switch (utf8proc_category(cp)) {
        case UTF8PROC_CATEGORY_PC:
        case UTF8PROC_CATEGORY_PD:
        case UTF8PROC_CATEGORY_PS:
        case UTF8PROC_CATEGORY_PE:
        case UTF8PROC_CATEGORY_PI:
        case UTF8PROC_CATEGORY_PF:
        case UTF8PROC_CATEGORY_PO:
            continue;
        default:
            return 0;
        }
    }
    return KV_FLAG_PUNCT;
}

/* valid UTF-8 copy; bytes outside valid sequences become "<0xAB>" */
static char *piece_string(const char *s, size_t n) {
    kv_buf b = {0};
    if (kv_buf_put(&b, "", 0)) return NULL;
    for (size_t i = 0; i < n;) {
        size_t bad, l = kv_utf8_valid_prefix((const unsigned char *)s, n, i, &bad);
        if (l) {
            if (kv_buf_put(&b, s + i, l)) return free(b.s), NULL;
            i += l;
        } else {
            char tmp[8];
            snprintf(tmp, sizeof tmp, "<0x%02X>", (unsigned char)s[i]);
            if (kv_buf_put(&b, tmp, 6)) return free(b.s), NULL;
            i++;
        }
    }
    return b.s;
}

int kv_tokenizer_token_info(const kv_tokenizer *t, const int32_t *ids, size_t n,
                            const int32_t *extra_special_ids, size_t n_extra,
                            const char *const *special_texts, size_t n_texts,
                            char ***pieces, uint8_t *flags, kv_error *err) {
    if (pieces) *pieces = NULL;
    kv_buf stream = {0};
    size_t *start = calloc(n + 1, sizeof *start);
    uint8_t *fl = calloc(n + 1, 1);
    char **pc = pieces ? calloc(n + 1, sizeof *pc) : NULL;
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    int rc = 0;
    if (!start || !fl || (pieces && !pc) || !md) rc = kv_fail(err, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        start[i] = stream.n;
        if (ids[i] < 0 || ids[i] >= t->n_ids || !kv_tokenizer_id_to_token(t, ids[i])) {
            rc = kv_fail(err, "token id %d at position %zu is not in the vocabulary (size %d)", ids[i], i,
                         t->n_ids);
            break;
        }
        if (token_bytes_buf(t, ids[i], &stream, md)) {
            rc = kv_fail(err, "out of memory");
            break;
        }
        const char *tb = stream.s ? stream.s + start[i] : "";
        size_t tl = stream.n - start[i];
        fl[i] = kv_tokenizer_text_flags(tb, tl);
        if (t->special[ids[i]]) fl[i] |= KV_FLAG_SPECIAL;
        for (size_t k = 0; k < n_extra; k++)
            if (extra_special_ids[k] == ids[i]) fl[i] |= KV_FLAG_SPECIAL;
        if (pc && !(pc[i] = piece_string(tb, tl))) rc = kv_fail(err, "out of memory");
    }
    start[n] = stream.n;
    /* --special-text: every occurrence in the token stream flags all tokens it overlaps */
    for (size_t k = 0; k < n_texts && !rc; k++) {
        size_t L = strlen(special_texts[k]), pos = 0, tok = 0;
        if (!L || !stream.s) continue;
        const char *f;
        while (pos < stream.n && (f = memmem(stream.s + pos, stream.n - pos, special_texts[k], L))) {
            size_t a = (size_t)(f - stream.s), b = a + L;
            while (tok < n && start[tok + 1] <= a) tok++;
            for (size_t j = tok; j < n && start[j] < b; j++)
                if (start[j + 1] > start[j]) fl[j] |= KV_FLAG_SPECIAL;
            pos = b;
        }
    }
    pcre2_match_data_free(md);
    free(stream.s);
    free(start);
    if (rc) {
        if (pc)
            for (size_t i = 0; i < n; i++) free(pc[i]);
        free(pc);
        free(fl);
        return -1;
    }
    if (flags) memcpy(flags, fl, n);
    free(fl);
    if (pieces) *pieces = pc;
    return 0;
}
