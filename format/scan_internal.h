/* What the trace reader (trace_read.c) asks of the map scan (trace_scan.c).
 * Not for use outside format/. */
#ifndef KV_SCAN_INTERNAL_H
#define KV_SCAN_INTERNAL_H

#include "format/trace_read.h"

/* Decides whether the prompt's attn chunks can be read raw (p->attn_fast and
 * the fields after it); called once by kv_prompt_open. */
void kv_scan_detect(kv_prompt *p);
/* Frees the scan's buffers kept in p->scratch (kv_prompt_close). */
void kv_scan_scratch_free(struct kv_scan_scratch *s);

#endif
