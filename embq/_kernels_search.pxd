# C declarations of the search micro-kernels (see _search_simd.h).
from libc.stdint cimport uint8_t, int8_t, int32_t, int64_t

cdef extern from "_search_simd.h" nogil:
    ctypedef void (*embq_dot_fn)(const uint8_t *codes, int64_t ldc, int64_t nr, int64_t d,
                                 const uint8_t *zp, const int8_t *q, int64_t ldq,
                                 const int32_t *sumq, int64_t nq, int32_t *out,
                                 int64_t ldo) noexcept nogil
    ctypedef void (*embq_select_fn)(const int32_t *acc, int64_t nr, const float *scales,
                                    const float *norms, float wq, int64_t row0, float *hv,
                                    int64_t *hi, int64_t k) noexcept nogil
    int64_t EMBQ_QPAD(int64_t d)
    int64_t EMBQ_QSTRIDE(int64_t d)
    void embq_fill_query_tail(int8_t *qrow, int64_t d)
    embq_dot_fn embq_dot_get(int v)
    embq_select_fn embq_select_get(int v)
    ctypedef struct embq_allow:
        const int64_t *rows
        int64_t n
        const uint8_t *mask
    void embq_scan1(int dot_id, int sel_id, const uint8_t *codes, int64_t ldc, int64_t nr,
                    int64_t d, const uint8_t *zp, const int8_t *q, int64_t ldq, int32_t sumq,
                    const float *scales, const float *norms, float wq, int64_t row0,
                    const embq_allow *allow, float *hv, int64_t *hi, int64_t k)
    void embq_row_weights(int sel_id, const float *scales, const float *norms, int64_t nr,
                          float *out)
    void embq_heap_init(float *hv, int64_t *hi, int64_t k)
    void embq_heap_offer(float *hv, int64_t *hi, int64_t k, float v, int64_t i)
    void embq_heap_sort(float *hv, int64_t *hi, int64_t k)
    void embq_prefetch_row(const uint8_t *c, int64_t d)
    void embq_select_one(float s, int64_t row, float *hv, int64_t *hi, int64_t k, float *th)
