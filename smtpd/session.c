/* session.c - the inbound SMTP session state machine (RFC 5321) on a
 * libevent bufferevent: command parsing, pipelining, the transaction, DATA
 * streaming into the spool, limits, timeouts and the group-commit hand-off. */
#include "session.h"
#include "addr.h"
#include "command.h"
#include "config.h"
#include "data.h"
#include "inet.h"
#include "log.h"
#include "notify.h"
#include "policy.h"
#include "reply.h"
#include "server.h"
#include "spool.h"
#include "str.h"
#include "vg.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define STAGE_MAX (64 * 1024)          /* DATA bytes gathered before one write(2) */
#define OUTPUT_PAUSE (64 * 1024)       /* stop reading while this much reply text waits */
#define CLOSE_FLUSH_TIMEOUT_S 10       /* how long a closing session may take to flush */
#define REPLY_MAX 1024

enum session_state { SS_COMMAND, SS_DATA, SS_COMMITTING, SS_CLOSING, SS_MAX };


struct session {
    struct smtpd *sd;
    struct session *next, *prev;
    struct bufferevent *bev;
    enum session_state state;
    struct sockaddr_storage peer;
    char addr[INET6_ADDRSTRLEN];
    char listener[INET_STR_MAX];
    char *helo;
    bool esmtp;
    /* transaction */
    bool in_mail;
    char id[SPOOL_ID_LEN + 1];
    char *sender;
    char **rcpts;
    size_t n_rcpts, cap_rcpts;
    struct mail_params mp;
    int64_t arrival_us;
    struct data_decoder dec;
    struct spool_file *sf;
    char *stage;
    size_t stage_len;
    bool too_big, write_failed;
    /* bookkeeping */
    int errors;
    unsigned counts[V_MAX];
    unsigned commands;
    enum smtp_verb last_verb;
    bool skip_line;
    bool stop_requested;
    bool free_on_commit;
    bool output_paused;
};

static void process_input(struct session *s);
static void session_close(struct session *s);

/* ---- settings ---- */

bool smtpd_settings_load(struct smtpd_settings *set, const void *cfgp)
{
    const struct config *cfg = cfgp;
    memset(set, 0, sizeof *set);
    set->hostname = str_dup(cfg_str(cfg, P_myhostname));
    set->banner = str_dup(cfg_str(cfg, P_smtpd_banner));
    set->queue_directory = str_dup(cfg_str(cfg, P_queue_directory));
    set->size_limit = (uint64_t)cfg_int(cfg, P_message_size_limit);
    set->rcpt_limit = (int)cfg_int(cfg, P_smtpd_recipient_limit);
    set->line_limit = (int)cfg_int(cfg, P_smtpd_command_length_limit);
    set->timeout_s = (int)cfg_int(cfg, P_smtpd_timeout);
    set->data_timeout_s = (int)cfg_int(cfg, P_smtpd_data_timeout);
    set->hard_error_limit = (int)cfg_int(cfg, P_smtpd_hard_error_limit);
    set->max_connections = (int)cfg_int(cfg, P_smtpd_max_connections);
    set->stop_timeout_s = (int)cfg_int(cfg, P_stop_timeout);
    if (!set->hostname || !set->banner || !set->queue_directory) {
        smtpd_settings_free(set);
        return false;
    }
    return true;
}

void smtpd_settings_free(struct smtpd_settings *set)
{
    free(set->hostname);
    free(set->banner);
    free(set->queue_directory);
    memset(set, 0, sizeof *set);
}

/* ---- replies ---- */

