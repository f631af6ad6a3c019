/* Sketch kernels: Hamming distances between 1-bit-per-dimension sketches, fused with the
 * selection of the K nearest rows per query by counting.
 *
 * Layout
 * ------
 * A sketch row is nb = ceil(d / 8) bytes; bit j of the row is bit (j % 8) of byte j / 8 (least
 * significant bit first, numpy's packbits(bitorder="little")); the padding bits d .. 8*nb-1 are
 * zero in rows and queries alike, so they never count.  Row r starts at rows + r * nb, or at
 * rows + idx[r] * nb when an allow-list idx is given; query s at q + s * nb.  The distance of a
 * pair is popcount(row XOR query).
 *
 * A scan kernel (embq_hscan_fn) offers rows [r0, r1) to the candidate sets of nq queries
 * (embq_cands): each distance is compared with its set's limit as soon as it is computed and
 * only the rare row below the limit leaves the registers (embq_cand_add); no distance buffer is
 * written.  Every query sees the rows in increasing order, which the tie rule needs.
 *
 * Variants (ids of _common.h):
 *   portable  64-bit words, bit-trick popcount, 4 queries x 1 row per step (each row's words
 *             are loaded once for four queries);
 *   avx2      the same loops with the POPCNT instruction.  Every CPU with AVX2 has POPCNT
 *             (x86-64-v3 includes it; Intel and AMD shipped it years before AVX2), so the avx2
 *             check covers it.  On Zen 3 this counts a pair of 48-byte rows about twice as
 *             fast as the per-pair pshufb nibble lookup (with psadbw and a horizontal sum per
 *             pair) that this variant used before, and as fast at 128 to 512 bytes, where
 *             the lookup's one horizontal sum per pair weighs less (measured, so no separate
 *             path for wide rows).  One query over 48-byte rows (d = 384) has its own loop,
 *             four rows per step in 256-bit vectors (embq_one48_avx2): the scalar loop's
 *             6 x (load, xor, popcnt, add) per row left it compute-bound below memory speed;
 *             in L2 the vector loop takes about 1.3 ns per row against 1.9;
 *   avx512    one query x one row at a time with VPOPCNTQ on masked 64-byte loads (runs only
 *             where the CPU has avx512vpopcntdq as well as avx512bw);
 *   neon      one query x one row at a time with CNT on 16-byte vectors.
 * The word loops have fixed-length copies for rows of 6, 8, 12 and 16 words (d = 384, 512, 768,
 * 1024) and a general one for any nb: the full words, then the last nb % 8 bytes as the top of
 * the 8 bytes that end the row (rows of 8 bytes or more) or byte by byte (shorter rows).  No
 * variant reads a byte outside the rows it is given or outside the queries. */
#ifndef EMBQ_SKETCH_SIMD_H
#define EMBQ_SKETCH_SIMD_H

#include <stdint.h>
#include <string.h>
#include "_common.h"

#if EMBQ_HAVE_X86_DISPATCH
#include <immintrin.h>
#endif

#if defined(_MSC_VER)
#define EMBQ_NOINLINE __declspec(noinline)
#define EMBQ_FORCE_INLINE static __forceinline
#else
#define EMBQ_NOINLINE __attribute__((noinline))
#define EMBQ_FORCE_INLINE static inline __attribute__((always_inline))
#endif

/* Candidate sets of a block of queries: set s holds up to cap entries (distance, row) at
 * cd + s * cap and cr + s * cap, cn[s] of them, and admits a distance below lim[s].  hist
 * (maxd + 1 counts) is the calling thread's scratch for embq_cand_cut.
 *
 * shared (or NULL) holds one bound per query that sets scanning other rows for the same query
 * (the chunks of the rows mode) publish: after a cut to K entries at threshold t, the global K
 * nearest all lie at distance <= t, so any row farther than t can be refused by every set.
 * Every value published is such a bound, so the threads read and write it without locks: a
 * lost update leaves a looser bound, never a wrong one. */
