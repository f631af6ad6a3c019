/* Per-row symmetric uint8 quantization: row kernels (portable C, AVX2 and NEON), and the one
 * definition of dequantization.
 *
 * The definition these kernels implement bit for bit (docs/quantization.md, and
 * embq._quantize.quantize_reference in plain numpy), for one float32 row x of length d:
 *
 *   m     = max_j |x_j|
 *   scale = float32(m / 127)                          (float32 division, round to nearest)
 *   normal rows (scale >= FLT_MIN):
 *       inv  = float32(1) / scale
 *       q_j  = rint(float32(x_j * inv))               (round half to even)
 *   tiny rows (0 < scale < FLT_MIN: 1/scale would lose precision or overflow):
 *       scale = the smallest float32 >= m / 127     (rounded up, so no code is clipped)
 *       q_j   = rint(float32(x_j / scale))
 *   huge rows (float32(127 * scale) overflows): scale = the next float32 below, then as normal
 *   all-zero rows: scale = 0, q_j = 0
 *   code_j = 128 + clip(q_j, -127, 127)
 *
 * and back (embq.dequantize, the store's row reads, the reconstruction error):
 *
 *   x_hat_j = float32(float32(code_j - zp) * scale)       (embq_dequant_value below)
 *
 * Every operation is a single IEEE float32 operation, so the result does not depend on the
 * instruction set, provided the compiler neither contracts a multiply and an add into an FMA
 * nor reassociates.  That is why the AVX2 variant is compiled with target("avx2") only (no
 * "fma": no FMA instruction can be emitted), rounds with _mm256_round_ps instead of an
 * add/subtract trick, and the portable variant uses rintf (nothing to fuse).  Do not build
 * this file with -ffast-math. */
#ifndef EMBQ_QUANT_H
#define EMBQ_QUANT_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_common.h"

#if EMBQ_HAVE_X86_DISPATCH
#include <immintrin.h>
#endif

typedef ptrdiff_t embq_ssize_t;

/* ---------------------------------------------------------------------------------------- */
/* Shared scalar pieces                                                                       */

/* Scale of a row from its max |x|; sets *tiny when the row needs the division path. */
static inline float embq_quant_scale(float m, int *tiny) {
    float scale = m / 127.0f;
    *tiny = 0;
    if (scale < FLT_MIN && m > 0.0f) {
        /* float32 * 127 is exact in double, so this comparison is exact. */
        if ((double)scale * 127.0 < (double)m) {
            scale = nextafterf(scale, INFINITY);
        }
        *tiny = 1;
    } else if (isinf(scale * 127.0f)) {
        /* Rows near FLT_MAX: a scale rounded up would make 127 * scale overflow when
         * dequantized; one step down keeps it finite (m / scale then exceeds 127 by about
         * 2**-17 relative and the code is clipped to 127, far inside the error bound). */
        scale = nextafterf(scale, 0.0f);
    }
    return scale;
}

static inline uint8_t embq_quant_code_from_q(float q) {
    if (q > 127.0f) q = 127.0f;
    if (q < -127.0f) q = -127.0f;
    return (uint8_t)(128 + (int)q);
}

/* The one definition of dequantization: code - zp is exact in int (|.| <= 255) and in float32,
 * so the only rounding is the float32 product.  Every dequantizing kernel calls this, and the
 * SIMD row kernels do the same three steps per lane (integer subtract, exact conversion, one
 * float32 multiply, no FMA), which tests/c/check_kernels.c checks bit for bit. */
static inline float embq_dequant_value(uint8_t code, int zp, float scale) {
    return (float)((int)code - zp) * scale;
}

/* Rows whose scale is subnormal: divide instead of multiplying by a reciprocal. Rare, scalar. */
static void embq_quant_row_tiny(const float *x, embq_ssize_t d, float scale, uint8_t *codes) {
    for (embq_ssize_t j = 0; j < d; j++) {
        codes[j] = embq_quant_code_from_q(rintf(x[j] / scale));
    }
}

/* Absolute value bits: for non-negative floats the integer order is the float order, and
 * every NaN or infinity compares >= 0x7f800000. */
static inline uint32_t embq_abs_bits(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return b & 0x7fffffffu;
}

