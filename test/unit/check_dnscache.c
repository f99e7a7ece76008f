/* check_dnscache.c - unit tests of dnscache/: the key rules (name
 * normalization, type names), the cache (TTL expiry with an injected clock,
 * negative caching and its caps, what is never cached, LRU eviction by count
 * and by bytes), the reply parser on packets built in memory with ldns (every
 * record type's text, CNAME chains, RFC 2308 negative TTLs, mismatches,
 * truncation, failures, the record cap), server list parsing, and the
 * resolver in a real event loop against an in-process UDP server (answer,
 * collapsing of identical lookups, timeout, dead first server, SERVFAIL,
 * cancel, bounds), and lib/dnsc.c against an in-process fake dnscache on a
 * UNIX socket (HELLO, reqid matching, no callback from inside dnsc_lookup,
 * local BADNAME, cancel, reconnect and resend, a late daemon, dnsc_free from
 * a callback). */
#include "cache.h"
#include "dnsc.h"
#include "ipc.h"
#include "log.h"
#include "resolver.h"
#include "str.h"
#include "unit.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- keys ---- */

static const struct {
    const char *in, *want; /* want NULL: refused */
} names[] = {
    {"Example.TEST", "example.test"},
    {"example.test.", "example.test"},
    {"_dmarc.example.test", "_dmarc.example.test"},
    {"1.2.0.192.in-addr.arpa", "1.2.0.192.in-addr.arpa"},
    {"a", "a"},
    {"", NULL},
    {".", NULL},
    {"example..test", NULL},
    {".example.test", NULL},
    {"example.test..", NULL},
    {"exa mple.test", NULL},
    {"exa\\mple.test", NULL},
    {"exam\001ple.test", NULL},
    {"bücher.test", NULL},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test",  /* 63: fine */
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test"},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", NULL}, /* 64 */
};

START_TEST(test_name_normalize)
{
    char out[DNS_NAME_MAX + 1] = "untouched";
    bool ok = dns_name_normalize(names[_i].in, out);
    if (names[_i].want == NULL) {
        ck_assert_msg(!ok, "'%s' accepted as '%s', want refused", names[_i].in, out);
        ck_assert_str_eq(out, "untouched");
    } else {
        ck_assert_msg(ok, "'%s' refused, want '%s'", names[_i].in, names[_i].want);
        ck_assert_str_eq(out, names[_i].want);
    }
}
END_TEST

START_TEST(test_name_length)
{
    /* 4 labels of 63 + 3 dots = 255 > 253; 253 exactly is the limit. */
    char name[300], out[DNS_NAME_MAX + 1];
    memset(name, 'a', sizeof name);
    name[63] = name[127] = name[191] = '.';
    name[253] = '\0';
    ck_assert(dns_name_normalize(name, out));
    ck_assert_uint_eq(strlen(out), 253);
    name[253] = '.';
    name[254] = '\0';
    ck_assert(dns_name_normalize(name, out)); /* final dot does not count */
    name[254] = 'a';
    name[255] = '\0';
    ck_assert(!dns_name_normalize(name, out));
}
END_TEST

START_TEST(test_types)
{
    ck_assert_uint_eq(dns_type_parse("MX"), DNS_TYPE_MX);
    ck_assert_uint_eq(dns_type_parse("mx"), DNS_TYPE_MX);
    ck_assert_uint_eq(dns_type_parse("A"), DNS_TYPE_A);
    ck_assert_uint_eq(dns_type_parse("aaaa"), DNS_TYPE_AAAA);
    ck_assert_uint_eq(dns_type_parse("PTR"), DNS_TYPE_PTR);
    ck_assert_uint_eq(dns_type_parse("TXT"), DNS_TYPE_TXT);
    ck_assert_uint_eq(dns_type_parse("SRV"), 0);
    ck_assert_uint_eq(dns_type_parse(""), 0);
    ck_assert_str_eq(dns_type_name(DNS_TYPE_AAAA), "AAAA");
    ck_assert_str_eq(dns_type_name(99), "?");
    ck_assert_str_eq(dns_rcode_name(DNSC_NXDOMAIN), "NXDOMAIN");
}
END_TEST

/* ---- cache ---- */

static uint64_t fake_now_ms;

static uint64_t fake_clock(void *arg) { return *(uint64_t *)arg; }

static struct dns_cache *new_cache(size_t entries, size_t bytes)
{
    fake_now_ms = 1000000;
    struct dns_cache *c = dns_cache_new(entries, bytes, fake_clock, &fake_now_ms);
    ck_assert_ptr_nonnull(c);
    return c;
}

static struct dnsc_answer answer_of(enum dnsc_rcode rcode, uint32_t ttl, size_t n, const char *const *recs)
{
    struct dnsc_answer a = {.rcode = rcode, .ttl = ttl, .n = n};
    for (size_t i = 0; i < n; i++)
        a.records[i] = recs[i];
    return a;
}

START_TEST(test_cache_ttl)
{
    struct dns_cache *c = new_cache(100, 1 << 20);
    const char *recs[] = {"10 mx1.example.test", "20 mx2.example.test"};
    struct dnsc_answer a = answer_of(DNSC_OK, 300, 2, recs), got;
    ck_assert(!dns_cache_get(c, "example.test", DNS_TYPE_MX, &got));
    ck_assert(dns_cache_put(c, "example.test", DNS_TYPE_MX, &a));
    recs[0] = "changed"; /* the cache holds its own copy */
    ck_assert(dns_cache_get(c, "example.test", DNS_TYPE_MX, &got));
    ck_assert_int_eq(got.rcode, DNSC_OK);
    ck_assert_uint_eq(got.ttl, 300);
    ck_assert_uint_eq(got.n, 2);
    ck_assert_str_eq(got.records[0], "10 mx1.example.test");
    ck_assert_str_eq(got.records[1], "20 mx2.example.test");
    ck_assert(!dns_cache_get(c, "example.test", DNS_TYPE_A, &got)); /* the type is part of the key */

    fake_now_ms += 100500;
    ck_assert(dns_cache_get(c, "example.test", DNS_TYPE_MX, &got));
    ck_assert_uint_eq(got.ttl, 199); /* whole seconds left */
    fake_now_ms += 199499;
    ck_assert(dns_cache_get(c, "example.test", DNS_TYPE_MX, &got));
    ck_assert_uint_eq(got.ttl, 0);
    fake_now_ms += 1;
    ck_assert_msg(!dns_cache_get(c, "example.test", DNS_TYPE_MX, &got), "served after its TTL");
    struct dns_cache_stats st;
    dns_cache_get_stats(c, &st);
    ck_assert_uint_eq(st.entries, 0);
    ck_assert_uint_eq(st.bytes, 0);
    ck_assert_uint_eq(st.expired, 1);
    ck_assert_uint_eq(st.hits, 3);
    dns_cache_free(c);
}
END_TEST

