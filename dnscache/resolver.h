/* resolver.h - dnscache's non-blocking stub resolver: owns the list of
 * upstream servers, every upstream query in flight (its UDP socket or TCP
 * bufferevent, its try and deadline timers, its ldns wire query) and the
 * waiters parked on each query.
 *
 * Queries are built with ldns (RD set, EDNS0 with a DNS_EDNS_UDP_SIZE
 * buffer), sent over UDP from a connected non-blocking socket of the event
 * loop, and matched by id and question. A reply with TC set is asked again
 * over TCP from the same server. A server that does not answer within
 * try_timeout_ms, refuses (ICMP port unreachable), answers SERVFAIL,
 * REFUSED, NOTIMP or FORMERR, or sends a malformed reply, is left for the
 * next one, round-robin, for at most DNS_TRY_ROUNDS rounds of the list and
 * never after deadline_ms. The server that answered last is tried first by
 * the next query, so a dead first server costs one try, not one per query.
 *
 * Identical lookups (same normalized name and type) in flight at the same
 * time share one upstream query: the waiters are called in arrival order
 * with the same answer. Every waiter gets exactly one callback: the answer,
 * DNSC_SERVFAIL (every server failed), or DNSC_TIMEOUT (no answer before
 * the deadline) - unless it is cancelled first. Answers are stored in the
 * cache given to dns_resolver_new (if any) before the waiters are called.
 *
 * Answer text (lib/dnsc.h): the answer section is read with ldns_wire2pkt,
 * CNAME chains from the question name are followed (at most DNS_CNAME_MAX
 * links), and records of the asked type owned by the end of the chain are
 * turned into text in the order the server sent them, at most
 * DNSC_RECORDS_MAX: MX "PREF EXCHANGE", A and AAAA as inet_ntop prints them,
 * PTR the name, TXT the character-strings joined, with control bytes
 * written as \DDD. Names are in lower case without their final dot ("."
 * stays "."). ttl is the
 * smallest TTL of the records and CNAMEs used; for NXDOMAIN and NODATA it is
 * min(SOA TTL, SOA MINIMUM) of the authority section (RFC 2308), 0 without a
 * SOA.
 *
 * Bounds: at most opts.max_pending upstream queries (more lookups are
 * refused: dns_resolver_lookup returns NULL) and DNS_SERVERS_MAX servers.
 *
 * Errors: constructors return NULL on ENOMEM; network errors are never
 * returned, they become SERVFAIL or TIMEOUT answers. Single-threaded, runs
 * in the caller's event loop; callbacks come only from the loop. */
#ifndef BW_DNSCACHE_RESOLVER_H
#define BW_DNSCACHE_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "dnsc.h"
#include "inet.h"

#define DNS_SERVERS_MAX 8           /* resolv.conf allows 3; a few more for tests and anycast lists */
#define DNS_EDNS_UDP_SIZE 1232      /* the DNS flag day 2020 size: no IP fragmentation */
#define DNS_TRY_ROUNDS 2            /* times each server is tried per query */
#define DNS_CNAME_MAX 8             /* longest CNAME chain followed inside one answer */
#define DNS_TRY_TIMEOUT_MS 2000     /* one UDP or TCP try */
#define DNS_DEADLINE_MS 8000        /* a whole query; below DNSC_TIMEOUT_MS so clients hear our verdict */
#define DNS_PENDING_MAX 4096        /* upstream queries in flight */
#define DNS_RESOLV_CONF "/etc/resolv.conf"

struct event_base;

struct dns_server_list {
    struct inet_endpoint ep[DNS_SERVERS_MAX];
    size_t n;
};

/* dns_servers_parse - the dns_servers parameter ("ip ip:port [v6]:port",
 * commas or white space). False with a reason in err on a bad entry or more
 * than DNS_SERVERS_MAX; an empty list gives n == 0. */
bool dns_servers_parse(const char *list, struct dns_server_list *out, char *err, size_t errlen);

/* dns_servers_resolv_conf - the nameserver lines of a resolv.conf file (bad
 * or scoped addresses are skipped). False with a reason in err when the file
 * cannot be read or names no usable server. */
