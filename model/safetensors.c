#include "model/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"

/* A header above this is not a plausible safetensors header (the format's
 * own reference implementation uses 100 MB). */
#define KV_ST_MAX_HEADER (100u * 1024 * 1024)

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const kv_tensor *)a)->name, ((const kv_tensor *)b)->name);
}

typedef struct { size_t begin, end; const char *name; } range;
static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* Validates one tensor entry of a header and fills t (name not set). */
static int parse_entry(const char *path, const cJSON *e, size_t data_size, kv_tensor *t, size_t *begin,
                       kv_error *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return kv_fail(err, "%s: header entry '%s' is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return kv_fail(err, "%s: tensor '%s' has no dtype", path, name);
    if (kv_dtype_parse(dt->valuestring, &t->dtype))
        return kv_fail(err, "%s: tensor '%s' has unknown dtype '%s'", path, name, dt->valuestring);
    if (!cJSON_IsArray(sh)) return kv_fail(err, "%s: tensor '%s' has no shape", path, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > KV_MAX_DIMS) return kv_fail(err, "%s: tensor '%s' has %d dimensions (max %d)", path, name, nd, KV_MAX_DIMS);
    t->ndim = nd;
    int64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(sh, i);
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1e15 || d->valuedouble != (double)(int64_t)d->valuedouble)
            return kv_fail(err, "%s: tensor '%s' has an invalid shape", path, name);
        t->shape[i] = (int64_t)d->valuedouble;
        if (t->shape[i] && numel > INT64_MAX / 16 / t->shape[i])
            return kv_fail(err, "%s: tensor '%s' shape overflows", path, name);
        numel *= t->shape[i];
    }
    t->numel = numel;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return kv_fail(err, "%s: tensor '%s' has no data_offsets pair", path, name);
    double b = cJSON_GetArrayItem(off, 0)->valuedouble, en = cJSON_GetArrayItem(off, 1)->valuedouble;
    /* range first: converting a double beyond int64 to an integer is undefined */
    if (!cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(off, 1)) || b < 0 ||
        en < b || en > 9.0e15 || b != floor(b) || en != floor(en))
        return kv_fail(err, "%s: tensor '%s' has invalid data_offsets", path, name);
    if (en > (double)data_size)
        return kv_fail(err, "%s: tensor '%s' ends at byte %.0f, past the end of the data (%zu bytes; truncated file?)",
                       path, name, en, data_size);
    size_t nbytes = (size_t)en - (size_t)b;
    if ((uint64_t)numel * kv_dtype_size(t->dtype) != nbytes)
        return kv_fail(err, "%s: tensor '%s' has %zu bytes but its shape and dtype %s need %llu", path, name,
                       nbytes, dt->valuestring, (unsigned long long)numel * kv_dtype_size(t->dtype));
    t->nbytes = nbytes;
    *begin = (size_t)b;
    return 0;
}