static inline float embq_bits_to_float(uint32_t b) {
    float v;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* Shared middle of every row kernel: finish max |x| over x[j..d) (the caller's vector loop has
 * folded x[0..j) into mb), then settle the row's scale.  Returns EMBQ_ROW_BAD for a NaN or an
 * infinity (nothing written), EMBQ_ROW_DONE for an all-zero or tiny row (codes written), or
 * EMBQ_ROW_VECTOR for a normal row, whose codes the caller writes with *inv = 1 / scale. */
#define EMBQ_ROW_DONE 0
#define EMBQ_ROW_BAD 1
#define EMBQ_ROW_VECTOR 2
static inline int embq_quant_row_scale(const float *x, embq_ssize_t j, embq_ssize_t d, uint32_t mb,
                                       uint8_t *codes, float *scale_out, float *inv) {
    for (; j < d; j++) {
        uint32_t b = embq_abs_bits(x[j]);
        mb = b > mb ? b : mb;
    }
    if (mb >= 0x7f800000u) return EMBQ_ROW_BAD;
    int tiny;
    float scale = embq_quant_scale(embq_bits_to_float(mb), &tiny);
    *scale_out = scale;
    if (scale == 0.0f) {
        memset(codes, 128, (size_t)d);
        return EMBQ_ROW_DONE;
    }
    if (tiny) {
        embq_quant_row_tiny(x, d, scale, codes);
        return EMBQ_ROW_DONE;
    }
    *inv = 1.0f / scale;
    return EMBQ_ROW_VECTOR;
}

/* ---------------------------------------------------------------------------------------- */
/* Portable row kernels                                                                       */

/* Quantize one contiguous float32 row.  Returns 1 (writing nothing) when the row holds a NaN
 * or an infinity, 0 otherwise. */
static int embq_quant_row_portable(const float *x, embq_ssize_t d, uint8_t *codes, float *scale_out) {
    float inv;
    int st = embq_quant_row_scale(x, 0, d, 0, codes, scale_out, &inv);
    if (st != EMBQ_ROW_VECTOR) return st;
    for (embq_ssize_t j = 0; j < d; j++) {
        float v = x[j] * inv;
        codes[j] = embq_quant_code_from_q(rintf(v));
    }
    return 0;
}

static void embq_dequant_row_portable(const uint8_t *codes, embq_ssize_t d, int zp, float scale,
                                      float *out) {
    for (embq_ssize_t j = 0; j < d; j++) {
        out[j] = embq_dequant_value(codes[j], zp, scale);
    }
}

/* Exact sum of (code - zp)^2 over the row. */
static int64_t embq_sumsq_row_portable(const uint8_t *codes, embq_ssize_t d, int zp) {
    int64_t acc = 0;
    for (embq_ssize_t j = 0; j < d; j++) {
        int64_t c = (int64_t)codes[j] - zp;
        acc += c * c;
    }
    return acc;
}

/* ---------------------------------------------------------------------------------------- */
/* AVX2 row kernels                                                                           */

#if EMBQ_HAVE_X86_DISPATCH

#define EMBQ_AVX2 __attribute__((target("avx2")))

/* 32 floats -> 32 codes (normal rows).  The packs saturate to int16 then int8, which cannot
 * change anything: the rounded values lie in [-127.x, 127.x] and are clamped to >= -127 after. */
static inline EMBQ_AVX2 __m256i embq_quant32_avx2(const float *x, __m256 inv) {
    const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i a = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), inv), rnd));
    __m256i b = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8), inv), rnd));
    __m256i c = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 16), inv), rnd));
    __m256i e = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 24), inv), rnd));
    __m256i ab = _mm256_packs_epi32(a, b);   /* per lane: a0-3 b0-3 | a4-7 b4-7 */
    __m256i ce = _mm256_packs_epi32(c, e);
    __m256i v = _mm256_packs_epi16(ab, ce);  /* a0-3 b0-3 c0-3 e0-3 | a4-7 b4-7 c4-7 e4-7 */
    v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    v = _mm256_max_epi8(v, _mm256_set1_epi8(-127));
    v = _mm256_min_epi8(v, _mm256_set1_epi8(127));
    /* int8 q + 128 as uint8 is q with its top bit flipped. */
    return _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80));
}

