/* data.h - the DATA stream decoder (RFC 5321 4.1.4, 4.5.2): finds the end
 * of data, removes dot-stuffing, counts the size, and flags bare LF and bare
 * CR (SMTP smuggling defence, DESIGN §8). Pure state machine, no I/O.
 *
 * Only "<CRLF>.<CRLF>" ends the data. A bare LF or CR is never a line end:
 * "\n.\n", "\n.\r\n" and "\r.\r" are ordinary (flagged) content, so a message
 * can never be split in two by a peer that reads line ends differently. */
#ifndef BW_SMTPD_DATA_H
#define BW_SMTPD_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum data_state { DS_SOL, DS_MID, DS_CR, DS_DOT, DS_DOTCR, DS_END, DS_MAX };

struct data_decoder {
    enum data_state state;
    uint64_t size;      /* content bytes after unstuffing */
    bool bare_lf;
    bool bare_cr;
    bool has_8bit;
};

/* data_init - ready for the first byte after "354". */
void data_init(struct data_decoder *d);

/* data_decode - consume in[0..len) until the end of data. Content bytes go to
 * out (room for len + 2 bytes needed), their count to *outlen. Returns how
 * many input bytes were consumed: fewer than len only when the end was
 * reached (d->state == DS_END), leaving the bytes after ".\r\n" unread. */
size_t data_decode(struct data_decoder *d, const char *in, size_t len, char *out, size_t *outlen);

#endif
