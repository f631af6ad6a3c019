/* Search kernels: exact int32 dot products of uint8 codes with int8 queries, and top-k selection.
 *
 * Layout shared by every variant
 * ------------------------------
 * codes : row r starts at codes + r * ldc, d bytes, zero point zp[r] (128 when zp is NULL).
 * q     : query i starts at q + i * ldq (int8 in [-127, 127]); bytes d .. EMBQ_QPAD(d)-1 are zero,
 *         and at offset EMBQ_QPAD(d) sits a 32-byte "tail" vector (see embq_fill_query_tail) used by
 *         the 256-bit variants to finish a row with one in-bounds load.
 * sumq  : sum of query i's values (for the zero-point correction).
 * out   : out[i * ldo + r] = sum_j (codes[r][j] - zp[r]) * q[i][j], exact in int32.
 *
 * Variants compute a zero-point-free sum and correct it once per (row, query):
 *   VNNI (vpdpbusd, u8 x s8 -> s32, no intermediate saturation): D = sum code*q, acc = D - zp*sumq;
 *   AVX2 sign trick: x = code ^ 0x80 = code - 128 in [-128, 127]; |x| * sign(q, x) through
 *   maddubs (|pair sum| <= 2*128*127 = 32512, exact) and madd with ones: D = sum x*q,
 *   acc = D + (128 - zp)*sumq.
 *   NEON: the same x = code - 128; widening int8 multiplies (vmull/vmlal, |pair sum| <= 32512,
 *   exact in int16) accumulated pairwise into int32, or SDOT (4 products straight into int32)
 *   where the CPU has it; acc = D + (128 - zp)*sumq as for the sign trick.
 * Intermediate sums wrap modulo 2^32 (SIMD integer adds are modular), so the result is exact
 * whenever the final accumulator fits in int32; the Python front end guarantees that by bounding d.
 *
 * No -march flags: each SIMD function carries its own target attribute and is picked at run time.
 */
#ifndef EMBQ_SEARCH_SIMD_H
#define EMBQ_SEARCH_SIMD_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include "_common.h"

#if EMBQ_HAVE_X86_DISPATCH
#include <immintrin.h>
#endif

#define EMBQ_QPAD(d) ((((d) + 63) / 64) * 64)
#define EMBQ_QSTRIDE(d) (EMBQ_QPAD(d) + 64)

/* Rows scored per step of the single-query scan (embq_scan1). */
#define EMBQ_SCAN1_BLOCK 256
/* How many rows ahead the single-query scan prefetches (a multiple of 4). */
#ifndef EMBQ_SCAN1_AHEAD
#define EMBQ_SCAN1_AHEAD 4
#endif

/* Variants are named by the ids of _common.h (EMBQ_V_*): the dot family implements portable,
 * avx2, avxvnni, avx512vnni, neon and neondot; the select family portable, avx2 and avx512. */

typedef void (*embq_dot_fn)(const uint8_t *codes, int64_t ldc, int64_t nr, int64_t d,
                            const uint8_t *zp, const int8_t *q, int64_t ldq, const int32_t *sumq,
                            int64_t nq, int32_t *out, int64_t ldo);
typedef void (*embq_select_fn)(const int32_t *acc, int64_t nr, const float *scales,
                               const float *norms, float wq, int64_t row0, float *hv, int64_t *hi,
                               int64_t k);

/* The 32-byte tail vector: lane t pairs with code byte d-32+t; lanes already covered by the full
 * 32-byte chunks get 0 so the overlapping load counts each byte once. */