typedef struct {
    int32_t *cd;
    int64_t *cr;
    int64_t *cn;
    int32_t *lim;
    int64_t K;
    int64_t cap;
    int32_t *hist;
    int32_t maxd;
    int32_t *shared;
} embq_cands;

/* Rows a scan asks the cache for ahead of the one it counts: the hardware prefetcher alone
 * leaves a one-query scan (memory-bound) about 25% slower on Zen 3; an allow-list's rows are
 * not consecutive at all.  Only rows that exist are prefetched. */
#define EMBQ_PF_AHEAD 64
#if defined(__GNUC__) || defined(__clang__)
#define EMBQ_PREFETCH(p) __builtin_prefetch((p), 0, 0)
#else
#define EMBQ_PREFETCH(p) ((void)(p))
#endif
#define EMBQ_PREFETCH_ROW(r) do {                                                           \
    if ((r) + EMBQ_PF_AHEAD < r1) {                                                         \
        const uint8_t *p_ = rows + (idx ? idx[(r) + EMBQ_PF_AHEAD] : (r) + EMBQ_PF_AHEAD) * nb; \
        EMBQ_PREFETCH(p_);                                                                  \
        EMBQ_PREFETCH(p_ + nb - 1);                                                         \
    }                                                                                       \
} while (0)

static inline void embq_prefetch(const void *p) { EMBQ_PREFETCH((const char *)p); }

/* Ask the cache for the n >= 1 bytes at p (every 64-byte line): the candidate rows that
 * score_candidates gathers are scattered over the codes. */
static inline void embq_prefetch_bytes(const uint8_t *p, int64_t n) {
    int64_t o;
    for (o = 0; o < n; o += 64) EMBQ_PREFETCH(p + o);
    EMBQ_PREFETCH(p + n - 1);
}

#if defined(__GNUC__) || defined(__clang__)
#define EMBQ_LOAD_RELAXED(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define EMBQ_STORE_RELAXED(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#else  /* MSVC: aligned 32-bit volatile accesses are single loads and stores */
#define EMBQ_LOAD_RELAXED(p) (*(volatile int32_t *)(p))
#define EMBQ_STORE_RELAXED(p, v) (*(volatile int32_t *)(p) = (v))
#endif

typedef void (*embq_hscan_fn)(const uint8_t *rows, const int64_t *idx, int64_t r0, int64_t r1,
                              int64_t nb, const uint8_t *q, int64_t nq, const embq_cands *c);

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

/* The distance set s admits below: its own limit, or one past the shared bound. */
static inline int32_t embq_cand_limit(const embq_cands *c, int64_t s) {
    int32_t lim = c->lim[s], g;
    if (c->shared) {
        g = EMBQ_LOAD_RELAXED(c->shared + s) + 1;
        if (g < lim) lim = g;
    }
    return lim;
}

/* Admit (dist, row) to set s, whose limit the caller found above dist, cutting the set first
 * when it is full (and publishing the cut's threshold).  Returns the set's limit afterwards.
 * Out of line: it runs for few rows, and the scan loops stay small. */
static EMBQ_NOINLINE int32_t embq_cand_add(const embq_cands *c, int64_t s, int32_t dist,
                                           int64_t row) {
    int32_t *cd = c->cd + s * c->cap;
    int64_t *cr = c->cr + s * c->cap;
    int64_t *cn = c->cn + s;
    if (*cn == c->cap) {
        embq_cand_cut(cd, cr, cn, c->lim + s, c->K, c->hist, c->maxd);
        if (c->shared && c->lim[s] < EMBQ_LOAD_RELAXED(c->shared + s))
            EMBQ_STORE_RELAXED(c->shared + s, c->lim[s]);
        if (dist >= embq_cand_limit(c, s)) return embq_cand_limit(c, s);
    }
    cd[*cn] = dist;
    cr[*cn] = row;
    (*cn)++;
    return embq_cand_limit(c, s);
}

