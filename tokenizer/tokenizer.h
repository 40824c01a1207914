/* Hugging Face tokenizer.json-compatible tokenizer (BPE family).
 *
 * Supported components (anything else is a load error naming it):
 *   model          BPE (vocab, merges as "a b" or ["a","b"], byte_fallback,
 *                  fuse_unk, unk_token, ignore_merges)
 *   normalizer     NFC NFD NFKC NFKD Prepend Replace Sequence null
 *   pre_tokenizer  Split(Regex|String, Isolated, invert=false) ByteLevel
 *                  Metaspace Digits Sequence null
 *   decoder        ByteLevel Replace ByteFallback Fuse Strip Metaspace Sequence null
 *   post_processor TemplateProcessing ByteLevel Sequence null
 *   added_tokens   matched longest-first in the raw text (normalized=false) or
 *                  in the normalized text (normalized=true); lstrip, rstrip.
 * See docs/tokens.md for the token flag definitions. */
#ifndef KV_TOKENIZER_H
#define KV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "format/trace.h"

typedef struct kv_tokenizer kv_tokenizer;

/* Reads and validates a tokenizer.json file. NULL + err on failure. */
kv_tokenizer *kv_tokenizer_load(const char *tokenizer_json_path, kv_error *err);
/* Same from an in-memory JSON document; name is used in error messages. */
kv_tokenizer *kv_tokenizer_load_json(const char *json, size_t len, const char *name, kv_error *err);
void kv_tokenizer_free(kv_tokenizer *t);

/* Number of ids, including added tokens: largest id + 1. */
int kv_tokenizer_vocab_size(const kv_tokenizer *t);

/* Token string as stored in the vocabulary (e.g. "Ġthe", "▁the", "<0x0A>",
 * "<s>"), or NULL for an unknown id. Owned by the tokenizer. */
const char *kv_tokenizer_id_to_token(const kv_tokenizer *t, int32_t id);
/* Id of an exact vocabulary / added-token string, or -1. */
int32_t kv_tokenizer_token_to_id(const kv_tokenizer *t, const char *token);

/* text must be valid UTF-8 (else error). add_special: apply the
 * post-processor (BOS etc.). *ids is malloc'd (caller frees). */
int kv_tokenizer_encode(const kv_tokenizer *t, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n_ids, kv_error *err);

/* Decodes ids as the tokenizer.json decoder does (Hugging Face
 * Tokenizer::decode). skip_special drops added tokens with special=true.
 * Returns a malloc'd NUL-terminated string or NULL + err (unknown id). */
char *kv_tokenizer_decode(const kv_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                          kv_error *err);

/* Per-token decoded text and flags (docs/tokens.md).
 *   pieces: *pieces becomes a malloc'd array of n malloc'd strings (caller
 *           frees each and the array); may be NULL when not wanted.
 *   flags:  n bytes of KV_FLAG_* (caller-provided); may be NULL.
 *   extra_special_ids: bos/eos/pad ids from config.json (flagged special).
 *   special_texts: strings matched on the concatenated token stream; every
 *           token overlapping an occurrence is flagged special. */
int kv_tokenizer_token_info(const kv_tokenizer *t, const int32_t *ids, size_t n,
                            const int32_t *extra_special_ids, size_t n_extra,
                            const char *const *special_texts, size_t n_texts,
                            char ***pieces, uint8_t *flags, kv_error *err);

/* Flags of one decoded piece (a token's own decoded bytes, without the
 * sequence-level decoder steps):
 * KV_FLAG_PUNCT and/or KV_FLAG_SPACE, never KV_FLAG_SPECIAL. */
uint8_t kv_tokenizer_text_flags(const char *bytes, size_t len);

/* The CLI subcommand: argv[0] is "tokenize". Returns the exit status. */
int kv_tokenize_main(int argc, char **argv);

#endif