static inline void embq_fill_query_tail(int8_t *qrow, int64_t d) {
    int8_t *tail = qrow + EMBQ_QPAD(d);
    int64_t covered = (d / 32) * 32, t;
    memset(tail, 0, 32);
    if (d < 32 || d % 32 == 0) return;
    for (t = 0; t < 32; t++) {
        int64_t p = d - 32 + t;
        tail[t] = p >= covered ? qrow[p] : 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Portable reference kernel. */

static void embq_dot_portable(const uint8_t *codes, int64_t ldc, int64_t nr, int64_t d,
                            const uint8_t *zp, const int8_t *q, int64_t ldq, const int32_t *sumq,
                            int64_t nq, int32_t *out, int64_t ldo) {
    int64_t r, i, j;
    (void)sumq;
    for (r = 0; r < nr; r++) {
        const uint8_t *c = codes + r * ldc;
        int32_t z = zp ? (int32_t)zp[r] : 128;
        for (i = 0; i < nq; i++) {
            const int8_t *qq = q + i * ldq;
            int32_t s = 0;
            for (j = 0; j < d; j++) s += ((int32_t)c[j] - z) * (int32_t)qq[j];
            out[i * ldo + r] = s;
        }
    }
}

/* Correction helpers in unsigned arithmetic: wrap-around is the point, and it is defined there. */
static inline int32_t embq_fix_vnni(uint32_t D, int32_t z, int32_t sq) {
    return (int32_t)(D - (uint32_t)z * (uint32_t)sq);
}
static inline int32_t embq_fix_sign(uint32_t D, int32_t z, int32_t sq) {
    return (int32_t)(D + (uint32_t)(128 - z) * (uint32_t)sq);
}

#if EMBQ_HAVE_X86_DISPATCH

/* Horizontal sums of four 256-bit int32 vectors -> [sum a, sum b, sum c, sum d]. */
__attribute__((target("avx2")))
static inline __m128i embq_hsum4_256(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i ab = _mm256_hadd_epi32(a, b);
    __m256i cd = _mm256_hadd_epi32(c, d);
    __m256i abcd = _mm256_hadd_epi32(ab, cd);
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

__attribute__((target("avx2")))
static inline int32_t embq_hsum_256(__m256i a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx2")))
static inline __m256i embq_fold_512(__m512i a) {
    return _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
}

/* Ask for the four rows that the next step reads (from `c`, stride ldc, d bytes each). The
 * hardware prefetcher follows one stream well but restarts at every 4 KiB page; running a group
 * ahead keeps a single-query scan (memory bound) at the speed of a plain read. */
static inline void embq_prefetch_rows(const uint8_t *c, int64_t ldc, int64_t d) {
    int64_t o, last = 3 * ldc + d;
    for (o = 0; o < last; o += 64) _mm_prefetch((const char *)(c + o), _MM_HINT_T0);
}

/* zero points of rows r..r+3 as int32 lanes */
__attribute__((target("avx2")))
static inline __m128i embq_zp4(const uint8_t *zp, int64_t r) {
    if (!zp) return _mm_set1_epi32(128);
    return _mm_set_epi32(zp[r + 3], zp[r + 2], zp[r + 1], zp[r]);
}

/* ---------------------------------- AVX-512 VNNI (zmm) ------------------------------------ */
#define EMBQ_T512 "avx512vnni,avx512f,avx512bw,avx512vl,avx2"

/* Accumulators of rows 0..3 (one query) -> each 128-bit lane holds partial sums [r0 r1 r2 r3]. */
__attribute__((target(EMBQ_T512)))
static inline __m512i embq_tr4_512(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
    __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
    __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23), _mm512_unpackhi_epi64(s01, s23));
}

/* Four of those (queries 0..3) -> lane i = the 4 row sums of query i. */
__attribute__((target(EMBQ_T512)))
static inline __m512i embq_lanesum4_512(__m512i t0, __m512i t1, __m512i t2, __m512i t3) {
    __m512i u01 = _mm512_add_epi32(_mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512i u23 = _mm512_add_epi32(_mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(u01, u23, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(u01, u23, _MM_SHUFFLE(3, 1, 3, 1)));
}

__attribute__((target(EMBQ_T512)))
static void embq_dot_avx512vnni(const uint8_t *codes, int64_t ldc, int64_t nr, int64_t d,
                                const uint8_t *zp, const int8_t *q, int64_t ldq,
                                const int32_t *sumq, int64_t nq, int32_t *out, int64_t ldo) {
    const int64_t dfull = (d / 64) * 64, rem = d - dfull;
    const __mmask64 tm = rem ? (((__mmask64)1) << rem) - 1 : 0;
    int64_t r = 0, i, j;
    for (; r + 4 <= nr; r += 4) {
        const uint8_t *c0 = codes + r * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
        const __m128i z4 = embq_zp4(zp, r);
        if (r + 8 <= nr) embq_prefetch_rows(c0 + 4 * ldc, ldc, d);
        i = 0;
        for (; i + 4 <= nq; i += 4) {
            const int8_t *q0 = q + i * ldq, *q1 = q0 + ldq, *q2 = q1 + ldq, *q3 = q2 + ldq;
            __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00;
            __m512i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            __m512i a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            __m512i x0, x1, x2, x3, y;
#define EMBQ_512_STEP(LOADX)                                                          \
            LOADX;                                                                    \
            y = _mm512_loadu_si512((const void *)(q0 + j));                           \
            a00 = _mm512_dpbusd_epi32(a00, x0, y); a10 = _mm512_dpbusd_epi32(a10, x1, y); \
            a20 = _mm512_dpbusd_epi32(a20, x2, y); a30 = _mm512_dpbusd_epi32(a30, x3, y); \
            y = _mm512_loadu_si512((const void *)(q1 + j));                           \
            a01 = _mm512_dpbusd_epi32(a01, x0, y); a11 = _mm512_dpbusd_epi32(a11, x1, y); \
            a21 = _mm512_dpbusd_epi32(a21, x2, y); a31 = _mm512_dpbusd_epi32(a31, x3, y); \
            y = _mm512_loadu_si512((const void *)(q2 + j));                           \
            a02 = _mm512_dpbusd_epi32(a02, x0, y); a12 = _mm512_dpbusd_epi32(a12, x1, y); \
            a22 = _mm512_dpbusd_epi32(a22, x2, y); a32 = _mm512_dpbusd_epi32(a32, x3, y); \
            y = _mm512_loadu_si512((const void *)(q3 + j));                           \
            a03 = _mm512_dpbusd_epi32(a03, x0, y); a13 = _mm512_dpbusd_epi32(a13, x1, y); \
            a23 = _mm512_dpbusd_epi32(a23, x2, y); a33 = _mm512_dpbusd_epi32(a33, x3, y);
            for (j = 0; j < dfull; j += 64) {
                EMBQ_512_STEP(x0 = _mm512_loadu_si512((const void *)(c0 + j));
                              x1 = _mm512_loadu_si512((const void *)(c1 + j));
                              x2 = _mm512_loadu_si512((const void *)(c2 + j));
                              x3 = _mm512_loadu_si512((const void *)(c3 + j)))
            }
            if (rem) {
                j = dfull;
                EMBQ_512_STEP(x0 = _mm512_maskz_loadu_epi8(tm, c0 + j);
                              x1 = _mm512_maskz_loadu_epi8(tm, c1 + j);
                              x2 = _mm512_maskz_loadu_epi8(tm, c2 + j);
                              x3 = _mm512_maskz_loadu_epi8(tm, c3 + j))
            }
#undef EMBQ_512_STEP
            {
                const __m512i lane_of = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1,
                                                         0, 0, 0, 0);
                __m512i v = embq_lanesum4_512(embq_tr4_512(a00, a10, a20, a30),
                                              embq_tr4_512(a01, a11, a21, a31),
                                              embq_tr4_512(a02, a12, a22, a32),
                                              embq_tr4_512(a03, a13, a23, a33));
                __m512i sq = _mm512_permutexvar_epi32(
                    lane_of, _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(sumq + i))));
                v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_broadcast_i32x4(z4), sq));
                _mm_storeu_si128((__m128i *)(out + i * ldo + r), _mm512_castsi512_si128(v));
                _mm_storeu_si128((__m128i *)(out + (i + 1) * ldo + r),
                                 _mm512_extracti32x4_epi32(v, 1));
                _mm_storeu_si128((__m128i *)(out + (i + 2) * ldo + r),
                                 _mm512_extracti32x4_epi32(v, 2));
                _mm_storeu_si128((__m128i *)(out + (i + 3) * ldo + r),
                                 _mm512_extracti32x4_epi32(v, 3));
            }
        }
        for (; i < nq; i++) {
            const int8_t *q0 = q + i * ldq;
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, y;
            for (j = 0; j < dfull; j += 64) {
                y = _mm512_loadu_si512((const void *)(q0 + j));
                a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512((const void *)(c0 + j)), y);
                a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512((const void *)(c1 + j)), y);
                a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512((const void *)(c2 + j)), y);
                a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512((const void *)(c3 + j)), y);
            }
            if (rem) {
                y = _mm512_loadu_si512((const void *)(q0 + dfull));
                a0 = _mm512_dpbusd_epi32(a0, _mm512_maskz_loadu_epi8(tm, c0 + dfull), y);
                a1 = _mm512_dpbusd_epi32(a1, _mm512_maskz_loadu_epi8(tm, c1 + dfull), y);
                a2 = _mm512_dpbusd_epi32(a2, _mm512_maskz_loadu_epi8(tm, c2 + dfull), y);
                a3 = _mm512_dpbusd_epi32(a3, _mm512_maskz_loadu_epi8(tm, c3 + dfull), y);
            }
            {
                __m128i s = embq_hsum4_256(embq_fold_512(a0), embq_fold_512(a1),
                                           embq_fold_512(a2), embq_fold_512(a3));
                s = _mm_sub_epi32(s, _mm_mullo_epi32(z4, _mm_set1_epi32(sumq[i])));
                _mm_storeu_si128((__m128i *)(out + i * ldo + r), s);
            }
        }
    }
    for (; r < nr; r++) {
        const uint8_t *c0 = codes + r * ldc;
        int32_t z = zp ? (int32_t)zp[r] : 128;
        for (i = 0; i < nq; i++) {
            const int8_t *q0 = q + i * ldq;
            __m512i a0 = _mm512_setzero_si512();
            for (j = 0; j < dfull; j += 64)
                a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512((const void *)(c0 + j)),
                                         _mm512_loadu_si512((const void *)(q0 + j)));
            if (rem)
                a0 = _mm512_dpbusd_epi32(a0, _mm512_maskz_loadu_epi8(tm, c0 + dfull),
                                         _mm512_loadu_si512((const void *)(q0 + dfull)));
            out[i * ldo + r] = embq_fix_vnni((uint32_t)embq_hsum_256(embq_fold_512(a0)), z, sumq[i]);
        }
    }
}

/* ------------------------------ 256-bit variants (AVX-VNNI, AVX2) -------------------------- */
/* One template, two instantiations: MAC(acc, xprep, xabs, y) and PREP(raw) differ. Rows whose
 * length is not a multiple of 32 end with one load of their last 32 bytes against the query's
 * tail vector, so nothing is read past a row. */

