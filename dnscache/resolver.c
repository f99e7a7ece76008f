/* resolver.c - dnscache's non-blocking stub resolver (see resolver.h): the
 * server list, the table of upstream queries in flight with their waiters,
 * the UDP/TCP state machine of one query, and the reply parser that turns an
 * ldns packet into lib/dnsc.h record text.
 *
 * One query moves through
 *   DQ_START -> DQ_UDP (a connected UDP socket to one server, try timer)
 *            -> DQ_TCP (a bufferevent to the same server, after TC)
 * and back to DQ_UDP at the next server on any failure, until a final
 * answer, the end of the tries, or its deadline timer; query_finish() is the
 * one place it ends, calls its waiters and is freed. */
#include "resolver.h"
#include "buf.h"
#include "log.h"
#include "str.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <ldns/ldns.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PENDING_BUCKETS 1024        /* hash buckets of the in-flight table (chained) */
#define UDP_READS_PER_EVENT 16      /* datagrams taken per wakeup: stray ones cannot hog the loop */
#define RECORD_TEXT_MAX (4 * 65536) /* one record as text: rdata is < 64 KiB, \DDD at most quadruples it */
#define RESOLV_LINE_MAX 1024

enum dq_state { DQ_START, DQ_UDP, DQ_TCP, DQ_STATE_MAX };

static const char *const dq_state_names[DQ_STATE_MAX] = {"start", "udp", "tcp"};

struct dns_waiter {
    struct dns_waiter *prev, *next;
    struct dns_query *q;
    dns_resolver_cb cb;
    void *arg;
};

struct dns_query {
    struct dns_resolver *r;
    struct dns_query *hnext;         /* chain of the in-flight table */
    struct dns_query *prev, *next;   /* list of every query */
    uint64_t hash;
    char name[DNS_NAME_MAX + 1];
    uint16_t qtype;
    uint16_t id;
    uint8_t *wire;                   /* the query, ldns_pkt2wire'd */
    size_t wirelen;
    enum dq_state state;
    size_t server;                   /* index in r->servers of the current try */
    unsigned tries;
    bool server_failed;              /* a server refused or failed (not only silence) */
    evutil_socket_t udp_fd;
    struct event *ev_udp;
    struct bufferevent *tcp;
    struct event *ev_try;            /* the try timer; first fired at once to start */
    struct event *ev_deadline;
    struct dns_waiter *wait_head, *wait_tail;
};

struct dns_resolver {
    struct event_base *base;
    struct dns_server_list servers;
    size_t preferred;                /* the server that answered last */
    struct dns_cache *cache;
    struct dns_resolver_opts opts;
    struct dns_query *buckets[PENDING_BUCKETS];
    struct dns_query *all;
    bool failing;                    /* inside dns_resolver_fail_all */
    struct dns_resolver_stats stats;
};

/* ---- server lists ---- */

/* dns_servers_parse - the dns_servers parameter */
bool dns_servers_parse(const char *list, struct dns_server_list *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char *copy = str_dup(list), *cur = copy, *tok;
    if (copy == NULL)
        return str_copy(err, errlen, "out of memory"), false;
    bool ok = true;
    while (ok && (tok = str_split_next(&cur)) != NULL) {
        char why[256];
        if (out->n == DNS_SERVERS_MAX)
            ok = str_fmt(err, errlen, "dns_servers: more than %d servers", DNS_SERVERS_MAX) && false;
        else if (!inet_parse_endpoint(tok, 53, &out->ep[out->n], why, sizeof why))
            ok = str_fmt(err, errlen, "dns_servers: %s", why) && false;
        else
            out->n++;
    }
    free(copy);
    return ok;
}

