/* smtp.h - the outbound SMTP client session of one job (RFC 5321): tries the
 * job's targets in turn, speaks EHLO (HELO fallback), SIZE, 8BITMIME,
 * PIPELINING, sends the message dot-stuffed, and records a result per
 * recipient. Owns its bufferevent and timers. */
#ifndef BW_DELIVERY_SMTP_H
#define BW_DELIVERY_SMTP_H

struct job;
struct smtp_session;

/* smtp_start - connect to the job's first target and run the transaction;
 * when it is over, job_finish() is called (from the event loop). */
void smtp_start(struct job *j);

/* smtp_reuse - give the job an idle connection to the same (gateway,
 * domain), probed with RSET, instead of routing anew; false if none. */
#include <stdbool.h>
bool smtp_reuse(struct job *j);

/* smtp_close_idle - QUIT every idle connection (shutdown). */
void smtp_close_idle(void);

/* smtp_free - close at once (job_abort). NULL is fine. */
void smtp_free(struct smtp_session *s);

#endif