START_TEST(test_cache_negative)
{
    struct dns_cache *c = new_cache(100, 1 << 20);
    struct dnsc_answer nx = answer_of(DNSC_NXDOMAIN, 60, 0, NULL), nodata = answer_of(DNSC_OK, 30, 0, NULL), got;
    ck_assert(dns_cache_put(c, "nope.example.test", DNS_TYPE_MX, &nx));
    ck_assert(dns_cache_put(c, "example.test", DNS_TYPE_AAAA, &nodata));
    ck_assert(dns_cache_get(c, "nope.example.test", DNS_TYPE_MX, &got));
    ck_assert_int_eq(got.rcode, DNSC_NXDOMAIN);
    ck_assert_uint_eq(got.n, 0);
    ck_assert_uint_eq(got.ttl, 60);
    ck_assert(dns_cache_get(c, "example.test", DNS_TYPE_AAAA, &got));
    ck_assert_int_eq(got.rcode, DNSC_OK);
    ck_assert_uint_eq(got.n, 0);
    fake_now_ms += 30000;
    ck_assert(!dns_cache_get(c, "example.test", DNS_TYPE_AAAA, &got));
    ck_assert(dns_cache_get(c, "nope.example.test", DNS_TYPE_MX, &got));
    fake_now_ms += 30000;
    ck_assert(!dns_cache_get(c, "nope.example.test", DNS_TYPE_MX, &got));

    /* Negative answers are capped at 3 hours, positive ones at a week. */
    struct dnsc_answer longnx = answer_of(DNSC_NXDOMAIN, 86400, 0, NULL);
    const char *recs[] = {"192.0.2.1"};
    struct dnsc_answer longpos = answer_of(DNSC_OK, 30 * 86400, 1, recs);
    ck_assert(dns_cache_put(c, "long.example.test", DNS_TYPE_A, &longnx));
    ck_assert(dns_cache_get(c, "long.example.test", DNS_TYPE_A, &got));
    ck_assert_uint_eq(got.ttl, DNS_CACHE_NEG_TTL_MAX);
    ck_assert(dns_cache_put(c, "long.example.test", DNS_TYPE_A, &longpos)); /* replaces */
    ck_assert(dns_cache_get(c, "long.example.test", DNS_TYPE_A, &got));
    ck_assert_int_eq(got.rcode, DNSC_OK);
    ck_assert_uint_eq(got.ttl, DNS_CACHE_TTL_MAX);
    dns_cache_free(c);
}
END_TEST

START_TEST(test_cache_not_cached)
{
    struct dns_cache *c = new_cache(100, 1 << 20);
    const char *recs[] = {"192.0.2.1"};
    struct dnsc_answer got, a;
    a = answer_of(DNSC_SERVFAIL, 60, 0, NULL);
    ck_assert(!dns_cache_put(c, "x.test", DNS_TYPE_A, &a));
    a = answer_of(DNSC_TIMEOUT, 60, 0, NULL);
    ck_assert(!dns_cache_put(c, "x.test", DNS_TYPE_A, &a));
    a = answer_of(DNSC_BADNAME, 60, 0, NULL);
    ck_assert(!dns_cache_put(c, "x.test", DNS_TYPE_A, &a));
    a = answer_of(DNSC_OK, 0, 1, recs);
    ck_assert(!dns_cache_put(c, "x.test", DNS_TYPE_A, &a));
    ck_assert(!dns_cache_get(c, "x.test", DNS_TYPE_A, &got));
    /* A failure does not leave a stale positive answer behind either. */
    a = answer_of(DNSC_OK, 60, 1, recs);
    ck_assert(dns_cache_put(c, "x.test", DNS_TYPE_A, &a));
    a = answer_of(DNSC_OK, 0, 1, recs);
    ck_assert(!dns_cache_put(c, "x.test", DNS_TYPE_A, &a));
    ck_assert(!dns_cache_get(c, "x.test", DNS_TYPE_A, &got));
    dns_cache_free(c);
}
END_TEST

START_TEST(test_cache_evict_count)
{
    struct dns_cache *c = new_cache(3, 1 << 20);
    const char *recs[] = {"192.0.2.1"};
    struct dnsc_answer a = answer_of(DNSC_OK, 300, 1, recs), got;
    ck_assert(dns_cache_put(c, "a.test", DNS_TYPE_A, &a));
    ck_assert(dns_cache_put(c, "b.test", DNS_TYPE_A, &a));
    ck_assert(dns_cache_put(c, "c.test", DNS_TYPE_A, &a));
    ck_assert(dns_cache_get(c, "a.test", DNS_TYPE_A, &got)); /* a is now the newest */
    ck_assert(dns_cache_put(c, "d.test", DNS_TYPE_A, &a));   /* evicts b, the least recently used */
    ck_assert(dns_cache_get(c, "a.test", DNS_TYPE_A, &got));
    ck_assert_msg(!dns_cache_get(c, "b.test", DNS_TYPE_A, &got), "LRU entry b survived");
    ck_assert(dns_cache_get(c, "c.test", DNS_TYPE_A, &got));
    ck_assert(dns_cache_get(c, "d.test", DNS_TYPE_A, &got));
    struct dns_cache_stats st;
    dns_cache_get_stats(c, &st);
    ck_assert_uint_eq(st.entries, 3);
    ck_assert_uint_eq(st.evicted, 1);
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof name, "n%d.test", i);
        ck_assert(dns_cache_put(c, name, DNS_TYPE_A, &a));
    }
    dns_cache_get_stats(c, &st);
    ck_assert_uint_eq(st.entries, 3);
    ck_assert(dns_cache_get(c, "n99.test", DNS_TYPE_A, &got));
    ck_assert_uint_eq(dns_cache_sweep(c), 0);
    fake_now_ms += 301000;
    ck_assert_uint_eq(dns_cache_sweep(c), 3);
    dns_cache_get_stats(c, &st);
    ck_assert_uint_eq(st.entries, 0);
    ck_assert_uint_eq(st.bytes, 0);
    dns_cache_free(c);
}
END_TEST

START_TEST(test_cache_evict_bytes)
{
    struct dns_cache *c = new_cache(1000, 8 * 4096);
    static char big[3000];
    memset(big, 'x', sizeof big - 1);
    const char *recs[] = {big};
    struct dnsc_answer a = answer_of(DNSC_OK, 300, 1, recs), got;
    char name[32];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "t%d.test", i);
        ck_assert(dns_cache_put(c, name, DNS_TYPE_TXT, &a));
        struct dns_cache_stats st;
        dns_cache_get_stats(c, &st);
        ck_assert_msg(st.bytes <= 8 * 4096, "cache holds %zu bytes, max %d", st.bytes, 8 * 4096);
    }
    ck_assert(dns_cache_get(c, "t19.test", DNS_TYPE_TXT, &got));
    ck_assert(!dns_cache_get(c, "t0.test", DNS_TYPE_TXT, &got));
    /* One answer may take at most an eighth of the cache. */
    static char huge[4096];
    memset(huge, 'y', sizeof huge - 1);
    recs[0] = huge;
    a = answer_of(DNSC_OK, 300, 1, recs);
    ck_assert(!dns_cache_put(c, "huge.test", DNS_TYPE_TXT, &a));
    ck_assert(dns_cache_get(c, "t19.test", DNS_TYPE_TXT, &got));
    dns_cache_flush(c);
    ck_assert(!dns_cache_get(c, "t19.test", DNS_TYPE_TXT, &got));
    dns_cache_free(c);
}
END_TEST

