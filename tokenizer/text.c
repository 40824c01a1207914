/* UTF-8 and small text helpers of the tokenizer. */
#include "tokenizer/tokenizer.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/internal.h"

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
size_t kv_utf8_first_invalid(const char *s, size_t n) {
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

int32_t kv_utf8_decode(const char *s, size_t n, size_t *len) {
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
int kv_is_ws_cp(int32_t c) {
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85) return 1;
    if (c < 0x80) return 0;
    return utf8proc_category(c) == UTF8PROC_CATEGORY_ZS || c == 0x2028 || c == 0x2029;
}

char *kv_tok_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *kv_tok_strdup(const char *s) { return kv_tok_strndup(s, strlen(s)); }

pcre2_code *kv_tok_compile_re(const char *pat, int literal, const char *what, kv_error *err) {
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
void kv_tok_byte_level_tables(kv_tokenizer *t) {
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
