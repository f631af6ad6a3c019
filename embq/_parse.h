/* C helpers for the embedding-file parsers in _kernels_parse.pyx.
 *
 * The decimal parser in the .pyx handles the common case (up to 19 significant digits, small
 * decimal exponent) exactly with one double multiplication or division; everything else goes
 * through strtod.  strtod honours LC_NUMERIC, so on glibc we call strtod_l with a "C" locale
 * object created once: a user's setlocale() must not change how "0.5" is read. */
#ifndef EMBQ_PARSE_H
#define EMBQ_PARSE_H

#include <stdlib.h>
#include <string.h>

#if defined(__GLIBC__)
#include <locale.h>
#define EMBQ_HAVE_STRTOD_L 1
static locale_t embq_c_locale = (locale_t)0;
#else
#define EMBQ_HAVE_STRTOD_L 0
#endif

/* Exact powers of ten representable as doubles (10^22 is the largest). */
static const double embq_pow10[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* Called once at import, with the GIL held (newlocale is not free of races). */
static inline int embq_parse_init(void) {
#if EMBQ_HAVE_STRTOD_L
    if (embq_c_locale == (locale_t)0) {
        embq_c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    }
    return embq_c_locale != (locale_t)0;
#else
    return 1;
#endif
}

static inline int embq_parse_uses_strtod_l(void) {
#if EMBQ_HAVE_STRTOD_L
    return embq_c_locale != (locale_t)0;
#else
    return 0;
#endif
}

/* Correctly rounded decimal -> double for a syntactically valid token of `len` bytes (no
 * separators inside).  The token is copied so that strtod sees a NUL-terminated string. */
static inline double embq_strtod_token(const unsigned char *s, size_t len) {
    char stack_buf[128];
    char *buf = stack_buf;
    double d;
    if (len >= sizeof(stack_buf)) {
        buf = (char *)malloc(len + 1);
        if (buf == NULL) {
            return 0.0 / 0.0; /* reported as a bad value by the caller */
        }
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
#if EMBQ_HAVE_STRTOD_L
    if (embq_c_locale != (locale_t)0) {
        d = strtod_l(buf, NULL, embq_c_locale);
    } else {
        d = strtod(buf, NULL);
    }
#else
    d = strtod(buf, NULL);
#endif
    if (buf != stack_buf) {
        free(buf);
    }
    return d;
}

#endif /* EMBQ_PARSE_H */
