/* log.c - logging to syslog, a file or standard error, Postfix line shape. */
#include "log.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096 /* longer lines are cut, never overflowed */

static char log_tag[128] = "breakwater";
static char log_host[256] = "localhost";
static enum log_dest log_dest = LOG_DEST_STDERR;
static int log_file_fd = -1;
static bool log_debug_on;
static char log_path[4096];  /* the open log file, kept across reloads */

/* log_open - choose program name and destination */
bool log_open(const char *program, const char *syslog_name, const char *path)
{
    str_fmt(log_tag, sizeof log_tag, "%s/%s", syslog_name && *syslog_name ? syslog_name : "breakwater",
            program);
    if (gethostname(log_host, sizeof log_host) != 0)
        str_copy(log_host, sizeof log_host, "localhost");
    log_host[sizeof log_host - 1] = '\0';
    char *dot = strchr(log_host, '.');
    if (dot)
        *dot = '\0';
    /* Same file as before (a reload): keep the descriptor, which a daemon
     * that dropped privileges could not open again. */
    if (log_file_fd >= 0 && path && strcmp(path, log_path) == 0)
        return true;
    if (log_file_fd >= 0) {
        close(log_file_fd);
        log_file_fd = -1;
    }
    if (log_dest == LOG_DEST_SYSLOG)
        closelog();
    if (path == NULL || *path == '\0') {
        log_dest = LOG_DEST_SYSLOG;
        openlog(log_tag, LOG_PID | LOG_NDELAY, LOG_MAIL);
        return true;
    }
    if (strcmp(path, "-") == 0) {
        log_dest = LOG_DEST_STDERR;
        return true;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0) {
        log_dest = LOG_DEST_STDERR;
        return false;
    }
    log_file_fd = fd;
    log_dest = LOG_DEST_FILE;
    str_copy(log_path, sizeof log_path, path);
    return true;
}

void log_set_verbose(bool on) { log_debug_on = on; }
bool log_verbose(void) { return log_debug_on; }
int log_fd(void) { return log_file_fd; }

/* log_emit - format and write one line */
static void log_emit(int prio, const char *level, bool with_errno, int saved_errno,
                     const char *prefix, const char *fmt, va_list ap)
{
    char text[LOG_LINE_MAX];
    size_t len = 0;
    text[0] = '\0';
    if (level)
        str_append(text, sizeof text, &len, "%s: ", level);
    if (prefix)
        str_append(text, sizeof text, &len, "%s: ", prefix);
    if (len < sizeof text) {
        int n = vsnprintf(text + len, sizeof text - len, fmt, ap);
        if (n > 0)
            len = (size_t)n >= sizeof text - len ? sizeof text - 1 : len + (size_t)n;
    }
    if (with_errno)
        str_append(text, sizeof text, &len, ": %s", strerror(saved_errno));
    /* Never let a log line carry a line break from untrusted input. */
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n' || text[i] == '\r')
            text[i] = ' ';

    if (log_dest == LOG_DEST_SYSLOG) {
        syslog(prio, "%s", text);
        return;
    }
    char line[LOG_LINE_MAX + 512];
    size_t l = 0;
    if (log_dest == LOG_DEST_FILE) {
        time_t now = time(NULL);
        struct tm tm;
        char stamp[32];
        localtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &tm);
        str_append(line, sizeof line, &l, "%s %s ", stamp, log_host);
    }
    str_append(line, sizeof line, &l, "%s[%ld]: %s", log_tag, (long)getpid(), text);
    if (l >= sizeof line - 1)
        l = sizeof line - 2;
    line[l++] = '\n';
    int fd = log_dest == LOG_DEST_FILE ? log_file_fd : STDERR_FILENO;
    ssize_t w = write(fd, line, l);
    (void)w;
}

#define LOG_BODY(prio, level, with_errno, prefix)                                                     \
    do {                                                                                             \
        int saved_errno_ = errno;                                                                    \
        va_list ap_;                                                                                 \
        va_start(ap_, fmt);                                                                          \
        log_emit(prio, level, with_errno, saved_errno_, prefix, fmt, ap_);                           \
        va_end(ap_);                                                                                 \
        errno = saved_errno_;                                                                        \
    } while (0)

void log_debug(const char *fmt, ...)
{
    if (log_debug_on)
        LOG_BODY(LOG_DEBUG, NULL, false, NULL);
}
void log_info(const char *fmt, ...) { LOG_BODY(LOG_INFO, NULL, false, NULL); }
void log_warn(const char *fmt, ...) { LOG_BODY(LOG_WARNING, "warning", false, NULL); }
void log_warn_errno(const char *fmt, ...) { LOG_BODY(LOG_WARNING, "warning", true, NULL); }
void log_error(const char *fmt, ...) { LOG_BODY(LOG_ERR, "error", false, NULL); }
void log_error_errno(const char *fmt, ...) { LOG_BODY(LOG_ERR, "error", true, NULL); }
void log_msg(const char *queue_id, const char *fmt, ...) { LOG_BODY(LOG_INFO, NULL, false, queue_id); }

_Noreturn void log_fatal(const char *fmt, ...)
{
    LOG_BODY(LOG_CRIT, "fatal", false, NULL);
    exit(1);
}
_Noreturn void log_fatal_errno(const char *fmt, ...)
{
    LOG_BODY(LOG_CRIT, "fatal", true, NULL);
    exit(1);
}
_Noreturn void log_panic(const char *fmt, ...)
{
    LOG_BODY(LOG_CRIT, "panic", false, NULL);
    abort();
}
