/* Sketch kernels: Hamming distances between 1-bit-per-dimension sketches, and the selection of
 * the K nearest rows per query by counting.
 *
 * Layout
 * ------
 * A sketch row is nb = ceil(d / 8) bytes; bit j of the row is bit (j % 8) of byte j / 8 (least
 * significant bit first, numpy's packbits(bitorder="little")); the padding bits d .. 8*nb-1 are
 * zero in rows and queries alike, so they never count.  Rows start at rows + r * nb, queries at
 * q + i * ldq.  out[i * ldo + r] = popcount(rows[r] XOR q[i]).
 *
 * Variants (ids of _common.h): portable C (a bit-trick popcount on 64-bit words), avx2 (the
 * nibble lookup with pshufb, sums with psadbw), avx512 (VPOPCNTDQ, masked loads for the row's
 * last bytes; runs only where the CPU has avx512vpopcntdq as well as avx512bw), neon (cnt).
 * No variant reads a byte outside [rows, rows + nr * nb) or outside the queries.  Queries are
 * the outer loop: a block of rows (256 x nb bytes) stays in L1 while each query's distances
 * are written in order.
 */
#ifndef EMBQ_SKETCH_SIMD_H
#define EMBQ_SKETCH_SIMD_H

#include <stdint.h>
#include <string.h>
#include "_common.h"

#if EMBQ_HAVE_X86_DISPATCH
#include <immintrin.h>
#endif

typedef void (*embq_ham_fn)(const uint8_t *rows, int64_t nr, int64_t nb, const uint8_t *q,
                            int64_t ldq, int64_t nq, int32_t *out, int64_t ldo);

static inline int embq_popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
}

/* Distance over bytes [from, nb) with portable 64-bit words and a last partial word. */
static inline int32_t embq_ham_tail(const uint8_t *a, const uint8_t *b, int64_t from, int64_t nb) {
    int32_t s = 0;
    int64_t j = from;
    uint64_t x, y;
    for (; j + 8 <= nb; j += 8) {
        memcpy(&x, a + j, 8);
        memcpy(&y, b + j, 8);
        s += embq_popcount64(x ^ y);
    }
    if (j < nb) {
        x = 0;
        y = 0;
        memcpy(&x, a + j, (size_t)(nb - j));
        memcpy(&y, b + j, (size_t)(nb - j));
        s += embq_popcount64(x ^ y);
    }
    return s;
}

static void embq_ham_portable(const uint8_t *rows, int64_t nr, int64_t nb, const uint8_t *q,
                              int64_t ldq, int64_t nq, int32_t *out, int64_t ldo) {
    int64_t r, i;
    for (i = 0; i < nq; i++)
        for (r = 0; r < nr; r++)
            out[i * ldo + r] = embq_ham_tail(rows + r * nb, q + i * ldq, 0, nb);
}

#if EMBQ_HAVE_X86_DISPATCH

/* popcount of each byte of v, by looking up each nibble */
__attribute__((target("avx2")))
static inline __m256i embq_pcnt_bytes_256(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
    __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);
}

__attribute__((target("avx2")))
static inline __m128i embq_pcnt_bytes_128(__m128i v) {
    const __m128i lut = _mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m128i low = _mm_set1_epi8(0x0F);
    __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(v, low));
    __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(v, 4), low));
    return _mm_add_epi8(lo, hi);
}

__attribute__((target("avx2")))
static int32_t embq_ham1_avx2(const uint8_t *a, const uint8_t *b, int64_t nb) {
    __m256i acc = _mm256_setzero_si256();
    __m128i acc1;
    int64_t j = 0;
    /* byte counts are at most 8 per 32-byte step: psadbw right away keeps them exact */
    for (; j + 32 <= nb; j += 32) {
        __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + j)),
                                     _mm256_loadu_si256((const __m256i *)(b + j)));
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(embq_pcnt_bytes_256(x),
                                                    _mm256_setzero_si256()));
    }
    acc1 = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    if (j + 16 <= nb) {
        __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(a + j)),
                                  _mm_loadu_si128((const __m128i *)(b + j)));
        acc1 = _mm_add_epi64(acc1, _mm_sad_epu8(embq_pcnt_bytes_128(x), _mm_setzero_si128()));
        j += 16;
    }
    acc1 = _mm_add_epi64(acc1, _mm_unpackhi_epi64(acc1, acc1));
    return (int32_t)_mm_cvtsi128_si64(acc1) + embq_ham_tail(a, b, j, nb);
}

__attribute__((target("avx2")))
static void embq_ham_avx2(const uint8_t *rows, int64_t nr, int64_t nb, const uint8_t *q,
                          int64_t ldq, int64_t nq, int32_t *out, int64_t ldo) {
    int64_t r, i;
    for (i = 0; i < nq; i++)
        for (r = 0; r < nr; r++)
            out[i * ldo + r] = embq_ham1_avx2(rows + r * nb, q + i * ldq, nb);
}

#define EMBQ_TPOPCNT "avx512f,avx512bw,avx512vpopcntdq,avx2"