/* embq_cand_add with its common case inline: a set that is not full takes the entry and keeps
 * its limit lim (a shared bound tightened meanwhile is read at the next call that cuts or
 * at the next scan; until then the looser limit only admits more).  For the loops where
 * admissions are frequent enough (the first rows, a large K) for the call to show. */
static inline int32_t embq_cand_push(const embq_cands *c, int64_t s, int32_t dist, int64_t row,
                                     int32_t lim) {
    const int64_t n = c->cn[s];
    if (n < c->cap) {
        c->cd[s * c->cap + n] = dist;
        c->cr[s * c->cap + n] = row;
        c->cn[s] = n + 1;
        return lim;
    }
    return embq_cand_add(c, s, dist, row);
}

/* ------------------------------------------------------------------------------------------ */
/* Distances on 64-bit words. */

static inline uint64_t embq_ld64(const uint8_t *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* The n < 8 bytes at p as a word, byte j at bits 8j .. 8j+7. */
static inline uint64_t embq_ld_short(const uint8_t *p, int64_t n) {
    uint64_t x = 0;
    int64_t j;
    for (j = 0; j < n; j++) x |= (uint64_t)p[j] << (8 * j);
    return x;
}

/* Within the 8 bytes that end a row of nb >= 8 bytes (loaded as one word), the bits of its last
 * nb % 8 bytes: the others were counted among the full words. */
static inline uint64_t embq_tail_mask(int64_t nb) {
    int t = (int)(nb % 8);
    if (t == 0) return 0;
#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return ~(uint64_t)0 >> (8 * (8 - t));
#else
    return ~(uint64_t)0 << (8 * (8 - t));
#endif
}

/* How a row's bytes after its nb / 8 full words are counted: 0 none, 1 the masked last word,
 * 2 byte by byte (a row shorter than 8 bytes). */
static inline int embq_tail_mode(int64_t nb) {
    return nb % 8 == 0 ? 0 : nb >= 8 ? 1 : 2;
}

static inline int embq_popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
}

/* Distance over bytes [from, nb) of a and b, portable words and then the last bytes. */
static inline int32_t embq_hd_rest(const uint8_t *a, const uint8_t *b, int64_t from, int64_t nb) {
    int32_t s = 0;
    int64_t j = from;
    for (; j + 8 <= nb; j += 8) s += embq_popcount64(embq_ld64(a + j) ^ embq_ld64(b + j));
    if (j < nb) s += embq_popcount64(embq_ld_short(a + j, nb - j) ^ embq_ld_short(b + j, nb - j));
    return s;
}

/* Rows [r0, r1) against the four queries q0 .. q3 (sets s .. s+3), the row at position r being
 * ROW(r).  Each accumulator starts at minus its set's limit, so that a row some set admits
 * shows as a negative sum: one test per row for the four. */
