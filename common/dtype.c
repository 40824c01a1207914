#include "common/dtype.h"

#include <string.h>

static const struct { const char *name; kv_dtype t; size_t size; } DTYPES[] = {
    {"F32", KV_F32, 4},   {"F16", KV_F16, 2}, {"BF16", KV_BF16, 2}, {"F64", KV_F64, 8},
    {"I64", KV_I64, 8},   {"I32", KV_I32, 4}, {"I16", KV_I16, 2},   {"I8", KV_I8, 1},
    {"U8", KV_U8, 1},     {"BOOL", KV_BOOL, 1},
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

const char *kv_dtype_name(kv_dtype t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].t == t) return DTYPES[i].name;
    return "?";
}

size_t kv_dtype_size(kv_dtype t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].t == t) return DTYPES[i].size;
    return 0;
}

int kv_dtype_parse(const char *s, kv_dtype *t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (!strcmp(s, DTYPES[i].name)) {
            *t = DTYPES[i].t;
            return 0;
        }
    return -1;
}

float kv_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float kv_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even; overflow goes to infinity, NaN stays NaN. */
uint16_t kv_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff);
    uint32_t mant = u & 0x7fffff;
    if (exp == 255) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++; /* may carry into exponent: fine */
    return (uint16_t)(sign | r);
}

/* The safetensors format does not align tensors to their element size, so
 * 16-bit elements are loaded byte-wise (memcpy), never through a pointer. */
static inline uint16_t load_u16(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

void kv_to_f32(float *dst, const void *src, kv_dtype dtype, size_t n) {
    const unsigned char *b = src;
    switch (dtype) {
    case KV_F32: memcpy(dst, src, n * 4); break;
    case KV_BF16: for (size_t i = 0; i < n; i++) dst[i] = kv_bf16_to_f32(load_u16(b + 2 * i)); break;
    case KV_F16: for (size_t i = 0; i < n; i++) dst[i] = kv_f16_to_f32(load_u16(b + 2 * i)); break;
    default: memset(dst, 0, n * 4); break;
    }
}

