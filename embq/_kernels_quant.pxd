# C row kernels of the uint8 quantization (embq/_quant.h), for cimport by other kernel modules.
# Every function works on one contiguous row; callers validate shapes and pointers first.
from libc.stdint cimport uint8_t, int64_t

cdef extern from "_quant.h" nogil:
    ctypedef Py_ssize_t embq_ssize_t
    ctypedef int (*quant_row_fn "embq_quant_row_fn")(const float *, embq_ssize_t, uint8_t *,
                                                      float *) noexcept nogil
    ctypedef void (*dequant_row_fn "embq_dequant_row_fn")(const uint8_t *, embq_ssize_t, int,
                                                           float, float *) noexcept nogil
    ctypedef int64_t (*sumsq_row_fn "embq_sumsq_row_fn")(const uint8_t *, embq_ssize_t,
                                                          int) noexcept nogil
    ctypedef struct embq_quant_kernels:
        quant_row_fn quant
        dequant_row_fn dequant
        sumsq_row_fn sumsq

    float embq_dequant_value(uint8_t code, int zp, float scale)
    embq_quant_kernels embq_quant_get(int v)
    void embq_f64_row_to_f32(const double *src, embq_ssize_t d, float *dst)
    void embq_gather_rows(const char *base, embq_ssize_t s0, embq_ssize_t s1, int is_f64,
                          embq_ssize_t r0, embq_ssize_t nr, embq_ssize_t d, float *dst)

# The row kernels of the selected quantize variant: dequantize for the store's row reads,
# quantize for the search's queries.
cdef dequant_row_fn selected_dequant_row() noexcept nogil
cdef quant_row_fn selected_quant_row() noexcept nogil
