/* All-or-nothing output files: every file is written under a temporary name
 * in OUTDIR and renamed only when the whole run succeeded. */
#ifndef KV_AN_OUTPUT_H
#define KV_AN_OUTPUT_H

#include <stdio.h>

#include "common/error.h"

#define KV_OUT_MAX 8

typedef struct {
    char *final_path; /* OUTDIR/name */
    char *tmp_path;   /* OUTDIR/.name.tmp.<pid> */
    FILE *fp;
} kv_outfile;

typedef struct {
    char *dir;
    int created_dir; /* 1 when begin() created OUTDIR (removed again on abort) */
    int n;
    kv_outfile f[KV_OUT_MAX];
} kv_outset;

/* Creates dir when missing, refuses existing outputs unless force, opens one
 * temporary file per name. On failure everything is undone. */
int kv_outset_begin(kv_outset *o, const char *dir, const char *const *names, int n, int force, kv_error *err);
/* Closes and renames every file to its final name. */
int kv_outset_commit(kv_outset *o, kv_error *err);
/* Closes and removes every temporary file (and OUTDIR if begin created it). */
void kv_outset_abort(kv_outset *o);

#endif
