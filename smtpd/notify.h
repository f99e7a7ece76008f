/* notify.h - smtpd's new-mail notices to qmgr (QMGR_NEW_MAIL over
 * private/qmgr). Owns the connection, a bounded list of notices that could
 * not be sent yet (qmgr starting or restarting) and the timer that retries
 * them. Notices beyond the bound are dropped: qmgr's spool scan finds those
 * messages, later. */
#ifndef BW_SMTPD_NOTIFY_H
#define BW_SMTPD_NOTIFY_H

#include <stdbool.h>

struct smtpd;

#define NOTIFY_PENDING_MAX 4096
#define NOTIFY_RETRY_MS 200

/* notify_init, notify_free - the timer and list; false on ENOMEM. */
bool notify_init(struct smtpd *sd);
void notify_free(struct smtpd *sd);

/* smtpd_new_mail - tell qmgr about a committed message, now or soon. */
void smtpd_new_mail(struct smtpd *sd, const char *id);

#endif