/* dns_servers_resolv_conf - nameserver lines */
bool dns_servers_resolv_conf(const char *path, struct dns_server_list *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return str_fmt(err, errlen, "%s: %s", path, strerror(errno)), false;
    char line[RESOLV_LINE_MAX];
    while (out->n < DNS_SERVERS_MAX && fgets(line, sizeof line, f) != NULL) {
        char *cur = line, *key = str_split_next(&cur), *addr = key ? str_split_next(&cur) : NULL;
        if (key == NULL || addr == NULL || strcmp(key, "nameserver") != 0 || strchr(addr, '%') != NULL)
            continue;
        char text[INET_STR_MAX + 4], why[256];
        /* resolv.conf writes IPv6 bare; the endpoint parser wants brackets. */
        bool v6 = strchr(addr, ':') != NULL && addr[0] != '[';
        if (!str_fmt(text, sizeof text, v6 ? "[%s]" : "%s", addr) ||
            !inet_parse_endpoint(text, 53, &out->ep[out->n], why, sizeof why))
            continue;
        out->n++;
    }
    fclose(f);
    if (out->n == 0)
        return str_fmt(err, errlen, "%s: no usable nameserver line", path), false;
    return true;
}

/* ---- results ---- */

void dns_result_view(const struct dns_result *r, struct dnsc_answer *view)
{
    view->rcode = r->rcode;
    view->ttl = r->ttl;
    view->n = r->n;
    for (size_t i = 0; i < r->n; i++)
        view->records[i] = r->records[i];
}

void dns_result_clear(struct dns_result *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->records[i]);
    memset(r, 0, sizeof *r);
}

const char *dns_reply_kind_name(enum dns_reply_kind k)
{
    static const char *const names[DNS_REPLY_KIND_MAX] = {"final", "truncated", "fail", "mismatch", "nomem"};
    return k < DNS_REPLY_KIND_MAX ? names[k] : "?";
}

/* ---- reply parsing ---- */

/* put_name - a domain name rdf in lower case without its final dot ("."
 * stays). Lower case because name compression makes the case a server
 * sends depend on the other names in the packet. */
static bool put_name(struct buf *b, const ldns_rdf *rdf)
{
    if (rdf == NULL || ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_DNAME)
        return false;
    char *s = ldns_rdf2str(rdf);
    if (s == NULL)
        return errno = ENOMEM, false;
    size_t len = strlen(s);
    if (len > 1 && s[len - 1] == '.')
        s[--len] = '\0';
    bool ok = buf_puts(b, str_lower(s));
    free(s);
    return ok;
}

/* put_txt - character-strings joined, control bytes as \DDD */
static bool put_txt(struct buf *b, const ldns_rr *rr)
{
    for (size_t i = 0; i < ldns_rr_rd_count(rr); i++) {
        const ldns_rdf *rdf = ldns_rr_rdf(rr, i);
        if (ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_STR || ldns_rdf_size(rdf) < 1)
            return false;
        const uint8_t *d = ldns_rdf_data(rdf);
        size_t n = d[0] < ldns_rdf_size(rdf) ? d[0] : ldns_rdf_size(rdf) - 1;
        for (size_t k = 1; k <= n; k++) {
            bool ok = d[k] < 0x20 || d[k] == 0x7f ? buf_printf(b, "\\%03u", d[k]) : buf_append(b, &d[k], 1);
            if (!ok)
                return false;
        }
    }
    return true;
}

/* record_text - one record of the asked type as dnsc.h text into b;
 * false when its rdata does not have the expected shape */
static bool record_text(struct buf *b, const ldns_rr *rr, uint16_t qtype)
{
    const ldns_rdf *rd0 = ldns_rr_rd_count(rr) > 0 ? ldns_rr_rdf(rr, 0) : NULL;
    char addr[INET6_ADDRSTRLEN];
    if (rd0 == NULL)
        return false;
    switch (qtype) {
    case DNS_TYPE_MX:
        if (ldns_rr_rd_count(rr) != 2 || ldns_rdf_get_type(rd0) != LDNS_RDF_TYPE_INT16)
            return false;
        return buf_printf(b, "%u ", (unsigned)ldns_rdf2native_int16(rd0)) && put_name(b, ldns_rr_rdf(rr, 1));
    case DNS_TYPE_A:
        return ldns_rdf_get_type(rd0) == LDNS_RDF_TYPE_A && ldns_rdf_size(rd0) == 4 &&
               inet_ntop(AF_INET, ldns_rdf_data(rd0), addr, sizeof addr) && buf_puts(b, addr);
    case DNS_TYPE_AAAA:
        return ldns_rdf_get_type(rd0) == LDNS_RDF_TYPE_AAAA && ldns_rdf_size(rd0) == 16 &&
               inet_ntop(AF_INET6, ldns_rdf_data(rd0), addr, sizeof addr) && buf_puts(b, addr);
    case DNS_TYPE_PTR:
        return put_name(b, rd0);
    case DNS_TYPE_TXT:
        return put_txt(b, rr);
    default:
        return false;
    }
}

