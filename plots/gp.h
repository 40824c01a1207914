/* gnuplot side of kvplot: a growing text buffer, gnuplot string literals,
 * the templates in plots/ *.gp and running gnuplot on a filled script.
 *
 * A template is a gnuplot script with placeholders @NAME@ (upper case,
 * digits, underscore). kvplot fills them with gnuplot literals: numbers, or
 * strings made by kvp_gp_string(). The placeholders @HEADER@, @BEGIN@ and
 * @END@ expand to the sections of plots/common.gp (settings shared by every
 * figure, and the loop over output formats). */
#ifndef KVP_GP_H
#define KVP_GP_H

#include <stddef.h>
#include "common/error.h"

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} kvp_buf;

void kvp_buf_printf(kvp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kvp_buf_put(kvp_buf *b, const char *s, size_t n);
void kvp_buf_free(kvp_buf *b);

/* Appends s as a gnuplot string literal that shows s as itself (with
 * "noenhanced" text): single-quoted (' doubled) by default, double-quoted
 * (\" and \\) with KVP_GP_DQUOTE -- needed inside { } blocks and array
 * initialisers, where gnuplot 5.4 mis-parses ''. Control characters show as
 * an escape (\n, \t, \r, \xHH), UTF-8 passes through. KVP_GP_FORMAT
 * doubles '%' for strings used as formats (tic labels). */
#define KVP_GP_FORMAT 1
#define KVP_GP_DQUOTE 4
void kvp_gp_string(kvp_buf *b, const char *s, int mode);

/* Key/value list for filling a template. Values are gnuplot literals.
 * Setting a value that cannot be stored (out of memory) marks the list, and
 * kvp_template_fill then fails: no script is written with a value missing. */
typedef struct {
    int n, cap;
    char **keys, **vals;
    int oom;
} kvp_vars;
void kvp_vars_set(kvp_vars *v, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void kvp_vars_str(kvp_vars *v, const char *key, const char *s);   /* as a string literal */
void kvp_vars_free(kvp_vars *v);

/* Reads TEMPLATE_DIR/name, fills every @KEY@ from vars (and @HEADER@,
 * @BEGIN@, @END@ from TEMPLATE_DIR/common.gp), returns a malloc'd script.
 * An unknown placeholder is an error. */
char *kvp_template_fill(const char *template_dir, const char *name, const kvp_vars *vars, kv_error *err);

/* The directory holding the templates: $KVPLOT_TEMPLATES, else
 * <executable dir>/../plots, else ./plots; checks that common.gp is there. */
int kvp_template_dir(const char *given, char *out, size_t out_size, kv_error *err);

/* Path of gnuplot on PATH, or -1 with an error saying how to install it. */
int kvp_find_gnuplot(char *out, size_t out_size, kv_error *err);

/* Runs "gnuplot SCRIPT" and waits; gnuplot's stderr is returned in *msgs
 * (malloc'd, may be empty). Non-zero exit: -1 with gnuplot's message. */
int kvp_gnuplot_run(const char *gnuplot, const char *script, char **msgs, kv_error *err);

/* Writes text to path (creating or truncating it). */
int kvp_write_text(const char *path, const char *text, size_t n, kv_error *err);

#endif
