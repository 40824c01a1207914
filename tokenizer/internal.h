/* The one internal header of tokenizer/ (not for other folders): hash maps, id vectors and the
 * BPE model. Not part of the public API. */
#ifndef KV_TOKENIZER_INTERNAL_H
#define KV_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

/* growable int32 vector */
typedef struct {
    int32_t *v;
    size_t n, cap;
} kv_ivec;
int kv_ivec_push(kv_ivec *a, int32_t x);

/* growable byte buffer (always NUL-terminated after kv_buf_put*) */
typedef struct {
    char *s;
    size_t n, cap;
} kv_buf;
int kv_buf_put(kv_buf *b, const void *p, size_t n);
int kv_buf_putc(kv_buf *b, char c);
int kv_buf_put_cp(kv_buf *b, int32_t cp); /* UTF-8 encode */

/* string -> int32 map, open addressing; keys are borrowed (must outlive the map) */
typedef struct {
    const char *key;
    uint32_t len;
    int32_t val;
} kv_strmap_slot;
typedef struct {
    kv_strmap_slot *slots; /* [cap], key == NULL when empty */
    size_t cap, n;         /* cap is a power of two */
} kv_strmap;
int kv_strmap_init(kv_strmap *m, size_t expected);
void kv_strmap_free(kv_strmap *m);
/* inserts or overwrites; returns -1 on OOM */
int kv_strmap_put(kv_strmap *m, const char *key, uint32_t len, int32_t val);
/* returns the value or -1 */
int32_t kv_strmap_get(const kv_strmap *m, const char *key, size_t len);

/* (id, id) -> (rank, new id) map for BPE merges */
typedef struct {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    int32_t rank, new_id;
} kv_pairmap_slot;
typedef struct {
    kv_pairmap_slot *slots; /* [cap] */
    size_t cap, n;
} kv_pairmap;
int kv_pairmap_init(kv_pairmap *m, size_t expected);
void kv_pairmap_free(kv_pairmap *m);
int kv_pairmap_put(kv_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id);
/* returns the slot or NULL */
const kv_pairmap_slot *kv_pairmap_get(const kv_pairmap *m, int32_t a, int32_t b);

/* BPE model */
typedef struct {
    kv_strmap vocab;   /* token text -> id (model vocab only) */
    kv_pairmap merges; /* (left id, right id) -> rank, merged id */
    kv_pairmap cross;  /* (last code point of a merge's left token, first code
                        * point of its right token): the character boundaries
                        * some merge can join; a word is cut at all others */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;        /* -1 when none */
    int32_t byte_ids[256]; /* id of "<0xAB>", -1 when absent */
} kv_bpe;

/* Scratch space reused across words (symbols of the merge loop + heap). */
typedef struct {
    int32_t *c, *prev, *next, *len; /* symbols [cap] */
    int32_t *cp;                    /* [cap] code point of an initial symbol, -1 for byte/unk */
    size_t cap;
    struct kv_bpe_merge *heap; /* [hcap] */
    size_t hn, hcap;
} kv_bpe_scratch;
void kv_bpe_scratch_free(kv_bpe_scratch *s);

/* Records a merge's left/right tokens in m->cross (call for every merge). */
int kv_bpe_add_cross(kv_bpe *m, const char *l, size_t ll, const char *r, size_t rl);

/* Appends the ids of one pre-tokenized word. */
int kv_bpe_encode_word(const kv_bpe *m, const char *w, size_t len, kv_bpe_scratch *s, kv_ivec *out,
                       kv_error *err);

/* UTF-8 length of the character starting with lead byte c (1 for invalid). */
static inline int kv_utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

/* ---- the tokenizer itself (tokenizer.c: load, encode; decode.c: decode, pieces, flags) ---- */

#define KV_TOK_MAX_STEPS 16   /* per component chain */
#define KV_TMPL_SEQ INT32_MIN /* the "A" sequence in a template */

enum { KV_PREPEND_NEVER, KV_PREPEND_FIRST, KV_PREPEND_ALWAYS };