/* reply - send one reply line (fmt has no CRLF); 4xx/5xx count as errors */
static void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct session *s, const char *fmt, ...)
{
    char line[REPLY_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line - 2 ? (size_t)n : sizeof line - 3;
    if ((line[0] == '4' || line[0] == '5') && strncmp(line, "421", 3) != 0)
        s->errors++;
    line[len++] = '\r';
    line[len++] = '\n';
    bufferevent_write(s->bev, line, len);
}

static const char *client_text(struct session *s, char *buf, size_t len)
{
    str_fmt(buf, len, "unknown[%s]", s->addr);
    return buf;
}

/* ---- transaction ---- */

static void transaction_reset(struct session *s)
{
    if (s->sf) {
        spool_file_abort(s->sf);
        s->sf = NULL;
    }
    free(s->sender);
    s->sender = NULL;
    for (size_t i = 0; i < s->n_rcpts; i++)
        free(s->rcpts[i]);
    s->n_rcpts = 0;
    free(s->stage);
    s->stage = NULL;
    s->stage_len = 0;
    s->in_mail = false;
    s->too_big = s->write_failed = false;
    s->id[0] = '\0';
}

/* ---- life cycle ---- */

static void session_free(struct session *s)
{
    struct smtpd *sd = s->sd;
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    if (s->state == SS_COMMITTING) { /* the committer still holds our file */
        s->free_on_commit = true;
        return;
    }
    transaction_reset(s);
    if (s->prev)
        s->prev->next = s->next;
    else
        sd->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    sd->n_sessions--;
    free(s->rcpts);
    free(s->helo);
    free(s);
    smtpd_session_closed(sd);
}

/* log_disconnect - Postfix-style summary with command counts */
static void log_disconnect(struct session *s)
{
    char line[512], who[96];
    size_t len = 0;
    line[0] = '\0';
    for (int v = 0; v < V_MAX; v++)
        if (s->counts[v])
            str_append(line, sizeof line, &len, " %c%c%c%c=%u", command_verb_name(v)[0] | 0x20,
                       command_verb_name(v)[1] | 0x20, command_verb_name(v)[2] | 0x20, command_verb_name(v)[3] | 0x20,
                       s->counts[v]);
    log_info("disconnect from %s%s commands=%u", client_text(s, who, sizeof who), line, s->commands);
}

static void on_close_flushed(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        session_free(s);
}

static void on_close_event(struct bufferevent *bev, short what, void *arg) { session_free(arg); }

/* session_close - flush the replies, then free */
static void session_close(struct session *s)
{
    if (s->state == SS_CLOSING)
        return;
    log_disconnect(s);
    if (s->sf) {
        spool_file_abort(s->sf);
        s->sf = NULL;
    }
    s->state = SS_CLOSING;
    bufferevent_disable(s->bev, EV_READ);
    struct timeval tv = {CLOSE_FLUSH_TIMEOUT_S, 0};
    bufferevent_set_timeouts(s->bev, NULL, &tv);
    bufferevent_setcb(s->bev, NULL, on_close_flushed, on_close_event, s);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
        session_free(s);
}

/* set_timeout - command or data idle timeout */
static void set_timeout(struct session *s, int seconds)
{
    struct timeval tv = {seconds, 0};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
}

/* ---- commands ---- */

static bool valid_helo(const char *arg) { return *arg && !str_has_ctl(arg, strlen(arg)) && strlen(arg) < 256; }

static void cmd_ehlo(struct session *s, struct smtp_command *c, bool esmtp)
{
    if (!c->syntax_ok || !valid_helo(c->arg)) {
        reply(s, RPL_SYNTAX, esmtp ? "EHLO hostname" : "HELO hostname");
        return;
    }
    char *h = str_dup(c->arg);
    if (h == NULL) {
        reply(s, RPL_NO_MEMORY);
        return;
    }
    transaction_reset(s);
    free(s->helo);
    s->helo = h;
    s->esmtp = esmtp;
    if (!esmtp) {
        reply(s, RPL_HELO, s->sd->set.hostname);
        return;
    }
    char text[REPLY_MAX];
    str_fmt(text, sizeof text,
            "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n",
            s->sd->set.hostname, (unsigned long long)s->sd->set.size_limit);
    bufferevent_write(s->bev, text, strlen(text));
}

static bool has_8bit(const char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    return false;
}

static void cmd_mail(struct session *s, struct smtp_command *c)
{
    if (s->helo == NULL)
        return reply(s, RPL_NEED_HELO);
    if (s->in_mail)
        return reply(s, RPL_NESTED_MAIL);
    if (!c->syntax_ok)
        return reply(s, RPL_SYNTAX, "MAIL FROM:<address>");
    char addr[ADDR_MAX + 1], bad[64], who[96];
    const char *end;
    enum addr_status st = addr_parse_path(c->arg, ADDR_ALLOW_NULL | ADDR_ALLOW_UTF8, addr, &end);
    if (st != ADDR_OK)
        return reply(s, RPL_BAD_SENDER, addr_status_text(st));
    char params[REPLY_MAX];
    str_copy(params, sizeof params, end);
    struct mail_params mp;
    enum params_status ps = command_mail_params(params, &mp, bad, sizeof bad);
    if (ps == PARAMS_UNSUPPORTED)
        return reply(s, RPL_BAD_PARAM, bad);
    if (ps == PARAMS_BAD_VALUE)
        return reply(s, RPL_BAD_PARAM_VALUE, bad);
    if (has_8bit(addr) && !mp.smtputf8)
        return reply(s, RPL_UTF8_NEEDED);
    if (mp.size >= 0 && (uint64_t)mp.size > s->sd->set.size_limit) {
        log_info("NOQUEUE: reject: MAIL from %s: 552 5.3.4 Message size exceeds fixed limit; from=<%s> size=%lld",
                 client_text(s, who, sizeof who), addr, (long long)mp.size);
        return reply(s, RPL_SIZE_DECLARED);
    }
    if ((s->sender = str_dup(addr)) == NULL)
        return reply(s, RPL_NO_MEMORY);
    s->mp = mp;
    s->in_mail = true;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    s->arrival_us = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    spool_id_new(s->sd->srv->slot, s->id);
    log_msg(s->id, "client=%s", client_text(s, who, sizeof who));
    reply(s, RPL_SENDER_OK);
}

static void cmd_rcpt(struct session *s, struct smtp_command *c)
{
    if (!s->in_mail)
        return reply(s, RPL_NEED_MAIL);
    if (!c->syntax_ok)
        return reply(s, RPL_SYNTAX, "RCPT TO:<address>");
    char addr[ADDR_MAX + 1], bad[64], who[96];
    const char *end;
    unsigned flags = ADDR_ALLOW_POSTMASTER | (s->mp.smtputf8 ? ADDR_ALLOW_UTF8 : 0);
    enum addr_status st = addr_parse_path(c->arg, flags, addr, &end);
    if (st == ADDR_ERR_UTF8)
        return reply(s, RPL_UTF8_NEEDED);
    if (st != ADDR_OK)
        return reply(s, RPL_BAD_RCPT, addr_status_text(st));
    char params[REPLY_MAX];
    str_copy(params, sizeof params, end);
    if (command_rcpt_params(params, bad, sizeof bad) != PARAMS_OK)
        return reply(s, RPL_BAD_PARAM, bad);
    if (s->n_rcpts >= (size_t)s->sd->set.rcpt_limit)
        return reply(s, RPL_TOO_MANY_RCPTS);
    bool postmaster = strchr(addr, '@') == NULL;
    if (postmaster) { /* RFC 5321 4.5.1: <postmaster> is always accepted */
        char full[ADDR_MAX + 1];
        str_fmt(full, sizeof full, "%s@%s", addr, s->sd->set.hostname);
        str_copy(addr, sizeof addr, full);
    } else if (!policy_client_trusted(s->sd->policy, (struct sockaddr *)&s->peer) &&
               !policy_relay_domain(s->sd->policy, addr_domain(addr))) {
        log_info("NOQUEUE: reject: RCPT from %s: 554 5.7.1 <%s>: Relay access denied; from=<%s> to=<%s> proto=%s "
                 "helo=<%s>",
                 client_text(s, who, sizeof who), addr, s->sender, addr, s->esmtp ? "ESMTP" : "SMTP", s->helo);
        return reply(s, RPL_RELAY_DENIED, addr);
    }
    for (size_t i = 0; i < s->n_rcpts; i++)
        if (strcmp(s->rcpts[i], addr) == 0)
            return reply(s, RPL_RCPT_OK); /* a duplicate is delivered once */
    if (s->n_rcpts == s->cap_rcpts) {
        size_t cap = s->cap_rcpts ? s->cap_rcpts * 2 : 4;
        char **p = realloc(s->rcpts, cap * sizeof *p);
        if (p == NULL)
            return reply(s, RPL_NO_MEMORY_RCPT);
        s->rcpts = p;
        s->cap_rcpts = cap;
    }
    if ((s->rcpts[s->n_rcpts] = str_dup(addr)) == NULL)
        return reply(s, RPL_NO_MEMORY_RCPT);
    s->n_rcpts++;
    reply(s, RPL_RCPT_OK);
}

/* received_header - our trace header, first line of the stored message */
static bool received_header(struct session *s)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    char forpart[ADDR_MAX + 16] = "";
    if (s->n_rcpts == 1)
        str_fmt(forpart, sizeof forpart, "\r\n\tfor <%s>", s->rcpts[0]);
    int n = snprintf(s->stage, STAGE_MAX,
                     "Received: from %s (unknown [%s])\r\n\tby %s (Breakwater) with %s%s id %s%s;\r\n\t%s\r\n",
                     s->helo, s->addr, s->sd->set.hostname, s->mp.smtputf8 ? "UTF8" : "", s->esmtp ? "ESMTP" : "SMTP",
                     s->id, forpart, date);
    if (n < 0 || n >= STAGE_MAX)
        return false;
    s->stage_len = (size_t)n;
    return true;
}