__attribute__((target(EMBQ_TPOPCNT)))
static void embq_ham_avx512(const uint8_t *rows, int64_t nr, int64_t nb, const uint8_t *q,
                            int64_t ldq, int64_t nq, int32_t *out, int64_t ldo) {
    int64_t r, i, j;
    for (i = 0; i < nq; i++) {
        const uint8_t *b = q + i * ldq;
        for (r = 0; r < nr; r++) {
            const uint8_t *a = rows + r * nb;
            __m512i acc = _mm512_setzero_si512();
            for (j = 0; j < nb; j += 64) {
                __mmask64 m = nb - j >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (nb - j)) - 1);
                __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, a + j),
                                             _mm512_maskz_loadu_epi8(m, b + j));
                acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
            }
            out[i * ldo + r] = (int32_t)_mm512_reduce_add_epi64(acc);
        }
    }
}

static inline int embq_cpu_has_vpopcntdq(void) {
    __builtin_cpu_init();
    return embq_cpu_has_avx512bw() && __builtin_cpu_supports("avx512vpopcntdq");
}

#endif /* EMBQ_HAVE_X86_DISPATCH */

#if EMBQ_HAVE_NEON
static void embq_ham_neon(const uint8_t *rows, int64_t nr, int64_t nb, const uint8_t *q,
                          int64_t ldq, int64_t nq, int32_t *out, int64_t ldo) {
    int64_t r, i, j;
    for (i = 0; i < nq; i++) {
        const uint8_t *b = q + i * ldq;
        for (r = 0; r < nr; r++) {
            const uint8_t *a = rows + r * nb;
            uint32x4_t acc = vdupq_n_u32(0);
            for (j = 0; j + 16 <= nb; j += 16) {
                uint8x16_t x = veorq_u8(vld1q_u8(a + j), vld1q_u8(b + j));
                acc = vpadalq_u16(acc, vpaddlq_u8(vcntq_u8(x)));
            }
            out[i * ldo + r] = (int32_t)vaddvq_u32(acc) + embq_ham_tail(a, b, j, nb);
        }
    }
}
#endif

/* The Hamming kernel of variant v, or NULL when this build or CPU has none of that name. */
static inline embq_ham_fn embq_ham_get(int v) {
    switch (v) {
    case EMBQ_V_PORTABLE: return embq_ham_portable;
#if EMBQ_HAVE_X86_DISPATCH
    case EMBQ_V_AVX2: return embq_ham_avx2;
    case EMBQ_V_AVX512: return embq_ham_avx512;
#endif
#if EMBQ_HAVE_NEON
    case EMBQ_V_NEON: return embq_ham_neon;
#endif
    default: return 0;
    }
}

/* Whether this CPU runs variant v of the sketch family (avx512 needs VPOPCNTDQ too). */
static inline int embq_ham_runs(int v) {
#if EMBQ_HAVE_X86_DISPATCH
    if (v == EMBQ_V_AVX512) return embq_cpu_has_vpopcntdq();
#endif
    return embq_variant_runs(v);
}

/* ------------------------------------------------------------------------------------------ */
/* Selection by counting.  A candidate set holds up to cap entries (distance, row) in increasing
 * row order and admits a row when its distance is below lim.  When it is full it is cut to the
 * K best (smaller distance, then lower row) with a histogram of its distances (maxd + 1 counts):
 * the threshold t is the smallest distance whose cumulative count reaches K; every entry below t
 * stays, and the first entries at t (the lowest rows) up to K.  Rows arrive in increasing order,
 * so afterwards only a distance below t can enter: lim = t. */
static void embq_cand_cut(int32_t *cd, int64_t *cr, int64_t *cn, int32_t *lim, int64_t K,
                          int32_t *hist, int32_t maxd) {
    int64_t n = *cn, e, w = 0, cum = 0, quota;
    int32_t t = 0;
    if (n <= K) return;
    memset(hist, 0, sizeof(int32_t) * (size_t)(maxd + 1));
    for (e = 0; e < n; e++) hist[cd[e]]++;
    while (cum + hist[t] < K) cum += hist[t++];
    quota = K - cum;
    for (e = 0; e < n; e++) {
        int32_t v = cd[e];
        if (v < t || (v == t && quota-- > 0)) {
            cd[w] = v;
            cr[w] = cr[e];
            w++;
        }
    }
    *cn = w;
    *lim = t;
}

/* Offer distances dist[0 .. nr) of rows row0 .. row0 + nr - 1 to one candidate set. */
static inline void embq_cand_offer(const int32_t *dist, int64_t nr, int64_t row0, int32_t *cd,
                                   int64_t *cr, int64_t *cn, int32_t *lim, int64_t K, int64_t cap,
                                   int32_t *hist, int32_t maxd) {
    int64_t r;
    for (r = 0; r < nr; r++) {
        if (dist[r] < *lim) {
            if (*cn == cap) {
                embq_cand_cut(cd, cr, cn, lim, K, hist, maxd);
                if (dist[r] >= *lim) continue;
            }
            cd[*cn] = dist[r];
            cr[*cn] = row0 + r;
            (*cn)++;
        }
    }
}

#endif /* EMBQ_SKETCH_SIMD_H */
