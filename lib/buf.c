/* buf.c - growable, binary-safe byte buffer with a hard maximum. */
#include "buf.h"
#include "str.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* buf_init - empty buffer with a maximum */
void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

/* buf_reserve - make room for n more bytes plus the NUL */
static bool buf_reserve(struct buf *b, size_t n)
{
    size_t need;
    if (!size_add(b->len, n, &need) || need > b->max) {
        errno = EMSGSIZE;
        return false;
    }
    if (!size_add(need, 1, &need))
        return errno = EMSGSIZE, false;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (!size_mul(cap, 2, &cap)) {
            cap = need;
            break;
        }
    }
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return errno = ENOMEM, false;
    b->data = p;
    b->cap = cap;
    return true;
}

/* buf_append - append bytes */
bool buf_append(struct buf *b, const void *p, size_t n)
{
    if (!buf_reserve(b, n))
        return false;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

/* buf_puts - append a string */
bool buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

/* buf_printf - append formatted text */
bool buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    if (!buf_reserve(b, (size_t)n))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

/* buf_json_str - JSON string literal */
bool buf_json_str(struct buf *b, const char *s)
{
    if (!buf_puts(b, "\""))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool ok;
        if (*p == '"' || *p == '\\')
            ok = buf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            ok = buf_printf(b, "\\u%04x", *p);
        else
            ok = buf_append(b, p, 1);
        if (!ok)
            return false;
    }
    return buf_puts(b, "\"");
}

/* buf_reset - empty the buffer */
void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* buf_free - release storage */
void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b, b->max);
}
