/* debug.c - per-domain SMTP conversation logs. */
#include "debug.h"
#include "addr.h"
#include "log.h"
#include "paths.h"
#include "str.h"

#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define DEBUG_DOMAINS_MAX 256
#define DEBUG_CHECK_S 1

static char list_path[PATHS_MAX];
static char qdir_copy[PATHS_MAX];
static char domains[DEBUG_DOMAINS_MAX][ADDR_DOMAIN_MAX + 1];
static size_t n_domains;
static struct timespec list_mtime;
static struct event *check_ev;

struct debug_log {
    int fd;
    bool in_body;
    bool at_line_start;
    size_t body_bytes;
};

static void reload_list(void)
{
    struct stat st;
    if (stat(list_path, &st) != 0) {
        n_domains = 0;
        list_mtime.tv_sec = list_mtime.tv_nsec = 0;
        return;
    }
    if (st.st_mtim.tv_sec == list_mtime.tv_sec && st.st_mtim.tv_nsec == list_mtime.tv_nsec)
        return;
    list_mtime = st.st_mtim;
    FILE *fp = fopen(list_path, "r");
    n_domains = 0;
    if (fp == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof line, fp) && n_domains < DEBUG_DOMAINS_MAX) {
        char *d = str_trim(line);
        if (*d && addr_domain_valid(d, strlen(d), false) && d[0] != '[') {
            str_copy(domains[n_domains], sizeof domains[0], d);
            str_lower(domains[n_domains++]);
        }
    }
    fclose(fp);
    log_info("domain debug: %zu domain(s) now logged", n_domains);
}

static void on_check(evutil_socket_t fd, short what, void *arg) { reload_list(); }

bool debug_init(struct event_base *base, const char *qdir)
{
    str_copy(qdir_copy, sizeof qdir_copy, qdir);
    str_fmt(list_path, sizeof list_path, "%s/log/debug/domains", qdir);
    reload_list();
    check_ev = event_new(base, -1, EV_PERSIST, on_check, NULL);
    struct timeval tv = {DEBUG_CHECK_S, 0};
    return check_ev && event_add(check_ev, &tv) == 0;
}

void debug_shutdown(void)
{
    if (check_ev)
        event_free(check_ev);
    check_ev = NULL;
}

struct debug_log *debug_open(const char *domain)
{
    bool on = false;
    for (size_t i = 0; i < n_domains && !on; i++)
        on = str_case_eq(domains[i], domain);
    if (!on)
        return NULL;
    char path[PATHS_MAX], lower[ADDR_DOMAIN_MAX + 1];
    str_copy(lower, sizeof lower, domain);
    str_lower(lower);
    if (!paths_debug_log(qdir_copy, lower, path, sizeof path))
        return NULL;
    struct debug_log *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (d->fd < 0) {
        log_warn_errno("domain debug: cannot open %s", path);
        free(d);
        return NULL;
    }
    return d;
}

void debug_line(struct debug_log *d, const char *id, char dir, const char *text, size_t len)
{
    if (d == NULL)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char stamp[32], line[4200];
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    if (len > 4000)
        len = 4000;
    size_t n = 0;
    str_append(line, sizeof line, &n, "%s.%03ld %s %c ", stamp, (long)(tv.tv_usec / 1000), id ? id : "-", dir);
    for (size_t i = 0; i < len && n < sizeof line - 2; i++)
        line[n++] = (unsigned char)text[i] < 0x20 && text[i] != '\t' ? '?' : text[i];
    line[n++] = '\n';
    ssize_t w = write(d->fd, line, n);
    (void)w;
}

void debug_content(struct debug_log *d, const char *id, const char *data, size_t len)
{
    if (d == NULL)
        return;
    if (len == 0) { /* end of content */
        char note[128];
        int n = snprintf(note, sizeof note, "(message body elided: %zu bytes)", d->body_bytes);
        if (n > 0)
            debug_line(d, id, '>', note, (size_t)n);
        d->in_body = false;
        d->body_bytes = 0;
        d->at_line_start = true;
        return;
    }
    size_t i = 0;
    while (i < len && !d->in_body) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - data) + 1 : len;
        size_t l = end - i;
        if ((l == 2 && data[i] == '\r') || (l == 1 && data[i] == '\n')) { /* the empty line: body starts */
            debug_line(d, id, '>', "", 0);
            d->in_body = true;
            i = end;
            break;
        }
        debug_line(d, id, '>', data + i, l);
        i = end;
    }
    d->body_bytes += len - i;
}

void debug_close(struct debug_log *d)
{
    if (d == NULL)
        return;
    close(d->fd);
    free(d);
}
