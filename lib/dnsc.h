/* dnsc.h - asynchronous client of the dnscache daemon (STYLE rule 7): every
 * other daemon resolves through this, never with its own resolver.
 *
 * Owns one UNIX-socket connection to $queue_directory/private/dnscache (re-
 * established on demand after dnscache restarts), the table of requests in
 * flight keyed by request id, and one timeout timer per request. Runs in the
 * caller's event loop; callbacks are always called later from the loop, never
 * from inside dnsc_lookup(), exactly once per request.
 *
 * Wire protocol: DNS_QUERY / DNS_ANSWER of ipc_msgs.def. Record text in
 * DNS_ANSWER, one str field per record:
 *   MX    "PREFERENCE EXCHANGE"   (exchange without the final dot; "." for a null MX)
 *   A     "192.0.2.1"     AAAA "2001:db8::1"
 *   PTR   "host.example"  TXT "text (character-strings joined)"
 * rcode: DNSC_OK (records may be empty: NODATA), DNSC_NXDOMAIN, DNSC_SERVFAIL
 * (every server failed or refused), DNSC_TIMEOUT (no answer in time),
 * DNSC_BADNAME (not a valid domain name). ttl: seconds the answer may be
 * cached (for negative answers the SOA minimum). */
#ifndef BW_DNSC_H
#define BW_DNSC_H

#include <stddef.h>
#include <stdint.h>

#define DNSC_TIMEOUT_MS 10000   /* a request not answered by then fails with DNSC_TIMEOUT */
#define DNSC_RECORDS_MAX 64     /* more records than this are cut */

enum dnsc_rcode { DNSC_OK = 0, DNSC_SERVFAIL = 2, DNSC_NXDOMAIN = 3, DNSC_BADNAME = 253, DNSC_TIMEOUT = 254 };

struct dnsc_answer {
    enum dnsc_rcode rcode;
    uint32_t ttl;
    size_t n;
    const char *records[DNSC_RECORDS_MAX]; /* valid only during the callback */
};

struct event_base;
struct dnsc;

typedef void (*dnsc_cb)(void *arg, const struct dnsc_answer *answer);

/* dnsc_new - client for the socket at path; connects lazily. NULL on ENOMEM. */
struct dnsc *dnsc_new(struct event_base *base, const char *socket_path);

/* dnsc_lookup - ask for name/type ("MX", "A", "AAAA", "PTR", "TXT"). Returns a
 * request id (> 0), or 0 when the request cannot even be queued (the callback
 * is then still called, later, with DNSC_SERVFAIL). */
uint64_t dnsc_lookup(struct dnsc *c, const char *name, const char *type, dnsc_cb cb, void *arg);

/* dnsc_cancel - the callback of this request will not be called. */
void dnsc_cancel(struct dnsc *c, uint64_t reqid);

/* dnsc_free - cancel everything (no callbacks) and close. NULL is fine. */
void dnsc_free(struct dnsc *c);

#endif
