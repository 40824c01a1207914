/* The tokenizer's containers: growable id vectors and byte buffers, and the
 * open-addressing hash maps of the vocabulary (string -> id) and of the
 * merges ((id, id) -> rank, new id). */
#include "tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- vectors */

int kv_ivec_push(kv_ivec *a, int32_t x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

int kv_buf_put(kv_buf *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) return -1;
        b->s = s;
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

int kv_buf_putc(kv_buf *b, char c) { return kv_buf_put(b, &c, 1); }

int kv_buf_put_cp(kv_buf *b, int32_t cp) {
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = 0xC0 | (cp >> 6);
        u[1] = 0x80 | (cp & 0x3F);
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = 0xE0 | (cp >> 12);
        u[1] = 0x80 | ((cp >> 6) & 0x3F);
        u[2] = 0x80 | (cp & 0x3F);
        n = 3;
    } else {
        u[0] = 0xF0 | (cp >> 18);
        u[1] = 0x80 | ((cp >> 12) & 0x3F);
        u[2] = 0x80 | ((cp >> 6) & 0x3F);
        u[3] = 0x80 | (cp & 0x3F);
        n = 4;
    }
    return kv_buf_put(b, u, n);
}

/* ------------------------------------------------------------- hash maps */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t cap_for(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2) cap *= 2;
    return cap;
}

int kv_strmap_init(kv_strmap *m, size_t expected) {
    m->cap = cap_for(expected);
    m->n = 0;
    m->slots = calloc(m->cap, sizeof *m->slots);
    return m->slots ? 0 : -1;
}

void kv_strmap_free(kv_strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static int strmap_grow(kv_strmap *m) {
    kv_strmap bigger = {calloc(m->cap * 2, sizeof *m->slots), m->cap * 2, 0};
    if (!bigger.slots) return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key) kv_strmap_put(&bigger, m->slots[i].key, m->slots[i].len, m->slots[i].val);
    free(m->slots);
    *m = bigger;
    return 0;
}

int kv_strmap_put(kv_strmap *m, const char *key, uint32_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m)) return -1;
    size_t mask = m->cap - 1, i = hash_bytes(key, len) & mask;
    while (m->slots[i].key) {
        if (m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0) {
            m->slots[i].val = val;
            return 0;
        }
        i = (i + 1) & mask;
    }
    m->slots[i] = (kv_strmap_slot){key, len, val};
    m->n++;
    return 0;
}

int32_t kv_strmap_get(const kv_strmap *m, const char *key, size_t len) {
    if (!m->cap) return -1;
    size_t mask = m->cap - 1, i = hash_bytes(key, len) & mask;
    while (m->slots[i].key) {
        if (m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0) return m->slots[i].val;
        i = (i + 1) & mask;
    }
    return -1;
}

int kv_pairmap_init(kv_pairmap *m, size_t expected) {
    m->cap = cap_for(expected);
    m->n = 0;
    m->slots = calloc(m->cap, sizeof *m->slots);
    return m->slots ? 0 : -1;
}

void kv_pairmap_free(kv_pairmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static uint64_t pair_key(int32_t a, int32_t b) {
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static int pairmap_insert(kv_pairmap *m, uint64_t key, int32_t rank, int32_t new_id, int keep_old) {
    size_t mask = m->cap - 1, i = hash_u64(key) & mask;
    while (m->slots[i].key) {
        if (m->slots[i].key == key) {
            if (!keep_old) {
                m->slots[i].rank = rank;
                m->slots[i].new_id = new_id;
            }
            return 0;
        }
        i = (i + 1) & mask;
    }
    m->slots[i] = (kv_pairmap_slot){key, rank, new_id};
    m->n++;
    return 0;
}

int kv_pairmap_put(kv_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    if ((m->n + 1) * 2 > m->cap) {
        kv_pairmap bigger = {calloc(m->cap * 2, sizeof *m->slots), m->cap * 2, 0};
        if (!bigger.slots) return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key)
                pairmap_insert(&bigger, m->slots[i].key, m->slots[i].rank, m->slots[i].new_id, 0);
        free(m->slots);
        *m = bigger;
    }
    /* Hugging Face builds its merge map from the list in order, so a
     * repeated pair keeps its last rank; do the same. */
    return pairmap_insert(m, pair_key(a, b), rank, new_id, 0);
}

const kv_pairmap_slot *kv_pairmap_get(const kv_pairmap *m, int32_t a, int32_t b) {
    if (!m->cap) return NULL;
    uint64_t key = pair_key(a, b);
    size_t mask = m->cap - 1, i = hash_u64(key) & mask;
    while (m->slots[i].key) {
        if (m->slots[i].key == key) return &m->slots[i];
        i = (i + 1) & mask;
    }
    return NULL;
}