bool dns_servers_resolv_conf(const char *path, struct dns_server_list *out, char *err, size_t errlen);

/* An owned answer: records are malloc'd strings. */
struct dns_result {
    enum dnsc_rcode rcode;
    uint32_t ttl;
    size_t n;
    char *records[DNSC_RECORDS_MAX];
};

/* dns_result_view - the dnsc_answer that points into r. */
void dns_result_view(const struct dns_result *r, struct dnsc_answer *view);

/* dns_result_clear - free the records; r is then an empty OK answer. */
void dns_result_clear(struct dns_result *r);

enum dns_reply_kind {
    DNS_REPLY_FINAL,     /* an answer for the waiters: out is filled (OK or NXDOMAIN) */
    DNS_REPLY_TRUNCATED, /* TC set: ask again over TCP */
    DNS_REPLY_FAIL,      /* malformed, or the server failed: try the next one */
    DNS_REPLY_MISMATCH,  /* not the reply to this query: ignore it */
    DNS_REPLY_NOMEM,     /* out of memory while building out */
    DNS_REPLY_KIND_MAX
};

/* dns_reply_parse - classify the reply wire[0..len) to query id for (qname,
 * qtype) (qname normalized) and, for DNS_REPLY_FINAL, fill out (which must
 * be empty; it is empty again on any other result). */
enum dns_reply_kind dns_reply_parse(const uint8_t *wire, size_t len, uint16_t id, const char *qname, uint16_t qtype,
                                    struct dns_result *out);

/* dns_reply_kind_name - "final", "truncated", ... for logs and tests. */
const char *dns_reply_kind_name(enum dns_reply_kind k);

struct dns_resolver_opts {
    int try_timeout_ms;   /* 0: DNS_TRY_TIMEOUT_MS */
    int deadline_ms;      /* 0: DNS_DEADLINE_MS */
    size_t max_pending;   /* 0: DNS_PENDING_MAX */
};

struct dns_resolver_stats {
    uint64_t lookups, collapsed, upstream, udp_sent, tcp_retries, timeouts, servfails;
    size_t pending;
};

struct dns_resolver;
struct dns_waiter;

/* dns_resolver_cb - the answer of one waiter; a points to memory valid only
 * during the call. The callback may call dns_resolver_lookup and
 * dns_resolver_cancel, but not dns_resolver_free. */
typedef void (*dns_resolver_cb)(void *arg, const struct dnsc_answer *a);

/* dns_resolver_new - a resolver for servers (copied; n may be 0: every query
 * then fails with SERVFAIL), storing answers into cache (not owned, may be
 * NULL), with opts (NULL: defaults). NULL on ENOMEM. */
struct dns_resolver *dns_resolver_new(struct event_base *base, const struct dns_server_list *servers,
                                      struct dns_cache *cache, const struct dns_resolver_opts *opts);

/* dns_resolver_set_servers - use these servers from the next try on. */
void dns_resolver_set_servers(struct dns_resolver *r, const struct dns_server_list *servers);

/* dns_resolver_lookup - park a waiter for (name, qtype) (name normalized,
 * qtype one of cache.h's), joining the query in flight for that key or
 * starting one. The callback comes later from the loop, never from inside
 * this call. Returns the waiter, or NULL (no callback will come) when
 * max_pending queries are in flight or on ENOMEM. */
struct dns_waiter *dns_resolver_lookup(struct dns_resolver *r, const char *name, uint16_t qtype,
                                       dns_resolver_cb cb, void *arg);

/* dns_resolver_cancel - w's callback will not be called; w is freed. The
 * upstream query goes on (its answer still fills the cache). */
void dns_resolver_cancel(struct dns_resolver *r, struct dns_waiter *w);

/* dns_resolver_fail_all - answer every waiter now with rcode (graceful
 * stop) and drop every query in flight. */
void dns_resolver_fail_all(struct dns_resolver *r, enum dnsc_rcode rcode);

/* dns_resolver_get_stats - counters since creation. */
void dns_resolver_get_stats(const struct dns_resolver *r, struct dns_resolver_stats *out);

/* dns_resolver_free - drop everything without calling back; NULL is fine. */
void dns_resolver_free(struct dns_resolver *r);

#endif