/* negative_ttl - RFC 2308 section 5: min(SOA TTL, SOA MINIMUM), 0 without SOA */
static uint32_t negative_ttl(const ldns_pkt *p)
{
    const ldns_rr_list *auth = ldns_pkt_authority(p);
    for (size_t i = 0; auth && i < ldns_rr_list_rr_count(auth); i++) {
        const ldns_rr *rr = ldns_rr_list_rr(auth, i);
        if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA || ldns_rr_rd_count(rr) != 7)
            continue;
        const ldns_rdf *min = ldns_rr_rdf(rr, 6);
        if (ldns_rdf_size(min) != 4)
            continue;
        const uint8_t *d = ldns_rdf_data(min);
        uint32_t minimum = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
        return ldns_rr_ttl(rr) < minimum ? ldns_rr_ttl(rr) : minimum;
    }
    return 0;
}

/* question_matches - the packet asks exactly (qname, qtype, IN) */
static bool question_matches(const ldns_pkt *p, const char *qname, uint16_t qtype)
{
    if (ldns_pkt_qdcount(p) != 1 || ldns_rr_list_rr_count(ldns_pkt_question(p)) != 1)
        return false;
    const ldns_rr *q = ldns_rr_list_rr(ldns_pkt_question(p), 0);
    if (ldns_rr_get_type(q) != qtype || ldns_rr_get_class(q) != LDNS_RR_CLASS_IN)
        return false;
    char *owner = ldns_rdf2str(ldns_rr_owner(q));
    if (owner == NULL)
        return false;
    size_t len = strlen(owner);
    if (len > 1 && owner[len - 1] == '.')
        owner[--len] = '\0';
    bool same = str_case_eq(owner, qname);
    free(owner);
    return same;
}

/* collect - follow CNAMEs from the question name and turn the records of
 * qtype at the end of the chain into text; *min_ttl is lowered to the
 * smallest TTL used. False on ENOMEM. */
static bool collect(const ldns_pkt *p, uint16_t qtype, struct dns_result *out, uint32_t *min_ttl)
{
    const ldns_rr_list *ans = ldns_pkt_answer(p);
    const ldns_rdf *cur = ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_question(p), 0));
    size_t nans = ans ? ldns_rr_list_rr_count(ans) : 0;
    for (int links = 0; links < DNS_CNAME_MAX; links++) {
        const ldns_rr *cname = NULL;
        for (size_t i = 0; i < nans && cname == NULL; i++) {
            const ldns_rr *rr = ldns_rr_list_rr(ans, i);
            if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_CNAME && ldns_rr_rd_count(rr) == 1 &&
                ldns_dname_compare(ldns_rr_owner(rr), cur) == 0)
                cname = rr;
        }
        if (cname == NULL)
            break;
        if (ldns_rr_ttl(cname) < *min_ttl)
            *min_ttl = ldns_rr_ttl(cname);
        cur = ldns_rr_rdf(cname, 0);
    }
    struct buf b;
    buf_init(&b, RECORD_TEXT_MAX);
    for (size_t i = 0; i < nans && out->n < DNSC_RECORDS_MAX; i++) {
        const ldns_rr *rr = ldns_rr_list_rr(ans, i);
        if (ldns_rr_get_type(rr) != qtype || ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN ||
            ldns_dname_compare(ldns_rr_owner(rr), cur) != 0)
            continue;
        buf_reset(&b);
        errno = 0;
        if (!record_text(&b, rr, qtype)) {
            if (errno == ENOMEM) {
                buf_free(&b);
                return false;
            }
            continue; /* a record of the wrong shape is skipped, not fatal */
        }
        char *text = str_ndup(b.data ? b.data : "", b.len);
        if (text == NULL) {
            buf_free(&b);
            return false;
        }
        out->records[out->n++] = text;
        if (ldns_rr_ttl(rr) < *min_ttl)
            *min_ttl = ldns_rr_ttl(rr);
    }
    buf_free(&b);
    return true;
}

