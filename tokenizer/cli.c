/* kvtrace tokenize (--model DIR | --tokenizer FILE) (--text STR | --file F)
 *                  [--pieces] [--no-special] [--special-text STR]...
 * Prints the ids as one JSON array; with --pieces an array of
 * {"id", "piece", "flags"} objects (docs/tokens.md). */
#include <cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

#define KV_TEXT_MAX ((size_t)1 << 30) /* longest file read */

static const char USAGE[] =
    "usage: kvtrace tokenize (--model DIR | --tokenizer FILE) (--text STR | --file F)\n"
    "                        [--pieces] [--no-special] [--special-text STR]...\n";

int kv_tokenize_main(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"tokenizer", required_argument, 0, 't'},
        {"text", required_argument, 0, 'x'},    {"file", required_argument, 0, 'f'},
        {"pieces", no_argument, 0, 'p'},        {"no-special", no_argument, 0, 'n'},
        {"special-text", required_argument, 0, 's'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model = NULL, *tok_path = NULL, *text = NULL, *file = NULL;
    int want_pieces = 0, add_special = 1;
    const char **stexts = calloc((size_t)argc + 1, sizeof *stexts);
    size_t n_stexts = 0;
    if (!stexts) {
        fprintf(stderr, "kvtrace tokenize: out of memory\n");
        return 1;
    }
    optind = 0; /* full re-initialisation: the caller may have used getopt */
    opterr = 0;
    int c, status = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': tok_path = optarg; break;
        case 'x': text = optarg; break;
        case 'f': file = optarg; break;
        case 'p': want_pieces = 1; break;
        case 'n': add_special = 0; break;
        case 's': stexts[n_stexts++] = optarg; break;
        case 'h':
            fputs(USAGE, stdout);
            free(stexts);
            return 0;
        default:
            fprintf(stderr, "kvtrace tokenize: unknown or incomplete option '%s'\n%s",
                    argv[optind - 1 > 0 ? optind - 1 : 0], USAGE);
            free(stexts);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvtrace tokenize: unexpected argument '%s'\n%s", argv[optind], USAGE);
        free(stexts);
        return 2;
    }
    if (!!model == !!tok_path || !!text == !!file) {
        fprintf(stderr, "kvtrace tokenize: give exactly one of --model/--tokenizer and one of --text/--file\n%s",
                USAGE);
        free(stexts);
        return 2;
    }
    kv_error err = {{0}};
    kv_tokenizer *t = NULL;
    char *path = NULL, *owned_text = NULL, **pieces = NULL;
    int32_t *ids = NULL, extra[KV_MAX_SPECIAL_IDS];
    uint8_t *flags = NULL;
    size_t n_ids = 0, text_len = 0;
    int n_extra = 0;
    if (model) {
        size_t L = strlen(model) + 32;
        path = malloc(L);
        if (!path) goto oom;
        snprintf(path, L, "%s/config.json", model);
        FILE *probe = fopen(path, "rb");
        if (probe) {
            fclose(probe);
            if (kv_config_special_ids(path, extra, &n_extra, &err)) goto fail;
        }
        snprintf(path, L, "%s/tokenizer.json", model);
        tok_path = path;
    }
    if (!(t = kv_tokenizer_load(tok_path, &err))) goto fail;
    if (file) {
        if (!(owned_text = kv_read_file(file, KV_TEXT_MAX, &text_len, &err))) goto fail;
        text = owned_text;
    } else {
        text_len = strlen(text);
    }
    if (kv_tokenizer_encode(t, text, text_len, add_special, &ids, &n_ids, &err)) {
        kv_wrap(&err, "%s", file ? file : "--text");
        goto fail;
    }
    cJSON *arr = cJSON_CreateArray();
    if (!arr) goto oom;
    if (want_pieces) {
        flags = malloc(n_ids + 1);
        if (!flags) goto oom;
        if (kv_tokenizer_token_info(t, ids, n_ids, extra, (size_t)n_extra, stexts, n_stexts, &pieces, flags, &err)) {
            cJSON_Delete(arr);
            goto fail;
        }
        for (size_t i = 0; i < n_ids; i++) {
            cJSON *o = cJSON_CreateObject();
            if (!o) continue;
            cJSON_AddItemToArray(arr, o);
            cJSON_AddNumberToObject(o, "id", ids[i]);
            cJSON_AddStringToObject(o, "piece", pieces[i]);
            cJSON_AddNumberToObject(o, "flags", flags[i]);
        }
    } else {
        for (size_t i = 0; i < n_ids; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    }
    char *out = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (!out) goto oom;
    fputs(out, stdout);
    fputc('\n', stdout);
    free(out);
    status = fflush(stdout) == 0 ? 0 : 1;
    goto done;
oom:
    kv_fail(&err, "out of memory");
fail:
    fprintf(stderr, "kvtrace tokenize: %s\n", err.msg);
    status = 1;
done:
    if (pieces)
        for (size_t i = 0; i < n_ids; i++) free(pieces[i]);
    free(pieces);
    free(flags);
    free(ids);
    free(owned_text);
    free(path);
    free(stexts);
    kv_tokenizer_free(t);
    return status;
}
