/* str.h - bounded string helpers and overflow-checked size arithmetic.
 *
 * Owns nothing: every function works on caller-provided memory. No function
 * here writes past the size it is given, and every truncation is reported,
 * so the rest of the tree never needs strcpy, strcat or sprintf. */
#ifndef BW_STR_H
#define BW_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* str_copy - copy src into dst[dstsize], always NUL-terminated.
 * Returns false (dst holds the truncated prefix) when src does not fit. */
bool str_copy(char *dst, size_t dstsize, const char *src);

/* str_ncopy - like str_copy for the first n bytes of src (no NUL needed). */
bool str_ncopy(char *dst, size_t dstsize, const char *src, size_t n);

/* str_fmt - snprintf that reports truncation: false when the result was cut
 * or on an encoding error. dst is always NUL-terminated when dstsize > 0. */
bool str_fmt(char *dst, size_t dstsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* str_append - append formatted text at *len inside dst[dstsize], advancing
 * *len. Returns false on truncation; dst stays NUL-terminated. */
bool str_append(char *dst, size_t dstsize, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* str_dup - strdup that returns NULL on allocation failure (errno ENOMEM). */
char *str_dup(const char *s);

/* str_ndup - duplicate the first n bytes of s as a string, or NULL. */
char *str_ndup(const char *s, size_t n);

/* str_lower - lowercase ASCII letters in place; returns s. */
char *str_lower(char *s);

/* str_case_eq - ASCII case-insensitive equality. */
bool str_case_eq(const char *a, const char *b);

/* str_trim - strip leading and trailing ASCII white space in place;
 * returns the start of the trimmed string (inside s). */
char *str_trim(char *s);

/* str_has_ctl - true when s[0..n) holds an ASCII control byte or DEL. */
bool str_has_ctl(const char *s, size_t n);

/* size_add, size_mul - *out = a op b; false (and *out untouched) on overflow. */
bool size_add(size_t a, size_t b, size_t *out);
bool size_mul(size_t a, size_t b, size_t *out);

/* str_to_i64 - parse a whole decimal number in [min, max]; false on any
 * junk, sign error or range error. */
bool str_to_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* str_split_next - tokenizer for lists separated by commas and/or white
 * space: returns the next token of *cursor (NUL-terminating it in place)
 * and advances *cursor, or NULL when none is left. */
char *str_split_next(char **cursor);

#endif