/* dns_reply_parse - classify and convert one reply */
enum dns_reply_kind dns_reply_parse(const uint8_t *wire, size_t len, uint16_t id, const char *qname, uint16_t qtype,
                                    struct dns_result *out)
{
    memset(out, 0, sizeof *out);
    /* The id and the QR bit are checked on the raw bytes, so a stray or
     * spoofed datagram costs no parse. */
    if (len < LDNS_HEADER_SIZE || ((unsigned)wire[0] << 8 | wire[1]) != id || !(wire[2] & 0x80))
        return DNS_REPLY_MISMATCH;
    ldns_pkt *p = NULL;
    if (ldns_wire2pkt(&p, wire, len) != LDNS_STATUS_OK || p == NULL)
        return DNS_REPLY_FAIL;
    enum dns_reply_kind kind;
    ldns_pkt_rcode rc = ldns_pkt_get_rcode(p);
    if (!question_matches(p, qname, qtype)) {
        /* Some servers send FORMERR or REFUSED without the question. */
        bool failure = ldns_pkt_qdcount(p) == 0 && rc != LDNS_RCODE_NOERROR && rc != LDNS_RCODE_NXDOMAIN;
        kind = failure ? DNS_REPLY_FAIL : DNS_REPLY_MISMATCH;
    } else if (ldns_pkt_tc(p)) {
        kind = DNS_REPLY_TRUNCATED;
    } else if (rc == LDNS_RCODE_NOERROR || rc == LDNS_RCODE_NXDOMAIN) {
        uint32_t ttl = UINT32_MAX;
        /* Through a CNAME, the CNAME's TTL bounds a negative answer too. */
        if (!collect(p, qtype, out, &ttl)) {
            dns_result_clear(out);
            kind = DNS_REPLY_NOMEM;
        } else {
            if (rc == LDNS_RCODE_NXDOMAIN)
                dns_result_clear(out);
            if (rc == LDNS_RCODE_NXDOMAIN || out->n == 0) {
                uint32_t neg = negative_ttl(p);
                ttl = neg < ttl ? neg : ttl;
            }
            out->rcode = rc == LDNS_RCODE_NXDOMAIN ? DNSC_NXDOMAIN : DNSC_OK;
            out->ttl = ttl;
            kind = DNS_REPLY_FINAL;
        }
    } else {
        kind = DNS_REPLY_FAIL; /* SERVFAIL, REFUSED, NOTIMP, FORMERR, ... */
    }
    ldns_pkt_free(p);
    return kind;
}

/* ---- the in-flight table ---- */

static struct dns_query *query_find(struct dns_resolver *r, const char *name, uint16_t qtype, uint64_t h)
{
    for (struct dns_query *q = r->buckets[h % PENDING_BUCKETS]; q; q = q->hnext)
        if (q->hash == h && q->qtype == qtype && strcmp(q->name, name) == 0)
            return q;
    return NULL;
}

/* query_unlink - out of the table and the list (idempotent) */
static void query_unlink(struct dns_query *q)
{
    struct dns_resolver *r = q->r;
    struct dns_query **pp = &r->buckets[q->hash % PENDING_BUCKETS];
    while (*pp && *pp != q)
        pp = &(*pp)->hnext;
    if (*pp != q)
        return;
    *pp = q->hnext;
    if (q->prev)
        q->prev->next = q->next;
    else
        r->all = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = q->hnext = NULL;
    r->stats.pending--;
}

