/* Internals shared by tracer/tokenizer*.c: hash maps, id vectors and the
 * BPE model. Not part of the public API. */
#ifndef KV_TOKENIZER_INTERNAL_H
#define KV_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

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

#endif