#define EMBQ_DEFINE_DOT256(NAME, TARGET, PREP, MAC, FIX)                                       \
__attribute__((target(TARGET)))                                                               \
static void NAME(const uint8_t *codes, int64_t ldc, int64_t nr, int64_t d, const uint8_t *zp,  \
                 const int8_t *q, int64_t ldq, const int32_t *sumq, int64_t nq, int32_t *out,  \
                 int64_t ldo) {                                                                \
    const int64_t dfull = (d / 32) * 32, has_tail = (d % 32) != 0, tq = EMBQ_QPAD(d);          \
    const int64_t tc = d - 32;                                                                 \
    int64_t r = 0, i, j;                                                                       \
    if (d < 32) {                                                                              \
        embq_dot_portable(codes, ldc, nr, d, zp, q, ldq, sumq, nq, out, ldo);                    \
        return;                                                                                \
    }                                                                                          \
    for (; r + 4 <= nr; r += 4) {                                                              \
        const uint8_t *c0 = codes + r * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;   \
        const __m128i z4 = embq_zp4(zp, r);                                                    \
        const __m128i k128 = _mm_set1_epi32(128);                                              \
        if (r + 8 <= nr) embq_prefetch_rows(c0 + 4 * ldc, ldc, d);                             \
        (void)k128;                                                                            \
        for (i = 0; i + 2 <= nq; i += 2) {                                                     \
            const int8_t *q0 = q + i * ldq, *q1 = q0 + ldq;                                    \
            __m256i a00 = _mm256_setzero_si256(), a10 = a00, a20 = a00, a30 = a00;             \
            __m256i a01 = a00, a11 = a00, a21 = a00, a31 = a00;                                \
            __m256i x0, x1, x2, x3, b0, b1, b2, b3, y, y1;                                     \
            for (j = 0; j <= dfull; j += 32) {                                                 \
                int64_t jc = j, jq = j;                                                        \
                if (j == dfull) { if (!has_tail) break; jc = tc; jq = tq; }                    \
                x0 = _mm256_loadu_si256((const __m256i *)(c0 + jc));                           \
                x1 = _mm256_loadu_si256((const __m256i *)(c1 + jc));                           \
                x2 = _mm256_loadu_si256((const __m256i *)(c2 + jc));                           \
                x3 = _mm256_loadu_si256((const __m256i *)(c3 + jc));                           \
                PREP(x0, b0); PREP(x1, b1); PREP(x2, b2); PREP(x3, b3);                        \
                y = _mm256_loadu_si256((const __m256i *)(q0 + jq));                            \
                y1 = _mm256_loadu_si256((const __m256i *)(q1 + jq));                           \
                MAC(a00, x0, b0, y); MAC(a10, x1, b1, y); MAC(a20, x2, b2, y); MAC(a30, x3, b3, y); \
                MAC(a01, x0, b0, y1); MAC(a11, x1, b1, y1); MAC(a21, x2, b2, y1);              \
                MAC(a31, x3, b3, y1);                                                          \
            }                                                                                  \
            {                                                                                  \
                __m128i s0 = embq_hsum4_256(a00, a10, a20, a30);                               \
                __m128i s1 = embq_hsum4_256(a01, a11, a21, a31);                               \
                s0 = FIX##_4(s0, z4, k128, sumq[i]);                                           \
                s1 = FIX##_4(s1, z4, k128, sumq[i + 1]);                                       \
                _mm_storeu_si128((__m128i *)(out + i * ldo + r), s0);                          \
                _mm_storeu_si128((__m128i *)(out + (i + 1) * ldo + r), s1);                    \
            }                                                                                  \
        }                                                                                      \
        for (; i < nq; i++) {                                                                  \
            const int8_t *q0 = q + i * ldq;                                                    \
            __m256i a00 = _mm256_setzero_si256(), a10 = a00, a20 = a00, a30 = a00;             \
            __m256i x0, x1, x2, x3, b0, b1, b2, b3, y;                                         \
            for (j = 0; j <= dfull; j += 32) {                                                 \
                int64_t jc = j, jq = j;                                                        \
                if (j == dfull) { if (!has_tail) break; jc = tc; jq = tq; }                    \
                x0 = _mm256_loadu_si256((const __m256i *)(c0 + jc));                           \
                x1 = _mm256_loadu_si256((const __m256i *)(c1 + jc));                           \
                x2 = _mm256_loadu_si256((const __m256i *)(c2 + jc));                           \
                x3 = _mm256_loadu_si256((const __m256i *)(c3 + jc));                           \
                PREP(x0, b0); PREP(x1, b1); PREP(x2, b2); PREP(x3, b3);                        \
                y = _mm256_loadu_si256((const __m256i *)(q0 + jq));                            \
                MAC(a00, x0, b0, y); MAC(a10, x1, b1, y); MAC(a20, x2, b2, y); MAC(a30, x3, b3, y); \
            }                                                                                  \
            {                                                                                  \
                __m128i s0 = embq_hsum4_256(a00, a10, a20, a30);                               \
                s0 = FIX##_4(s0, z4, k128, sumq[i]);                                           \
                _mm_storeu_si128((__m128i *)(out + i * ldo + r), s0);                          \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    for (; r < nr; r++) {                                                                      \
        const uint8_t *c0 = codes + r * ldc;                                                   \
        int32_t z = zp ? (int32_t)zp[r] : 128;                                                 \
        for (i = 0; i < nq; i++) {                                                             \
            const int8_t *q0 = q + i * ldq;                                                    \
            __m256i a00 = _mm256_setzero_si256(), x0, b0, y;                                   \
            for (j = 0; j <= dfull; j += 32) {                                                 \
                int64_t jc = j, jq = j;                                                        \
                if (j == dfull) { if (!has_tail) break; jc = tc; jq = tq; }                    \
                x0 = _mm256_loadu_si256((const __m256i *)(c0 + jc));                           \
                PREP(x0, b0);                                                                  \
                y = _mm256_loadu_si256((const __m256i *)(q0 + jq));                            \
                MAC(a00, x0, b0, y);                                                           \
            }                                                                                  \
            out[i * ldo + r] = FIX((uint32_t)embq_hsum_256(a00), z, sumq[i]);                  \
        }                                                                                      \
    }                                                                                          \
}

/* AVX-VNNI: codes used as they are (u8), D = sum code*q. */
#define EMBQ_PREP_VNNI(x, b) (b = x) /* unused by MAC; optimized away */
#define EMBQ_MAC_VNNI(a, x, b, y) ((void)(b), a = _mm256_dpbusd_avx_epi32(a, x, y))
#define embq_fix_vnni_4(s, z4, k128, sq) _mm_sub_epi32(s, _mm_mullo_epi32(z4, _mm_set1_epi32(sq)))

/* AVX2 sign trick: x = code ^ 0x80 (the signed value code - 128), b = |x| as u8. */
#define EMBQ_PREP_SIGN(x, b)                                                                   \
    do {                                                                                       \
        x = _mm256_xor_si256(x, _mm256_set1_epi8((char)0x80));                                 \
        b = _mm256_abs_epi8(x);                                                                \
    } while (0)
#define EMBQ_MAC_SIGN(a, x, b, y)                                                              \
    a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(b, _mm256_sign_epi8(y, x)),  \
                                              _mm256_set1_epi16(1)))
#define embq_fix_sign_4(s, z4, k128, sq)                                                       \
    _mm_add_epi32(s, _mm_mullo_epi32(_mm_sub_epi32(k128, z4), _mm_set1_epi32(sq)))

EMBQ_DEFINE_DOT256(embq_dot_avxvnni, "avxvnni,avx2", EMBQ_PREP_VNNI, EMBQ_MAC_VNNI, embq_fix_vnni)
EMBQ_DEFINE_DOT256(embq_dot_avx2, "avx2", EMBQ_PREP_SIGN, EMBQ_MAC_SIGN, embq_fix_sign)

#endif /* EMBQ_HAVE_X86_DISPATCH */

/* ------------------------------------------------------------------------------------------ */
/* NEON (AArch64): rows four at a time, 16 bytes per step; x = code ^ 0x80 = code - 128. */
#if EMBQ_HAVE_NEON

static inline int32x4_t embq_mac16_neon(int32x4_t acc, uint8x16_t c, int8x16_t y) {
    int8x16_t x = vreinterpretq_s8_u8(veorq_u8(c, vdupq_n_u8(0x80)));
    int16x8_t p = vmull_s8(vget_low_s8(x), vget_low_s8(y));
    p = vmlal_high_s8(p, x, y);
    return vpadalq_s16(acc, p);
}

/* The last d % 16 code bytes of a row, zero-padded: the padding meets zero query bytes (queries
 * are zero up to EMBQ_QPAD(d)), so it adds nothing, and no byte past the row is read. */
static inline uint8x16_t embq_tail16_neon(const uint8_t *c, int64_t rem) {
    uint8_t buf[16];
    memset(buf, 0, sizeof buf);
    memcpy(buf, c, (size_t)rem);
    return vld1q_u8(buf);
}

/* One template, two instantiations: MAC(acc, code_u8x16, query_s8x16). */
#define EMBQ_DEFINE_DOT_NEON(NAME, ATTR, MAC)                                                  \
ATTR static void NAME(const uint8_t *codes, int64_t ldc, int64_t nr, int64_t d,                \
                      const uint8_t *zp, const int8_t *q, int64_t ldq, const int32_t *sumq,    \
                      int64_t nq, int32_t *out, int64_t ldo) {                                 \
    const int64_t dfull = (d / 16) * 16, rem = d - dfull;                                      \
    uint8x16_t t0 = vdupq_n_u8(0), t1 = t0, t2 = t0, t3 = t0;                                  \
    int64_t r = 0, i, j;                                                                       \
    for (; r + 4 <= nr; r += 4) {                                                              \
        const uint8_t *c0 = codes + r * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;    \
        const int32_t z0 = zp ? zp[r] : 128, z1 = zp ? zp[r + 1] : 128;                        \
        const int32_t z2 = zp ? zp[r + 2] : 128, z3 = zp ? zp[r + 3] : 128;                    \
        if (rem) {                                                                             \
            t0 = embq_tail16_neon(c0 + dfull, rem); t1 = embq_tail16_neon(c1 + dfull, rem);    \
            t2 = embq_tail16_neon(c2 + dfull, rem); t3 = embq_tail16_neon(c3 + dfull, rem);    \
        }                                                                                      \
        for (i = 0; i < nq; i++) {                                                             \
            const int8_t *qq = q + i * ldq;                                                    \
            int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;                          \
            int8x16_t y;                                                                       \
            int32_t *o = out + i * ldo + r;                                                    \
            for (j = 0; j < dfull; j += 16) {                                                  \
                y = vld1q_s8(qq + j);                                                          \
                a0 = MAC(a0, vld1q_u8(c0 + j), y);                                             \
                a1 = MAC(a1, vld1q_u8(c1 + j), y);                                             \
                a2 = MAC(a2, vld1q_u8(c2 + j), y);                                             \
                a3 = MAC(a3, vld1q_u8(c3 + j), y);                                             \
            }                                                                                  \
            if (rem) {                                                                         \
                y = vld1q_s8(qq + dfull);                                                      \
                a0 = MAC(a0, t0, y); a1 = MAC(a1, t1, y);                                      \
                a2 = MAC(a2, t2, y); a3 = MAC(a3, t3, y);                                      \
            }                                                                                  \
            o[0] = embq_fix_sign((uint32_t)vaddvq_u32(vreinterpretq_u32_s32(a0)), z0, sumq[i]); \
            o[1] = embq_fix_sign((uint32_t)vaddvq_u32(vreinterpretq_u32_s32(a1)), z1, sumq[i]); \
            o[2] = embq_fix_sign((uint32_t)vaddvq_u32(vreinterpretq_u32_s32(a2)), z2, sumq[i]); \
            o[3] = embq_fix_sign((uint32_t)vaddvq_u32(vreinterpretq_u32_s32(a3)), z3, sumq[i]); \
        }                                                                                      \
    }                                                                                          \
    for (; r < nr; r++) {                                                                      \
        const uint8_t *c0 = codes + r * ldc;                                                   \
        const int32_t z0 = zp ? zp[r] : 128;                                                   \
        if (rem) t0 = embq_tail16_neon(c0 + dfull, rem);                                       \
        for (i = 0; i < nq; i++) {                                                             \
            const int8_t *qq = q + i * ldq;                                                    \
            int32x4_t a0 = vdupq_n_s32(0);                                                     \
            for (j = 0; j < dfull; j += 16) a0 = MAC(a0, vld1q_u8(c0 + j), vld1q_s8(qq + j));  \
            if (rem) a0 = MAC(a0, t0, vld1q_s8(qq + dfull));                                   \
            out[i * ldo + r] =                                                                 \
                embq_fix_sign((uint32_t)vaddvq_u32(vreinterpretq_u32_s32(a0)), z0, sumq[i]);   \
        }                                                                                      \
    }                                                                                          \
}

EMBQ_DEFINE_DOT_NEON(embq_dot_neon, , embq_mac16_neon)

#if EMBQ_HAVE_NEONDOT
#define EMBQ_NEONDOT_ATTR __attribute__((target("arch=armv8.2-a+dotprod")))
EMBQ_NEONDOT_ATTR
static inline int32x4_t embq_mac16_neondot(int32x4_t acc, uint8x16_t c, int8x16_t y) {
    return vdotq_s32(acc, vreinterpretq_s8_u8(veorq_u8(c, vdupq_n_u8(0x80))), y);
}
EMBQ_DEFINE_DOT_NEON(embq_dot_neondot, EMBQ_NEONDOT_ATTR, embq_mac16_neondot)
#endif

#endif /* EMBQ_HAVE_NEON */

/* ------------------------------------------------------------------------------------------ */
/* Top-k: a fixed-size heap in two arrays whose root is the WORST kept entry: lower score, or the
 * same score and a higher row index (ties go to the lower row). Empty slots hold
 * (-inf, INT64_MAX), worse than any real candidate. */

static inline int embq_worse(float av, int64_t ai, float bv, int64_t bi) {
    return av < bv || (av == bv && ai > bi);
}

static inline void embq_heap_init(float *hv, int64_t *hi, int64_t k) {
    int64_t t;
    for (t = 0; t < k; t++) { hv[t] = -INFINITY; hi[t] = INT64_MAX; }
}

/* Put (v, i) at the root and sift it down within the first n slots. */
static inline void embq_heap_sift_root(float *hv, int64_t *hi, int64_t n, float v, int64_t i) {
    int64_t pos = 0;
    for (;;) {
        int64_t l = 2 * pos + 1, w;
        if (l >= n) break;
        w = l;
        if (l + 1 < n && embq_worse(hv[l + 1], hi[l + 1], hv[l], hi[l])) w = l + 1;
        if (!embq_worse(hv[w], hi[w], v, i)) break;
        hv[pos] = hv[w]; hi[pos] = hi[w];
        pos = w;
    }
    hv[pos] = v; hi[pos] = i;
}

/* Offer a candidate with the full comparison (used for merging). NaN counts as -inf. */
static inline void embq_heap_offer(float *hv, int64_t *hi, int64_t k, float v, int64_t i) {
    if (v != v) v = -INFINITY;
    if (embq_worse(hv[0], hi[0], v, i)) embq_heap_sift_root(hv, hi, k, v, i);
}

/* Sort in place, best first. */
static inline void embq_heap_sort(float *hv, int64_t *hi, int64_t k) {
    int64_t end;
    for (end = k - 1; end > 0; end--) {
        float v = hv[end]; int64_t i = hi[end];
        hv[end] = hv[0]; hi[end] = hi[0];
        embq_heap_sift_root(hv, hi, end, v, i);
    }
}

/* Row weight: the scale (dot, norms NULL) or scale / norm (cosine; a row whose norm is not > 0
 * weighs 0, so it scores 0, never NaN). Computed where the scores are, so no per-row buffer is
 * written and read again; IEEE division is correctly rounded, so the SIMD variants below give
 * the same bits. */
static inline float embq_row_weight(const float *scales, const float *norms, int64_t r) {
    float n;
    if (!norms) return scales[r];
    n = norms[r];
    return n > 0 ? scales[r] / n : 0.0f;
}

/* Score of (row r, query): (float)acc * (w[r] * wq), w from embq_row_weight.
 * Candidates arrive in increasing row order within one heap, so once the root is a real entry
 * (> -inf) a candidate with an equal score has a higher row and loses: `s > root` is exact. */
static inline void embq_select_one(float s, int64_t row, float *hv, int64_t *hi, int64_t k,
                                   float *th) {
    if (s > *th) {
        embq_heap_sift_root(hv, hi, k, s, row);
        *th = hv[0];
    } else if (*th == -INFINITY) {
        embq_heap_offer(hv, hi, k, s, row);
        *th = hv[0];
    }
}

/* Heap label of candidate r: labels[r] (the rows of an allow-list) when a label array is given,
 * else row0 + r. Labels must increase with r (the ties rule of embq_select_one). */
#define EMBQ_LABEL(row0, labels, r) ((labels) ? (labels)[r] : (row0) + (r))

/* The rows a select kernel may offer to its heap (a NULL embq_allow: every row): with rows,
 * those in rows[0..n) (increasing); otherwise those whose byte mask[row] is not 0 (mask indexed
 * by row number, as long as the rows scanned). Either is looked at only for the few rows whose
 * score would enter the heap. */
typedef struct embq_allow {
    const int64_t *rows;
    int64_t n;
    const uint8_t *mask;
} embq_allow;

/* Whether row is allowed: one byte of a mask, or a search of the rows. The rows are looked up
 * from where they would be if spread evenly between the first and the last, then by steps
 * doubling away from there, then by bisection: a window's list is up to 128 KB, not in the
 * caches, and a bisection from its ends waited on a dozen reads from memory for each
 * candidate, where the guess of an allow-list (about even) is a few entries off. A list far
 * from even costs at most about twice the bisection. */
static inline int embq_allowed(const embq_allow *allow, int64_t row) {
    const int64_t *rows = allow->rows;
    int64_t n = allow->n, lo, hi, g, step, first, last;
    if (!rows) return allow->mask[row] != 0;
    if (n == 0) return 0;
    first = rows[0];
    last = rows[n - 1];
    if (row <= first || row >= last) return row == first || row == last;
    g = (int64_t)((double)(row - first) / (double)(last - first) * (double)(n - 1));
    if (g < 0) g = 0;
    if (g > n - 1) g = n - 1;
    if (rows[g] < row) {   /* the first entry >= row is past g */
        lo = g + 1;
        step = 1;
        hi = lo;
        while (hi < n && rows[hi] < row) {
            lo = hi + 1;
            step <<= 1;
            hi = lo + step - 1;
        }
        if (hi > n) hi = n;
    } else {               /* it is at g or before */
        hi = g;
        step = 1;
        lo = hi - step;
        while (lo > 0 && rows[lo] >= row) {
            hi = lo;
            step <<= 1;
            lo = hi - step;
        }
        if (lo < 0) lo = 0;
    }
    /* the first entry >= row is in [lo, hi] */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (rows[mid] < row) lo = mid + 1; else hi = mid;
    }
    return lo < n && rows[lo] == row;
}

