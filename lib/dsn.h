/* dsn.h - delivery status notifications (bounces): RFC 3464
 * multipart/report messages built from a queued message and the recipients
 * that failed, for qmgr to queue with the null sender.
 *
 * Owns nothing: builds text into the caller's buffer. */
#ifndef BW_DSN_H
#define BW_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "spool.h"

#define DSN_HEADERS_MAX (64 * 1024)  /* original headers copied into the report at most */

enum dsn_action { DSN_FAILED, DSN_DELAYED };

struct dsn_rcpt {
    const char *address;      /* final recipient */
    enum dsn_action action;
    const char *status;       /* enhanced status code, "5.1.1" */
    const char *remote_mta;   /* host name or address that answered, or NULL */
    const char *diagnostic;   /* the remote reply ("550 5.1.1 no such user") or our reason */
    int64_t last_attempt;     /* unix time, 0 if none */
};

struct dsn_info {
    const char *reporting_mta;   /* our myhostname */
    const char *queue_id;        /* of the original message */
    int64_t arrival;             /* unix time of the original */
    const char *original_sender; /* envelope sender of the original (the bounce goes there) */
    const char *boundary_seed;   /* e.g. the new message's queue id: keeps the boundary unique */
    int64_t now;                 /* unix time for the Date: header */
};

/* dsn_build - append to out a complete RFC 5322 message: headers (From:
 * MAILER-DAEMON@reporting_mta, To: the original sender, Subject:, Date:,
 * Message-ID:, Auto-Submitted: auto-replied, MIME headers) and a
 * multipart/report; report-type=delivery-status with three parts: a human
 * readable explanation listing every recipient with its diagnostic, the
 * message/delivery-status part (per-message fields, then one block per
 * recipient: Final-Recipient: rfc822; addr, Action:, Status:, Remote-MTA: dns;
 * host, Diagnostic-Code: smtp; reply, Last-Attempt-Date:), and the original
 * message's headers as text/rfc822-headers (at most DSN_HEADERS_MAX bytes).
 * original_headers points at the original content's header section (up to
 * the first empty line or the end); lines end in CRLF everywhere.
 * Returns false when out's limit was reached or on ENOMEM. */
bool dsn_build(const struct dsn_info *info, const struct dsn_rcpt *rcpts, size_t n_rcpts,
               const char *original_headers, size_t headers_len, struct buf *out);

#endif
