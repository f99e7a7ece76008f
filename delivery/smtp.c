/* smtp.c - outbound SMTP client session of one job: targets in turn, EHLO
 * with HELO fallback, SIZE, 8BITMIME, PIPELINING, dot-stuffed content, a
 * result for every recipient. */
#include "smtp.h"
#include "debug.h"
#include "delivery.h"
#include "job.h"
#include "log.h"
#include "server.h"
#include "str.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define REPLY_MAX (64 * 1024)      /* a longer (multi-line) reply is a protocol error */
#define LINE_MAX_LEN 4096
#define CHUNK (64 * 1024)          /* content read per pread */
#define OUT_LOW (64 * 1024)        /* refill the socket below this */
#define EXPECT_MAX (2 + 1000 + 1)  /* MAIL + RCPTs + DATA */

#define IDLE_S 5                   /* an idle connection waits this long for the next message */
#define IDLE_MAX 1000              /* idle connections kept per process */

enum smtp_state { ST_CONNECT, ST_GREETING, ST_EHLO, ST_HELO, ST_RSET, ST_TRANSACTION, ST_CONTENT, ST_DOT, ST_IDLE,
                  ST_MAX };

static const char *const state_names[ST_MAX] = {"connect", "greeting", "EHLO", "HELO", "RSET", "MAIL/RCPT/DATA",
                                                 "message content", "end of data", "idle"};

enum expect_kind { EX_MAIL, EX_RCPT, EX_DATA };

struct smtp_session {
    struct job *j;
    struct bufferevent *bev;
    enum smtp_state state;
    int target;                 /* index into j->targets */
    char reply[REPLY_MAX];
    size_t reply_len;
    bool pipelining, has_size, has_8bitmime;
    unsigned long long size_limit;
    struct {
        enum expect_kind kind;
        size_t rcpt;
    } expect[EXPECT_MAX];
    size_t n_expect, next_expect;
    bool mail_ok, mail_failed;
    size_t n_accepted;
    bool discard_dot;           /* 354 with no accepted recipient */
    off_t sent;                 /* content bytes read so far */
    bool at_line_start;
    char last_error[1024];
    bool *gone;                 /* a caller's flag, set when the session is freed */
    bool counted;               /* counted in delivery_conn_load for peer */
    struct sockaddr_storage peer;
    /* connection reuse */
    struct delivery *dl;
    char key[600];              /* "vg domain" this connection serves */
    char relay[INET_STR_MAX + 300];
    int messages;               /* transactions done on this connection */
    struct debug_log *dbg;      /* domain debug: this conversation's log, or NULL */
    char dbg_id[24];
    struct smtp_session *idle_next, *idle_prev;
};

/* reuse_key - what a cached connection serves: the gateway and the domain,
 * or the redirect target for redirected jobs (never mixed with the others) */
static void reuse_key(const struct job *j, char *out, size_t len)
{
    if (j->via)
        str_fmt(out, len, "%s @%s", j->vg, j->via);
    else
        str_fmt(out, len, "%s %s", j->vg, j->domain);
}

static struct smtp_session *idle_list;
static size_t n_idle;

static void idle_unlink(struct smtp_session *s)
{
    if (s->idle_prev)
        s->idle_prev->idle_next = s->idle_next;
    else if (idle_list == s)
        idle_list = s->idle_next;
    if (s->idle_next)
        s->idle_next->idle_prev = s->idle_prev;
    s->idle_next = s->idle_prev = NULL;
    n_idle--;
}

static void next_target(struct smtp_session *s, const char *why);

