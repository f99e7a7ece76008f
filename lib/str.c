/* str.c - bounded string helpers and overflow-checked size arithmetic. */
#include "str.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* str_copy - bounded copy, false on truncation */
bool str_copy(char *dst, size_t dstsize, const char *src)
{
    return str_ncopy(dst, dstsize, src, strlen(src));
}

/* str_ncopy - bounded copy of n bytes */
bool str_ncopy(char *dst, size_t dstsize, const char *src, size_t n)
{
    if (dstsize == 0)
        return false;
    bool fits = n < dstsize;
    size_t take = fits ? n : dstsize - 1;
    memcpy(dst, src, take);
    dst[take] = '\0';
    return fits;
}

static bool vfmt_at(char *dst, size_t dstsize, size_t *len, const char *fmt, va_list ap)
{
    if (*len >= dstsize)
        return false;
    int n = vsnprintf(dst + *len, dstsize - *len, fmt, ap);
    if (n < 0)
        return false;
    if ((size_t)n >= dstsize - *len) {
        *len = dstsize - 1;
        return false;
    }
    *len += (size_t)n;
    return true;
}

/* str_fmt - snprintf reporting truncation */
bool str_fmt(char *dst, size_t dstsize, const char *fmt, ...)
{
    size_t len = 0;
    va_list ap;
    va_start(ap, fmt);
    bool ok = vfmt_at(dst, dstsize, &len, fmt, ap);
    va_end(ap);
    return ok;
}

/* str_append - formatted append at *len */
bool str_append(char *dst, size_t dstsize, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool ok = vfmt_at(dst, dstsize, len, fmt, ap);
    va_end(ap);
    return ok;
}

/* str_dup - strdup reporting ENOMEM */
char *str_dup(const char *s)
{
    return str_ndup(s, strlen(s));
}

/* str_ndup - duplicate a prefix */
char *str_ndup(const char *s, size_t n)
{
    size_t sz;
    if (!size_add(n, 1, &sz)) {
        errno = ENOMEM;
        return NULL;
    }
    char *p = malloc(sz);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* str_lower - ASCII lowercase in place */
char *str_lower(char *s)
{
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return s;
}

/* str_case_eq - ASCII case-insensitive compare */
bool str_case_eq(const char *a, const char *b)
{
    for (;; a++, b++) {
        int ca = tolower((unsigned char)*a), cb = tolower((unsigned char)*b);
        if (ca != cb)
            return false;
        if (ca == 0)
            return true;
    }
}

/* str_trim - strip white space */
char *str_trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* str_has_ctl - detect control bytes */
bool str_has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return true;
    }
    return false;
}

/* size_add - checked addition */
bool size_add(size_t a, size_t b, size_t *out)
{
    if (a > SIZE_MAX - b)
        return false;
    *out = a + b;
    return true;
}

/* size_mul - checked multiplication */
bool size_mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

/* str_to_i64 - strict decimal parse with range */
bool str_to_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return false;
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = (int64_t)v;
    return true;
}

/* str_split_next - comma/white-space list tokenizer */
char *str_split_next(char **cursor)
{
    char *p = *cursor;
    while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '\0') {
        *cursor = p;
        return NULL;
    }
    char *start = p;
    while (*p && *p != ',' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
        p++;
    if (*p)
        *p++ = '\0';
    *cursor = p;
    return start;
}