static void cmd_data(struct session *s, struct smtp_command *c)
{
    if (!s->in_mail)
        return reply(s, RPL_NEED_MAIL);
    if (s->n_rcpts == 0)
        return reply(s, RPL_NEED_RCPT);
    if (!c->syntax_ok)
        return reply(s, RPL_SYNTAX, "DATA");
    struct spool_envelope env = {
        .arrival_us = s->arrival_us,
        .sender = s->sender,
        .client_addr = s->addr,
        .client_name = "unknown",
        .helo = s->helo,
        .protocol = s->esmtp ? "ESMTP" : "SMTP",
        .body_type = s->mp.body == BODY_8BITMIME ? "8BITMIME" : "7BIT",
        .smtputf8 = s->mp.smtputf8,
        .vg = vg_classify(s->sd->vgs, s->sender, (const char *const *)s->rcpts, s->n_rcpts,
                          (struct sockaddr *)&s->peer, s->listener),
        .listener = s->listener,
        .rcpts = (const char *const *)s->rcpts,
        .n_rcpts = s->n_rcpts,
    };
    s->stage = malloc(STAGE_MAX + 2);
    if (s->stage == NULL || (s->sf = spool_file_create(s->sd->set.queue_directory, s->id, &env)) == NULL) {
        log_error_errno("%s: cannot create queue file", s->id);
        free(s->stage);
        s->stage = NULL;
        return reply(s, RPL_SPOOL_ERROR);
    }
    log_msg(s->id, "vg=%s", env.vg);
    if (!received_header(s)) {
        transaction_reset(s);
        return reply(s, RPL_SPOOL_ERROR);
    }
    data_init(&s->dec);
    s->state = SS_DATA;
    set_timeout(s, s->sd->set.data_timeout_s);
    reply(s, RPL_DATA_GO);
}