/* close_transport - the UDP socket or the TCP connection of the current try */
static void close_transport(struct dns_query *q)
{
    if (q->ev_udp) {
        event_free(q->ev_udp);
        q->ev_udp = NULL;
    }
    if (q->udp_fd >= 0) {
        evutil_closesocket(q->udp_fd);
        q->udp_fd = -1;
    }
    if (q->tcp) {
        bufferevent_free(q->tcp);
        q->tcp = NULL;
    }
    evtimer_del(q->ev_try);
}

/* query_free - release a query that is out of the table (waiters already gone) */
static void query_free(struct dns_query *q)
{
    close_transport(q);
    event_free(q->ev_try);
    event_free(q->ev_deadline);
    free(q->wire);
    free(q);
}

/* server_str - "ip:port" of server i, for logs */
static const char *server_str(const struct dns_resolver *r, size_t i, char *buf, size_t len)
{
    if (i >= r->servers.n)
        return "none";
    return inet_endpoint_str((const struct sockaddr *)&r->servers.ep[i].ss, buf, len);
}

/* query_finish - the end of a query: unlink, cache, call every waiter, free */
static void query_finish(struct dns_query *q, const struct dns_result *res)
{
    struct dns_resolver *r = q->r;
    query_unlink(q);
    close_transport(q);
    struct dnsc_answer view;
    dns_result_view(res, &view);
    if (r->cache && !r->failing && (res->rcode == DNSC_OK || res->rcode == DNSC_NXDOMAIN))
        dns_cache_put(r->cache, q->name, q->qtype, &view);
    log_debug("%s %s: rcode=%s ttl=%u records=%zu tries=%u", q->name, dns_type_name(q->qtype),
              dns_rcode_name(res->rcode), (unsigned)res->ttl, res->n, q->tries);
    /* Pop before calling: a callback may cancel a waiter further down. */
    struct dns_waiter *w;
    while ((w = q->wait_head) != NULL) {
        q->wait_head = w->next;
        if (q->wait_head)
            q->wait_head->prev = NULL;
        else
            q->wait_tail = NULL;
        dns_resolver_cb cb = w->cb;
        void *arg = w->arg;
        free(w);
        cb(arg, &view);
    }
    query_free(q);
}

/* query_fail - end with a temporary failure */
static void query_fail(struct dns_query *q, enum dnsc_rcode rcode)
{
    struct dns_resolver *r = q->r;
    char sbuf[INET_STR_MAX];
    if (rcode == DNSC_TIMEOUT)
        r->stats.timeouts++;
    else
        r->stats.servfails++;
    if (!r->failing)
        log_warn("%s %s: %s after %u tries (last server %s)", q->name, dns_type_name(q->qtype),
                 rcode == DNSC_TIMEOUT ? "no answer in time" : "every server failed", q->tries,
                 server_str(r, q->server, sbuf, sizeof sbuf));
    struct dns_result res = {.rcode = rcode};
    query_finish(q, &res);
}

/* ---- one query's state machine ---- */

static void on_udp(evutil_socket_t fd, short what, void *arg);
static void on_tcp_read(struct bufferevent *bev, void *arg);
static void on_tcp_event(struct bufferevent *bev, short what, void *arg);

/* udp_try - one UDP try at q->server; false (transport closed) on a local
 * or immediate error */