START_TEST(test_cache_many_records)
{
    struct dns_cache *c = new_cache(10, 1 << 20);
    const char *recs[DNSC_RECORDS_MAX];
    char text[DNSC_RECORDS_MAX][16];
    for (int i = 0; i < DNSC_RECORDS_MAX; i++) {
        snprintf(text[i], sizeof text[i], "192.0.2.%d", i);
        recs[i] = text[i];
    }
    struct dnsc_answer a = answer_of(DNSC_OK, 300, DNSC_RECORDS_MAX, recs), got;
    ck_assert(dns_cache_put(c, "many.test", DNS_TYPE_A, &a));
    ck_assert(dns_cache_get(c, "many.test", DNS_TYPE_A, &got));
    ck_assert_uint_eq(got.n, DNSC_RECORDS_MAX);
    for (int i = 0; i < DNSC_RECORDS_MAX; i++)
        ck_assert_str_eq(got.records[i], text[i]);
    dns_cache_free(c);
}
END_TEST

/* ---- reply parsing ---- */

/* build_reply - a reply packet in wire form: id, rcode, TC, the question
 * "name. IN TYPE", answer and authority RRs in zone-file text */
static uint8_t *build_reply(size_t *len, uint16_t id, ldns_pkt_rcode rcode, bool tc, const char *question,
                            const char *const *answer, const char *const *authority)
{
    ldns_pkt *p = ldns_pkt_new();
    ck_assert_ptr_nonnull(p);
    ldns_pkt_set_id(p, id);
    ldns_pkt_set_qr(p, true);
    ldns_pkt_set_tc(p, tc);
    ldns_pkt_set_rcode(p, (uint8_t)rcode);
    if (question) {
        ldns_rr *q = NULL;
        ck_assert_int_eq(ldns_rr_new_question_frm_str(&q, question, NULL, NULL), LDNS_STATUS_OK);
        ck_assert(ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, q));
    }
    for (int s = 0; s < 2; s++) {
        const char *const *list = s == 0 ? answer : authority;
        for (size_t i = 0; list && list[i]; i++) {
            ldns_rr *rr = NULL;
            ck_assert_msg(ldns_rr_new_frm_str(&rr, list[i], 0, NULL, NULL) == LDNS_STATUS_OK, "bad RR text %s",
                          list[i]);
            ck_assert(ldns_pkt_push_rr(p, s == 0 ? LDNS_SECTION_ANSWER : LDNS_SECTION_AUTHORITY, rr));
        }
    }
    uint8_t *wire = NULL;
    ck_assert_int_eq(ldns_pkt2wire(&wire, p, len), LDNS_STATUS_OK);
    ldns_pkt_free(p);
    return wire;
}

#define NONE ((const char *const[]){NULL})
#define SOA_RR "example.test. 600 IN SOA ns.example.test. host.example.test. 1 3600 600 86400 120"

struct parse_case {
    const char *what;
    ldns_pkt_rcode rcode;
    bool tc;
    const char *question;
    const char *qname;
    uint16_t qtype;
    const char *const *answer, *const *authority;
    enum dns_reply_kind want_kind;
    enum dnsc_rcode want_rcode;
    uint32_t want_ttl;
    const char *const *want; /* NULL-terminated expected records */
};