#define EMBQ_SCAN4_ROWS(POP, NW, TM, ROW, PF)                                                \
    for (r = r0; r < r1; r++) {                                                               \
        const int64_t row = ROW(r);                                                           \
        const uint8_t *a = rows + row * nb;                                                   \
        int32_t d0 = -l0, d1 = -l1, d2 = -l2, d3 = -l3;                                       \
        PF(r);                                                                                \
        for (w = 0; w < NW; w++) {                                                            \
            const uint64_t x = embq_ld64(a + 8 * w);                                          \
            d0 += POP(x ^ embq_ld64(q0 + 8 * w));                                             \
            d1 += POP(x ^ embq_ld64(q1 + 8 * w));                                             \
            d2 += POP(x ^ embq_ld64(q2 + 8 * w));                                             \
            d3 += POP(x ^ embq_ld64(q3 + 8 * w));                                             \
        }                                                                                     \
        if (TM == 1) {                                                                        \
            const uint64_t x = embq_ld64(a + nb - 8);                                         \
            d0 += POP((x ^ embq_ld64(q0 + nb - 8)) & tmask);                                  \
            d1 += POP((x ^ embq_ld64(q1 + nb - 8)) & tmask);                                  \
            d2 += POP((x ^ embq_ld64(q2 + nb - 8)) & tmask);                                  \
            d3 += POP((x ^ embq_ld64(q3 + nb - 8)) & tmask);                                  \
        } else if (TM == 2) {                                                                 \
            const uint64_t x = embq_ld_short(a, nb);                                          \
            d0 += POP(x ^ embq_ld_short(q0, nb));                                             \
            d1 += POP(x ^ embq_ld_short(q1, nb));                                             \
            d2 += POP(x ^ embq_ld_short(q2, nb));                                             \
            d3 += POP(x ^ embq_ld_short(q3, nb));                                             \
        }                                                                                     \
        if ((d0 | d1 | d2 | d3) < 0) {  /* rarely, once the sets are full */                  \
            if (d0 < 0) l0 = embq_cand_add(c, s, d0 + l0, row);                               \
            if (d1 < 0) l1 = embq_cand_add(c, s + 1, d1 + l1, row);                           \
            if (d2 < 0) l2 = embq_cand_add(c, s + 2, d2 + l2, row);                           \
            if (d3 < 0) l3 = embq_cand_add(c, s + 3, d3 + l3, row);                           \
        }                                                                                     \
    }

/* Rows [r, r1) against the one query qa (set s, limit l0), the row at position r being ROW(r):
 * its words in qw (or read from qa beyond 16 words). */
#define EMBQ_SCAN1_ROWS(POP, NW, TM, ROW, PF)                                                 \
    for (; r < r1; r++) {                                                                     \
        const int64_t row = ROW(r);                                                           \
        const uint8_t *a = rows + row * nb;                                                   \
        int32_t d0 = 0;                                                                       \
        PF(r);                                                                                \
        for (w = 0; w < NW; w++)                                                              \
            d0 += POP(embq_ld64(a + 8 * w) ^ (inreg ? qw[w] : embq_ld64(qa + 8 * w)));        \
        if (TM == 1) d0 += POP((embq_ld64(a + nb - 8) ^ qt) & tmask);                         \
        else if (TM == 2) d0 += POP(embq_ld_short(a, nb) ^ qt);                               \
        if (d0 < l0) l0 = embq_cand_push(c, s, d0, row, l0);                                  \
    }

/* EMBQ_PREFETCH_ROW for consecutive rows (a is row r): no allow-list to look at. */
#define EMBQ_PREFETCH_NEXT(r) do {                                                          \
    if ((r) + EMBQ_PF_AHEAD < r1) {                                                         \
        EMBQ_PREFETCH(a + EMBQ_PF_AHEAD * nb);                                              \
        EMBQ_PREFETCH(a + EMBQ_PF_AHEAD * nb + nb - 1);                                     \
    }                                                                                       \
} while (0)

/* No vector path for one query: the word loop takes every row from r0 on. */
#define EMBQ_ONE48_NONE(rows, idx, r0, r1, qa, s, c, lp) (r0)

#define EMBQ_ROW_AT(r) (r)
#define EMBQ_ROW_LISTED(r) idx[r]
#define EMBQ_NO_PREFETCH(r) ((void)0)

/* The word scan of a variant whose popcount of a uint64_t is POP(x): NAME##_body with the word
 * count NW and tail mode TM as arguments (constants in the fixed-length copies, so the word
 * loops unroll), and NAME, which picks the copy for nb.  Queries go four at a time (each row's
 * words are loaded once for the four; compute-bound, so only an allow-list's scattered rows
 * are prefetched), the last nq % 4 one at a time (memory-bound: prefetched; the query's words
 * in qw, kept in registers by the fixed-length copies).  ONE48(rows, idx, r0, r1, qa, s, c,
 * &l0), a variant's own loop for one query over 48-byte rows, takes the rows from r0 up to
 * the position it returns and the word loop the rest. */