static void handle_command(struct session *s, char *line)
{
    struct smtp_command c;
    command_parse(line, &c);
    s->commands++;
    s->counts[c.verb]++;
    s->last_verb = c.verb;
    switch (c.verb) {
    case V_EHLO: cmd_ehlo(s, &c, true); break;
    case V_HELO: cmd_ehlo(s, &c, false); break;
    case V_MAIL: cmd_mail(s, &c); break;
    case V_RCPT: cmd_rcpt(s, &c); break;
    case V_DATA: cmd_data(s, &c); break;
    case V_RSET:
        if (!c.syntax_ok)
            return reply(s, RPL_SYNTAX, "RSET");
        transaction_reset(s);
        reply(s, RPL_OK);
        break;
    case V_NOOP: reply(s, RPL_OK); break;
    case V_QUIT:
        reply(s, RPL_BYE);
        session_close(s);
        break;
    case V_HELP: reply(s, RPL_HELP); break;
    case V_VRFY:
        if (!c.syntax_ok)
            return reply(s, RPL_SYNTAX, "VRFY address");
        reply(s, RPL_VRFY);
        break;
    case V_UNKNOWN:
    case V_MAX: reply(s, RPL_UNKNOWN_CMD); break;
    }
}

/* ---- DATA ---- */

static void flush_stage(struct session *s)
{
    if (s->stage_len > 0 && !s->too_big && !s->write_failed && spool_file_write(s->sf, s->stage, s->stage_len) != 0) {
        log_error_errno("%s: queue file write error", s->id);
        s->write_failed = true;
    }
    s->stage_len = 0;
}