static void send_line(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_line(struct smtp_session *s, const char *fmt, ...)
{
    char line[LINE_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line - 2 ? (size_t)n : sizeof line - 3;
    debug_line(s->dbg, s->j ? s->j->msgid : NULL, '>', line, len);
    line[len++] = '\r';
    line[len++] = '\n';
    bufferevent_write(s->bev, line, len);
}

void smtp_free(struct smtp_session *s)
{
    if (s == NULL)
        return;
    if (s->gone)
        *s->gone = true;
    if (s->state == ST_IDLE)
        idle_unlink(s);
    if (s->counted)
        delivery_conn_change((struct sockaddr *)&s->peer, -1);
    debug_close(s->dbg);
    if (s->bev)
        bufferevent_free(s->bev);
    free(s);
}

/* finish - the job is over (results set or pending -> deferred) */
static void finish(struct smtp_session *s, const char *reason)
{
    struct job *j = s->j;
    j->session = NULL;
    char why[1100];
    str_copy(why, sizeof why, reason ? reason : s->last_error);
    smtp_free(s);
    job_finish(j, why[0] ? why : NULL);
}

/* A connection saying QUIT after its job's results went to qmgr: it owns
 * its bufferevent and holds the job's slot in qmgr (and its place in the
 * per-address load) until the receiver closes, says 221, or QUIT_WAIT_S
 * passes. RFC 5321 4.1.1.10: the client waits for the QUIT reply. */
#define QUIT_WAIT_S 5
struct quitting {
    struct delivery *dl;
    struct bufferevent *bev;
    uint64_t job;
    unsigned slot; /* delivery_slot_hold token */
    bool counted;
    struct sockaddr_storage peer;
};

static void quitting_free(struct quitting *qt)
{
    delivery_slot_release(qt->dl, qt->job, qt->slot);
    if (qt->counted)
        delivery_conn_change((struct sockaddr *)&qt->peer, -1);
    bufferevent_free(qt->bev);
    free(qt);
}

static void on_quit_event(struct bufferevent *bev, short what, void *arg) { quitting_free(arg); }

/* on_quit_read - any complete reply line to QUIT (221 or not) ends it */
static void on_quit_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    bool line = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_CRLF).pos >= 0;
    evbuffer_drain(in, evbuffer_get_length(in));
    if (line)
        quitting_free(arg);
}

/* quitting_start - the session's connection (QUIT written) goes on alone;
 * hold: it keeps job's slot in qmgr until it is gone. On no memory the
 * caller's smtp_free closes it at once. */
static void quitting_start(struct smtp_session *s, struct delivery *dl, uint64_t job, bool hold)
{
    struct quitting *qt = calloc(1, sizeof *qt);
    if (qt == NULL)
        return;
    qt->dl = dl;
    qt->bev = s->bev;
    qt->job = job;
    qt->counted = s->counted;
    memcpy(&qt->peer, &s->peer, sizeof qt->peer);
    s->bev = NULL;
    s->counted = false;
    if (hold)
        qt->slot = delivery_slot_hold(dl, job); /* before the job's results */
    struct timeval tv = {QUIT_WAIT_S, 0};
    bufferevent_set_timeouts(qt->bev, &tv, &tv);
    bufferevent_setwatermark(qt->bev, EV_READ, 0, 0);
    bufferevent_setwatermark(qt->bev, EV_WRITE, 0, 0);
    bufferevent_setcb(qt->bev, on_quit_read, NULL, on_quit_event, qt);
    bufferevent_enable(qt->bev, EV_READ);
}

/* quit_and_finish - the results are known: report them now, and let the
 * connection say QUIT and close on its own (bounded by a short timeout) */
static void quit_and_finish(struct smtp_session *s)
{
    struct job *j = s->j;
    if (s->messages + 1 < delivery_messages_per_connection(j->dl, j->domain) && n_idle < IDLE_MAX &&
        !j->dl->srv->stopping) {
        /* Keep the connection for the next message to this destination. */
        s->messages++;
        s->j = NULL;
        j->session = NULL;
        s->state = ST_IDLE;
        str_copy(s->relay, sizeof s->relay, j->relay);
        reuse_key(j, s->key, sizeof s->key);
        struct timeval tv = {IDLE_S, 0};
        bufferevent_set_timeouts(s->bev, &tv, NULL);
        bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
        s->idle_next = idle_list;
        s->idle_prev = NULL;
        if (idle_list)
            idle_list->idle_prev = s;
        idle_list = s;
        n_idle++;
        job_finish(j, NULL);
        return;
    }
    send_line(s, "QUIT");
    quitting_start(s, j->dl, j->id, true);
    j->session = NULL;
    smtp_free(s);
    job_finish(j, NULL);
}