#define EMBQ_DEFINE_WORD_SCAN(NAME, ATTR, POP, ONE48)                                         \
ATTR EMBQ_FORCE_INLINE void NAME##_body(const uint8_t *rows, const int64_t *idx, int64_t r0,  \
                                        int64_t r1, int64_t nb, const uint8_t *q, int64_t nq, \
                                        const embq_cands *c, const int64_t NW, const int TM) { \
    const uint64_t tmask = embq_tail_mask(nb);                                                \
    int64_t s = 0, r, w;                                                                      \
    for (; s + 4 <= nq; s += 4) {                                                             \
        const uint8_t *q0 = q + s * nb, *q1 = q0 + nb, *q2 = q1 + nb, *q3 = q2 + nb;          \
        int32_t l0 = embq_cand_limit(c, s), l1 = embq_cand_limit(c, s + 1);                   \
        int32_t l2 = embq_cand_limit(c, s + 2), l3 = embq_cand_limit(c, s + 3);               \
        if (idx) {                                                                            \
            EMBQ_SCAN4_ROWS(POP, NW, TM, EMBQ_ROW_LISTED, EMBQ_PREFETCH_ROW)                  \
        } else {                                                                              \
            EMBQ_SCAN4_ROWS(POP, NW, TM, EMBQ_ROW_AT, EMBQ_NO_PREFETCH)                       \
        }                                                                                     \
    }                                                                                         \
    for (; s < nq; s++) {                                                                     \
        const uint8_t *qa = q + s * nb;                                                       \
        uint64_t qw[16], qt = 0;                                                              \
        int32_t l0 = embq_cand_limit(c, s);                                                   \
        const int inreg = NW <= 16;                                                           \
        r = r0;                                                                               \
        if (NW == 6 && TM == 0) r = ONE48(rows, idx, r0, r1, qa, s, c, &l0);                  \
        if (inreg)                                                                            \
            for (w = 0; w < NW; w++) qw[w] = embq_ld64(qa + 8 * w);                           \
        if (TM == 1) qt = embq_ld64(qa + nb - 8);                                             \
        else if (TM == 2) qt = embq_ld_short(qa, nb);                                         \
        if (idx) {                                                                            \
            EMBQ_SCAN1_ROWS(POP, NW, TM, EMBQ_ROW_LISTED, EMBQ_PREFETCH_ROW)                  \
        } else {                                                                              \
            EMBQ_SCAN1_ROWS(POP, NW, TM, EMBQ_ROW_AT, EMBQ_PREFETCH_NEXT)                     \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
ATTR static void NAME(const uint8_t *rows, const int64_t *idx, int64_t r0, int64_t r1,        \
                      int64_t nb, const uint8_t *q, int64_t nq, const embq_cands *c) {        \
    switch (nb) {                                                                             \
    case 48: NAME##_body(rows, idx, r0, r1, 48, q, nq, c, 6, 0); return;                      \
    case 64: NAME##_body(rows, idx, r0, r1, 64, q, nq, c, 8, 0); return;                      \
    case 96: NAME##_body(rows, idx, r0, r1, 96, q, nq, c, 12, 0); return;                     \
    case 128: NAME##_body(rows, idx, r0, r1, 128, q, nq, c, 16, 0); return;                   \
    default: NAME##_body(rows, idx, r0, r1, nb, q, nq, c, nb / 8, embq_tail_mode(nb));        \
    }                                                                                         \
}

/* The scan of a variant that computes one pair's distance at a time, HD(a, b, nb). */
#define EMBQ_DEFINE_PAIR_SCAN(NAME, ATTR, HD)                                                 \
ATTR static void NAME(const uint8_t *rows, const int64_t *idx, int64_t r0, int64_t r1,        \
                      int64_t nb, const uint8_t *q, int64_t nq, const embq_cands *c) {        \
    int64_t s, r;                                                                             \
    for (s = 0; s < nq; s++) {                                                                \
        const uint8_t *b = q + s * nb;                                                        \
        int32_t l = embq_cand_limit(c, s);                                                    \
        for (r = r0; r < r1; r++) {                                                           \
            const int64_t row = idx ? idx[r] : r;                                             \
            EMBQ_PREFETCH_ROW(r);                                                             \
            const int32_t dd = HD(rows + row * nb, b, nb);                                    \
            if (dd < l) l = embq_cand_add(c, s, dd, row);                                     \
        }                                                                                     \
    }                                                                                         \
}

#define EMBQ_NO_TARGET
EMBQ_DEFINE_WORD_SCAN(embq_hscan_portable, EMBQ_NO_TARGET, embq_popcount64, EMBQ_ONE48_NONE)

#if EMBQ_HAVE_X86_DISPATCH

#define EMBQ_T_AVX2 __attribute__((target("avx2,popcnt")))

/* w times the bits set in each byte of x (w = 1 or 2: at most 16): the pshufb lookup of
 * each nibble in a table of w * popcount. */
EMBQ_T_AVX2 static inline __m256i embq_bytecount_avx2(__m256i x, const int w) {
    const __m256i lut = _mm256_setr_epi8(0, w, w, 2 * w, w, 2 * w, 2 * w, 3 * w,
                                         w, 2 * w, 2 * w, 3 * w, 2 * w, 3 * w, 3 * w, 4 * w,
                                         0, w, w, 2 * w, w, 2 * w, 2 * w, 3 * w,
                                         w, 2 * w, 2 * w, 3 * w, 2 * w, 3 * w, 3 * w, 4 * w);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, m4)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4)));
}

