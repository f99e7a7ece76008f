/* buf.h - growable, binary-safe byte buffer with a hard maximum.
 *
 * A struct buf owns its heap storage. Appends that would grow it past the
 * maximum set at buf_init() fail cleanly (false, errno EMSGSIZE) and leave
 * the buffer as it was; allocation failure returns false with ENOMEM.
 * The data is always followed by a safety NUL that is not counted. */
#ifndef BW_BUF_H
#define BW_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
    char *data;   /* len bytes, then a NUL */
    size_t len;
    size_t cap;   /* allocated bytes, including the NUL */
    size_t max;   /* most bytes len may reach */
};

/* buf_init - empty buffer that may hold at most max bytes; no allocation. */
void buf_init(struct buf *b, size_t max);

/* buf_append - append n bytes; false on EMSGSIZE/ENOMEM (buffer unchanged). */
bool buf_append(struct buf *b, const void *p, size_t n);

/* buf_puts - append a C string. */
bool buf_puts(struct buf *b, const char *s);

/* buf_printf - append formatted text. */
bool buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* buf_json_str - append s as a JSON string literal (quotes, escapes). */
bool buf_json_str(struct buf *b, const char *s);

/* buf_reset - forget the contents, keep the storage. */
void buf_reset(struct buf *b);

/* buf_free - release the storage; the buffer is empty and reusable. */
void buf_free(struct buf *b);

#endif
