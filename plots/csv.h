/* A small CSV table reader for kvanalyze's output files (docs/analyzer.md):
 * one header row, comma-separated, no quoting. Cells are kept as strings;
 * numbers are parsed on demand so that errors name the file, row and column.
 *
 *   kvp_csv *t = kvp_csv_read("results/eviction_loss.csv", &err);
 *   int c = kvp_csv_col(t, "actual_l1", &err);
 *   double v; kvp_csv_num(t, row, c, &v, &err);
 */
#ifndef KVP_CSV_H
#define KVP_CSV_H

#include "common/error.h"

typedef struct {
    char *path;
    int ncols;
    char **names;      /* [ncols] */
    int nrows;
    char **cells;      /* [nrows * ncols], pointers into buf */
    char *buf;
} kvp_csv;

kvp_csv *kvp_csv_read(const char *path, kv_error *err);
void kvp_csv_free(kvp_csv *t);

/* Column index of name; -1 with "PATH: no column 'name'" when missing. */
int kvp_csv_col(const kvp_csv *t, const char *name, kv_error *err);
static inline const char *kvp_csv_str(const kvp_csv *t, int row, int col) {
    return t->cells[(long)row * t->ncols + col];
}
/* Parses a finite number; error names the file, line and column. */
int kvp_csv_num(const kvp_csv *t, int row, int col, double *out, kv_error *err);

#endif