static bool udp_try(struct dns_query *q)
{
    struct dns_resolver *r = q->r;
    const struct inet_endpoint *ep = &r->servers.ep[q->server];
    q->udp_fd = socket(ep->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (q->udp_fd < 0)
        return log_warn_errno("UDP socket for %s", q->name), false;
    if (connect(q->udp_fd, (const struct sockaddr *)&ep->ss, ep->len) != 0 ||
        send(q->udp_fd, q->wire, q->wirelen, 0) != (ssize_t)q->wirelen) {
        char sbuf[INET_STR_MAX];
        log_debug("%s: send to %s: %s", q->name, server_str(r, q->server, sbuf, sizeof sbuf), strerror(errno));
        close_transport(q);
        return false;
    }
    q->ev_udp = event_new(r->base, q->udp_fd, EV_READ | EV_PERSIST, on_udp, q);
    if (q->ev_udp == NULL || event_add(q->ev_udp, NULL) != 0) {
        close_transport(q);
        return false;
    }
    q->state = DQ_UDP;
    r->stats.udp_sent++;
    return true;
}

/* next_try - the next server's UDP try, or the end of the query */
static void next_try(struct dns_query *q)
{
    struct dns_resolver *r = q->r;
    close_transport(q);
    for (;;) {
        if (r->servers.n == 0) {
            query_fail(q, DNSC_SERVFAIL);
            return;
        }
        if (q->tries >= r->servers.n * DNS_TRY_ROUNDS) {
            query_fail(q, q->server_failed ? DNSC_SERVFAIL : DNSC_TIMEOUT);
            return;
        }
        if (q->tries > 0 || q->server >= r->servers.n)
            q->server = (q->server + 1) % r->servers.n;
        q->tries++;
        if (udp_try(q))
            break;
        q->server_failed = true;
    }
    struct timeval tv = {r->opts.try_timeout_ms / 1000, (r->opts.try_timeout_ms % 1000) * 1000};
    evtimer_add(q->ev_try, &tv);
}

/* server_failed - the current server failed this query: move on */
static void server_failed(struct dns_query *q, const char *why)
{
    char sbuf[INET_STR_MAX];
    log_debug("%s %s: server %s: %s (%s)", q->name, dns_type_name(q->qtype),
              server_str(q->r, q->server, sbuf, sizeof sbuf), why, dq_state_names[q->state]);
    q->server_failed = true;
    next_try(q);
}

/* tcp_try - ask the current server again over TCP */
static void tcp_try(struct dns_query *q)
{
    struct dns_resolver *r = q->r;
    close_transport(q);
    const struct inet_endpoint *ep = &r->servers.ep[q->server];
    uint8_t len[2] = {(uint8_t)(q->wirelen >> 8), (uint8_t)q->wirelen};
    q->tcp = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (q->tcp == NULL) {
        server_failed(q, "out of memory for TCP");
        return;
    }
    q->state = DQ_TCP;
    r->stats.tcp_retries++;
    bufferevent_setcb(q->tcp, on_tcp_read, NULL, on_tcp_event, q);
    /* A reply is at most 2 + 65535 bytes: never buffer more than that. */
    bufferevent_setwatermark(q->tcp, EV_READ, 0, 2 + 65535);
    if (bufferevent_write(q->tcp, len, 2) != 0 || bufferevent_write(q->tcp, q->wire, q->wirelen) != 0 ||
        bufferevent_enable(q->tcp, EV_READ | EV_WRITE) != 0 ||
        bufferevent_socket_connect(q->tcp, (const struct sockaddr *)&ep->ss, (int)ep->len) != 0) {
        server_failed(q, "TCP connect failed");
        return;
    }
    struct timeval tv = {r->opts.try_timeout_ms / 1000, (r->opts.try_timeout_ms % 1000) * 1000};
    evtimer_add(q->ev_try, &tv);
}

/* handle_reply - act on one reply from the current server; false when q
 * is gone (finished or moved on) */
static bool handle_reply(struct dns_query *q, const uint8_t *wire, size_t len)
{
    struct dns_result res;
    enum dns_reply_kind kind = dns_reply_parse(wire, len, q->id, q->name, q->qtype, &res);
    switch (kind) {
    case DNS_REPLY_MISMATCH:
        return true;
    case DNS_REPLY_TRUNCATED:
        if (q->state == DQ_UDP) {
            tcp_try(q);
            return false;
        }
        server_failed(q, "truncated reply over TCP");
        return false;
    case DNS_REPLY_FAIL:
        server_failed(q, "failure or malformed reply");
        return false;
    case DNS_REPLY_NOMEM:
        log_error("%s: out of memory parsing the reply", q->name);
        query_fail(q, DNSC_SERVFAIL);
        return false;
    case DNS_REPLY_FINAL: {
        struct dns_resolver *r = q->r;
        if (r->preferred != q->server) {
            char sbuf[INET_STR_MAX];
            log_info("now asking server %s first", server_str(r, q->server, sbuf, sizeof sbuf));
            r->preferred = q->server;
        }
        query_finish(q, &res);
        dns_result_clear(&res);
        return false;
    }
    case DNS_REPLY_KIND_MAX:
        break;
    }
    log_panic("%s: bad reply kind %d", q->name, (int)kind);
}

/* on_udp - datagrams or an error (ICMP unreachable) on the UDP socket */
static void on_udp(evutil_socket_t fd, short what, void *arg)
{
    struct dns_query *q = arg;
    static uint8_t dgram[65536]; /* single-threaded */
    for (int i = 0; i < UDP_READS_PER_EVENT; i++) {
        ssize_t n = recv(fd, dgram, sizeof dgram, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            server_failed(q, strerror(errno));
            return;
        }
        if (!handle_reply(q, dgram, (size_t)n))
            return;
    }
}

/* on_tcp_read - a whole length-prefixed reply, or wait for more */
static void on_tcp_read(struct bufferevent *bev, void *arg)
{
    struct dns_query *q = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint8_t head[2];
    if (evbuffer_copyout(in, head, 2) != 2)
        return;
    size_t len = (size_t)head[0] << 8 | head[1];
    if (evbuffer_get_length(in) < 2 + len)
        return;
    const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)(2 + len));
    if (p == NULL) {
        server_failed(q, "out of memory for the TCP reply");
        return;
    }
    if (handle_reply(q, p + 2, len))
        server_failed(q, "TCP reply to another query");
}

