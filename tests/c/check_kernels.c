/* Cross-check of every SIMD kernel variant this CPU can run against the portable C kernels,
 * bit for bit, without Python: built natively by tests/test_c_kernels.py, and cross-compiled for
 * AArch64 and run under qemu-user by scripts/check_arm64.sh, which is how the NEON and SDOT
 * variants are checked on an x86-64 machine.
 *
 * Rows end right before an inaccessible page, so a kernel that reads past the end of a row
 * crashes instead of passing.  Exit status 0 and a summary line on success; the first mismatch
 * is printed and the status is 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../embq/_quant.h"
#include "../../embq/_search_simd.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static int64_t rand_int(int64_t lo, int64_t hi) { /* inclusive */
    return lo + (int64_t)(next_u64() % (uint64_t)(hi - lo + 1));
}
static float rand_float(float mag) {
    return ((float)(next_u64() >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * mag;
}

/* n bytes that end exactly where an inaccessible page begins. */
static void *guarded(size_t n, void **base, size_t *len) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (n + page - 1) / page * page;
    char *p = mmap(NULL, body + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    if (mprotect(p + body, page, PROT_NONE) != 0) { perror("mprotect"); exit(2); }
    *base = p;
    *len = body + page;
    return p + body - n;
}

static long checks = 0;

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

/* The portable dequantize kernel against the one scalar definition, embq_dequant_value. */
static void check_dequant_definition(void) {
    float out[256];
    uint8_t c[256];
    float scales[] = {1.0f, 0.0f, 1e-40f, 3.0e36f, 0.0078125f, 1.2345678f};
    for (int z = 0; z < 256; z += 17) {
        for (size_t t = 0; t < sizeof scales / sizeof scales[0]; t++) {
            for (int j = 0; j < 256; j++) c[j] = (uint8_t)j;
            embq_quant_get(EMBQ_V_PORTABLE).dequant(c, 256, z, scales[t], out);
            for (int j = 0; j < 256; j++) {
                float want = (float)(j - z) * scales[t];
                if (memcmp(&out[j], &want, sizeof want) != 0)
                    FAIL("portable dequantize code %d zp %d scale %.9g: %.9g, expected %.9g",
                         j, z, scales[t], out[j], want);
            }
            checks++;
        }
    }
    printf("  portable dequantize matches float32(float32(code - zp) * scale)\n");
}

static void check_quant_variant(const char *name, embq_quant_kernels k) {
    embq_quant_kernels p = embq_quant_get(EMBQ_V_PORTABLE);
    static const int64_t dims[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65,
                                   100, 127, 128, 129, 300, 301, 1000};
    for (size_t t = 0; t < sizeof dims / sizeof dims[0]; t++) {
        for (int rep = 0; rep < 40; rep++) {
            int64_t d = dims[t];
            void *b1, *b2, *b3, *b4;
            size_t l1, l2, l3, l4;
            float *x = guarded((size_t)d * sizeof(float), &b1, &l1);
            uint8_t *c_ref = guarded((size_t)d, &b2, &l2);
            uint8_t *c = guarded((size_t)d, &b3, &l3);
            float *out = guarded((size_t)d * sizeof(float), &b4, &l4);
            float out_ref[1000];
            float mags[] = {1.0f, 1e-30f, 1e30f, 3.0e38f, 1e-38f, 0.0f, 127.0f};
            float mag = mags[rep % 7];
            for (int64_t j = 0; j < d; j++) {
                x[j] = rand_float(mag);
                if (rep % 5 == 1) x[j] = (float)rand_int(-127, 127) * 0.5f;  /* ties */
            }
            if (rep % 11 == 3 && d > 1) x[rand_int(0, d - 1)] = NAN;
            if (rep % 13 == 4 && d > 1) x[rand_int(0, d - 1)] = -INFINITY;
            float s_ref = -1.0f, s = -2.0f;
            for (int64_t j = 0; j < d; j++) c_ref[j] = c[j] = 0;
            int st_ref = p.quant(x, d, c_ref, &s_ref);
            int st = k.quant(x, d, c, &s);
            if (st != st_ref) FAIL("%s quantize d=%lld rep=%d: status %d, expected %d", name, (long long)d, rep, st, st_ref);
            if (st == 0) {
                if (memcmp(&s, &s_ref, sizeof s) != 0)
                    FAIL("%s quantize d=%lld rep=%d: scale %.9g, expected %.9g", name, (long long)d, rep, s, s_ref);
                for (int64_t j = 0; j < d; j++)
                    if (c[j] != c_ref[j])
                        FAIL("%s quantize d=%lld rep=%d col %lld: code %d, expected %d (x=%.9g)", name,
                             (long long)d, rep, (long long)j, c[j], c_ref[j], x[j]);
                int zp = rep % 3 == 0 ? (int)rand_int(0, 255) : 128;
                p.dequant(c, d, zp, s, out_ref);
                k.dequant(c, d, zp, s, out);
                if (memcmp(out, out_ref, (size_t)d * sizeof(float)) != 0)
                    FAIL("%s dequantize d=%lld zp=%d differs", name, (long long)d, zp);
                if (k.sumsq(c, d, zp) != p.sumsq(c, d, zp))
                    FAIL("%s sumsq d=%lld zp=%d differs", name, (long long)d, zp);
                checks += 3;
            }
            checks++;
            munmap(b1, l1); munmap(b2, l2); munmap(b3, l3); munmap(b4, l4);
        }
    }
    printf("  %s: quantize, dequantize, sumsq match the portable kernels\n", name);
}

static void check_dot_variant(int v) {
    static const int64_t dims[] = {1, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 300, 301, 777};
    embq_dot_fn dot = embq_dot_get(v);
    for (size_t t = 0; t < sizeof dims / sizeof dims[0]; t++) {
        for (int rep = 0; rep < 12; rep++) {
            int64_t d = dims[t], nr = rand_int(0, 11), nq = rand_int(1, 6);
            int64_t ldc = d + (rep % 3 == 0 ? rand_int(1, 9) : 0);
            int64_t ldq = EMBQ_QSTRIDE(d), ldo = nr + rand_int(0, 3);
            void *b1, *b2;
            size_t l1, l2;
            size_t ncode = nr ? (size_t)((nr - 1) * ldc + d) : 1;
            uint8_t *codes = guarded(ncode, &b1, &l1);
            uint8_t *zp = guarded(nr ? (size_t)nr : 1, &b2, &l2);
            int8_t *q = calloc((size_t)(nq * ldq), 1);
            int32_t *sumq = calloc((size_t)nq, sizeof(int32_t));
            int32_t *out = calloc((size_t)(nq * ldo + 1), sizeof(int32_t));
            int32_t *ref = calloc((size_t)(nq * ldo + 1), sizeof(int32_t));
            int use_zp = rep % 2;
            for (size_t j = 0; j < ncode; j++) codes[j] = (uint8_t)rand_int(0, 255);
            if (rep % 4 == 2) for (size_t j = 0; j < ncode; j++) codes[j] = rep % 8 == 2 ? 0 : 255;
            for (int64_t r = 0; r < nr; r++) zp[r] = (uint8_t)rand_int(0, 255);
            for (int64_t i = 0; i < nq; i++) {
                int8_t *qi = q + i * ldq;
                int32_t s = 0;
                for (int64_t j = 0; j < d; j++) {
                    qi[j] = (int8_t)(rep % 4 == 2 ? -127 : rand_int(-127, 127));
                    s += qi[j];
                }
                embq_fill_query_tail(qi, d);
                sumq[i] = s;
            }
            embq_dot_portable(codes, ldc, nr, d, use_zp ? zp : NULL, q, ldq, sumq, nq, ref, ldo);
            dot(codes, ldc, nr, d, use_zp ? zp : NULL, q, ldq, sumq, nq, out, ldo);
            for (int64_t i = 0; i < nq; i++)
                for (int64_t r = 0; r < nr; r++)
                    if (out[i * ldo + r] != ref[i * ldo + r])
                        FAIL("dot %s d=%lld nr=%lld nq=%lld row %lld query %lld: %d, expected %d",
                             embq_variant_names[v], (long long)d, (long long)nr, (long long)nq, (long long)r, (long long)i,
                             out[i * ldo + r], ref[i * ldo + r]);
            checks++;
            munmap(b1, l1); munmap(b2, l2);
            free(q); free(sumq); free(out); free(ref);
        }
    }
    printf("  dot %s: matches the portable kernel\n", embq_variant_names[v]);
}

/* A select variant against the portable one: the same heap contents (scores bit for bit, rows)
 * after offering the same scored rows, with and without norms, into heaps of several sizes. */
static void check_select_variant(int v) {
    static const int64_t sizes[] = {0, 1, 5, 15, 16, 17, 33, 100, 257};
    embq_select_fn sel = embq_select_get(v), ref = embq_select_get(EMBQ_V_PORTABLE);
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        for (int rep = 0; rep < 24; rep++) {
            int64_t nr = sizes[t], k = 1 + rand_int(0, 40), row0 = rand_int(0, 1000);
            void *b1, *b2, *b3;
            size_t l1, l2, l3;
            int32_t *acc = guarded((size_t)(nr ? nr : 1) * sizeof(int32_t), &b1, &l1);
            float *scales = guarded((size_t)(nr ? nr : 1) * sizeof(float), &b2, &l2);
            float *norms = guarded((size_t)(nr ? nr : 1) * sizeof(float), &b3, &l3);
            float hv[2][41];
            int64_t hi[2][41];
            float wq = rep % 5 == 0 ? 1.0f : fabsf(rand_float(2.0f));
            for (int64_t r = 0; r < nr; r++) {
                /* few distinct values, so equal scores (ties go to the lower row) are common */
                acc[r] = rep % 3 == 0 ? (int32_t)rand_int(-3, 3) : (int32_t)rand_int(-2000000, 2000000);
                scales[r] = rep % 4 == 1 ? 0.5f : fabsf(rand_float(1.0f));
                norms[r] = rep % 7 == 2 && r % 3 == 0 ? 0.0f : fabsf(rand_float(100.0f));
            }
            for (int h = 0; h < 2; h++) {
                embq_heap_init(hv[h], hi[h], k);
                /* a heap already holding rows, as after earlier blocks */
                for (int64_t r = 0; r < k / 2; r++)
                    embq_heap_offer(hv[h], hi[h], k, (float)(r % 4) - 1.5f, 5000 + r);
                (h ? sel : ref)(acc, nr, scales, rep % 2 ? norms : NULL, wq, row0, hv[h], hi[h], k);
                embq_heap_sort(hv[h], hi[h], k);
            }
            if (memcmp(hv[0], hv[1], (size_t)k * sizeof(float)) != 0 ||
                memcmp(hi[0], hi[1], (size_t)k * sizeof(int64_t)) != 0)
                FAIL("select %s nr=%lld k=%lld rep=%d: heaps differ", embq_variant_names[v],
                     (long long)nr, (long long)k, rep);
            checks++;
            munmap(b1, l1); munmap(b2, l2); munmap(b3, l3);
        }
    }
    printf("  select %s: matches the portable kernel\n", embq_variant_names[v]);
}

int main(void) {
    int variants = 0;
    printf("quantization row kernels:\n");
    check_dequant_definition();
    for (int v = EMBQ_V_PORTABLE + 1; v < EMBQ_V_COUNT; v++) {
        embq_quant_kernels k = embq_quant_get(v);
        if (k.quant != NULL && embq_variant_runs(v)) {
            check_quant_variant(embq_variant_names[v], k);
            variants++;
        }
    }
    printf("search dot products:\n");
    for (int v = EMBQ_V_PORTABLE + 1; v < EMBQ_V_COUNT; v++) {
        if (embq_dot_get(v) != NULL && embq_variant_runs(v)) {
            check_dot_variant(v);
            variants++;
        }
    }
    printf("search top-k selection:\n");
    for (int v = EMBQ_V_PORTABLE + 1; v < EMBQ_V_COUNT; v++) {
        if (embq_select_get(v) != NULL && embq_variant_runs(v)) {
            check_select_variant(v);
            variants++;
        }
    }
    printf("ok: %d SIMD variants, %ld checks\n", variants, checks);
    return 0;
}
