/* log.h - the one logging facility of every Breakwater program.
 *
 * Owns the log destination (syslog, a log file, or standard error) and the
 * line format. Lines look like Postfix's so that pflogsumm and mailgraph read
 * them: "breakwater/smtpd[PID]: ID: key=value, ..." (DESIGN.md section 6).
 * With a log file each line is prefixed by a syslog-style time stamp and host
 * name and written with one write(2) on an O_APPEND descriptor, so lines from
 * several processes never interleave.
 *
 * Severities: info, warn, error return; log_fatal exits 1 (the master restarts
 * daemons); log_panic aborts (broken invariant, core dump). The _errno
 * variants append ": strerror(errno)". */
#ifndef BW_LOG_H
#define BW_LOG_H

#include <stdbool.h>

enum log_dest { LOG_DEST_STDERR, LOG_DEST_SYSLOG, LOG_DEST_FILE };

/* log_open - set the program name ("smtpd"), syslog_name ("breakwater") and
 * destination: path NULL or "" means syslog, "-" means standard error.
 * May be called again (reload): the old file is closed. Returns false with
 * errno when the file cannot be opened (logging then goes to stderr). */
bool log_open(const char *program, const char *syslog_name, const char *path);

/* log_set_verbose - enable log_debug lines. */
void log_set_verbose(bool on);
bool log_verbose(void);

/* log_fd - the open log file descriptor, or -1 (for fd hand-over). */
int log_fd(void);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void log_fatal_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* log_msg - a line about one message: "ID: " then the formatted fields.
 * The one helper for queue-id lines, so their shape cannot drift. */
void log_msg(const char *queue_id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