static void on_tcp_event(struct bufferevent *bev, short what, void *arg)
{
    struct dns_query *q = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    server_failed(q, what & BEV_EVENT_EOF ? "TCP connection closed" : "TCP connection failed");
}

/* on_try - the start of a query, or a try that timed out */
static void on_try(evutil_socket_t fd, short what, void *arg)
{
    struct dns_query *q = arg;
    if (q->state == DQ_START) {
        next_try(q);
        return;
    }
    char sbuf[INET_STR_MAX];
    log_debug("%s %s: server %s: no answer over %s", q->name, dns_type_name(q->qtype),
              server_str(q->r, q->server, sbuf, sizeof sbuf), dq_state_names[q->state]);
    next_try(q);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg) { query_fail(arg, DNSC_TIMEOUT); }

/* query_new - a query for (name, qtype) in the table, started from the loop */
static struct dns_query *query_new(struct dns_resolver *r, const char *name, uint16_t qtype, uint64_t h)
{
    struct dns_query *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->r = r;
    q->hash = h;
    q->qtype = qtype;
    q->udp_fd = -1;
    q->server = r->preferred < r->servers.n ? r->preferred : 0;
    str_copy(q->name, sizeof q->name, name);
    evutil_secure_rng_get_bytes(&q->id, sizeof q->id);
    ldns_pkt *pkt = NULL;
    if (ldns_pkt_query_new_frm_str(&pkt, name, (ldns_rr_type)qtype, LDNS_RR_CLASS_IN, LDNS_RD) != LDNS_STATUS_OK ||
        pkt == NULL) {
        free(q);
        return NULL;
    }
    ldns_pkt_set_id(pkt, q->id);
    ldns_pkt_set_edns_udp_size(pkt, DNS_EDNS_UDP_SIZE);
    ldns_status st = ldns_pkt2wire(&q->wire, pkt, &q->wirelen);
    ldns_pkt_free(pkt);
    q->ev_try = evtimer_new(r->base, on_try, q);
    q->ev_deadline = evtimer_new(r->base, on_deadline, q);
    struct timeval dl = {r->opts.deadline_ms / 1000, (r->opts.deadline_ms % 1000) * 1000};
    if (st != LDNS_STATUS_OK || q->wire == NULL || q->ev_try == NULL || q->ev_deadline == NULL ||
        evtimer_add(q->ev_deadline, &dl) != 0) {
        free(q->wire);
        if (q->ev_try)
            event_free(q->ev_try);
        if (q->ev_deadline)
            event_free(q->ev_deadline);
        free(q);
        return NULL;
    }
    q->state = DQ_START;
    event_active(q->ev_try, EV_TIMEOUT, 1);
    q->hnext = r->buckets[h % PENDING_BUCKETS];
    r->buckets[h % PENDING_BUCKETS] = q;
    q->next = r->all;
    if (r->all)
        r->all->prev = q;
    r->all = q;
    r->stats.pending++;
    r->stats.upstream++;
    return q;
}