static const struct parse_case parse_cases[] = {
    {"MX in server order, lower case, final dot gone", LDNS_RCODE_NOERROR, false, "example.test. IN MX", "example.test",
     DNS_TYPE_MX,
     (const char *const[]){"example.test. 300 IN MX 20 mx2.example.test.", "example.test. 200 IN MX 10 MX1.Example.Test.",
                           NULL},
     NONE, DNS_REPLY_FINAL, DNSC_OK, 200, (const char *const[]){"20 mx2.example.test", "10 mx1.example.test", NULL}},
    {"null MX", LDNS_RCODE_NOERROR, false, "example.test. IN MX", "example.test", DNS_TYPE_MX,
     (const char *const[]){"example.test. 300 IN MX 0 .", NULL}, NONE, DNS_REPLY_FINAL, DNSC_OK, 300,
     (const char *const[]){"0 .", NULL}},
    {"A", LDNS_RCODE_NOERROR, false, "host.example.test. IN A", "host.example.test", DNS_TYPE_A,
     (const char *const[]){"host.example.test. 60 IN A 192.0.2.1", "host.example.test. 90 IN A 192.0.2.2", NULL},
     NONE, DNS_REPLY_FINAL, DNSC_OK, 60, (const char *const[]){"192.0.2.1", "192.0.2.2", NULL}},
    {"AAAA", LDNS_RCODE_NOERROR, false, "host.example.test. IN AAAA", "host.example.test", DNS_TYPE_AAAA,
     (const char *const[]){"host.example.test. 60 IN AAAA 2001:DB8:0:0::1", NULL}, NONE, DNS_REPLY_FINAL, DNSC_OK,
     60, (const char *const[]){"2001:db8::1", NULL}},
    {"PTR", LDNS_RCODE_NOERROR, false, "1.2.0.192.in-addr.arpa. IN PTR", "1.2.0.192.in-addr.arpa", DNS_TYPE_PTR,
     (const char *const[]){"1.2.0.192.in-addr.arpa. 3600 IN PTR host.example.test.", NULL}, NONE, DNS_REPLY_FINAL,
     DNSC_OK, 3600, (const char *const[]){"host.example.test", NULL}},
    {"TXT strings joined, control bytes escaped", LDNS_RCODE_NOERROR, false, "example.test. IN TXT",
     "example.test", DNS_TYPE_TXT,
     (const char *const[]){"example.test. 60 IN TXT \"v=spf1 \" \"ip4:192.0.2.0/24 -all\"",
                           "example.test. 60 IN TXT \"a\\009b\\\"c\"", NULL},
     NONE, DNS_REPLY_FINAL, DNSC_OK, 60,
     (const char *const[]){"v=spf1 ip4:192.0.2.0/24 -all", "a\\009b\"c", NULL}},
    {"CNAME chain followed, smallest TTL", LDNS_RCODE_NOERROR, false, "www.example.test. IN A", "www.example.test",
     DNS_TYPE_A,
     (const char *const[]){"www.example.test. 30 IN CNAME web.example.test.",
                           "web.example.test. 300 IN CNAME host.example.test.", "host.example.test. 100 IN A 192.0.2.7",
                           "other.example.test. 5 IN A 192.0.2.99", NULL},
     NONE, DNS_REPLY_FINAL, DNSC_OK, 30, (const char *const[]){"192.0.2.7", NULL}},
    {"question name case differs", LDNS_RCODE_NOERROR, false, "EXAMPLE.test. IN A", "example.test", DNS_TYPE_A,
     (const char *const[]){"Example.Test. 60 IN A 192.0.2.1", NULL}, NONE, DNS_REPLY_FINAL, DNSC_OK, 60,
     (const char *const[]){"192.0.2.1", NULL}},
    {"other types and owners ignored", LDNS_RCODE_NOERROR, false, "example.test. IN A", "example.test",
     DNS_TYPE_A,
     (const char *const[]){"example.test. 60 IN AAAA 2001:db8::1", "elsewhere.test. 60 IN A 192.0.2.9",
                           "example.test. 60 IN A 192.0.2.1", NULL},
     NONE, DNS_REPLY_FINAL, DNSC_OK, 60, (const char *const[]){"192.0.2.1", NULL}},
    {"NXDOMAIN: min(SOA TTL, MINIMUM)", LDNS_RCODE_NXDOMAIN, false, "nope.example.test. IN MX",
     "nope.example.test", DNS_TYPE_MX, NONE, (const char *const[]){SOA_RR, NULL}, DNS_REPLY_FINAL, DNSC_NXDOMAIN,
     120, NONE},
    {"NXDOMAIN: SOA TTL below MINIMUM", LDNS_RCODE_NXDOMAIN, false, "nope.example.test. IN MX",
     "nope.example.test", DNS_TYPE_MX, NONE,
     (const char *const[]){"example.test. 45 IN SOA ns.example.test. host.example.test. 1 3600 600 86400 120", NULL},
     DNS_REPLY_FINAL, DNSC_NXDOMAIN, 45, NONE},
    {"NODATA with SOA", LDNS_RCODE_NOERROR, false, "example.test. IN AAAA", "example.test", DNS_TYPE_AAAA, NONE,
     (const char *const[]){SOA_RR, NULL}, DNS_REPLY_FINAL, DNSC_OK, 120, NONE},
    {"NODATA without SOA: not cacheable", LDNS_RCODE_NOERROR, false, "example.test. IN AAAA", "example.test",
     DNS_TYPE_AAAA, NONE, NONE, DNS_REPLY_FINAL, DNSC_OK, 0, NONE},
    {"NXDOMAIN at the end of a CNAME", LDNS_RCODE_NXDOMAIN, false, "www.example.test. IN A", "www.example.test",
     DNS_TYPE_A, (const char *const[]){"www.example.test. 30 IN CNAME gone.example.test.", NULL},
     (const char *const[]){SOA_RR, NULL}, DNS_REPLY_FINAL, DNSC_NXDOMAIN, 30, NONE},
    {"TC set", LDNS_RCODE_NOERROR, true, "example.test. IN TXT", "example.test", DNS_TYPE_TXT, NONE, NONE,
     DNS_REPLY_TRUNCATED, DNSC_OK, 0, NONE},
    {"SERVFAIL", LDNS_RCODE_SERVFAIL, false, "example.test. IN MX", "example.test", DNS_TYPE_MX, NONE, NONE,
     DNS_REPLY_FAIL, DNSC_OK, 0, NONE},
    {"REFUSED", LDNS_RCODE_REFUSED, false, "example.test. IN MX", "example.test", DNS_TYPE_MX, NONE, NONE,
     DNS_REPLY_FAIL, DNSC_OK, 0, NONE},
    {"FORMERR without a question", LDNS_RCODE_FORMERR, false, NULL, "example.test", DNS_TYPE_MX, NONE, NONE,
     DNS_REPLY_FAIL, DNSC_OK, 0, NONE},
    {"another question name", LDNS_RCODE_NOERROR, false, "evil.test. IN MX", "example.test", DNS_TYPE_MX,
     (const char *const[]){"evil.test. 300 IN MX 10 mx.evil.test.", NULL}, NONE, DNS_REPLY_MISMATCH, DNSC_OK, 0,
     NONE},
    {"another question type", LDNS_RCODE_NOERROR, false, "example.test. IN A", "example.test", DNS_TYPE_MX,
     (const char *const[]){"example.test. 300 IN A 192.0.2.1", NULL}, NONE, DNS_REPLY_MISMATCH, DNSC_OK, 0, NONE},
};