int kv_checkpoint_add_file(kv_checkpoint *ck, const char *path, kv_error *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return kv_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kv_fail(err, "%s: not a regular file", path);
    }
    size_t fsize = (size_t)st.st_size;
    if (fsize < 8) {
        close(fd);
        return kv_fail(err, "%s: too short to be a safetensors file (%zu bytes)", path, fsize);
    }
    void *map = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return kv_fail(err, "%s: cannot map: %s", path, strerror(errno));
    const unsigned char *bytes = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | bytes[i]; /* little-endian */
    int rc = -1;
    cJSON *root = NULL;
    range *ranges = NULL;
    kv_tensor *added = NULL;
    int n_added = 0;
    if (hlen > KV_ST_MAX_HEADER) {
        kv_fail(err, "%s: header length %llu exceeds the %u byte limit (not a safetensors file?)", path,
                (unsigned long long)hlen, KV_ST_MAX_HEADER);
        goto done;
    }
    if (hlen > fsize - 8) {
        kv_fail(err, "%s: header length %llu runs past the end of the file (%zu bytes; truncated?)", path,
                (unsigned long long)hlen, fsize);
        goto done;
    }
    root = cJSON_ParseWithLength((const char *)bytes + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        kv_fail(err, "%s: header is not a JSON object", path);
        goto done;
    }
    size_t data_size = fsize - 8 - (size_t)hlen;
    const unsigned char *data = bytes + 8 + hlen;
    int n = 0;
    for (cJSON *e = root->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__")) n++;
    added = kv_calloc((size_t)n, sizeof *added, err);
    ranges = kv_calloc((size_t)n, sizeof *ranges, err);
    if (!added || !ranges) goto done;
    for (cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        kv_tensor *t = &added[n_added];
        size_t begin = 0;
        if (parse_entry(path, e, data_size, t, &begin, err)) goto done;
        t->name = strdup(e->string);
        t->data = data + begin;
        t->shard = ck->n_shards;
        ranges[n_added] = (range){begin, begin + t->nbytes, t->name};
        n_added++;
    }
    qsort(ranges, (size_t)n_added, sizeof *ranges, cmp_range);
    for (int i = 1; i < n_added; i++)
        if (ranges[i].begin < ranges[i - 1].end) {
            kv_fail(err, "%s: tensors '%s' and '%s' overlap in the data", path, ranges[i - 1].name, ranges[i].name);
            goto done;
        }
    /* append shard and tensors */
    int ns = ck->n_shards + 1;
    char **sp = realloc(ck->shard_paths, ns * sizeof *sp);
    if (sp) ck->shard_paths = sp;
    void **mp = realloc(ck->maps, ns * sizeof *mp);
    if (mp) ck->maps = mp;
    size_t *ms = realloc(ck->map_sizes, ns * sizeof *ms);
    if (ms) ck->map_sizes = ms;
    kv_tensor *tt = realloc(ck->tensors, (size_t)(ck->n_tensors + n_added) * sizeof *tt);
    if (tt) ck->tensors = tt;
    if (!sp || !mp || !ms || !tt) {
        kv_fail(err, "out of memory");
        goto done;
    }
    ck->shard_paths[ck->n_shards] = strdup(path);
    ck->maps[ck->n_shards] = map;
    ck->map_sizes[ck->n_shards] = fsize;
    ck->n_shards = ns;
    for (int i = 0; i < n_added; i++) ck->tensors[ck->n_tensors++] = added[i];
    n_added = 0;
    map = NULL; /* now owned by ck */
    qsort(ck->tensors, (size_t)ck->n_tensors, sizeof *ck->tensors, cmp_tensor_name);
    for (int i = 1; i < ck->n_tensors; i++)
        if (!strcmp(ck->tensors[i].name, ck->tensors[i - 1].name)) {
            kv_fail(err, "%s: tensor '%s' appears in more than one shard", path, ck->tensors[i].name);
            goto done;
        }
    n_added = 0;
    map = NULL;
    rc = 0;
done:
    for (int i = 0; i < n_added; i++) free(added[i].name);
    free(added);
    free(ranges);
    cJSON_Delete(root);
    if (map) munmap(map, fsize);
    return rc;
}

int kv_checkpoint_open(kv_checkpoint *ck, const char *dir, kv_error *err) {
    memset(ck, 0, sizeof *ck);
    char *index_path = kv_path_join(dir, "model.safetensors.index.json", err);
    char *single_path = kv_path_join(dir, "model.safetensors", err);
    int rc = -1;
    cJSON *root = NULL;
    char *text = NULL;
    if (!index_path || !single_path) goto done;
    if (kv_path_exists(index_path)) {
        text = kv_read_file(index_path, 64u << 20, NULL, err);
        if (!text) goto done;
        root = cJSON_Parse(text);
        const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
        if (!cJSON_IsObject(wm)) {
            kv_fail(err, "%s: not JSON with a \"weight_map\" object", index_path);
            goto done;
        }
        /* distinct shard files, in first-seen order */
        for (const cJSON *e = wm->child; e; e = e->next) {
            if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
                kv_fail(err, "%s: weight_map entry '%s' is not a file name", index_path, e->string);
                goto done;
            }
            int seen = 0;
            for (const cJSON *p = wm->child; p != e; p = p->next)
                if (!strcmp(p->valuestring, e->valuestring)) { seen = 1; break; }
            if (seen) continue;
            char *shard = kv_path_join(dir, e->valuestring, err);
            if (!shard) goto done;
            int r = kv_checkpoint_add_file(ck, shard, err);
            free(shard);
            if (r) goto done;
        }
        for (const cJSON *e = wm->child; e; e = e->next)
            if (!kv_checkpoint_find(ck, e->string)) {
                kv_fail(err, "%s: tensor '%s' is listed but not found in %s", index_path, e->string, e->valuestring);
                goto done;
            }
    } else if (kv_path_exists(single_path)) {
        if (kv_checkpoint_add_file(ck, single_path, err)) goto done;
    } else {
        kv_fail(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
        goto done;
    }
    rc = 0;
done:
    if (rc) kv_checkpoint_close(ck);
    cJSON_Delete(root);
    free(text);
    free(index_path);
    free(single_path);
    return rc;
}

void kv_checkpoint_close(kv_checkpoint *ck) {
    for (int i = 0; i < ck->n_tensors; i++) free(ck->tensors[i].name);
    for (int i = 0; i < ck->n_shards; i++) {
        munmap(ck->maps[i], ck->map_sizes[i]);
        free(ck->shard_paths[i]);
    }
    free(ck->tensors);
    free(ck->shard_paths);
    free(ck->maps);
    free(ck->map_sizes);
    memset(ck, 0, sizeof *ck);
}

const kv_tensor *kv_checkpoint_find(const kv_checkpoint *ck, const char *name) {
    int lo = 0, hi = ck->n_tensors - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, ck->tensors[mid].name);
        if (c == 0) return &ck->tensors[mid];
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}