static EMBQ_AVX2 int embq_quant_row_avx2(const float *x, embq_ssize_t d, uint8_t *codes, float *scale_out) {
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
    embq_ssize_t j = 0;
    for (; j + 32 <= d; j += 32) {
        m0 = _mm256_max_epi32(m0, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + j)), absmask));
        m1 = _mm256_max_epi32(m1, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + j + 8)), absmask));
        m2 = _mm256_max_epi32(m2, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + j + 16)), absmask));
        m3 = _mm256_max_epi32(m3, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + j + 24)), absmask));
    }
    for (; j + 8 <= d; j += 8) {
        m0 = _mm256_max_epi32(m0, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + j)), absmask));
    }
    m0 = _mm256_max_epi32(_mm256_max_epi32(m0, m1), _mm256_max_epi32(m2, m3));
    __m128i h = _mm_max_epi32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
    float inv1;
    int st = embq_quant_row_scale(x, j, d, (uint32_t)_mm_cvtsi128_si32(h), codes, scale_out, &inv1);
    if (st != EMBQ_ROW_VECTOR) return st;
    const __m256 inv = _mm256_set1_ps(inv1);
    for (j = 0; j + 32 <= d; j += 32) {
        _mm256_storeu_si256((__m256i *)(codes + j), embq_quant32_avx2(x + j, inv));
    }
    if (j < d) {
        /* The tail goes through the same vector code on a zero-padded copy, so every element
         * sees the same instructions. */
        float pad[32];
        uint8_t out[32];
        embq_ssize_t rest = d - j;
        memset(pad, 0, sizeof pad);
        memcpy(pad, x + j, (size_t)rest * sizeof(float));
        _mm256_storeu_si256((__m256i *)out, embq_quant32_avx2(pad, inv));
        memcpy(codes + j, out, (size_t)rest);
    }
    return 0;
}

static EMBQ_AVX2 void embq_dequant_row_avx2(const uint8_t *codes, embq_ssize_t d, int zp, float scale,
                                            float *out) {
    const __m256 s = _mm256_set1_ps(scale);
    const __m256i z = _mm256_set1_epi32(zp);
    embq_ssize_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m128i c = _mm_loadu_si128((const __m128i *)(codes + j));
        __m256i lo = _mm256_sub_epi32(_mm256_cvtepu8_epi32(c), z);
        __m256i hi = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(c, 8)), z);
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), s));
        _mm256_storeu_ps(out + j + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), s));
    }
    for (; j < d; j++) {
        out[j] = embq_dequant_value(codes[j], zp, scale);
    }
}

static EMBQ_AVX2 int64_t embq_sumsq_row_avx2(const uint8_t *codes, embq_ssize_t d, int zp) {
    const __m256i z = _mm256_set1_epi16((short)zp);
    int64_t total = 0;
    embq_ssize_t j = 0;
    while (j + 16 <= d) {
        /* Each int32 lane gains at most 2 * 255^2 per step; 8192 steps stay below 2^31. */
        embq_ssize_t stop = d - j > 16 * 8192 ? j + 16 * 8192 : d;
        __m256i acc = _mm256_setzero_si256();
        for (; j + 16 <= stop; j += 16) {
            __m256i c = _mm256_sub_epi16(
                _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(codes + j))), z);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(c, c));
        }
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        /* Four lanes below 2^31 each: widen before the final additions. */
        total += (int64_t)(uint32_t)_mm_extract_epi32(h, 0) + (int64_t)(uint32_t)_mm_extract_epi32(h, 1)
               + (int64_t)(uint32_t)_mm_extract_epi32(h, 2) + (int64_t)(uint32_t)_mm_extract_epi32(h, 3);
    }
    for (; j < d; j++) {
        int64_t c = (int64_t)codes[j] - zp;
        total += c * c;
    }
    return total;
}

#endif /* EMBQ_HAVE_X86_DISPATCH */

/* ---------------------------------------------------------------------------------------- */
/* NEON row kernels (AArch64)                                                                 */

#if EMBQ_HAVE_NEON

/* 16 floats -> 16 codes (normal rows).  vcvtnq rounds to nearest, ties to even, exactly as
 * rintf does in the default rounding mode; the saturating narrows cannot change anything
 * because the products lie within [-127.x, 127.x]. */