/* relay_text - host[ip]:port of the current target into the job */
static void set_relay(struct smtp_session *s)
{
    struct target *t = &s->j->targets[s->target];
    char ep[INET_STR_MAX], ip[INET6_ADDRSTRLEN];
    inet_addr_str((struct sockaddr *)&t->ep.ss, ip, sizeof ip);
    str_fmt(ep, sizeof ep, "%d", inet_port((struct sockaddr *)&t->ep.ss));
    str_fmt(s->j->relay, sizeof s->j->relay, "%s[%s]:%s", t->host, ip, ep);
}

/* ---- content ---- */

/* stuff_chunk - in[0..n) dot-stuffed into out (room for 2n bytes); returns
 * the length. Lines are copied whole (memchr/memcpy), not byte by byte. */
static size_t stuff_chunk(struct smtp_session *s, const char *in, size_t n, char *out)
{
    size_t o = 0;
    const char *p = in, *end = in + n;
    while (p < end) {
        if (s->at_line_start && *p == '.')
            out[o++] = '.';
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl + 1 - p) : (size_t)(end - p);
        memcpy(out + o, p, len);
        o += len;
        p += len;
        s->at_line_start = nl != NULL;
    }
    return o;
}

/* needs_stuffing - a line of in[0..n) starts with a dot */
static bool needs_stuffing(const struct smtp_session *s, const char *in, size_t n)
{
    if (s->at_line_start && n > 0 && in[0] == '.')
        return true;
    /* memchr (vectorised) from line to line; memmem is slower for this */
    for (const char *p = in, *end = in + n; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        if (p + 1 < end && p[1] == '.')
            return true;
    return false;
}

/* pump_content - refill the output with dot-stuffed content: read straight
 * into the output buffer, and copy only a chunk that has a line to stuff */
static void pump_content(struct smtp_session *s)
{
    struct job *j = s->j;
    struct evbuffer *out = bufferevent_get_output(s->bev);
    static char buf[2 * CHUNK + 8];
    while (evbuffer_get_length(out) < OUT_LOW && (size_t)s->sent < j->content_len) {
        size_t want = j->content_len - (size_t)s->sent < CHUNK ? j->content_len - (size_t)s->sent : CHUNK;
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(out, (ev_ssize_t)want, &v, 1) != 1 || v.iov_len < want) {
            job_set_all(j, true, JR_DEFERRED, "4.3.0", "out of memory");
            finish(s, "out of memory");
            return;
        }
        char *in = v.iov_base;
        ssize_t n = pread(j->fd, in, want, j->content_off + s->sent);
        if (n <= 0) {
            job_set_all(j, true, JR_DEFERRED, "4.3.0", "queue file read error");
            finish(s, "queue file read error");
            return;
        }
        debug_content(s->dbg, j->msgid, in, (size_t)n);
        if (needs_stuffing(s, in, (size_t)n)) {
            size_t o = stuff_chunk(s, in, (size_t)n, buf);
            v.iov_len = 0; /* nothing of the reservation is used */
            evbuffer_commit_space(out, &v, 1);
            evbuffer_add(out, buf, o);
        } else {
            s->at_line_start = in[n - 1] == '\n';
            v.iov_len = (size_t)n;
            evbuffer_commit_space(out, &v, 1);
        }
        s->sent += n;
    }
    if ((size_t)s->sent >= j->content_len && s->state == ST_CONTENT) {
        if (!s->at_line_start)
            evbuffer_add(out, "\r\n", 2);
        evbuffer_add(out, ".\r\n", 3);
        debug_content(s->dbg, j->msgid, NULL, 0);
        debug_line(s->dbg, j->msgid, '>', ".", 1);
        s->state = ST_DOT;
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct smtp_session *s = arg;
    if (s->state == ST_CONTENT)
        pump_content(s);
}

/* ---- replies ---- */

static int reply_code(const struct smtp_session *s) { return atoi(s->reply); }

static void start_transaction(struct smtp_session *s)
{
    struct job *j = s->j;
    if (s->has_size && s->size_limit > 0 && j->content_len > s->size_limit) {
        char why[256];
        str_fmt(why, sizeof why, "message size %zu exceeds the receiver's limit of %llu bytes", j->content_len,
                s->size_limit);
        job_set_all(j, false, JR_BOUNCED, "5.3.4", why);
        j->site_reached = true;
        quit_and_finish(s);
        return;
    }
    s->state = ST_TRANSACTION;
    j->site_reached = true;
    s->n_expect = s->next_expect = 0;
    s->mail_ok = s->mail_failed = false;
    s->n_accepted = 0;
    char params[128] = "";
    size_t pl = 0;
    if (s->has_size)
        str_append(params, sizeof params, &pl, " SIZE=%zu", j->content_len);
    if (s->has_8bitmime && j->eightbit)
        str_append(params, sizeof params, &pl, " BODY=8BITMIME");
    send_line(s, "MAIL FROM:<%s>%s", j->sender, params);
    s->expect[s->n_expect++].kind = EX_MAIL;
    size_t first = 0;
    for (size_t i = first; i < j->n && s->n_expect < EXPECT_MAX - 1; i++) {
        j->r[i].accepted = false;
        if (j->r[i].result != JR_PENDING)
            continue;
        if (!s->pipelining && s->n_expect > 0 && i > first)
            break; /* one at a time: the rest follow as replies come in */
        if (s->pipelining) {
            send_line(s, "RCPT TO:<%s>", j->r[i].addr);
            s->expect[s->n_expect].kind = EX_RCPT;
            s->expect[s->n_expect++].rcpt = i;
        }
    }
    if (s->pipelining) {
        send_line(s, "DATA");
        s->expect[s->n_expect++].kind = EX_DATA;
    }
}

/* next_rcpt - without PIPELINING: send the next RCPT or DATA */
static void next_command(struct smtp_session *s, size_t after)
{
    struct job *j = s->j;
    for (size_t i = after; i < j->n; i++) {
        if (j->r[i].result != JR_PENDING)
            continue;
        send_line(s, "RCPT TO:<%s>", j->r[i].addr);
        s->expect[s->n_expect].kind = EX_RCPT;
        s->expect[s->n_expect++].rcpt = i;
        return;
    }
    if (s->n_accepted == 0) {
        quit_and_finish(s);
        return;
    }
    send_line(s, "DATA");
    s->expect[s->n_expect++].kind = EX_DATA;
}

static enum jrcpt_result result_of(int code) { return code >= 500 ? JR_BOUNCED : JR_DEFERRED; }

/* on_transaction_reply - one reply of MAIL, RCPT or DATA, in order */
static void on_transaction_reply(struct smtp_session *s)
{
    struct job *j = s->j;
    int code = reply_code(s);
    char dsn[16];
    dsn_from_reply(s->reply, dsn);
    if (s->next_expect >= s->n_expect) {
        finish(s, "unexpected reply from the receiver");
        return;
    }
    enum expect_kind kind = s->expect[s->next_expect].kind;
    size_t ri = s->expect[s->next_expect].rcpt;
    s->next_expect++;
    switch (kind) {
    case EX_MAIL:
        if (code / 100 == 2) {
            s->mail_ok = true;
        } else {
            s->mail_failed = true;
            job_set_all(j, false, result_of(code), dsn, s->reply);
        }
        if (!s->pipelining) {
            if (s->mail_failed)
                quit_and_finish(s);
            else
                next_command(s, 0);
        }
        break;
    case EX_RCPT:
        if (!s->mail_failed) {
            if (code / 100 == 2) {
                j->r[ri].accepted = true;
                s->n_accepted++;
            } else {
                job_set(j, ri, result_of(code), dsn, s->reply);
            }
        }
        if (!s->pipelining)
            next_command(s, ri + 1);
        break;
    case EX_DATA:
        if (code == 354) {
            if (s->n_accepted == 0 || s->mail_failed) { /* pipelined: nobody to deliver to */
                s->discard_dot = true;
                bufferevent_write(s->bev, ".\r\n", 3);
                s->state = ST_DOT;
                return;
            }
            s->state = ST_CONTENT;
            s->sent = 0;
            s->at_line_start = true;
            pump_content(s);
            return;
        }
        if (!s->mail_failed)
            job_set_all(j, true, result_of(code), dsn, s->reply);
        if (s->n_accepted == 0 || s->mail_failed || code / 100 != 2)
            quit_and_finish(s);
        break;
    }
}

/* on_reply - one complete (possibly multi-line) reply */
static void on_reply(struct smtp_session *s)
{
    struct job *j = s->j;
    int code = reply_code(s);
    char dsn[16];
    dsn_from_reply(s->reply, dsn);
    switch (s->state) {
    case ST_GREETING:
        if (code / 100 != 2) {
            next_target(s, s->reply);
            return;
        }
        send_line(s, "EHLO %s", j->dl->helo_name);
        s->state = ST_EHLO;
        return;
    case ST_EHLO:
        if (code / 100 == 2) {
            /* Keywords: every line after the first. */
            char *line = strchr(s->reply, '\n');
            while (line) {
                char *kw = line + 1;
                if (strlen(kw) > 4)
                    kw += 4;
                if (strncasecmp(kw, "PIPELINING", 10) == 0)
                    s->pipelining = true;
                else if (strncasecmp(kw, "8BITMIME", 8) == 0)
                    s->has_8bitmime = true;
                else if (strncasecmp(kw, "SIZE", 4) == 0) {
                    s->has_size = true;
                    s->size_limit = strtoull(kw + 4, NULL, 10);
                }
                line = strchr(kw, '\n');
            }
            start_transaction(s);
            return;
        }
        if (code / 100 == 5) {
            send_line(s, "HELO %s", j->dl->helo_name);
            s->state = ST_HELO;
            return;
        }
        next_target(s, s->reply);
        return;
    case ST_HELO:
        if (code / 100 != 2) {
            next_target(s, s->reply);
            return;
        }
        start_transaction(s);
        return;
    case ST_RSET:
        if (code / 100 != 2) { /* the cached connection is no good: a fresh one */
            struct job *jj = s->j;
            jj->session = NULL;
            s->j = NULL;
            smtp_free(s);
            job_route_fresh(jj);
            return;
        }
        start_transaction(s);
        return;
    case ST_TRANSACTION:
        on_transaction_reply(s);
        return;
    case ST_DOT:
        if (!s->discard_dot) {
            if (code / 100 == 2)
                job_set_all(j, true, JR_SENT, dsn, s->reply);
            else
                job_set_all(j, true, result_of(code), dsn, s->reply);
        }
        quit_and_finish(s);
        return;
    default:
        return;
    }
}

/* idle_close - an idle connection is done: QUIT (best effort) and free */
static void idle_close(struct smtp_session *s)
{
    debug_line(s->dbg, NULL, '>', "QUIT", 4);
    bufferevent_write(s->bev, "QUIT\r\n", 6);
    quitting_start(s, s->dl, 0, false);
    smtp_free(s);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct smtp_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (s->state == ST_IDLE) { /* e.g. "421 idle timeout" from the receiver */
        evbuffer_drain(in, evbuffer_get_length(in));
        idle_close(s);
        return;
    }
    for (;;) {
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
        if (line == NULL) {
            if (evbuffer_get_length(in) > LINE_MAX_LEN) {
                finish(s, "reply line too long from the receiver");
                return;
            }
            return;
        }
        debug_line(s->dbg, s->j ? s->j->msgid : NULL, '<', line, n);
        bool final = n < 4 || line[3] != '-';
        bool valid = n >= 3 && line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
                     line[2] >= '0' && line[2] <= '9';
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)line[i] < 0x20)
                line[i] = ' ';
        if (!valid || s->reply_len + n + 2 >= REPLY_MAX) {
            free(line);
            finish(s, "malformed reply from the receiver");
            return;
        }
        if (s->reply_len)
            s->reply[s->reply_len++] = '\n';
        memcpy(s->reply + s->reply_len, line, n);
        s->reply_len += n;
        s->reply[s->reply_len] = '\0';
        free(line);
        if (!final)
            continue;
        /* Keep the single-line form for logs: the last line carries the meaning. */
        str_copy(s->last_error, sizeof s->last_error, strrchr(s->reply, '\n') ? strrchr(s->reply, '\n') + 1 : s->reply);
        bool gone = false;
        s->gone = &gone; /* set by smtp_free: on_reply may end the session */
        on_reply(s);
        if (gone)
            return;
        s->gone = NULL;
        s->reply_len = 0;
        s->reply[0] = '\0';
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct smtp_session *s = arg;
    char why[1024];
    if (s->state == ST_IDLE) {
        if (what & BEV_EVENT_TIMEOUT)
            idle_close(s);
        else
            smtp_free(s);
        return;
    }
    if (what & BEV_EVENT_CONNECTED) {
        gettimeofday(&s->j->t_connected, NULL);
        struct timeval tv = {s->j->dl->timeout_s, 0};
        bufferevent_set_timeouts(bev, &tv, &tv);
        s->state = ST_GREETING;
        return;
    }
    if (what & BEV_EVENT_TIMEOUT)
        str_fmt(why, sizeof why, "conversation with %s timed out while waiting for %s", s->j->relay,
                state_names[s->state]);
    else if (s->state == ST_CONNECT)
        str_fmt(why, sizeof why, "connect to %s: %s", s->j->relay,
                evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    else
        str_fmt(why, sizeof why, "lost connection with %s while %s", s->j->relay, state_names[s->state]);
    if (s->state <= ST_HELO || (s->state == ST_TRANSACTION && !s->mail_ok && !s->mail_failed)) {
        next_target(s, why); /* nothing was said about the recipients yet */
        return;
    }
    job_set_all(s->j, s->state >= ST_CONTENT, JR_DEFERRED, "4.4.2", why);
    finish(s, why);
}

/* connect_target - open a connection to targets[s->target] */
static void connect_target(struct smtp_session *s)
{
    struct job *j = s->j;
    if (s->bev)
        bufferevent_free(s->bev);
    s->bev = NULL;
    if (s->counted) {
        delivery_conn_change((struct sockaddr *)&s->peer, -1);
        s->counted = false;
    }
    struct target *t = &j->targets[s->target];
    memcpy(&s->peer, &t->ep.ss, sizeof s->peer);
    delivery_conn_change((struct sockaddr *)&s->peer, +1);
    s->counted = true;
    set_relay(s);
    /* The gateway's own source address, of the target's family. */
    int family = t->ep.ss.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        char why[512];
        str_fmt(why, sizeof why, "socket for %s: %s", j->relay, strerror(errno));
        next_target(s, why);
        return;
    }
    /* The last piece of each message and the final "." are small writes:
     * without this Nagle holds them for the receiver's delayed ACK. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct delivery *dl = j->dl;
    if (dl->n_sources > 0) {
        int pick = -1;
        for (int k = 0; k < dl->n_sources && pick < 0; k++) {
            int idx = (int)((dl->next_source + (unsigned)k) % (unsigned)dl->n_sources);
            if (dl->sources[idx].ss.ss_family == family)
                pick = idx;
        }
        if (pick < 0 || bind(fd, (struct sockaddr *)&dl->sources[pick].ss, dl->sources[pick].len) != 0) {
            char why[512];
            str_fmt(why, sizeof why, "virtual gateway %s: %s for %s", dl->vg,
                    pick < 0 ? "no source address of this address family" : strerror(errno), j->relay);
            close(fd);
            next_target(s, why);
            return;
        }
        dl->next_source++;
    }
    s->bev = bufferevent_socket_new(j->dl->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (s->bev == NULL) {
        close(fd);
        finish(s, "delivery agent out of memory");
        return;
    }
    s->state = ST_CONNECT;
    s->pipelining = s->has_size = s->has_8bitmime = false;
    if (s->dbg == NULL)
        s->dbg = debug_open(j->domain);
    if (s->dbg) {
        char note[INET_STR_MAX + 340];
        int nn = snprintf(note, sizeof note, "connecting to %s (vg %s)", j->relay, j->vg);
        debug_line(s->dbg, j->msgid, '-', note, nn > 0 ? (size_t)nn : 0);
    }
    s->reply_len = 0;
    struct timeval tv = {j->dl->connect_timeout_s, 0};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    bufferevent_setwatermark(s->bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    j->site_tried = true;
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&t->ep.ss, (int)t->ep.len) != 0) {
        char why[512];
        str_fmt(why, sizeof why, "connect to %s: %s", j->relay, strerror(errno));
        next_target(s, why);
    }
}

/* next_target - this host failed before any recipient result: try the next */
static void next_target(struct smtp_session *s, const char *why)
{
    str_copy(s->last_error, sizeof s->last_error, why);
    if (s->target < s->j->n_targets)
        delivery_host_failed(s->j->dl, (struct sockaddr *)&s->j->targets[s->target].ep.ss);
    log_info("%s: %s", s->j->msgid, why);
    if (++s->target >= s->j->n_targets) {
        char dsn[16];
        dsn_from_reply(why, dsn);
        /* A 5xx greeting or EHLO from every host is still only a deferral:
         * the hosts may accept later; connection failures are 4.4.1. */
        job_set_all(s->j, false, JR_DEFERRED, why[0] == '4' || why[0] == '5' ? "4.4.2" : "4.4.1", why);
        finish(s, why);
        return;
    }
    connect_target(s);
}

bool smtp_reuse(struct job *j)
{
    char key[600];
    reuse_key(j, key, sizeof key);
    for (struct smtp_session *s = idle_list; s; s = s->idle_next) {
        if (strcmp(s->key, key) != 0)
            continue;
        idle_unlink(s);
        s->j = j;
        j->session = s;
        /* Domain debug may have been switched since this connection opened. */
        struct debug_log *now_dbg = debug_open(j->domain);
        if ((now_dbg == NULL) != (s->dbg == NULL)) {
            debug_close(s->dbg);
            s->dbg = now_dbg;
        } else {
            debug_close(now_dbg);
        }
        str_copy(j->relay, sizeof j->relay, s->relay);
        gettimeofday(&j->t_connected, NULL);
        struct timeval tv = {j->dl->timeout_s, 0};
        bufferevent_set_timeouts(s->bev, &tv, &tv);
        bufferevent_setwatermark(s->bev, EV_WRITE, OUT_LOW, 0);
        s->reply_len = 0;
        s->state = ST_RSET;
        send_line(s, "RSET");
        return true;
    }
    return false;
}

void smtp_close_idle(void)
{
    while (idle_list)
        idle_close(idle_list);
}

void smtp_start(struct job *j)
{
    struct smtp_session *s = calloc(1, sizeof *s);
    if (s == NULL) {
        job_finish(j, "delivery agent out of memory");
        return;
    }
    s->j = j;
    s->dl = j->dl;
    j->session = s;
    s->target = 0;
    connect_target(s);
}