START_TEST(test_parse_table)
{
    const struct parse_case *pc = &parse_cases[_i];
    size_t len;
    uint8_t *wire = build_reply(&len, 0x4242, pc->rcode, pc->tc, pc->question, pc->answer, pc->authority);
    struct dns_result res;
    enum dns_reply_kind k = dns_reply_parse(wire, len, 0x4242, pc->qname, pc->qtype, &res);
    free(wire);
    ck_assert_msg(k == pc->want_kind, "%s: got %s, want %s", pc->what, dns_reply_kind_name(k),
                  dns_reply_kind_name(pc->want_kind));
    if (k != DNS_REPLY_FINAL) {
        ck_assert_uint_eq(res.n, 0);
        return;
    }
    ck_assert_msg(res.rcode == pc->want_rcode, "%s: rcode %d, want %d", pc->what, res.rcode, pc->want_rcode);
    ck_assert_msg(res.ttl == pc->want_ttl, "%s: ttl %u, want %u", pc->what, res.ttl, pc->want_ttl);
    size_t n = 0;
    while (pc->want[n])
        n++;
    ck_assert_msg(res.n == n, "%s: %zu records, want %zu", pc->what, res.n, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(strcmp(res.records[i], pc->want[i]) == 0, "%s: record %zu is '%s', want '%s'", pc->what, i,
                      res.records[i], pc->want[i]);
    dns_result_clear(&res);
}
END_TEST

START_TEST(test_parse_raw_mismatch)
{
    size_t len;
    const char *const ans[] = {"example.test. 300 IN A 192.0.2.1", NULL};
    uint8_t *wire = build_reply(&len, 7, LDNS_RCODE_NOERROR, false, "example.test. IN A", ans, NONE);
    struct dns_result res;
    ck_assert_int_eq(dns_reply_parse(wire, len, 8, "example.test", DNS_TYPE_A, &res), DNS_REPLY_MISMATCH);
    ck_assert_int_eq(dns_reply_parse(wire, 11, 7, "example.test", DNS_TYPE_A, &res), DNS_REPLY_MISMATCH);
    ck_assert_int_eq(dns_reply_parse(wire, len - 3, 7, "example.test", DNS_TYPE_A, &res), DNS_REPLY_FAIL);
    wire[2] &= 0x7f; /* a query, not a reply */
    ck_assert_int_eq(dns_reply_parse(wire, len, 7, "example.test", DNS_TYPE_A, &res), DNS_REPLY_MISMATCH);
    wire[2] |= 0x80;
    ck_assert_int_eq(dns_reply_parse(wire, len, 7, "example.test", DNS_TYPE_A, &res), DNS_REPLY_FINAL);
    dns_result_clear(&res);
    free(wire);
    uint8_t junk[64];
    memset(junk, 0xff, sizeof junk);
    junk[0] = 0, junk[1] = 7;
    ck_assert_int_eq(dns_reply_parse(junk, sizeof junk, 7, "example.test", DNS_TYPE_A, &res), DNS_REPLY_FAIL);
}
END_TEST

START_TEST(test_parse_record_cap)
{
    static char text[100][64];
    const char *ans[101];
    for (int i = 0; i < 100; i++) {
        snprintf(text[i], sizeof text[i], "example.test. 60 IN A 10.0.%d.%d", i / 200, i % 200);
        ans[i] = text[i];
    }
    ans[100] = NULL;
    size_t len;
    uint8_t *wire = build_reply(&len, 1, LDNS_RCODE_NOERROR, false, "example.test. IN A", ans, NONE);
    struct dns_result res;
    ck_assert_int_eq(dns_reply_parse(wire, len, 1, "example.test", DNS_TYPE_A, &res), DNS_REPLY_FINAL);
    free(wire);
    ck_assert_uint_eq(res.n, DNSC_RECORDS_MAX);
    ck_assert_str_eq(res.records[0], "10.0.0.0");
    ck_assert_str_eq(res.records[DNSC_RECORDS_MAX - 1], "10.0.0.63");
    dns_result_clear(&res);
}
END_TEST

/* ---- server lists ---- */

START_TEST(test_servers_parse)
{
    struct dns_server_list sl;
    char err[256], text[INET_STR_MAX];
    ck_assert(dns_servers_parse("", &sl, err, sizeof err));
    ck_assert_uint_eq(sl.n, 0);
    ck_assert(dns_servers_parse("192.0.2.1, 127.0.0.1:5353 [::1]:53", &sl, err, sizeof err));
    ck_assert_uint_eq(sl.n, 3);
    ck_assert_str_eq(inet_endpoint_str((struct sockaddr *)&sl.ep[0].ss, text, sizeof text), "192.0.2.1:53");
    ck_assert_str_eq(inet_endpoint_str((struct sockaddr *)&sl.ep[1].ss, text, sizeof text), "127.0.0.1:5353");
    ck_assert_str_eq(inet_endpoint_str((struct sockaddr *)&sl.ep[2].ss, text, sizeof text), "[::1]:53");
    ck_assert(!dns_servers_parse("192.0.2.1 dns.example.test", &sl, err, sizeof err));
    ck_assert_msg(strstr(err, "dns.example.test") != NULL, "error '%s' does not name the entry", err);
    ck_assert(!dns_servers_parse("1.1.1.1 1.1.1.2 1.1.1.3 1.1.1.4 1.1.1.5 1.1.1.6 1.1.1.7 1.1.1.8 1.1.1.9", &sl, err,
                                 sizeof err));
}
END_TEST

START_TEST(test_servers_resolv_conf)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/resolv.conf", unit_tmp);
    const char text[] = "# comment\nsearch example.test\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n"
                        "nameserver   2001:db8::53  \nnameserver junk\noptions ndots:1\n";
    unit_write_file(path, text, sizeof text - 1);
    struct dns_server_list sl;
    char err[256], out[INET_STR_MAX];
    ck_assert_msg(dns_servers_resolv_conf(path, &sl, err, sizeof err), "%s", err);
    ck_assert_uint_eq(sl.n, 2);
    ck_assert_str_eq(inet_endpoint_str((struct sockaddr *)&sl.ep[0].ss, out, sizeof out), "192.0.2.53:53");
    ck_assert_str_eq(inet_endpoint_str((struct sockaddr *)&sl.ep[1].ss, out, sizeof out), "[2001:db8::53]:53");
    unit_write_file(path, "search x\n", 9);
    ck_assert(!dns_servers_resolv_conf(path, &sl, err, sizeof err));
    snprintf(path, sizeof path, "%s/missing", unit_tmp);
    ck_assert(!dns_servers_resolv_conf(path, &sl, err, sizeof err));
}
END_TEST

/* ---- the resolver against an in-process UDP server ---- */

enum fake_mode { FAKE_ANSWER, FAKE_SILENT, FAKE_SERVFAIL };

struct fake {
    evutil_socket_t fd;
    struct event *ev;
    uint16_t port;
    enum fake_mode mode;
    int queries;
};

/* on_fake - answer A queries with 192.0.2.1, MX with "10 mx.example.test",
 * others with NODATA; or fail, or stay silent */
static void on_fake(evutil_socket_t fd, short what, void *arg)
{
    struct fake *f = arg;
    uint8_t buf[4096];
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (n <= 0)
        return;
    f->queries++;
    ldns_pkt *q = NULL;
    ck_assert_int_eq(ldns_wire2pkt(&q, buf, (size_t)n), LDNS_STATUS_OK);
    ck_assert(ldns_pkt_rd(q));
    ck_assert_msg(ldns_pkt_edns(q), "query without EDNS0");
    ck_assert_uint_eq(ldns_pkt_edns_udp_size(q), DNS_EDNS_UDP_SIZE);
    if (f->mode == FAKE_SILENT) {
        ldns_pkt_free(q);
        return;
    }
    const ldns_rr *qrr = ldns_rr_list_rr(ldns_pkt_question(q), 0);
    char *qname = ldns_rdf2str(ldns_rr_owner(qrr));
    bool mx = ldns_rr_get_type(qrr) == LDNS_RR_TYPE_MX, a = ldns_rr_get_type(qrr) == LDNS_RR_TYPE_A;
    char question[300], rr[400];
    snprintf(question, sizeof question, "%s IN %s", qname, mx ? "MX" : a ? "A" : "TXT");
    snprintf(rr, sizeof rr, mx ? "%s 60 IN MX 10 mx.example.test." : "%s 60 IN A 192.0.2.1", qname);
    free(qname);
    const char *const ans[] = {mx || a ? rr : NULL, NULL};
    size_t len;
    uint8_t *wire = build_reply(&len, ldns_pkt_id(q), f->mode == FAKE_SERVFAIL ? LDNS_RCODE_SERVFAIL : LDNS_RCODE_NOERROR,
                                false, question, f->mode == FAKE_SERVFAIL ? NONE : ans, NONE);
    ldns_pkt_free(q);
    ck_assert_int_eq(sendto(fd, wire, len, 0, (struct sockaddr *)&from, fl), (ssize_t)len);
    free(wire);
}

static struct event_base *base;
static struct fake fake;
static struct event *guard;

