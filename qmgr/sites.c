/* sites.c - the mail exchangers of each (gateway, domain) as the delivery
 * agents report them (DELIVERY_MX), kept for `mailctl domain show`. Owns the
 * site table: a hash of (gateway, domain) with the reported records stored
 * as validated text, plus an age list for the SITES_MAX bound. */
#include "sites.h"
#include "log.h"
#include "str.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SITES_BUCKETS 4096
#define SITE_NAME_MAX 255     /* a domain name, or an address literal */
#define AVOID_S_MAX 86400

struct site {
    char *vg, *domain;
    char *records;     /* n records, each NUL-terminated, back to back */
    size_t n;
    time_t updated;    /* when the report arrived: the avoid times count from here */
    struct site *hnext;
    struct site *older, *newer;
};

static struct site *buckets[SITES_BUCKETS];
static struct site *oldest, *newest;
static size_t n_sites;

/* One record, parsed. */
struct mx_addr {
    char text[INET6_ADDRSTRLEN];
    unsigned avoid_s;  /* 0: not avoided */
};

struct mx_view {
    unsigned pref;
    char host[SITE_NAME_MAX + 1];
    size_t n;
    struct mx_addr a[SITES_ADDRS_MAX];
};

/* site_hash - of the gateway and the domain, ignoring case */
static unsigned site_hash(const char *vg, const char *domain)
{
    unsigned h = 2166136261u;
    for (const char *s = vg; *s; s++)
        h = (h ^ (unsigned char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s)) * 16777619u;
    h = (h ^ ' ') * 16777619u;
    for (const char *s = domain; *s; s++)
        h = (h ^ (unsigned char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s)) * 16777619u;
    return h % SITES_BUCKETS;
}

/* parse_uint - a decimal number of len digits (no sign) in [min, max] */
static bool parse_uint(const char *s, size_t len, unsigned min, unsigned max, unsigned *out)
{
    if (len == 0 || len > 6)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* host_ok - a host name or numeric address as a route gives it */
static bool host_ok(const char *s, size_t len)
{
    if (len == 0 || len > SITE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
              c == '_' || c == ':'))
            return false;
    }
    return true;
}

/* record_parse - "PREF HOST [ADDR[/S]]..." with single spaces; false when
 * malformed or beyond the bounds */
static bool record_parse(const char *rec, struct mx_view *v)
{
    const char *p = rec;
    size_t k = 0;
    v->n = 0;
    for (;;) {
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (k == 0) {
            if (!parse_uint(p, len, 0, 65535, &v->pref))
                return false;
        } else if (k == 1) {
            if (!host_ok(p, len) || !str_ncopy(v->host, sizeof v->host, p, len))
                return false;
        } else {
            if (v->n == SITES_ADDRS_MAX)
                return false;
            struct mx_addr *a = &v->a[v->n];
            const char *slash = memchr(p, '/', len);
            size_t alen = slash ? (size_t)(slash - p) : len;
            unsigned char bin[sizeof(struct in6_addr)];
            if (alen == 0 || !str_ncopy(a->text, sizeof a->text, p, alen) ||
                (inet_pton(AF_INET, a->text, bin) != 1 && inet_pton(AF_INET6, a->text, bin) != 1))
                return false;
            a->avoid_s = 0;
            if (slash && !parse_uint(slash + 1, len - alen - 1, 1, AVOID_S_MAX, &a->avoid_s))
                return false;
            v->n++;
        }
        k++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return k >= 2;
}

/* name_ok - a gateway or domain name fit to be a key */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SITE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] == 0x7f)
            return false;
    return true;
}

static struct site *site_find(const char *vg, const char *domain)
{
    for (struct site *s = buckets[site_hash(vg, domain)]; s; s = s->hnext)
        if (str_case_eq(s->domain, domain) && str_case_eq(s->vg, vg))
            return s;
    return NULL;
}

static void age_unlink(struct site *s)
{
    if (s->older)
        s->older->newer = s->newer;
    else
        oldest = s->newer;
    if (s->newer)
        s->newer->older = s->older;
    else
        newest = s->older;
    s->older = s->newer = NULL;
}

static void age_push_newest(struct site *s)
{
    s->older = newest;
    s->newer = NULL;
    if (newest)
        newest->newer = s;
    else
        oldest = s;
    newest = s;
}

