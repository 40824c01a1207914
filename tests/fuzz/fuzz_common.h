/* Shared by the libFuzzer harnesses: the parsers under test read files, so
 * each input is written to a per-process file in /dev/shm (or /tmp). */
#ifndef KV_FUZZ_COMMON_H
#define KV_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline const char *fuzz_dir(void) {
    static char dir[256];
    if (!dir[0]) {
        struct stat st;
        snprintf(dir, sizeof dir, "%s/kvfuzz-%d", stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
        mkdir(dir, 0700);
    }
    return dir;
}

/* Writes data to <fuzz_dir>/<name> and returns the path (static buffer). */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path;
}

#endif