/* loopback_port - bind a UDP socket on 127.0.0.1:0 */
static evutil_socket_t loopback_udp(uint16_t *port)
{
    evutil_socket_t fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t sl = sizeof sin;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static void on_guard(evutil_socket_t fd, short what, void *arg) { ck_abort_msg("event loop test took too long"); }

static void loop_setup(void)
{
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    memset(&fake, 0, sizeof fake);
    fake.fd = loopback_udp(&fake.port);
    fake.ev = event_new(base, fake.fd, EV_READ | EV_PERSIST, on_fake, &fake);
    ck_assert_int_eq(event_add(fake.ev, NULL), 0);
    guard = evtimer_new(base, on_guard, NULL);
    struct timeval tv = {5, 0};
    evtimer_add(guard, &tv);
}

static void loop_teardown(void)
{
    event_free(guard);
    event_free(fake.ev);
    evutil_closesocket(fake.fd);
    event_base_free(base);
}

/* servers - a list of "127.0.0.1:PORT" for the given ports */
static struct dns_server_list servers(int n, const uint16_t *ports)
{
    char list[256] = "", err[256];
    size_t len = 0;
    for (int i = 0; i < n; i++)
        ck_assert(str_append(list, sizeof list, &len, "127.0.0.1:%u ", ports[i]));
    struct dns_server_list sl;
    ck_assert_msg(dns_servers_parse(list, &sl, err, sizeof err), "%s", err);
    return sl;
}

/* outstanding - callbacks still expected; the loop stops at 0 */
static int outstanding;

struct got {
    int calls;
    enum dnsc_rcode rcode;
    size_t n;
    char first[64];
};

static void on_answer(void *arg, const struct dnsc_answer *a)
{
    struct got *g = arg;
    g->calls++;
    g->rcode = a->rcode;
    g->n = a->n;
    str_copy(g->first, sizeof g->first, a->n ? a->records[0] : "");
    if (--outstanding == 0)
        event_base_loopexit(base, NULL);
}

static const struct dns_resolver_opts fast = {.try_timeout_ms = 100, .deadline_ms = 1500};

START_TEST(test_resolver_answer_and_cache)
{
    struct dns_server_list sl = servers(1, &fake.port);
    struct dns_cache *c = new_cache(10, 1 << 20);
    struct dns_resolver *r = dns_resolver_new(base, &sl, c, &fast);
    struct got g = {0};
    outstanding = 1;
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "host.example.test", DNS_TYPE_A, on_answer, &g));
    ck_assert_int_eq(g.calls, 0); /* never from inside the lookup */
    event_base_dispatch(base);
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(g.rcode, DNSC_OK);
    ck_assert_str_eq(g.first, "192.0.2.1");
    struct dnsc_answer a;
    ck_assert(dns_cache_get(c, "host.example.test", DNS_TYPE_A, &a));
    ck_assert_uint_eq(a.ttl, 60);
    dns_resolver_free(r);
    dns_cache_free(c);
}
END_TEST

START_TEST(test_resolver_collapse)
{
    struct dns_server_list sl = servers(1, &fake.port);
    struct dns_resolver *r = dns_resolver_new(base, &sl, NULL, &fast);
    struct got g = {0}, other = {0};
    outstanding = 6;
    for (int i = 0; i < 5; i++)
        ck_assert_ptr_nonnull(dns_resolver_lookup(r, "same.example.test", DNS_TYPE_A, on_answer, &g));
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "same.example.test", DNS_TYPE_MX, on_answer, &other));
    event_base_dispatch(base);
    ck_assert_int_eq(g.calls, 5);
    ck_assert_int_eq(g.rcode, DNSC_OK);
    ck_assert_str_eq(g.first, "192.0.2.1");
    ck_assert_int_eq(other.calls, 1);
    ck_assert_str_eq(other.first, "10 mx.example.test");
    ck_assert_msg(fake.queries == 2, "%d upstream queries, want 2 (A collapsed, MX separate)", fake.queries);
    struct dns_resolver_stats st;
    dns_resolver_get_stats(r, &st);
    ck_assert_uint_eq(st.collapsed, 4);
    ck_assert_uint_eq(st.upstream, 2);
    dns_resolver_free(r);
}
END_TEST

START_TEST(test_resolver_timeout)
{
    fake.mode = FAKE_SILENT;
    struct dns_server_list sl = servers(1, &fake.port);
    struct dns_resolver *r = dns_resolver_new(base, &sl, NULL, &fast);
    struct got g = {0};
    outstanding = 3;
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_nonnull(dns_resolver_lookup(r, "slow.example.test", DNS_TYPE_MX, on_answer, &g));
    event_base_dispatch(base);
    ck_assert_int_eq(g.calls, 3);
    ck_assert_int_eq(g.rcode, DNSC_TIMEOUT);
    ck_assert_int_eq(fake.queries, DNS_TRY_ROUNDS);
    dns_resolver_free(r);
}
END_TEST

START_TEST(test_resolver_deadline)
{
    fake.mode = FAKE_SILENT;
    struct dns_server_list sl = servers(1, &fake.port);
    struct dns_resolver_opts o = {.try_timeout_ms = 1000, .deadline_ms = 200};
    struct dns_resolver *r = dns_resolver_new(base, &sl, NULL, &o);
    struct got g = {0};
    outstanding = 1;
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "slow.example.test", DNS_TYPE_MX, on_answer, &g));
    event_base_dispatch(base);
    ck_assert_int_eq(g.rcode, DNSC_TIMEOUT);
    ck_assert_int_eq(fake.queries, 1);
    dns_resolver_free(r);
}
END_TEST

START_TEST(test_resolver_dead_first)
{
    uint16_t dead;
    evutil_closesocket(loopback_udp(&dead)); /* nothing listens there now: ICMP unreachable */
    uint16_t ports[2] = {dead, fake.port};
    struct dns_server_list sl = servers(2, ports);
    struct dns_resolver *r = dns_resolver_new(base, &sl, NULL, &fast);
    struct got g = {0};
    outstanding = 1;
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "a.example.test", DNS_TYPE_A, on_answer, &g));
    event_base_dispatch(base);
    ck_assert_int_eq(g.rcode, DNSC_OK);
    struct dns_resolver_stats st;
    dns_resolver_get_stats(r, &st);
    ck_assert_uint_eq(st.udp_sent, 2);
    /* The server that answered is asked first from now on. */
    g = (struct got){0};
    outstanding = 1;
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "b.example.test", DNS_TYPE_A, on_answer, &g));
    event_base_dispatch(base);
    ck_assert_int_eq(g.rcode, DNSC_OK);
    dns_resolver_get_stats(r, &st);
    ck_assert_uint_eq(st.udp_sent, 3);
    ck_assert_int_eq(fake.queries, 2);
    dns_resolver_free(r);
}
END_TEST

START_TEST(test_resolver_servfail)
{
    fake.mode = FAKE_SERVFAIL;
    struct dns_server_list sl = servers(1, &fake.port);
    struct dns_cache *c = new_cache(10, 1 << 20);
    struct dns_resolver *r = dns_resolver_new(base, &sl, c, &fast);
    struct got g = {0};
    outstanding = 1;
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "broken.example.test", DNS_TYPE_A, on_answer, &g));
    event_base_dispatch(base);
    ck_assert_int_eq(g.rcode, DNSC_SERVFAIL);
    ck_assert_int_eq(fake.queries, DNS_TRY_ROUNDS);
    struct dnsc_answer a;
    ck_assert(!dns_cache_get(c, "broken.example.test", DNS_TYPE_A, &a));
    dns_resolver_free(r);
    dns_cache_free(c);
}
END_TEST

START_TEST(test_resolver_no_servers)
{
    struct dns_server_list sl = {.n = 0};
    struct dns_resolver *r = dns_resolver_new(base, &sl, NULL, &fast);
    struct got g = {0};
    outstanding = 1;
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "x.example.test", DNS_TYPE_A, on_answer, &g));
    event_base_dispatch(base);
    ck_assert_int_eq(g.rcode, DNSC_SERVFAIL);
    dns_resolver_free(r);
}
END_TEST