static void on_committed(void *arg, bool ok)
{
    struct session *s = arg;
    s->sf = NULL; /* the committer freed it */
    s->state = SS_COMMAND;
    if (s->free_on_commit) {
        session_free(s);
        return;
    }
    if (ok) {
        log_msg(s->id, "from=<%s>, size=%llu, nrcpt=%zu (queued)", s->sender, (unsigned long long)s->dec.size,
                s->n_rcpts);
        reply(s, RPL_QUEUED, s->id);
        smtpd_new_mail(s->sd, s->id);
    } else {
        reply(s, RPL_SPOOL_ERROR);
    }
    transaction_reset(s);
    set_timeout(s, s->sd->set.timeout_s);
    if (s->stop_requested) {
        reply(s, RPL_SHUTDOWN, s->sd->set.hostname);
        session_close(s);
        return;
    }
    process_input(s);
}

/* data_finished - the final dot arrived: reject or commit */
static void data_finished(struct session *s)
{
    char who[96];
    flush_stage(s);
    set_timeout(s, s->sd->set.timeout_s);
    const char *why = NULL, *text = NULL;
    if (s->dec.bare_lf)
        why = "bare <LF>", text = RPL_BARE_LF;
    else if (s->dec.bare_cr)
        why = "bare <CR>", text = RPL_BARE_CR;
    else if (s->too_big)
        why = "size", text = RPL_SIZE_EXCEEDED;
    if (text) {
        log_msg(s->id, "reject: DATA from %s: %s; from=<%s> (%s)", client_text(s, who, sizeof who), text, s->sender,
                why);
        reply(s, "%s", text);
        transaction_reset(s);
        s->state = SS_COMMAND;
        if (s->stop_requested) {
            reply(s, RPL_SHUTDOWN, s->sd->set.hostname);
            session_close(s);
        }
        return;
    }
    if (s->write_failed) {
        reply(s, RPL_SPOOL_ERROR);
        transaction_reset(s);
        s->state = SS_COMMAND;
        return;
    }
    free(s->stage);
    s->stage = NULL;
    s->state = SS_COMMITTING;
    struct spool_file *sf = s->sf;
    s->sf = NULL;
    spool_commit(s->sd->committer, sf, on_committed, s);
}

/* handle_data - feed buffered input to the decoder */
static void handle_data(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (s->state == SS_DATA && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        size_t room = STAGE_MAX - s->stage_len;
        size_t take = vec.iov_len < room ? vec.iov_len : room;
        size_t outlen;
        size_t used = data_decode(&s->dec, vec.iov_base, take, s->stage + s->stage_len, &outlen);
        s->stage_len += outlen;
        evbuffer_drain(in, used);
        if (s->dec.size > s->sd->set.size_limit)
            s->too_big = true;
        if (s->too_big)
            s->stage_len = 0;
        if (s->stage_len >= STAGE_MAX - 2)
            flush_stage(s);
        if (s->dec.state == DS_END)
            data_finished(s);
    }
}

/* ---- input ---- */

static void process_input(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    struct evbuffer *out = bufferevent_get_output(s->bev);
    while (s->state == SS_COMMAND || s->state == SS_DATA) {
        if (evbuffer_get_length(out) > OUTPUT_PAUSE) { /* the client does not read its replies */
            s->output_paused = true;
            bufferevent_disable(s->bev, EV_READ);
            return;
        }
        if (s->state == SS_DATA) {
            handle_data(s);
            if (s->state == SS_DATA)
                return; /* need more input */
            continue;
        }
        size_t eol_len = 0;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        size_t limit = (size_t)s->sd->set.line_limit;
        if (p.pos < 0) {
            if (evbuffer_get_length(in) > limit) {
                evbuffer_drain(in, evbuffer_get_length(in));
                if (!s->skip_line)
                    reply(s, RPL_LINE_TOO_LONG);
                s->skip_line = true;
            }
            return;
        }
        size_t total = (size_t)p.pos + eol_len;
        if (s->skip_line || total > limit) {
            evbuffer_drain(in, total);
            if (!s->skip_line)
                reply(s, RPL_LINE_TOO_LONG);
            s->skip_line = false;
        } else {
            char line[65536 + 2];
            evbuffer_remove(in, line, total);
            size_t n = (size_t)p.pos;
            if (n > 0 && line[n - 1] == '\r')
                n--;
            line[n] = '\0';
            if (memchr(line, '\0', n) != NULL)
                reply(s, RPL_NUL_IN_COMMAND);
            else
                handle_command(s, line);
        }
        if (s->state == SS_COMMAND && s->stop_requested && !s->in_mail) {
            reply(s, RPL_SHUTDOWN, s->sd->set.hostname);
            session_close(s);
            return;
        }
        if (s->state != SS_CLOSING && s->errors >= s->sd->set.hard_error_limit) {
            char who[96];
            log_warn("too many errors after %s from %s", command_verb_name(s->last_verb),
                     client_text(s, who, sizeof who));
            reply(s, RPL_TOO_MANY_ERRORS, s->sd->set.hostname);
            session_close(s);
            return;
        }
    }
}