/* embq_select_one for a row that is a candidate (its score beats the heap's root, or the heap
 * is not full yet) and, when allow is given, allowed: the select kernels over a window of rows
 * with an allow-list offer the heap exactly the sequence a scan of the allowed rows alone
 * would, so they keep its bits and its ties. */
static inline void embq_offer(float s, int64_t row, const embq_allow *allow, float *hv,
                              int64_t *hi, int64_t k, float *th) {
    if (allow && !(s > *th) && *th != -INFINITY) return;
    if (allow && !embq_allowed(allow, row)) return;
    embq_select_one(s, row, hv, hi, k, th);
}
#if defined(__GNUC__) || defined(__clang__)
#define EMBQ_ALWAYS_INLINE __attribute__((always_inline))
#else
#define EMBQ_ALWAYS_INLINE
#endif

/* The select kernels: score nr candidates, (float)acc[r] * (embq_row_weight(r) * wq), and offer
 * them to the heap labelled EMBQ_LABEL(row0, labels, r), only the allowed ones when allow is
 * given. Each variant is written once and instantiated twice (always inlined):
 * labels and allow NULL (the embq_select_fn entry points, rows row0, row0 + 1, ...), and both
 * as given (embq_select_ext; they matter only for the few candidates, so one instantiation
 * serves the gathered rows, the rows picked out of a window and a window's allow-list). */
