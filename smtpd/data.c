/* data.c - DATA stream decoder: end detection, dot-unstuffing, bare CR/LF. */
#include "data.h"

#include <stdint.h>
#include <string.h>

void data_init(struct data_decoder *d)
{
    memset(d, 0, sizeof *d);
    d->state = DS_SOL;
}

/* any_8bit - a byte of p[0..n) has its high bit set */
static bool any_8bit(const char *p, size_t n)
{
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        uint64_t w;
        memcpy(&w, p + k, 8);
        if (w & UINT64_C(0x8080808080808080))
            return true;
    }
    for (; k < n; k++)
        if ((unsigned char)p[k] >= 0x80)
            return true;
    return false;
}

/* data_decode - the state machine; see data.h */
size_t data_decode(struct data_decoder *d, const char *in, size_t len, char *out, size_t *outlen)
{
    size_t i = 0, o = 0;
    while (i < len && d->state != DS_END) {
        unsigned char c = (unsigned char)in[i];
        switch (d->state) {
        case DS_MID:
        case DS_SOL:
            if (d->state == DS_SOL && c == '.') {
                d->state = DS_DOT;
                i++;
                continue;
            }
            if (c == '\r') {
                d->state = DS_CR;
            } else if (c == '\n') {
                d->bare_lf = true; /* content, not a line end */
                d->state = DS_MID;
                out[o++] = (char)c;
            } else {
                /* Fast path: copy the run up to the next CR or LF (found
                 * with memchr, the 8-bit test a word at a time). */
                size_t j = len;
                const char *cr = memchr(in + i, '\r', len - i);
                if (cr)
                    j = (size_t)(cr - in);
                const char *lf = memchr(in + i, '\n', j - i);
                if (lf)
                    j = (size_t)(lf - in);
                if (!d->has_8bit)
                    d->has_8bit = any_8bit(in + i, j - i);
                memcpy(out + o, in + i, j - i);
                o += j - i;
                i = j;
                d->state = DS_MID;
                continue;
            }
            i++;
            break;
        case DS_CR:
            if (c == '\n') {
                out[o++] = '\r';
                out[o++] = '\n';
                d->state = DS_SOL;
                i++;
            } else {
                d->bare_cr = true;
                out[o++] = '\r';
                d->state = DS_MID; /* c is looked at again */
            }
            break;
        case DS_DOT:
            if (c == '\r') {
                d->state = DS_DOTCR;
                i++;
            } else {
                d->state = DS_MID; /* the stuffed dot is dropped; c is content */
                if (c == '\n') {
                    d->bare_lf = true;
                    out[o++] = (char)c;
                    i++;
                }
            }
            break;
        case DS_DOTCR:
            if (c == '\n') {
                d->state = DS_END;
                i++;
            } else {
                d->bare_cr = true;
                out[o++] = '\r';
                d->state = DS_MID;
            }
            break;
        case DS_END:
        case DS_MAX:
            break;
        }
    }
    d->size += o;
    *outlen = o;
    return i;
}