typedef struct {
    enum { KV_NORM_NFC, KV_NORM_NFD, KV_NORM_NFKC, KV_NORM_NFKD, KV_NORM_PREPEND, KV_NORM_REPLACE } type;
    char *a;         /* Replace: literal pattern (NULL when regex) */
    size_t alen;
    pcre2_code *re;  /* Replace: regex pattern */
    char *b;         /* Prepend: text; Replace: content */
    size_t blen;
} kv_norm;

typedef struct {
    enum { KV_PRETOK_SPLIT, KV_PRETOK_BYTELEVEL, KV_PRETOK_METASPACE, KV_PRETOK_DIGITS } type;
    pcre2_code *re;                  /* Split */
    int add_prefix_space, use_regex; /* ByteLevel */
    char repl[8];                    /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    int prepend, split; /* Metaspace */
    int individual;     /* Digits */
} kv_pretok;

typedef struct {
    enum {
        KV_DEC_BYTELEVEL,
        KV_DEC_REPLACE,
        KV_DEC_BYTEFALLBACK,
        KV_DEC_FUSE,
        KV_DEC_STRIP,
        KV_DEC_METASPACE
    } type;
    char *a; /* Replace: literal pattern */
    size_t alen;
    pcre2_code *re; /* Replace: regex */
    char *b;        /* Replace: content; Strip: the character */
    size_t blen;
    int start, stop; /* Strip */
    char repl[8];    /* Metaspace */
    size_t repl_len;
    int prepend;
} kv_dec;

typedef struct {
    int32_t id;
    char *content;
    size_t len;
    uint8_t special, lstrip, rstrip, normalized;
} kv_added;

/* added tokens of one matching pass, sorted by (first byte, length desc) */
typedef struct {
    int32_t *order;     /* [n] indices into kv_tokenizer.added */
    size_t n;
    int32_t first[257]; /* order[first[c] .. first[c+1]) start with byte c */
} kv_added_index;

struct kv_tokenizer {
    kv_bpe bpe;
    int n_ids;        /* largest id + 1 */
    char **model_tok; /* [n_ids] model vocab string or NULL */
    char **added_tok; /* [n_ids] added token content or NULL (wins in decode) */
    uint8_t *special; /* [n_ids] added token with special=true */
    kv_added *added;  /* [n_added] in file order */
    size_t n_added;
    kv_added_index added_ix[2]; /* [0] raw text (normalized=false), [1] normalized text */
    kv_norm norms[KV_TOK_MAX_STEPS];
    size_t n_norms;
    kv_pretok pretoks[KV_TOK_MAX_STEPS];
    size_t n_pretoks;
    kv_dec decs[KV_TOK_MAX_STEPS];
    size_t n_decs;
    kv_ivec tmpls[KV_TOK_MAX_STEPS]; /* TemplateProcessing "single": ids and KV_TMPL_SEQ */
    size_t n_tmpls;
    pcre2_code *gpt2_re; /* ByteLevel use_regex */
    char bl_enc[256][3]; /* byte -> GPT-2 byte-level character (UTF-8) */
    uint8_t bl_len[256];
    int16_t bl_dec[324]; /* code point -> byte, -1 */
};

/* shared helpers (tokenizer.c) */
size_t kv_utf8_valid_prefix(const unsigned char *s, size_t n, size_t i, size_t *bad_len);
int kv_utf8_lossy(kv_buf *out, const char *s, size_t n);
char *kv_tok_strdup(const char *s);
int kv_tok_replace_all(kv_buf *out, const char *s, size_t n, const char *lit, size_t lit_len,
                       const pcre2_code *re, const char *with, size_t with_len, pcre2_match_data *md);

/* ---- text helpers (text.c) ---- */
size_t kv_utf8_first_invalid(const char *s, size_t n);
int32_t kv_utf8_decode(const char *s, size_t n, size_t *len);
int kv_is_ws_cp(int32_t c);
/* a NUL-terminated copy of s[0, n) (NULL when out of memory) */
char *kv_tok_strndup(const char *s, size_t n);
/* compiles pat (UTF-8, Unicode properties; literal: as a plain string); what names it in errors */
pcre2_code *kv_tok_compile_re(const char *pat, int literal, const char *what, kv_error *err);
/* the ByteLevel byte <-> code point tables of t */
void kv_tok_byte_level_tables(kv_tokenizer *t);

#endif