static inline EMBQ_ALWAYS_INLINE void embq_select_portable_impl(
        const int32_t *acc, int64_t nr, const float *scales, const float *norms, float wq,
        int64_t row0, const int64_t *labels, const embq_allow *allow, float *hv,
        int64_t *hi, int64_t k) {
    float th = hv[0];
    int64_t r;
    for (r = 0; r < nr; r++) {
        float s = (float)acc[r] * (embq_row_weight(scales, norms, r) * wq);
        embq_offer(s, EMBQ_LABEL(row0, labels, r), allow, hv, hi, k, &th);
    }
}

static void embq_select_portable(const int32_t *acc, int64_t nr, const float *scales,
                                 const float *norms, float wq, int64_t row0, float *hv,
                                 int64_t *hi, int64_t k) {
    embq_select_portable_impl(acc, nr, scales, norms, wq, row0, NULL, NULL, hv, hi, k);
}

#if EMBQ_HAVE_X86_DISPATCH
__attribute__((target("avx512f,avx512bw,avx512vl,avx2"), always_inline))
static inline void embq_select_avx512_impl(const int32_t *acc, int64_t nr, const float *scales,
        const float *norms, float wq, int64_t row0, const int64_t *labels, const embq_allow *allow,
        float *hv, int64_t *hi, int64_t k) {
    float th = hv[0];
    float buf[16];
    const __m512 vq = _mm512_set1_ps(wq);
    int64_t r = 0;
    for (; r + 16 <= nr; r += 16) {
        __m512 w = _mm512_loadu_ps(scales + r), s;
        if (norms) {
            __m512 nv = _mm512_loadu_ps(norms + r);
            w = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(nv, _mm512_setzero_ps(), _CMP_GT_OQ), w, nv);
        }
        s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512((const void *)(acc + r))),
                          _mm512_mul_ps(w, vq));
        if (th == -INFINITY) {
            int t;
            _mm512_storeu_ps(buf, s);
            for (t = 0; t < 16; t++)
                embq_offer(buf[t], EMBQ_LABEL(row0, labels, r + t), allow, hv, hi, k,
                           &th);
        } else {
            __mmask16 m = _mm512_cmp_ps_mask(s, _mm512_set1_ps(th), _CMP_GT_OQ);
            if (m) {
                _mm512_storeu_ps(buf, s);
                while (m) {
                    int t = __builtin_ctz((unsigned)m);
                    m &= (__mmask16)(m - 1);
                    embq_offer(buf[t], EMBQ_LABEL(row0, labels, r + t), allow, hv, hi,
                               k, &th);
                }
            }
        }
    }
    for (; r < nr; r++) {
        float s = (float)acc[r] * (embq_row_weight(scales, norms, r) * wq);
        embq_offer(s, EMBQ_LABEL(row0, labels, r), allow, hv, hi, k, &th);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx2")))
static void embq_select_avx512(const int32_t *acc, int64_t nr, const float *scales,
        const float *norms, float wq, int64_t row0, float *hv, int64_t *hi, int64_t k) {
    embq_select_avx512_impl(acc, nr, scales, norms, wq, row0, NULL, NULL, hv, hi, k);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx2")))
static void embq_select_avx512_ext(const int32_t *acc, int64_t nr, const float *scales,
        const float *norms, float wq, int64_t row0, const int64_t *labels, const embq_allow *allow,
        float *hv, int64_t *hi, int64_t k) {
    embq_select_avx512_impl(acc, nr, scales, norms, wq, row0, labels, allow, hv, hi, k);
}

__attribute__((target("avx2"), always_inline))
static inline void embq_select_avx2_impl(const int32_t *acc, int64_t nr, const float *scales,
        const float *norms, float wq, int64_t row0, const int64_t *labels, const embq_allow *allow,
        float *hv, int64_t *hi, int64_t k) {
    float th = hv[0];
    float buf[8];
    const __m256 vq = _mm256_set1_ps(wq);
    int64_t r = 0;
    for (; r + 8 <= nr; r += 8) {
        __m256 w = _mm256_loadu_ps(scales + r), s;
        unsigned m;
        if (norms) {
            /* lanes with norm <= 0 (or NaN) are masked to +0, as embq_row_weight does */
            __m256 nv = _mm256_loadu_ps(norms + r);
            w = _mm256_and_ps(_mm256_cmp_ps(nv, _mm256_setzero_ps(), _CMP_GT_OQ),
                              _mm256_div_ps(w, nv));
        }
        s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(acc + r))),
                          _mm256_mul_ps(w, vq));
        if (th == -INFINITY) {
            int t;
            _mm256_storeu_ps(buf, s);
            for (t = 0; t < 8; t++)
                embq_offer(buf[t], EMBQ_LABEL(row0, labels, r + t), allow, hv, hi, k,
                           &th);
            continue;
        }
        m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(s, _mm256_set1_ps(th), _CMP_GT_OQ));
        if (m) {
            _mm256_storeu_ps(buf, s);
            while (m) {
                int t = __builtin_ctz(m);
                m &= m - 1;
                embq_offer(buf[t], EMBQ_LABEL(row0, labels, r + t), allow, hv, hi, k,
                           &th);
            }
        }
    }
    for (; r < nr; r++) {
        float s = (float)acc[r] * (embq_row_weight(scales, norms, r) * wq);
        embq_offer(s, EMBQ_LABEL(row0, labels, r), allow, hv, hi, k, &th);
    }
}