/* ---- the resolver ---- */

struct dns_resolver *dns_resolver_new(struct event_base *base, const struct dns_server_list *servers,
                                      struct dns_cache *cache, const struct dns_resolver_opts *opts)
{
    struct dns_resolver *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->base = base;
    r->cache = cache;
    if (opts)
        r->opts = *opts;
    if (r->opts.try_timeout_ms <= 0)
        r->opts.try_timeout_ms = DNS_TRY_TIMEOUT_MS;
    if (r->opts.deadline_ms <= 0)
        r->opts.deadline_ms = DNS_DEADLINE_MS;
    if (r->opts.max_pending == 0)
        r->opts.max_pending = DNS_PENDING_MAX;
    dns_resolver_set_servers(r, servers);
    return r;
}

void dns_resolver_set_servers(struct dns_resolver *r, const struct dns_server_list *servers)
{
    r->servers = *servers;
    if (r->servers.n > DNS_SERVERS_MAX)
        r->servers.n = DNS_SERVERS_MAX;
    r->preferred = 0;
}

struct dns_waiter *dns_resolver_lookup(struct dns_resolver *r, const char *name, uint16_t qtype,
                                       dns_resolver_cb cb, void *arg)
{
    if (r->failing)
        return NULL;
    uint64_t h = dns_key_hash(name, qtype);
    struct dns_query *q = query_find(r, name, qtype, h);
    if (q != NULL) {
        r->stats.collapsed++;
    } else {
        if (r->stats.pending >= r->opts.max_pending) {
            log_warn("%s %s: %zu queries in flight, refusing more", name, dns_type_name(qtype), r->stats.pending);
            return NULL;
        }
        if ((q = query_new(r, name, qtype, h)) == NULL)
            return NULL;
    }
    struct dns_waiter *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL; /* a new query without waiters still runs and fills the cache */
    w->q = q;
    w->cb = cb;
    w->arg = arg;
    w->prev = q->wait_tail;
    if (q->wait_tail)
        q->wait_tail->next = w;
    else
        q->wait_head = w;
    q->wait_tail = w;
    r->stats.lookups++;
    return w;
}

void dns_resolver_cancel(struct dns_resolver *r, struct dns_waiter *w)
{
    if (w == NULL)
        return;
    struct dns_query *q = w->q;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->wait_tail = w->prev;
    free(w);
}

void dns_resolver_fail_all(struct dns_resolver *r, enum dnsc_rcode rcode)
{
    r->failing = true;
    while (r->all) {
        struct dns_result res = {.rcode = rcode};
        query_finish(r->all, &res);
    }
    r->failing = false;
}

void dns_resolver_get_stats(const struct dns_resolver *r, struct dns_resolver_stats *out) { *out = r->stats; }

void dns_resolver_free(struct dns_resolver *r)
{
    if (r == NULL)
        return;
    while (r->all) {
        struct dns_query *q = r->all;
        query_unlink(q);
        while (q->wait_head) {
            struct dns_waiter *w = q->wait_head;
            q->wait_head = w->next;
            free(w);
        }
        query_free(q);
    }
    free(r);
}
