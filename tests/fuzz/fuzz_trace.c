/* libFuzzer: kvanalyze on mutated trace files.
 *
 * Mutating whole HDF5 files mostly exercises libhdf5's own object-header
 * parser, which is not hardened against corrupt files (1.10.8 overflows a
 * heap buffer inside H5Aexists within seconds; docs/hardening.md). So this
 * harness mutates what a trace's producer controls: the bytes of every
 * dataset's storage (contiguous data and each chunk, compressed or not) in
 * one of two small real traces (tests/fuzz/base/), then runs the whole
 * analysis and the trace checker on the result.
 *
 * Input: byte 0 picks the base trace (even: raw maps, odd: deflated maps);
 * then records of 5 bytes: a 4-byte little-endian position (taken modulo
 * the total storage size) and an operation byte: low values set the byte,
 * 0xF0.. write a float32 special (NaN, Inf, -Inf, -1, 2, 1e30, 0, denormal)
 * at the 4-aligned position. */
#include <hdf5.h>
#include <math.h>

#include "analyzer/analyze.h"
#include "analyzer/check.h"
#include "tests/fuzz/fuzz_common.h"

typedef struct { haddr_t addr; hsize_t size; } region;
typedef struct {
    unsigned char *bytes;
    size_t len;
    region *regions;
    int n_regions;
    hsize_t total;
} base_trace;

static base_trace BASES[2];

static herr_t collect(hid_t obj, const char *name, const H5O_info_t *info, void *op) {
    base_trace *b = op;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(d);
    if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t n = 0;
        hid_t sp = H5Dget_space(d);
        H5Dget_num_chunks(d, sp, &n);
        for (hsize_t i = 0; i < n; i++) {
            hsize_t off[8];
            unsigned mask;
            haddr_t addr;
            hsize_t size;
            if (H5Dget_chunk_info(d, sp, i, off, &mask, &addr, &size) >= 0 && size) {
                b->regions = realloc(b->regions, (b->n_regions + 1) * sizeof *b->regions);
                b->regions[b->n_regions++] = (region){addr, size};
                b->total += size;
            }
        }
        H5Sclose(sp);
    } else {
        haddr_t addr = H5Dget_offset(d);
        hsize_t size = H5Dget_storage_size(d);
        if (addr != HADDR_UNDEF && size) {
            b->regions = realloc(b->regions, (b->n_regions + 1) * sizeof *b->regions);
            b->regions[b->n_regions++] = (region){addr, size};
            b->total += size;
        }
    }
    H5Pclose(dcpl);
    H5Dclose(d);
    return 0;
}

static void load_base(base_trace *b, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_trace: cannot open %s (run from the repository root)\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    b->len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b->bytes = malloc(b->len);
    if (fread(b->bytes, 1, b->len, f) != b->len) abort();
    fclose(f);
    hid_t h = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    H5Ovisit(h, H5_INDEX_NAME, H5_ITER_NATIVE, collect, b);
    H5Fclose(h);
    if (!b->total) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const char *dir = getenv("KV_FUZZ_BASE") ? getenv("KV_FUZZ_BASE") : "tests/fuzz/base";
    char path[512];
    snprintf(path, sizeof path, "%s/trace_raw.h5", dir);
    load_base(&BASES[0], path);
    snprintf(path, sizeof path, "%s/trace_deflate.h5", dir);
    load_base(&BASES[1], path);
    return 0;
}

static const float SPECIALS[8] = {NAN, INFINITY, -INFINITY, -1.0f, 2.0f, 1e30f, 0.0f, 1e-42f};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const base_trace *b = &BASES[data[0] & 1];
    unsigned char *file = malloc(b->len);
    memcpy(file, b->bytes, b->len);
    for (size_t k = 1; k + 5 <= size; k += 5) {
        uint32_t pos;
        memcpy(&pos, data + k, 4);
        hsize_t at = pos % b->total;
        int r = 0;
        while (at >= b->regions[r].size) at -= b->regions[r++].size;
        size_t off = (size_t)(b->regions[r].addr + at);
        uint8_t op = data[k + 4];
        if (op >= 0xF0) {
            size_t aligned = off & ~(size_t)3;
            if (aligned >= b->regions[r].addr && aligned + 4 <= b->len) memcpy(file + aligned, &SPECIALS[op & 7], 4);
        } else if (off < b->len) {
            file[off] = op;
        }
    }
    const char *path = fuzz_write_file("trace.h5", file, b->len);
    free(file);
    char outdir[512];
    snprintf(outdir, sizeof outdir, "%s/out", fuzz_dir());
    kv_analyze_opts o;
    memset(&o, 0, sizeof o);
    o.trace_path = path;
    o.outdir = outdir;
    o.thresholds[0] = 0.95;
    o.n_thresholds = 1;
    o.fg.r_local = o.fg.r_frequent = 0.3;
    o.budgets[0] = 12;
    o.n_budgets = 1;
    o.ada.obs_window = 4;
    o.ada.kernel = 3;
    o.ada.alpha = 0.2;
    o.force = 1;
    kv_error err;
    FILE *devnull = fopen("/dev/null", "w");
    kv_analyze(&o, devnull, &err);
    kv_check_trace(path, devnull, &err); /* the checker streams the same maps its own way */
    fclose(devnull);
    return 0;
}
