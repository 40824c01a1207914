/* Safetensors checkpoints: one model.safetensors or a sharded set listed in
 * model.safetensors.index.json. Every header is validated before anything
 * in it is trusted (length bound, JSON, known dtype, shape x dtype size ==
 * byte range, ranges inside the file and not overlapping); the data are
 * memory-mapped, never copied. */
#ifndef KV_SAFETENSORS_H
#define KV_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "common/dtype.h"
#include "common/error.h"


#define KV_MAX_DIMS 8

typedef struct {
    char *name;
    kv_dtype dtype;
    int ndim;
    int64_t shape[KV_MAX_DIMS];
    int64_t numel;
    const void *data;      /* inside the shard's mapping */
    size_t nbytes;
    int shard;             /* index into kv_checkpoint.shard_paths */
} kv_tensor;

typedef struct {
    kv_tensor *tensors;    /* [n_tensors], sorted by name */
    int n_tensors;
    char **shard_paths;    /* [n_shards] */
    void **maps;           /* [n_shards] mmap'd files */
    size_t *map_sizes;     /* [n_shards] */
    int n_shards;
} kv_checkpoint;

/* Opens dir/model.safetensors, or the shards named by
 * dir/model.safetensors.index.json when that exists. */
int kv_checkpoint_open(kv_checkpoint *ck, const char *dir, kv_error *err);
/* Opens a single safetensors file (appended as one more shard). */
int kv_checkpoint_add_file(kv_checkpoint *ck, const char *path, kv_error *err);
void kv_checkpoint_close(kv_checkpoint *ck);

/* NULL when absent. */
const kv_tensor *kv_checkpoint_find(const kv_checkpoint *ck, const char *name);

#endif