START_TEST(test_resolver_cancel)
{
    struct dns_server_list sl = servers(1, &fake.port);
    struct dns_cache *c = new_cache(10, 1 << 20);
    struct dns_resolver *r = dns_resolver_new(base, &sl, c, &fast);
    struct got gone = {0}, kept = {0};
    outstanding = 1;
    struct dns_waiter *w = dns_resolver_lookup(r, "c.example.test", DNS_TYPE_A, on_answer, &gone);
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "c.example.test", DNS_TYPE_A, on_answer, &kept));
    dns_resolver_cancel(r, w);
    event_base_dispatch(base);
    ck_assert_int_eq(gone.calls, 0);
    ck_assert_int_eq(kept.calls, 1);
    /* A query whose every waiter left still fills the cache. */
    w = dns_resolver_lookup(r, "d.example.test", DNS_TYPE_A, on_answer, &gone);
    dns_resolver_cancel(r, w);
    struct timeval tv = {0, 300000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    ck_assert_int_eq(gone.calls, 0);
    struct dnsc_answer a;
    ck_assert(dns_cache_get(c, "d.example.test", DNS_TYPE_A, &a));
    dns_resolver_free(r);
    dns_cache_free(c);
}
END_TEST

START_TEST(test_resolver_bounds_and_fail_all)
{
    fake.mode = FAKE_SILENT;
    struct dns_server_list sl = servers(1, &fake.port);
    struct dns_resolver_opts o = {.try_timeout_ms = 1000, .deadline_ms = 3000, .max_pending = 2};
    struct dns_resolver *r = dns_resolver_new(base, &sl, NULL, &o);
    struct got g = {0};
    outstanding = 3;
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "1.example.test", DNS_TYPE_A, on_answer, &g));
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "2.example.test", DNS_TYPE_A, on_answer, &g));
    ck_assert_ptr_null(dns_resolver_lookup(r, "3.example.test", DNS_TYPE_A, on_answer, &g));
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "2.example.test", DNS_TYPE_A, on_answer, &g)); /* joins */
    dns_resolver_fail_all(r, DNSC_SERVFAIL);
    ck_assert_int_eq(g.calls, 3);
    ck_assert_int_eq(g.rcode, DNSC_SERVFAIL);
    struct dns_resolver_stats st;
    dns_resolver_get_stats(r, &st);
    ck_assert_uint_eq(st.pending, 0);
    /* and free with waiters parked calls nobody */
    struct got none = {0};
    outstanding = 1;
    ck_assert_ptr_nonnull(dns_resolver_lookup(r, "4.example.test", DNS_TYPE_A, on_answer, &none));
    dns_resolver_free(r);
    ck_assert_int_eq(none.calls, 0);
}
END_TEST


/* ---- lib/dnsc.c against a fake dnscache ---- */

struct fakedc {
    struct evconnlistener *l;
    struct bufferevent *bev;   /* the one client connection */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int connections, queries;
    bool hello_seen;
    bool drop_first_query;     /* close the connection on the first query, unanswered */
};

static struct fakedc fdc;

/* fdc_send - answer reqid with "192.0.2.1" and the name asked */
static void fdc_send(uint64_t reqid, const char *name)
{
    struct ipc_msg m;
    ck_assert(ipc_begin(&m, IPC_DNS_ANSWER) && ipc_put_u64(&m, reqid) && ipc_put_u64(&m, DNSC_OK) &&
              ipc_put_u64(&m, 60) && ipc_put_str(&m, "192.0.2.1") && ipc_put_str(&m, name) && ipc_finish(&m));
    ck_assert_int_eq(bufferevent_write(fdc.bev, m.data.data, m.data.len), 0);
    ipc_msg_free(&m);
}

static void fdc_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t len = evbuffer_get_length(in), used;
        const unsigned char *p = evbuffer_pullup(in, -1);
        struct ipc_msg m;
        int r = ipc_parse(p ? (const void *)p : "", len, &used, &m);
        ck_assert_int_ge(r, 0);
        if (r == 0)
            return;
        evbuffer_drain(in, used);
        uint64_t v, reqid;
        const char *name, *type;
        if (!fdc.hello_seen) {
            ck_assert_msg(m.type == IPC_HELLO, "first message is %s, want HELLO", ipc_type_name(m.type));
            ck_assert(ipc_get_u64(&m, &v) && v == IPC_VERSION);
            fdc.hello_seen = true;
            ipc_msg_free(&m);
            continue;
        }
        ck_assert_int_eq(m.type, IPC_DNS_QUERY);
        ck_assert(ipc_get_u64(&m, &reqid) && ipc_get_str(&m, &name) && ipc_get_str(&m, &type) && ipc_end(&m));
        ck_assert_str_eq(type, "A");
        fdc.queries++;
        if (fdc.drop_first_query) {
            fdc.drop_first_query = false;
            ipc_msg_free(&m);
            bufferevent_free(fdc.bev);
            fdc.bev = NULL;
            return;
        }
        fdc_send(reqid, name);
        ipc_msg_free(&m);
    }
}

static void fdc_event(struct bufferevent *bev, short what, void *arg)
{
    bufferevent_free(fdc.bev);
    fdc.bev = NULL;
}

static void fdc_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    ck_assert_msg(fdc.bev == NULL, "a second connection while the first is open");
    fdc.connections++;
    fdc.hello_seen = false;
    fdc.bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(fdc.bev, fdc_read, NULL, fdc_event, NULL);
    bufferevent_enable(fdc.bev, EV_READ | EV_WRITE);
    struct ipc_msg m;
    ck_assert(ipc_begin(&m, IPC_HELLO) && ipc_put_u64(&m, IPC_VERSION) && ipc_put_str(&m, "fake") &&
              ipc_put_u64(&m, 1) && ipc_finish(&m));
    bufferevent_write(fdc.bev, m.data.data, m.data.len);
    ipc_msg_free(&m);
}

/* fdc_listen - start listening at fdc.path */
static void fdc_listen(void)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert(str_copy(sun.sun_path, sizeof sun.sun_path, fdc.path));
    fdc.l = evconnlistener_new_bind(base, fdc_accept, NULL, LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&sun,
                                    (int)sizeof sun);
    ck_assert_ptr_nonnull(fdc.l);
}

static void fdc_setup(void)
{
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    memset(&fdc, 0, sizeof fdc);
    char dir[PATH_MAX];
    unit_subdir("dnsc", dir);
    ck_assert(str_fmt(fdc.path, sizeof fdc.path, "%s/dnscache", dir));
    guard = evtimer_new(base, on_guard, NULL);
    struct timeval tv = {5, 0};
    evtimer_add(guard, &tv);
}

static void fdc_teardown(void)
{
    if (fdc.bev)
        bufferevent_free(fdc.bev);
    if (fdc.l)
        evconnlistener_free(fdc.l);
    event_free(guard);
    event_base_free(base);
}

struct dgot {
    int calls;
    enum dnsc_rcode rcode;
    size_t n;
    char name[300];
    struct dnsc *free_me; /* dnsc_free from inside the callback */
};

static bool in_lookup;

static void on_dnsc(void *arg, const struct dnsc_answer *a)
{
    struct dgot *g = arg;
    ck_assert_msg(!in_lookup, "callback from inside dnsc_lookup");
    g->calls++;
    g->rcode = a->rcode;
    g->n = a->n;
    str_copy(g->name, sizeof g->name, a->n > 1 ? a->records[1] : "");
    if (g->free_me)
        dnsc_free(g->free_me);
    if (--outstanding == 0)
        event_base_loopexit(base, NULL);
}