static inline uint8x16_t embq_quant16_neon(const float *x, float32x4_t inv) {
    int32x4_t a = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x), inv));
    int32x4_t b = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + 4), inv));
    int32x4_t c = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + 8), inv));
    int32x4_t e = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + 12), inv));
    int16x8_t ab = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    int16x8_t ce = vcombine_s16(vqmovn_s32(c), vqmovn_s32(e));
    int8x16_t v = vcombine_s8(vqmovn_s16(ab), vqmovn_s16(ce));
    v = vmaxq_s8(v, vdupq_n_s8(-127));
    v = vminq_s8(v, vdupq_n_s8(127));
    return veorq_u8(vreinterpretq_u8_s8(v), vdupq_n_u8(0x80));
}

static int embq_quant_row_neon(const float *x, embq_ssize_t d, uint8_t *codes, float *scale_out) {
    const uint32x4_t absmask = vdupq_n_u32(0x7fffffffu);
    uint32x4_t m0 = vdupq_n_u32(0), m1 = m0, m2 = m0, m3 = m0;
    embq_ssize_t j = 0;
    for (; j + 16 <= d; j += 16) {
        m0 = vmaxq_u32(m0, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + j)), absmask));
        m1 = vmaxq_u32(m1, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + j + 4)), absmask));
        m2 = vmaxq_u32(m2, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + j + 8)), absmask));
        m3 = vmaxq_u32(m3, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + j + 12)), absmask));
    }
    for (; j + 4 <= d; j += 4) {
        m0 = vmaxq_u32(m0, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + j)), absmask));
    }
    float inv1;
    int st = embq_quant_row_scale(x, j, d, vmaxvq_u32(vmaxq_u32(vmaxq_u32(m0, m1), vmaxq_u32(m2, m3))),
                                  codes, scale_out, &inv1);
    if (st != EMBQ_ROW_VECTOR) return st;
    const float32x4_t inv = vdupq_n_f32(inv1);
    for (j = 0; j + 16 <= d; j += 16) {
        vst1q_u8(codes + j, embq_quant16_neon(x + j, inv));
    }
    if (j < d) {
        /* The tail goes through the same vector code on a zero-padded copy. */
        float pad[16];
        uint8_t out[16];
        embq_ssize_t rest = d - j;
        memset(pad, 0, sizeof pad);
        memcpy(pad, x + j, (size_t)rest * sizeof(float));
        vst1q_u8(out, embq_quant16_neon(pad, inv));
        memcpy(codes + j, out, (size_t)rest);
    }
    return 0;
}

static void embq_dequant_row_neon(const uint8_t *codes, embq_ssize_t d, int zp, float scale,
                                  float *out) {
    const float32x4_t s = vdupq_n_f32(scale);
    const int16x8_t z = vdupq_n_s16((int16_t)zp);
    embq_ssize_t j = 0;
    for (; j + 16 <= d; j += 16) {
        uint8x16_t c = vld1q_u8(codes + j);
        /* code - zp lies in [-255, 255]: exact in int16, then in int32 and float32. */
        int16x8_t lo = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(c))), z);
        int16x8_t hi = vsubq_s16(vreinterpretq_s16_u16(vmovl_high_u8(c)), z);
        vst1q_f32(out + j, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), s));
        vst1q_f32(out + j + 4, vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), s));
        vst1q_f32(out + j + 8, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), s));
        vst1q_f32(out + j + 12, vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), s));
    }
    for (; j < d; j++) {
        out[j] = embq_dequant_value(codes[j], zp, scale);
    }
}

static int64_t embq_sumsq_row_neon(const uint8_t *codes, embq_ssize_t d, int zp) {
    const int16x8_t z = vdupq_n_s16((int16_t)zp);
    int64_t total = 0;
    embq_ssize_t j = 0;
    while (j + 16 <= d) {
        /* Each int32 lane gains at most 2 * 255^2 per step; 8192 steps stay below 2^31. */
        embq_ssize_t stop = d - j > 16 * 8192 ? j + 16 * 8192 : d;
        int32x4_t a = vdupq_n_s32(0), b = a;
        for (; j + 16 <= stop; j += 16) {
            uint8x16_t c = vld1q_u8(codes + j);
            int16x8_t lo = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(c))), z);
            int16x8_t hi = vsubq_s16(vreinterpretq_s16_u16(vmovl_high_u8(c)), z);
            a = vmlal_s16(a, vget_low_s16(lo), vget_low_s16(lo));
            a = vmlal_high_s16(a, lo, lo);
            b = vmlal_s16(b, vget_low_s16(hi), vget_low_s16(hi));
            b = vmlal_high_s16(b, hi, hi);
        }
        total += vaddlvq_s32(a) + vaddlvq_s32(b);
    }
    for (; j < d; j++) {
        int64_t c = (int64_t)codes[j] - zp;
        total += c * c;
    }
    return total;
}