/* site_remove - unlink from both lists and free */
static void site_remove(struct site *s)
{
    struct site **pp = &buckets[site_hash(s->vg, s->domain)];
    while (*pp && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = s->hnext;
    age_unlink(s);
    n_sites--;
    free(s->vg);
    free(s->domain);
    free(s->records);
    free(s);
}

/* site_new - an empty site in both lists (the oldest goes when full) */
static struct site *site_new(const char *vg, const char *domain)
{
    struct site *s = calloc(1, sizeof *s);
    if (s == NULL || (s->vg = str_dup(vg)) == NULL || (s->domain = str_dup(domain)) == NULL) {
        if (s)
            free(s->vg);
        free(s);
        return NULL;
    }
    if (n_sites >= SITES_MAX && oldest)
        site_remove(oldest);
    unsigned h = site_hash(vg, domain);
    s->hnext = buckets[h];
    buckets[h] = s;
    age_push_newest(s);
    n_sites++;
    return s;
}

bool qmgr_sites_update(struct ipc_msg *m)
{
    const char *vg, *domain, *recs[SITES_HOSTS_MAX];
    size_t n = 0, total = 0;
    if (!ipc_get_str(m, &vg) || !ipc_get_str(m, &domain))
        return false;
    while (ipc_more(m)) {
        struct mx_view v;
        if (n == SITES_HOSTS_MAX || !ipc_get_str(m, &recs[n]) || !record_parse(recs[n], &v))
            return false;
        total += strlen(recs[n]) + 1; /* bounded by the frame size */
        n++;
    }
    if (!ipc_end(m) || !name_ok(vg) || !name_ok(domain))
        return false;
    char *copy = malloc(total ? total : 1);
    struct site *s = copy ? site_find(vg, domain) : NULL;
    if (copy && s == NULL)
        s = site_new(vg, domain);
    if (s == NULL) {
        free(copy);
        log_warn("out of memory for the mail exchangers of %s (vg %s)", domain, vg);
        return true;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(recs[i]) + 1;
        memcpy(copy + off, recs[i], len);
        off += len;
    }
    free(s->records);
    s->records = copy;
    s->n = n;
    s->updated = time(NULL);
    age_unlink(s);
    age_push_newest(s);
    return true;
}

/* still_avoided - the agent avoids this address now */
static bool still_avoided(const struct site *s, const struct mx_addr *a, time_t now)
{
    return a->avoid_s > 0 && now < s->updated + (time_t)a->avoid_s;
}

bool qmgr_sites_json(const char *vg, const char *domain, struct buf *out)
{
    const struct site *s = site_find(vg, domain);
    time_t now = time(NULL);
    bool ok = buf_puts(out, "[");
    const char *p = s ? s->records : NULL;
    for (size_t i = 0; ok && s && i < s->n; i++, p += strlen(p) + 1) {
        struct mx_view v;
        if (!record_parse(p, &v))
            continue; /* cannot happen: validated on arrival */
        ok = buf_puts(out, i ? ", {\"host\": " : "{\"host\": ") && buf_json_str(out, v.host) &&
             buf_printf(out, ", \"preference\": %u, \"addresses\": [", v.pref);
        for (size_t k = 0; ok && k < v.n; k++)
            ok = buf_puts(out, k ? ", " : "") && buf_json_str(out, v.a[k].text);
        ok = ok && buf_puts(out, "], \"avoided\": [");
        size_t shown = 0;
        for (size_t k = 0; ok && k < v.n; k++)
            if (still_avoided(s, &v.a[k], now))
                ok = buf_puts(out, shown++ ? ", " : "") && buf_json_str(out, v.a[k].text);
        ok = ok && buf_puts(out, "]}");
    }
    return ok && buf_puts(out, "]");
}

bool qmgr_sites_text(const char *vg, const char *domain, struct buf *out)
{
    const struct site *s = site_find(vg, domain);
    if (s == NULL)
        return true;
    time_t now = time(NULL);
    bool ok = buf_puts(out, " mx=");
    const char *p = s->records;
    for (size_t i = 0; ok && i < s->n; i++, p += strlen(p) + 1) {
        struct mx_view v;
        if (!record_parse(p, &v))
            continue;
        ok = buf_printf(out, "%s%u:%s[", i ? "," : "", v.pref, v.host);
        for (size_t k = 0; ok && k < v.n; k++)
            ok = buf_printf(out, "%s%s%s", k ? "," : "", v.a[k].text,
                            still_avoided(s, &v.a[k], now) ? "(avoided)" : "");
        ok = ok && buf_puts(out, "]");
    }
    if (ok && s->n == 0)
        ok = buf_puts(out, "none");
    return ok;
}

void qmgr_sites_free(void)
{
    while (oldest)
        site_remove(oldest);
}
