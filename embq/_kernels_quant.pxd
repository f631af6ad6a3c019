# C row kernels of the uint8 quantization (embq/_quant.h), for cimport by other kernel modules.
# Every function works on one contiguous row; callers validate shapes and pointers first.
from libc.stdint cimport uint8_t, int64_t

cdef extern from "_quant.h" nogil:
    ctypedef Py_ssize_t embq_ssize_t

    int embq_quant_row_portable(const float *x, embq_ssize_t d, uint8_t *codes, float *scale)
    int embq_quant_row_avx2(const float *x, embq_ssize_t d, uint8_t *codes, float *scale)
    void embq_dequant_row_portable(const uint8_t *codes, embq_ssize_t d, int zp, float scale, float *out)
    void embq_dequant_row_avx2(const uint8_t *codes, embq_ssize_t d, int zp, float scale, float *out)
    int64_t embq_sumsq_row_portable(const uint8_t *codes, embq_ssize_t d, int zp)
    int64_t embq_sumsq_row_avx2(const uint8_t *codes, embq_ssize_t d, int zp)
    int embq_quant_row_neon(const float *x, embq_ssize_t d, uint8_t *codes, float *scale)
    void embq_dequant_row_neon(const uint8_t *codes, embq_ssize_t d, int zp, float scale, float *out)
    int64_t embq_sumsq_row_neon(const uint8_t *codes, embq_ssize_t d, int zp)
    int embq_quant_have_avx2()
    int embq_quant_have_neon()
    void embq_f64_row_to_f32(const double *src, embq_ssize_t d, float *dst)
    void embq_gather_rows(const char *base, embq_ssize_t s0, embq_ssize_t s1, int is_f64,
                          embq_ssize_t r0, embq_ssize_t nr, embq_ssize_t d, float *dst)

ctypedef int (*quant_row_fn)(const float *, embq_ssize_t, uint8_t *, float *) noexcept nogil
ctypedef void (*dequant_row_fn)(const uint8_t *, embq_ssize_t, int, float, float *) noexcept nogil
ctypedef int64_t (*sumsq_row_fn)(const uint8_t *, embq_ssize_t, int) noexcept nogil
