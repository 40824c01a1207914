/* RoPE's inverse frequencies and cos/sin tables, as transformers 4.57.6
 * computes them (modeling_rope_utils.py and the *RotaryEmbedding classes).
 *
 * transformers works in float32 throughout: inv_freq is a float32 tensor,
 * the angle position·inv_freq is a float32 product, and its rounding error
 * grows with the position (about 1e-3 in cos at 32k positions). With
 * KV_ROPE_F32 every operation below is rounded to float32 where torch rounds
 * it, so the tables equal transformers' to the last bit or two; with
 * KV_ROPE_F64 the same formulas run in double. Each formula is written once:
 * R() is the float32 rounding of one torch operation, the identity in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

#define R(x) (f32 ? (double)(float)(x) : (x))

void kv_rope_inv_freq(const kv_config *c, int n, kv_rope_precision prec, double *inv, double *scale) {
    const kv_rope *p = &c->rope;
    const int f32 = prec == KV_ROPE_F32, dim = c->head_dim, half = dim / 2;
    double base = p->theta;
    *scale = 1.0;
    if (p->type == KV_ROPE_DYNAMIC && n > c->max_position_embeddings) {
        /* dynamic NTK: the base grows once the pass is longer than max_position_embeddings;
         * transformers computes it on a float32 tensor of the sequence length */
        double f = R(p->factor), grown = R(R(R(f * n) / c->max_position_embeddings) - R(p->factor - 1));
        base = R(p->theta * R(pow(grown, R((double)dim / (dim - 2)))));
    }
    double factor = R(p->factor);
    for (int i = 0; i < half; i++) {
        double pos_freq = R(pow(R(base), R(R(2.0 * i) / dim))); /* base ** (arange(0, dim, 2) / dim) */
        double f = R(1.0 / pos_freq);
        switch (p->type) {
        case KV_ROPE_DEFAULT:
        case KV_ROPE_DYNAMIC:
            break;
        case KV_ROPE_LINEAR:
            f = R(f / factor);
            break;
        case KV_ROPE_LLAMA3: {
            double old = p->original_max_pos, low = R(old / p->low_freq_factor), high = R(old / p->high_freq_factor);
            double wavelen = R(R(2 * M_PI) / f);
            double scaled = wavelen > low ? R(f / factor) : f;
            if (!(wavelen < high) && !(wavelen > low)) { /* medium band: interpolate */
                double smooth = R(R(R(old) / wavelen) - R(p->low_freq_factor));
                smooth = R(smooth / R(p->high_freq_factor - p->low_freq_factor));
                scaled = R(R(R(R(1 - smooth) * scaled) / factor) + R(smooth * scaled));
            }
            f = scaled;
            break;
        }
        case KV_ROPE_YARN: {
            /* correction range in double (Python floats), the ramp on float32 tensors */
            double b = p->theta, orig = p->original_max_pos;
            double lo = dim * log(orig / (p->beta_fast * 2 * M_PI)) / (2 * log(b));
            double hi = dim * log(orig / (p->beta_slow * 2 * M_PI)) / (2 * log(b));
            if (p->truncate) {
                lo = floor(lo);
                hi = ceil(hi);
            }
            if (lo < 0) lo = 0;
            if (hi > dim - 1) hi = dim - 1;
            if (lo == hi) hi += 0.001;
            double ramp = R(R(i - R(lo)) / R(hi - lo));
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extrapolation = R(1 - ramp);
            double interpolated = R(1.0 / R(factor * pos_freq));
            f = R(R(interpolated * R(1 - extrapolation)) + R(f * extrapolation));
            *scale = p->attention_factor;
            break;
        }
        }
        inv[i] = f;
    }
}

int kv_rope_tables(const kv_config *c, int n, kv_rope_precision prec, float *cs, float *sn, kv_error *err) {
    const int f32 = prec == KV_ROPE_F32, half = c->head_dim / 2;
    double *inv = kv_malloc(half * sizeof(double), err), scale;
    if (!inv) return -1;
    kv_rope_inv_freq(c, n, prec, inv, &scale);
    double s = R(scale);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < half; j++) {
            double a = R((double)i * inv[j]); /* inv_freq @ position_ids */
            cs[(size_t)i * half + j] = (float)(R(cos(a)) * s);
            sn[(size_t)i * half + j] = (float)(R(sin(a)) * s);
        }
    free(inv);
    return 0;
}

int kv_rope_precision_parse(const char *name, kv_rope_precision *out) {
    if (!strcmp(name, "f32")) *out = KV_ROPE_F32;
    else if (!strcmp(name, "f64")) *out = KV_ROPE_F64;
    else return -1;
    return 0;
}

const char *kv_rope_precision_name(kv_rope_precision p) { return p == KV_ROPE_F64 ? "f64" : "f32"; }