#endif /* EMBQ_HAVE_NEON */

/* ---------------------------------------------------------------------------------------- */
/* The quantize family's dispatch table                                                       */

typedef int (*embq_quant_row_fn)(const float *, embq_ssize_t, uint8_t *, float *);
typedef void (*embq_dequant_row_fn)(const uint8_t *, embq_ssize_t, int, float, float *);
typedef int64_t (*embq_sumsq_row_fn)(const uint8_t *, embq_ssize_t, int);

typedef struct {
    embq_quant_row_fn quant;
    embq_dequant_row_fn dequant;
    embq_sumsq_row_fn sumsq;
} embq_quant_kernels;

/* The row kernels of variant v (EMBQ_V_*, _common.h), or all NULL when this build has no such
 * variant.  Whether the CPU can run it is embq_variant_runs(v). */
static inline embq_quant_kernels embq_quant_get(int v) {
    embq_quant_kernels k = {NULL, NULL, NULL};
    switch (v) {
    case EMBQ_V_PORTABLE:
        k.quant = embq_quant_row_portable;
        k.dequant = embq_dequant_row_portable;
        k.sumsq = embq_sumsq_row_portable;
        break;
#if EMBQ_HAVE_X86_DISPATCH
    case EMBQ_V_AVX2:
        k.quant = embq_quant_row_avx2;
        k.dequant = embq_dequant_row_avx2;
        k.sumsq = embq_sumsq_row_avx2;
        break;
#endif
#if EMBQ_HAVE_NEON
    case EMBQ_V_NEON:
        k.quant = embq_quant_row_neon;
        k.dequant = embq_dequant_row_neon;
        k.sumsq = embq_sumsq_row_neon;
        break;
#endif
    default:
        break;
    }
    return k;
}

/* ---------------------------------------------------------------------------------------- */
/* Input staging: any float32/float64 layout -> contiguous float32 rows                       */

/* Convert one float64 row with unit element stride to float32 (round to nearest; values
 * beyond the float32 range become infinities, which the row kernel then reports). */
static void embq_f64_row_to_f32(const double *src, embq_ssize_t d, float *dst) {
    for (embq_ssize_t j = 0; j < d; j++) dst[j] = (float)src[j];
}

/* Copy rows [r0, r0 + nr) of a strided float32 (is_f64 = 0) or float64 (is_f64 = 1) matrix
 * into dst (nr x d, C order).  Strides are in bytes and may be negative.  The loop order
 * follows the smaller stride so that column-major input is read sequentially. */
static void embq_gather_rows(const char *base, embq_ssize_t s0, embq_ssize_t s1, int is_f64,
                             embq_ssize_t r0, embq_ssize_t nr, embq_ssize_t d, float *dst) {
    embq_ssize_t a0 = s0 < 0 ? -s0 : s0, a1 = s1 < 0 ? -s1 : s1;
    if (a0 < a1) {
        for (embq_ssize_t j = 0; j < d; j++) {
            const char *p = base + r0 * s0 + j * s1;
            if (is_f64) {
                for (embq_ssize_t r = 0; r < nr; r++) dst[r * d + j] = (float)*(const double *)(p + r * s0);
            } else {
                for (embq_ssize_t r = 0; r < nr; r++) dst[r * d + j] = *(const float *)(p + r * s0);
            }
        }
    } else {
        for (embq_ssize_t r = 0; r < nr; r++) {
            const char *p = base + (r0 + r) * s0;
            float *o = dst + r * d;
            if (is_f64) {
                for (embq_ssize_t j = 0; j < d; j++) o[j] = (float)*(const double *)(p + j * s1);
            } else {
                for (embq_ssize_t j = 0; j < d; j++) o[j] = *(const float *)(p + j * s1);
            }
        }
    }
}

#endif /* EMBQ_QUANT_H */
