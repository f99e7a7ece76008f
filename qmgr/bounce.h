/* bounce.h - queue a delivery status notification (RFC 3464, lib/dsn.h)
 * for recipients that failed, as a new message from the null sender to the
 * original sender. Owns nothing. */
#ifndef BW_QMGR_BOUNCE_H
#define BW_QMGR_BOUNCE_H

#include <stddef.h>
#include <stdint.h>

#include "spool.h"

#define BOUNCE_SLOT 255 /* queue-id producer slot of messages qmgr makes */

struct bounce_rcpt {
    const char *address;
    const char *status;     /* enhanced status code */
    const char *diagnostic; /* remote reply or reason */
};

/* bounce_send - build the DSN from the original's headers and commit it to
 * the spool synchronously; its id goes into newid. 0, or -1 with errno. */
int bounce_send(const char *qdir, const char *hostname, const char *vg, const char *orig_id, const char *sender,
                int64_t arrival_us, const struct bounce_rcpt *rcpts, size_t n, char newid[SPOOL_ID_LEN + 1]);

#endif