/* Distances of the 48-byte rows at a and b to a query: 64-bit lanes 0 + 1 sum to a's, 2 + 3
 * to b's.  Row a's bytes go to the low 128-bit halves of three vectors, b's to the high ones:
 * for b = a + 48 by three 32-byte loads (then one blend and one lane swap), the query's
 * matching bytes in p0, p1, p2; otherwise by 16-byte halves, the query's thirds in both
 * halves of t0, t1, t2.  A carry-save step turns each row's three thirds into ones + 2 * twos
 * (the same bits counted), so two lookups per pair of rows, not three. */
EMBQ_T_AVX2 EMBQ_FORCE_INLINE __m256i embq_hd48x2_avx2(const uint8_t *a, const uint8_t *b,
                                                      const __m256i *qv, const int adjacent) {
    __m256i x0, x1, x2, t, ones, twos;
    if (adjacent) {
        const __m256i y0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)a), qv[0]);
        const __m256i y2 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + 64)),
                                            qv[2]);
        x1 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + 32)), qv[1]);
        x0 = _mm256_blend_epi32(y0, y2, 0xF0);          /* a[0:16], b[16:32] */
        x2 = _mm256_permute2x128_si256(y0, y2, 0x21);   /* a[16:32], b[0:16] */
    } else {
        x0 = _mm256_xor_si256(_mm256_loadu2_m128i((const __m128i *)b, (const __m128i *)a),
                              qv[3]);
        x1 = _mm256_xor_si256(
            _mm256_loadu2_m128i((const __m128i *)(b + 16), (const __m128i *)(a + 16)), qv[4]);
        x2 = _mm256_xor_si256(
            _mm256_loadu2_m128i((const __m128i *)(b + 32), (const __m128i *)(a + 32)), qv[5]);
    }
    t = _mm256_xor_si256(x0, x1);
    ones = _mm256_xor_si256(t, x2);
    twos = _mm256_or_si256(_mm256_and_si256(x0, x1), _mm256_and_si256(t, x2));
    return _mm256_sad_epu8(_mm256_add_epi8(embq_bytecount_avx2(twos, 2),
                                           embq_bytecount_avx2(ones, 1)),
                           _mm256_setzero_si256());
}

