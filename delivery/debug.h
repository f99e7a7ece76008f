/* debug.h - per-domain debug logging of outbound SMTP conversations
 * (DESIGN §6): `mailctl domain debug D on` adds D to
 * $queue_directory/log/debug/domains; delivery re-reads that list when it
 * changes and writes every session to D, both directions with time stamps
 * and the message body elided after its headers, to log/debug/D.log.
 *
 * Owns the list of debugged domains and, per session, one open log file. */
#ifndef BW_DELIVERY_DEBUG_H
#define BW_DELIVERY_DEBUG_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct debug_log;

/* debug_init - watch the list under qdir (checked once a second). */
bool debug_init(struct event_base *base, const char *qdir);
void debug_shutdown(void);

/* debug_open - a log for a session to domain, or NULL when the domain is
 * not being debugged (or the file cannot be opened). */
struct debug_log *debug_open(const char *domain);

/* debug_line - one line; dir is '>' (we sent) or '<' (we received). */
void debug_line(struct debug_log *d, const char *id, char dir, const char *text, size_t len);

/* debug_content - message content as sent: headers are logged, then one line
 * saying how much body was elided. Call with every chunk, then with len 0. */
void debug_content(struct debug_log *d, const char *id, const char *data, size_t len);

void debug_close(struct debug_log *d);

#endif