__attribute__((target("avx2")))
static void embq_select_avx2(const int32_t *acc, int64_t nr, const float *scales,
        const float *norms, float wq, int64_t row0, float *hv, int64_t *hi, int64_t k) {
    embq_select_avx2_impl(acc, nr, scales, norms, wq, row0, NULL, NULL, hv, hi, k);
}

__attribute__((target("avx2")))
static void embq_select_avx2_ext(const int32_t *acc, int64_t nr, const float *scales,
        const float *norms, float wq, int64_t row0, const int64_t *labels, const embq_allow *allow,
        float *hv, int64_t *hi, int64_t k) {
    embq_select_avx2_impl(acc, nr, scales, norms, wq, row0, labels, allow, hv, hi, k);
}

/* One query against rows [0, nr), fused: AVX-512 VNNI dot products of four rows per step, the
 * next four rows prefetched (across block boundaries too, so the stream never stalls), and every
 * EMBQ_SCAN1_BLOCK rows scored and offered to the heap (hv, hi, k) by embq_select_avx512 (its
 * _ext entry with allow, which offers only the allowed rows). Same
 * arithmetic as embq_dot_avx512vnni followed by embq_select_avx512, so the same bits. This is the
 * single-query path, bound by memory bandwidth; keeping it one tight loop per thread brings it to
 * the speed of a plain read of the codes. */
__attribute__((target(EMBQ_T512)))
static void embq_scan1_avx512vnni(const uint8_t *codes, int64_t ldc, int64_t nr, int64_t d,
                                  const uint8_t *zp, const int8_t *q, int64_t ldq, int32_t sumq,
                                  const float *scales, const float *norms, float wq, int64_t row0,
                                  const embq_allow *allow, float *hv, int64_t *hi, int64_t k) {
    const int64_t dfull = (d / 64) * 64, rem = d - dfull;
    const __mmask64 tm = rem ? (((__mmask64)1) << rem) - 1 : 0;
    const __m128i sq4 = _mm_set1_epi32(sumq);
    int32_t acc[EMBQ_SCAN1_BLOCK];
    int64_t rb, r, j;
    for (rb = 0; rb < nr; rb += EMBQ_SCAN1_BLOCK) {
        const int64_t nb = nr - rb < EMBQ_SCAN1_BLOCK ? nr - rb : EMBQ_SCAN1_BLOCK;
        for (r = 0; r + 4 <= nb; r += 4) {
            const int64_t g = rb + r;
            const uint8_t *c0 = codes + g * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, y;
            __m128i s;
            if (g + EMBQ_SCAN1_AHEAD + 4 <= nr)
                embq_prefetch_rows(c0 + EMBQ_SCAN1_AHEAD * ldc, ldc, d);
            for (j = 0; j < dfull; j += 64) {
                y = _mm512_loadu_si512((const void *)(q + j));
                a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512((const void *)(c0 + j)), y);
                a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512((const void *)(c1 + j)), y);
                a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512((const void *)(c2 + j)), y);
                a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512((const void *)(c3 + j)), y);
            }
            if (rem) {
                y = _mm512_loadu_si512((const void *)(q + dfull));
                a0 = _mm512_dpbusd_epi32(a0, _mm512_maskz_loadu_epi8(tm, c0 + dfull), y);
                a1 = _mm512_dpbusd_epi32(a1, _mm512_maskz_loadu_epi8(tm, c1 + dfull), y);
                a2 = _mm512_dpbusd_epi32(a2, _mm512_maskz_loadu_epi8(tm, c2 + dfull), y);
                a3 = _mm512_dpbusd_epi32(a3, _mm512_maskz_loadu_epi8(tm, c3 + dfull), y);
            }
            s = embq_hsum4_256(embq_fold_512(a0), embq_fold_512(a1), embq_fold_512(a2),
                               embq_fold_512(a3));
            s = _mm_sub_epi32(s, _mm_mullo_epi32(embq_zp4(zp, g), sq4));
            _mm_storeu_si128((__m128i *)(acc + r), s);
        }
        if (r < nb)
            embq_dot_avx512vnni(codes + (rb + r) * ldc, ldc, nb - r, d, zp ? zp + rb + r : NULL,
                                q, ldq, &sumq, 1, acc + r, EMBQ_SCAN1_BLOCK);
        if (allow)
            embq_select_avx512_ext(acc, nb, scales + rb, norms ? norms + rb : NULL, wq,
                                   row0 + rb, NULL, allow, hv, hi, k);
        else
            embq_select_avx512(acc, nb, scales + rb, norms ? norms + rb : NULL, wq, row0 + rb,
                               hv, hi, k);
    }
}