/* One query against 48-byte rows (d = 384), four rows per step: their distances side by side
 * in one vector, compared with the limit at once, so the loop branches only when some row
 * may enter (rare once the set is full); those rows are then offered in order, each against
 * the limit its predecessor left.  Consecutive rows are prefetched once per 64-byte line
 * (three lines per step), listed rows at both ends.  Takes the positions [r0, r1 - (r1 - r0)
 * % 4) and returns the first it did not take; *lp is the set's limit, in and out. */
EMBQ_T_AVX2 EMBQ_FORCE_INLINE int64_t embq_one48_avx2_body(const uint8_t *rows,
                                                           const int64_t *idx, int64_t r0,
                                                           int64_t r1, const uint8_t *qa,
                                                           int64_t s, const embq_cands *c,
                                                           int32_t *lp, const int listed) {
    const __m128i h0 = _mm_loadu_si128((const __m128i *)qa);
    const __m128i h1 = _mm_loadu_si128((const __m128i *)(qa + 16));
    const __m128i h2 = _mm_loadu_si128((const __m128i *)(qa + 32));
    /* the query's bytes beside rows r, r + 1 read as 32-byte pieces, then its thirds */
    const __m256i qv[6] = {_mm256_set_m128i(h1, h0), _mm256_set_m128i(h0, h2),
                           _mm256_set_m128i(h2, h1), _mm256_set_m128i(h0, h0),
                           _mm256_set_m128i(h1, h1), _mm256_set_m128i(h2, h2)};
    int32_t l0 = *lp;
    __m256i lim = _mm256_set1_epi64x(l0);
    int64_t r = r0, j;
    for (; r + 4 <= r1; r += 4) {
        const int64_t ra = listed ? idx[r] : r, rb = listed ? idx[r + 1] : r + 1;
        const int64_t rc = listed ? idx[r + 2] : r + 2, rd = listed ? idx[r + 3] : r + 3;
        __m256i sab, scd, dist;
        if (r + 4 + EMBQ_PF_AHEAD <= r1) {
            if (listed) {
                for (j = 0; j < 4; j++) {
                    const uint8_t *p = rows + idx[r + EMBQ_PF_AHEAD + j] * 48;
                    EMBQ_PREFETCH(p);
                    EMBQ_PREFETCH(p + 47);
                }
            } else {
                const uint8_t *p = rows + (r + EMBQ_PF_AHEAD) * 48;
                EMBQ_PREFETCH(p);
                EMBQ_PREFETCH(p + 64);
                EMBQ_PREFETCH(p + 128);
            }
        }
        sab = embq_hd48x2_avx2(rows + ra * 48, rows + rb * 48, qv, !listed);
        scd = embq_hd48x2_avx2(rows + rc * 48, rows + rd * 48, qv, !listed);
        /* lanes (a, c, b, d) */
        dist = _mm256_add_epi64(_mm256_unpacklo_epi64(sab, scd), _mm256_unpackhi_epi64(sab, scd));
        if (!_mm256_testz_si256(_mm256_cmpgt_epi64(lim, dist), _mm256_set1_epi64x(-1))) {
            int64_t dd[4];
            _mm256_storeu_si256((__m256i *)dd, dist);
            if (dd[0] < l0) l0 = embq_cand_push(c, s, (int32_t)dd[0], ra, l0);
            if (dd[2] < l0) l0 = embq_cand_push(c, s, (int32_t)dd[2], rb, l0);
            if (dd[1] < l0) l0 = embq_cand_push(c, s, (int32_t)dd[1], rc, l0);
            if (dd[3] < l0) l0 = embq_cand_push(c, s, (int32_t)dd[3], rd, l0);
            lim = _mm256_set1_epi64x(l0);
        }
    }
    *lp = l0;
    return r;
}

