/* Names and constants of the trace format (docs/trace-format.md). Shared by
 * the writer (format/trace_write.h) and the reader (format/trace_read.h). */
#ifndef KV_TRACE_H
#define KV_TRACE_H

#define KV_TRACE_FORMAT "kvtrace"
#define KV_TRACE_FORMAT_VERSION 1

/* token flag bits (dataset "flags") */
#define KV_FLAG_SPECIAL 0x01
#define KV_FLAG_PUNCT 0x02
#define KV_FLAG_SPACE 0x04

#define KV_PROMPT_ID_MAX 128

/* FastGen local-window accumulators (dataset "nearsum"): at most this many r_l values */
#define KV_MAX_NEAR 8

/* Returns 1 when id is usable as a prompt group name: non-empty, at most
 * KV_PROMPT_ID_MAX bytes of [A-Za-z0-9_.-], not "." or "..". */
int kv_prompt_id_valid(const char *id);

#endif
