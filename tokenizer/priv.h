/* The kv_tokenizer struct, shared by tokenizer/tokenizer.c (load, encode) and
 * tokenizer/decode.c (decode, pieces, flags). Not a public header. */
#ifndef KV_TOKENIZER_PRIV_H
#define KV_TOKENIZER_PRIV_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "tokenizer/internal.h"

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

#endif