#endif

/* ------------------------------------------------------------------------------------------ */
/* Dispatch tables. */

/* The dot variant v (EMBQ_V_*), or NULL when this build has no such variant. */
static inline embq_dot_fn embq_dot_get(int v) {
    switch (v) {
    case EMBQ_V_PORTABLE: return embq_dot_portable;
#if EMBQ_HAVE_X86_DISPATCH
    case EMBQ_V_AVX2: return embq_dot_avx2;
    case EMBQ_V_AVXVNNI: return embq_dot_avxvnni;
    case EMBQ_V_AVX512VNNI: return embq_dot_avx512vnni;
#endif
#if EMBQ_HAVE_NEON
    case EMBQ_V_NEON: return embq_dot_neon;
#if EMBQ_HAVE_NEONDOT
    case EMBQ_V_NEONDOT: return embq_dot_neondot;
#endif
#endif
    default: return NULL;
    }
}

/* The select variant v (EMBQ_V_*), or NULL when this build has no such variant. */
static inline embq_select_fn embq_select_get(int v) {
    switch (v) {
    case EMBQ_V_PORTABLE: return embq_select_portable;
#if EMBQ_HAVE_X86_DISPATCH
    case EMBQ_V_AVX2: return embq_select_avx2;
    case EMBQ_V_AVX512: return embq_select_avx512;
#endif
    default: return NULL;
    }
}

/* Select variant sel_id with heap labels labels[0..nr) (increasing; NULL: rows row0 + r) and,
 * when allow is given, only the allowed rows offered. The allow-list scan uses labels for the
 * rows it gathered or picked out of a window, and allow for a window (or a range) read whole,
 * of which the list (or the mask) names some rows. */
static void embq_select_ext(int sel_id, const int32_t *acc, int64_t nr, const float *scales,
                            const float *norms, float wq, int64_t row0, const int64_t *labels,
                            const embq_allow *allow, float *hv, int64_t *hi, int64_t k) {
#if EMBQ_HAVE_X86_DISPATCH
    if (sel_id == EMBQ_V_AVX512) {
        embq_select_avx512_ext(acc, nr, scales, norms, wq, row0, labels, allow, hv, hi, k);
        return;
    }
    if (sel_id == EMBQ_V_AVX2) {
        embq_select_avx2_ext(acc, nr, scales, norms, wq, row0, labels, allow, hv, hi, k);
        return;
    }
#endif
    (void)sel_id;
    embq_select_portable_impl(acc, nr, scales, norms, wq, row0, labels, allow, hv, hi, k);
}

/* out[r] = embq_row_weight(scales, norms, r) for r < nr, with the SIMD width of the selected
 * select variant. Several queries share a block of rows, so their weights are computed once. */
#if EMBQ_HAVE_X86_DISPATCH
__attribute__((target("avx512f,avx512bw,avx512vl,avx2")))
static void embq_row_weights_avx512(const float *scales, const float *norms, int64_t nr,
                                    float *out) {
    int64_t r = 0;
    for (; r + 16 <= nr; r += 16) {
        __m512 nv = _mm512_loadu_ps(norms + r);
        _mm512_storeu_ps(out + r, _mm512_maskz_div_ps(
            _mm512_cmp_ps_mask(nv, _mm512_setzero_ps(), _CMP_GT_OQ),
            _mm512_loadu_ps(scales + r), nv));
    }
    for (; r < nr; r++) out[r] = embq_row_weight(scales, norms, r);
}

__attribute__((target("avx2")))
static void embq_row_weights_avx2(const float *scales, const float *norms, int64_t nr,
                                  float *out) {
    int64_t r = 0;
    for (; r + 8 <= nr; r += 8) {
        __m256 nv = _mm256_loadu_ps(norms + r);
        _mm256_storeu_ps(out + r, _mm256_and_ps(
            _mm256_cmp_ps(nv, _mm256_setzero_ps(), _CMP_GT_OQ),
            _mm256_div_ps(_mm256_loadu_ps(scales + r), nv)));
    }
    for (; r < nr; r++) out[r] = embq_row_weight(scales, norms, r);
}
#endif

static void embq_row_weights(int sel_id, const float *scales, const float *norms, int64_t nr,
                             float *out) {
    int64_t r;
#if EMBQ_HAVE_X86_DISPATCH
    if (sel_id == EMBQ_V_AVX512) { embq_row_weights_avx512(scales, norms, nr, out); return; }
    if (sel_id == EMBQ_V_AVX2) { embq_row_weights_avx2(scales, norms, nr, out); return; }
#endif
    (void)sel_id;
    for (r = 0; r < nr; r++) out[r] = embq_row_weight(scales, norms, r);
}

/* One query (packed at q, sum sumq) against rows [0, nr) of codes, offered to one heap: the
 * fused AVX-512 loop when both selected variants are the AVX-512 ones, otherwise the selected
 * dot and select variants block by block. row0 is the index of the first row (heap labels).
 * With allow only the allowed rows are offered: a window of an allow-list, or a whole range
 * with a mask, read as one stream, the rows between the allowed ones scored and passed over. */
static void embq_scan1(int dot_id, int sel_id, const uint8_t *codes, int64_t ldc, int64_t nr,
                       int64_t d, const uint8_t *zp, const int8_t *q, int64_t ldq, int32_t sumq,
                       const float *scales, const float *norms, float wq, int64_t row0,
                       const embq_allow *allow, float *hv, int64_t *hi, int64_t k) {
    embq_dot_fn dot;
    embq_select_fn sel;
    int32_t acc[EMBQ_SCAN1_BLOCK];
    int64_t rb;
#if EMBQ_HAVE_X86_DISPATCH
    if (dot_id == EMBQ_V_AVX512VNNI && sel_id == EMBQ_V_AVX512) {
        embq_scan1_avx512vnni(codes, ldc, nr, d, zp, q, ldq, sumq, scales, norms, wq, row0,
                              allow, hv, hi, k);
        return;
    }
#endif
    dot = embq_dot_get(dot_id);
    sel = embq_select_get(sel_id);
    for (rb = 0; rb < nr; rb += EMBQ_SCAN1_BLOCK) {
        const int64_t nb = nr - rb < EMBQ_SCAN1_BLOCK ? nr - rb : EMBQ_SCAN1_BLOCK;
        dot(codes + rb * ldc, ldc, nb, d, zp ? zp + rb : NULL, q, ldq, &sumq, 1, acc,
            EMBQ_SCAN1_BLOCK);
        if (allow)
            embq_select_ext(sel_id, acc, nb, scales + rb, norms ? norms + rb : NULL, wq,
                            row0 + rb, NULL, allow, hv, hi, k);
        else
            sel(acc, nb, scales + rb, norms ? norms + rb : NULL, wq, row0 + rb, hv, hi, k);
    }
}