/* The copies without and with an allow-list. */
EMBQ_T_AVX2 static int64_t embq_one48_avx2(const uint8_t *rows, const int64_t *idx, int64_t r0,
                                           int64_t r1, const uint8_t *qa, int64_t s,
                                           const embq_cands *c, int32_t *lp) {
    if (idx) return embq_one48_avx2_body(rows, idx, r0, r1, qa, s, c, lp, 1);
    return embq_one48_avx2_body(rows, idx, r0, r1, qa, s, c, lp, 0);
}

#define EMBQ_POPCNT64(x) ((int)__builtin_popcountll(x))
EMBQ_DEFINE_WORD_SCAN(embq_hscan_avx2, EMBQ_T_AVX2, EMBQ_POPCNT64, embq_one48_avx2)

#define EMBQ_TPOPCNT "avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt"

__attribute__((target(EMBQ_TPOPCNT)))
static inline int32_t embq_hd_avx512(const uint8_t *a, const uint8_t *b, int64_t nb) {
    __m512i acc = _mm512_setzero_si512();
    int64_t j;
    for (j = 0; j < nb; j += 64) {
        /* masked loads: the bytes past nb are neither read nor counted */
        __mmask64 m = nb - j >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (nb - j)) - 1);
        __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, a + j),
                                     _mm512_maskz_loadu_epi8(m, b + j));
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
    }
    return (int32_t)_mm512_reduce_add_epi64(acc);
}

EMBQ_DEFINE_PAIR_SCAN(embq_hscan_avx512, __attribute__((target(EMBQ_TPOPCNT))), embq_hd_avx512)

static inline int embq_cpu_has_vpopcntdq(void) {
    __builtin_cpu_init();
    return embq_cpu_has_avx512bw() && __builtin_cpu_supports("avx512vpopcntdq");
}

#endif /* EMBQ_HAVE_X86_DISPATCH */

#if EMBQ_HAVE_NEON
static inline int32_t embq_hd_neon(const uint8_t *a, const uint8_t *b, int64_t nb) {
    uint32x4_t acc = vdupq_n_u32(0);
    int64_t j;
    for (j = 0; j + 16 <= nb; j += 16) {
        uint8x16_t x = veorq_u8(vld1q_u8(a + j), vld1q_u8(b + j));
        acc = vpadalq_u16(acc, vpaddlq_u8(vcntq_u8(x)));
    }
    return (int32_t)vaddvq_u32(acc) + embq_hd_rest(a, b, j, nb);
}

EMBQ_DEFINE_PAIR_SCAN(embq_hscan_neon, EMBQ_NO_TARGET, embq_hd_neon)
#endif

/* The scan kernel of variant v, or NULL when this build or CPU has none of that name. */
static inline embq_hscan_fn embq_hscan_get(int v) {
    switch (v) {
    case EMBQ_V_PORTABLE: return embq_hscan_portable;
#if EMBQ_HAVE_X86_DISPATCH
    case EMBQ_V_AVX2: return embq_hscan_avx2;
    case EMBQ_V_AVX512: return embq_hscan_avx512;
#endif
#if EMBQ_HAVE_NEON
    case EMBQ_V_NEON: return embq_hscan_neon;
#endif
    default: return 0;
    }
}

/* Whether this CPU runs variant v of the sketch family (avx512 needs VPOPCNTDQ too; avx2's
 * POPCNT comes with AVX2, see above). */
static inline int embq_hscan_runs(int v) {
#if EMBQ_HAVE_X86_DISPATCH
    if (v == EMBQ_V_AVX512) return embq_cpu_has_vpopcntdq();
#endif
    return embq_variant_runs(v);
}

#endif /* EMBQ_SKETCH_SIMD_H */
