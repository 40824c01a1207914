/* BPE model of the tokenizer: the merge loop (its hash maps: containers.c).
 *
 * The merge loop follows Hugging Face tokenizers (models/bpe/word.rs):
 * symbols form a doubly linked list; a min-heap holds candidate merges
 * ordered by (rank, position); a popped candidate is applied only if the
 * pair at its position still merges into the same id. O(n log n) per word. */
#include "tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ merge loop */

struct kv_bpe_merge {
    int32_t rank, pos, new_id;
};

static int merge_less(const struct kv_bpe_merge *a, const struct kv_bpe_merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(kv_bpe_scratch *s, struct kv_bpe_merge m) {
    if (s->hn == s->hcap) {
        size_t cap = s->hcap ? s->hcap * 2 : 256;
        struct kv_bpe_merge *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return -1;
        s->heap = h;
        s->hcap = cap;
    }
    size_t i = s->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(&m, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = m;
    return 0;
}

static struct kv_bpe_merge heap_pop(kv_bpe_scratch *s) {
    struct kv_bpe_merge top = s->heap[0], last = s->heap[--s->hn];
    size_t i = 0, n = s->hn;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct kv_bpe_merge *best = &last;
        if (l < n && merge_less(&s->heap[l], best)) m = l, best = &s->heap[l];
        if (r < n && merge_less(&s->heap[r], best)) m = r;
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n) s->heap[i] = last;
    return top;
}

void kv_bpe_scratch_free(kv_bpe_scratch *s) {
    free(s->c);
    free(s->prev);
    free(s->next);
    free(s->len);
    free(s->cp);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static int scratch_reserve(kv_bpe_scratch *s, size_t n) {
    if (n <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *c = realloc(s->c, cap * sizeof *c);
    if (!c) return -1;
    s->c = c;
    int32_t *p = realloc(s->prev, cap * sizeof *p);
    if (!p) return -1;
    s->prev = p;
    int32_t *nx = realloc(s->next, cap * sizeof *nx);
    if (!nx) return -1;
    s->next = nx;
    int32_t *l = realloc(s->len, cap * sizeof *l);
    if (!l) return -1;
    s->len = l;
    int32_t *cp = realloc(s->cp, cap * sizeof *cp);
    if (!cp) return -1;
    s->cp = cp;
    s->cap = cap;
    return 0;
}

static int32_t decode_cp(const char *p, size_t n);
static int merge_part(const kv_bpe *m, kv_bpe_scratch *s, int32_t b, int32_t e, kv_ivec *out);

int kv_bpe_encode_word(const kv_bpe *m, const char *w, size_t len, kv_bpe_scratch *s, kv_ivec *out,
                       kv_error *err) {
    if (len == 0) return 0;
    if (m->ignore_merges) {
        int32_t id = kv_strmap_get(&m->vocab, w, len);
        if (id >= 0) return kv_ivec_push(out, id) ? kv_fail(err, "out of memory") : 0;
    }
    /* at most one symbol per byte */
    if (scratch_reserve(s, len)) return kv_fail(err, "out of memory in BPE (%zu bytes)", len);
    size_t n = 0;
    int32_t unk_len = 0; /* pending (fused) unknown, 0 = none */
#define ADD_SYMBOL(id_, len_, cp_)                                                                 \
    do {                                                                                           \
        s->c[n] = (id_);                                                                           \
        s->cp[n] = (cp_);                                                                          \
        s->len[n] = (len_);                                                                        \
        s->prev[n] = (int32_t)n - 1;                                                               \
        s->next[n] = (int32_t)n + 1;                                                               \
        n++;                                                                                       \
    } while (0)
    for (size_t i = 0; i < len;) {
        size_t cl = kv_utf8_len((unsigned char)w[i]);
        if (i + cl > len) cl = len - i;
        int32_t id = kv_strmap_get(&m->vocab, w + i, cl);
        if (id >= 0) {
            if (unk_len) {
                ADD_SYMBOL(m->unk_id, unk_len, -1);
                unk_len = 0;
            }
            ADD_SYMBOL(id, (int32_t)cl, decode_cp(w + i, cl));
            i += cl;
            continue;
        }
        if (m->byte_fallback) {
            int all = 1;
            for (size_t k = 0; k < cl; k++)
                if (m->byte_ids[(unsigned char)w[i + k]] < 0) all = 0;
            if (all) {
                /* like Hugging Face, a pending unknown is not flushed here */
                for (size_t k = 0; k < cl; k++) ADD_SYMBOL(m->byte_ids[(unsigned char)w[i + k]], 1, -1);
                i += cl;
                continue;
            }
        }
        if (m->unk_id >= 0) {
            if (unk_len && m->fuse_unk) {
                unk_len += (int32_t)cl;
            } else {
                if (unk_len) ADD_SYMBOL(m->unk_id, unk_len, -1);
                unk_len = (int32_t)cl;
            }
        }
        i += cl;
    }
    if (unk_len) ADD_SYMBOL(m->unk_id, unk_len, -1);
#undef ADD_SYMBOL
    if (n == 0) return 0;
    /* Cut the word where no merge can ever join the two characters: the
     * parts merge independently, so the result is the same, and each part
     * gets its own small heap. */
    size_t start = 0;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && (s->cp[i - 1] < 0 || s->cp[i] < 0 || kv_pairmap_get(&m->cross, s->cp[i - 1], s->cp[i])))
            continue;
        if (merge_part(m, s, (int32_t)start, (int32_t)i, out)) return kv_fail(err, "out of memory in BPE");
        start = i;
    }
    return 0;
}

static int32_t decode_cp(const char *p, size_t n) {
    const unsigned char *u = (const unsigned char *)p;
    if (n == 1) return u[0];
    if (n == 2) return ((u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    if (n == 3) return ((u[0] & 0x0F) << 12) | ((u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    return ((u[0] & 0x07) << 18) | ((u[1] & 0x3F) << 12) | ((u[2] & 0x3F) << 6) | (u[3] & 0x3F);
}

int kv_bpe_add_cross(kv_bpe *m, const char *l, size_t ll, const char *r, size_t rl) {
    if (!ll || !rl) return 0;
    size_t k = ll - 1;
    while (k > 0 && ((unsigned char)l[k] & 0xC0) == 0x80) k--;
    int32_t a = decode_cp(l + k, ll - k), b = decode_cp(r, (size_t)kv_utf8_len((unsigned char)r[0]) <= rl
                                                          ? (size_t)kv_utf8_len((unsigned char)r[0]) : rl);
    return kv_pairmap_put(&m->cross, a, b, 0, 0);
}

/* heap merge loop over symbols [b, e) (HF word.rs merge_all), output appended */
static int merge_part(const kv_bpe *m, kv_bpe_scratch *s, int32_t b, int32_t e, kv_ivec *out) {
    size_t n = (size_t)e;
    s->prev[b] = -1;
    s->next[e - 1] = -1;
    s->hn = 0;
    for (size_t i = (size_t)b; i + 1 < n; i++) {
        const kv_pairmap_slot *p = kv_pairmap_get(&m->merges, s->c[i], s->c[i + 1]);
        if (p && heap_push(s, (struct kv_bpe_merge){p->rank, (int32_t)i, p->new_id}))
            return -1;
    }
    while (s->hn) {
        struct kv_bpe_merge top = heap_pop(s);
        int32_t pos = top.pos;
        if (s->len[pos] == 0 || s->next[pos] == -1) continue;
        int32_t nx = s->next[pos];
        const kv_pairmap_slot *p = kv_pairmap_get(&m->merges, s->c[pos], s->c[nx]);
        if (!p || p->new_id != top.new_id) continue;
        /* merge right into pos */
        s->c[pos] = top.new_id;
        s->len[pos] += s->len[nx];
        s->next[pos] = s->next[nx];
        s->len[nx] = 0;
        if (s->next[nx] >= 0) s->prev[s->next[nx]] = pos;
        if (s->prev[pos] >= 0) {
            int32_t pv = s->prev[pos];
            p = kv_pairmap_get(&m->merges, s->c[pv], s->c[pos]);
            if (p && heap_push(s, (struct kv_bpe_merge){p->rank, pv, p->new_id}))
                return -1;
        }
        if (s->next[pos] >= 0) {
            p = kv_pairmap_get(&m->merges, s->c[pos], s->c[s->next[pos]]);
            if (p && heap_push(s, (struct kv_bpe_merge){p->rank, pos, p->new_id}))
                return -1;
        }
    }
    for (int32_t i = b; i >= 0; i = s->next[i])
        if (kv_ivec_push(out, s->c[i])) return -1;
    return 0;
}