static uint64_t lookup_a(struct dnsc *c, const char *name, struct dgot *g)
{
    in_lookup = true;
    uint64_t id = dnsc_lookup(c, name, "A", on_dnsc, g);
    in_lookup = false;
    return id;
}

START_TEST(test_dnsc_answers)
{
    fdc_listen();
    struct dnsc *c = dnsc_new(base, fdc.path);
    ck_assert_ptr_nonnull(c);
    struct dgot g[3] = {{0}};
    outstanding = 3;
    uint64_t id0 = lookup_a(c, "one.example.test", &g[0]);
    uint64_t id1 = lookup_a(c, "two.example.test", &g[1]);
    uint64_t id2 = lookup_a(c, "three.example.test", &g[2]);
    ck_assert(id0 > 0 && id1 > 0 && id2 > 0 && id0 != id1 && id1 != id2);
    event_base_dispatch(base);
    ck_assert_str_eq(g[0].name, "one.example.test");
    ck_assert_str_eq(g[1].name, "two.example.test");
    ck_assert_str_eq(g[2].name, "three.example.test");
    for (int i = 0; i < 3; i++)
        ck_assert(g[i].calls == 1 && g[i].rcode == DNSC_OK && g[i].n == 2);
    ck_assert_int_eq(fdc.connections, 1);
    dnsc_free(c);
}
END_TEST

START_TEST(test_dnsc_badname_and_cancel)
{
    fdc_listen();
    struct dnsc *c = dnsc_new(base, fdc.path);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    struct dgot bad = {0}, cancelled = {0}, cancelled_local = {0}, ok = {0};
    outstanding = 2;
    ck_assert_uint_gt(lookup_a(c, longname, &bad), 0);
    dnsc_cancel(c, lookup_a(c, longname, &cancelled_local));
    dnsc_cancel(c, lookup_a(c, "gone.example.test", &cancelled));
    dnsc_cancel(c, 12345); /* unknown: nothing happens */
    lookup_a(c, "ok.example.test", &ok);
    event_base_dispatch(base);
    ck_assert_int_eq(bad.calls, 1);
    ck_assert_int_eq(bad.rcode, DNSC_BADNAME);
    ck_assert_int_eq(ok.calls, 1);
    ck_assert_int_eq(cancelled.calls, 0);
    ck_assert_int_eq(cancelled_local.calls, 0);
    dnsc_free(c);
}
END_TEST

START_TEST(test_dnsc_reconnect_resend)
{
    fdc_listen();
    fdc.drop_first_query = true; /* the daemon "dies" holding the query */
    struct dnsc *c = dnsc_new(base, fdc.path);
    struct dgot g = {0};
    outstanding = 1;
    lookup_a(c, "again.example.test", &g);
    event_base_dispatch(base);
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(g.rcode, DNSC_OK);
    ck_assert_str_eq(g.name, "again.example.test");
    ck_assert_int_eq(fdc.connections, 2);
    ck_assert_int_eq(fdc.queries, 2);
    dnsc_free(c);
}
END_TEST

static void on_late_listen(evutil_socket_t fd, short what, void *arg) { fdc_listen(); }

START_TEST(test_dnsc_late_daemon)
{
    struct dnsc *c = dnsc_new(base, fdc.path); /* nothing listens yet */
    struct dgot g = {0};
    outstanding = 1;
    lookup_a(c, "late.example.test", &g);
    struct event *later = evtimer_new(base, on_late_listen, NULL);
    struct timeval tv = {0, 300000};
    evtimer_add(later, &tv);
    event_base_dispatch(base);
    event_free(later);
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(g.rcode, DNSC_OK);
    ck_assert_int_eq(fdc.connections, 1);
    dnsc_free(c);
}
END_TEST

START_TEST(test_dnsc_free_in_callback)
{
    fdc_listen();
    struct dnsc *c = dnsc_new(base, fdc.path);
    struct dgot first = {.free_me = c}, second = {0};
    outstanding = 1;
    lookup_a(c, "first.example.test", &first);
    lookup_a(c, "second.example.test", &second);
    event_base_dispatch(base);
    ck_assert_int_eq(first.calls, 1);
    /* Both answers may have arrived in one read: the second is never called. */
    struct timeval tv = {0, 200000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    ck_assert_int_eq(second.calls, 0);
    dnsc_free(NULL);
}
END_TEST

/* ---- suite ---- */

int main(void)
{
    log_open("check_dnscache", "breakwater", "-");
    Suite *s = suite_create("dnscache");
    TCase *tc = unit_tcase("keys", 10);
    tcase_add_loop_test(tc, test_name_normalize, 0, COUNT(names));
    tcase_add_test(tc, test_name_length);
    tcase_add_test(tc, test_types);
    suite_add_tcase(s, tc);

    tc = unit_tcase("cache", 10);
    tcase_add_test(tc, test_cache_ttl);
    tcase_add_test(tc, test_cache_negative);
    tcase_add_test(tc, test_cache_not_cached);
    tcase_add_test(tc, test_cache_evict_count);
    tcase_add_test(tc, test_cache_evict_bytes);
    tcase_add_test(tc, test_cache_many_records);
    suite_add_tcase(s, tc);

    tc = unit_tcase("parse", 10);
    tcase_add_loop_test(tc, test_parse_table, 0, COUNT(parse_cases));
    tcase_add_test(tc, test_parse_raw_mismatch);
    tcase_add_test(tc, test_parse_record_cap);
    tcase_add_test(tc, test_servers_parse);
    tcase_add_test(tc, test_servers_resolv_conf);
    suite_add_tcase(s, tc);

    tc = unit_tcase("resolver", 20);
    tcase_add_checked_fixture(tc, loop_setup, loop_teardown);
    tcase_add_test(tc, test_resolver_answer_and_cache);
    tcase_add_test(tc, test_resolver_collapse);
    tcase_add_test(tc, test_resolver_timeout);
    tcase_add_test(tc, test_resolver_deadline);
    tcase_add_test(tc, test_resolver_dead_first);
    tcase_add_test(tc, test_resolver_servfail);
    tcase_add_test(tc, test_resolver_no_servers);
    tcase_add_test(tc, test_resolver_cancel);
    tcase_add_test(tc, test_resolver_bounds_and_fail_all);
    suite_add_tcase(s, tc);

    tc = unit_tcase("dnsc", 20);
    tcase_add_checked_fixture(tc, fdc_setup, fdc_teardown);
    tcase_add_test(tc, test_dnsc_answers);
    tcase_add_test(tc, test_dnsc_badname_and_cancel);
    tcase_add_test(tc, test_dnsc_reconnect_resend);
    tcase_add_test(tc, test_dnsc_late_daemon);
    tcase_add_test(tc, test_dnsc_free_in_callback);
    suite_add_tcase(s, tc);

    Suite *suites[] = {s};
    return unit_run(suites, 1);
}
