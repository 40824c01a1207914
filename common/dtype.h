/* Element types of checkpoint tensors and the float conversions between
 * them (round to nearest even where precision is lost). */
#ifndef KV_DTYPE_H
#define KV_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KV_F32 = 0, KV_F16, KV_BF16, KV_F64, KV_I64, KV_I32, KV_I16, KV_I8, KV_U8, KV_BOOL } kv_dtype;

/* safetensors name ("F32", "BF16", ...) */
const char *kv_dtype_name(kv_dtype t);
size_t kv_dtype_size(kv_dtype t);
/* 0 and *t set when name is a known safetensors dtype, else -1 */
int kv_dtype_parse(const char *name, kv_dtype *t);

float kv_bf16_to_f32(uint16_t h);
float kv_f16_to_f32(uint16_t h);
uint16_t kv_f32_to_f16(float f);
/* Converts n elements of F32/F16/BF16 data to float32. */
void kv_to_f32(float *dst, const void *src, kv_dtype dtype, size_t n);

#endif