/* How many of the bytes m[0..n) are not 0 (the rows a mask allows), at the SIMD width of select
 * variant sel_id: a mask is counted once per search, from memory, so at the speed of a read. */
#if EMBQ_HAVE_X86_DISPATCH
__attribute__((target("avx2")))
static int64_t embq_count_nonzero_avx2(const uint8_t *m, int64_t n) {
    const __m256i one = _mm256_set1_epi8(1), zero = _mm256_setzero_si256();
    __m256i acc = zero;
    int64_t j = 0, total;
    for (; j + 32 <= n; j += 32)   /* each byte to 0 or 1, summed 8 bytes per 64-bit lane */
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(
            _mm256_min_epu8(_mm256_loadu_si256((const __m256i *)(m + j)), one), zero));
    total = _mm256_extract_epi64(acc, 0) + _mm256_extract_epi64(acc, 1) +
            _mm256_extract_epi64(acc, 2) + _mm256_extract_epi64(acc, 3);
    for (; j < n; j++) total += m[j] != 0;
    return total;
}
#endif

static int64_t embq_count_nonzero(int sel_id, const uint8_t *m, int64_t n) {
    int64_t j, total = 0;
#if EMBQ_HAVE_X86_DISPATCH
    if (sel_id == EMBQ_V_AVX2 || sel_id == EMBQ_V_AVX512) return embq_count_nonzero_avx2(m, n);
#endif
    (void)sel_id;
    for (j = 0; j < n; j++) total += m[j] != 0;
    return total;
}

/* out[c] = base + j for the c-th j < n with m[j] != 0, in order (out holds as many as
 * embq_count_nonzero counts), at the SIMD width of select variant sel_id. Eight bytes of 0 at a
 * time are passed over (a sparse mask costs about a read of it); the rest by byte, or with AVX2
 * by the bits of 32 bytes at a time. */
#if EMBQ_HAVE_X86_DISPATCH
__attribute__((target("avx2")))
static void embq_mask_rows_avx2(const uint8_t *m, int64_t n, int64_t base, int64_t *out) {
    const __m256i zero = _mm256_setzero_si256();
    int64_t j = 0, c = 0;
    for (; j + 32 <= n; j += 32) {
        uint32_t bits = ~(uint32_t)_mm256_movemask_epi8(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(m + j)), zero));
        while (bits) {
            out[c++] = base + j + __builtin_ctz(bits);
            bits &= bits - 1;
        }
    }
    for (; j < n; j++)
        if (m[j]) out[c++] = base + j;
}
#endif

static void embq_mask_rows(int sel_id, const uint8_t *m, int64_t n, int64_t base,
                           int64_t *out) {
    int64_t j = 0, c = 0, t;
#if EMBQ_HAVE_X86_DISPATCH
    if (sel_id == EMBQ_V_AVX2 || sel_id == EMBQ_V_AVX512) {
        embq_mask_rows_avx2(m, n, base, out);
        return;
    }
#endif
    (void)sel_id;
    for (; j + 8 <= n; j += 8) {
        uint64_t w;
        memcpy(&w, m + j, 8);
        if (!w) continue;
        for (t = 0; t < 8; t++)
            if (m[j + t]) out[c++] = base + j + t;
    }
    for (; j < n; j++)
        if (m[j]) out[c++] = base + j;
}

/* First position of rows[0..n) that breaks "increasing, within [0, n_rows)", or -1 (at the SIMD
 * width of select variant sel_id): the check
 * every allow-list gets before a scan reads the rows it names. Branch-free over blocks (a
 * filtered search of one query costs about one pass over the codes, so this pass must cost
 * next to nothing), the position found only once a block fails. */
static inline int64_t embq_rows_scan_bad(const int64_t *rows, int64_t j0, int64_t j1) {
    int64_t j;
    for (j = j0; j < j1; j++)
        if (rows[j] <= rows[j - 1]) return j;
    return -1;
}

#if EMBQ_HAVE_X86_DISPATCH
__attribute__((target("avx2")))
static int64_t embq_rows_first_bad_avx2(const int64_t *rows, int64_t n) {
    int64_t j0 = 1, j1, j;
    while (j0 < n) {
        __m256i ok = _mm256_set1_epi64x(-1);
        j1 = n - j0 > 1024 ? j0 + 1024 : n;
        for (j = j0; j + 4 <= j1; j += 4)
            ok = _mm256_and_si256(ok, _mm256_cmpgt_epi64(
                _mm256_loadu_si256((const __m256i *)(rows + j)),
                _mm256_loadu_si256((const __m256i *)(rows + j - 1))));
        if (_mm256_movemask_epi8(ok) != -1) return embq_rows_scan_bad(rows, j0, j1);
        for (; j < j1; j++)
            if (rows[j] <= rows[j - 1]) return j;
        j0 = j1;
    }
    return -1;
}
#endif

static int64_t embq_rows_first_bad(int sel_id, const int64_t *rows, int64_t n,
                                   int64_t n_rows) {
    int64_t j0 = 1, j1, j, bad = -1, lo, hi;
    if (n == 0) return -1;
    if (rows[0] < 0 || rows[0] >= n_rows) return 0;
#if EMBQ_HAVE_X86_DISPATCH
    if (sel_id == EMBQ_V_AVX2 || sel_id == EMBQ_V_AVX512) {
        bad = embq_rows_first_bad_avx2(rows, n);
        j0 = n;
    }
#endif
    while (j0 < n) {
        int fail = 0;
        j1 = n - j0 > 1024 ? j0 + 1024 : n;
        for (j = j0; j < j1; j++) fail |= rows[j] <= rows[j - 1];
        if (fail) { bad = embq_rows_scan_bad(rows, j0, j1); break; }
        j0 = j1;
    }
    /* increasing before bad (or the end): the first row >= n_rows there, by bisection */
    hi = (bad >= 0 ? bad : n) - 1;
    if (rows[hi] < n_rows) return bad;
    lo = 0;
    while (hi - lo > 1) {   /* rows[lo] < n_rows <= rows[hi] */
        int64_t mid = lo + (hi - lo) / 2;
        if (rows[mid] < n_rows) lo = mid; else hi = mid;
    }
    return hi;
}

/* Mark mask[rows[j]] = 1 for the positions j in [0, n); returns the first position whose row
 * is outside [0, n_rows), or -1 (the rows before that position are marked). Several threads
 * may mark the same row: the stores are relaxed atomics, which on x86 and ARM are the plain
 * byte store, where a plain store would be a data race in C. */
static int64_t embq_mark_rows(const int64_t *rows, int64_t n, uint8_t *mask, int64_t n_rows) {
    int64_t j;
    for (j = 0; j < n; j++) {
        uint64_t r = (uint64_t)rows[j];   /* a negative row wraps above n_rows */
        if (r >= (uint64_t)n_rows) return j;
#if defined(__GNUC__) || defined(__clang__)
        __atomic_store_n(mask + r, (uint8_t)1, __ATOMIC_RELAXED);
#else
        mask[r] = 1;
#endif
    }
    return -1;
}

/* Ask for the cache lines of a row of d bytes at c (the allow-list gather prefetches a few
 * rows ahead: the rows are increasing but with gaps, which the hardware prefetcher misses). */
static inline void embq_prefetch_row(const uint8_t *c, int64_t d) {
#if defined(__GNUC__) || defined(__clang__)
    int64_t j;
    for (j = 0; j < d; j += 64) __builtin_prefetch(c + j, 0, 0);
#else
    (void)c; (void)d;
#endif
}

#endif /* EMBQ_SEARCH_SIMD_H */