static void on_read(struct bufferevent *bev, void *arg) { process_input(arg); }

static void on_write(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    if (s->output_paused && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        s->output_paused = false;
        bufferevent_enable(bev, EV_READ);
        process_input(s);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    char who[96];
    if (what & BEV_EVENT_TIMEOUT) {
        log_info("timeout after %s from %s", s->state == SS_DATA ? "DATA" : command_verb_name(s->last_verb),
                 client_text(s, who, sizeof who));
        if (s->state == SS_COMMITTING)
            return; /* the commit result comes first */
        reply(s, RPL_TIMEOUT, s->sd->set.hostname);
        session_close(s);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (s->state == SS_DATA)
            log_info("lost connection after DATA (%llu bytes) from %s", (unsigned long long)s->dec.size,
                     client_text(s, who, sizeof who));
        if (s->state != SS_CLOSING)
            log_disconnect(s);
        s->state = s->state == SS_COMMITTING ? SS_COMMITTING : SS_CLOSING;
        session_free(s);
    }
}

/* ---- public ---- */

void session_new(struct smtpd *sd, int fd, const struct sockaddr *peer, int peerlen)
{
    struct session *s = calloc(1, sizeof *s);
    struct bufferevent *bev = bufferevent_socket_new(sd->srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (s == NULL || bev == NULL) {
        log_error("out of memory for a new session");
        free(s);
        if (bev)
            bufferevent_free(bev);
        else
            close(fd);
        return;
    }
    s->sd = sd;
    s->bev = bev;
    s->state = SS_COMMAND;
    int one = 1; /* replies are small writes: no Nagle delay behind the client's delayed ACK */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memcpy(&s->peer, peer, (size_t)peerlen < sizeof s->peer ? (size_t)peerlen : sizeof s->peer);
    inet_addr_str(peer, s->addr, sizeof s->addr);
    struct sockaddr_storage local;
    socklen_t llen = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
        inet_endpoint_str((struct sockaddr *)&local, s->listener, sizeof s->listener);
    s->next = sd->sessions;
    if (sd->sessions)
        sd->sessions->prev = s;
    sd->sessions = s;
    sd->n_sessions++;
    sd->accepted_total++;
    char who[96];
    log_info("connect from %s", client_text(s, who, sizeof who));
    bufferevent_setcb(bev, on_read, on_write, on_event, s);
    set_timeout(s, sd->set.timeout_s);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (sd->srv->stopping) {
        reply(s, RPL_SHUTDOWN, sd->set.hostname);
        session_close(s);
        return;
    }
    reply(s, RPL_GREETING, sd->set.banner);
}

void session_stop(struct session *s)
{
    s->stop_requested = true;
    if (s->state == SS_COMMAND && !s->in_mail) {
        reply(s, RPL_SHUTDOWN, s->sd->set.hostname);
        session_close(s);
    }
}

void session_kill(struct session *s)
{
    if (s->state != SS_CLOSING && s->state != SS_COMMITTING)
        log_disconnect(s);
    if (s->state != SS_COMMITTING)
        s->state = SS_CLOSING;
    session_free(s);
}

struct session *session_next(struct session *s) { return s->next; }

void session_discard(struct session *s)
{
    s->state = SS_CLOSING;
    session_free(s);
}
