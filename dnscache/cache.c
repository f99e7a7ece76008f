/* cache.c - the answer cache of dnscache: a fixed-size chained hash table
 * of entries, each one allocation (header, record pointers, key and record
 * texts), on an LRU list for eviction. See cache.h for the contract. */
#include "cache.h"
#include "str.h"

#include <stdlib.h>
#include <string.h>

struct cache_entry {
    struct cache_entry *hnext;           /* hash chain */
    struct cache_entry *older, *newer;   /* LRU list: head is the newest */
    uint64_t hash;
    uint64_t expires_ms;
    size_t bytes;                        /* whole allocation, for the byte bound */
    uint16_t type;
    enum dnsc_rcode rcode;
    size_t n;
    char *name;                          /* inside this allocation */
    char *records[];                     /* n pointers into this allocation */
};

struct dns_cache {
    struct cache_entry **buckets;
    size_t nbuckets;                     /* power of two */
    struct cache_entry *newest, *oldest;
    size_t entries, bytes;
    size_t max_entries, max_bytes;
    dns_cache_clock now;
    void *now_arg;
    struct dns_cache_stats stats;
};

/* ---- keys ---- */

/* dns_name_normalize - LDH/underscore labels, lower case, no final dot */
bool dns_name_normalize(const char *in, char out[DNS_NAME_MAX + 1])
{
    size_t len = strnlen(in, DNS_NAME_MAX + 2);
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_NAME_MAX)
        return false;
    char tmp[DNS_NAME_MAX + 1];
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_') {
            label++;
        } else if (ch >= 'A' && ch <= 'Z') {
            ch = (unsigned char)(ch - 'A' + 'a');
            label++;
        } else {
            return false;
        }
        if (label > DNS_LABEL_MAX)
            return false;
        tmp[i] = (char)ch;
    }
    if (label == 0)
        return false;
    tmp[len] = '\0';
    memcpy(out, tmp, len + 1);
    return true;
}

static const struct {
    const char *name;
    uint16_t type;
} dns_types[] = {
    {"A", DNS_TYPE_A}, {"AAAA", DNS_TYPE_AAAA}, {"MX", DNS_TYPE_MX}, {"PTR", DNS_TYPE_PTR}, {"TXT", DNS_TYPE_TXT},
};

/* dns_type_parse - type name to number */
uint16_t dns_type_parse(const char *name)
{
    for (size_t i = 0; i < sizeof dns_types / sizeof dns_types[0]; i++)
        if (str_case_eq(name, dns_types[i].name))
            return dns_types[i].type;
    return 0;
}

/* dns_type_name - type number to name */
const char *dns_type_name(uint16_t type)
{
    for (size_t i = 0; i < sizeof dns_types / sizeof dns_types[0]; i++)
        if (dns_types[i].type == type)
            return dns_types[i].name;
    return "?";
}

/* dns_rcode_name - rcode for people and logs */
const char *dns_rcode_name(enum dnsc_rcode rcode)
{
    switch (rcode) {
    case DNSC_OK: return "OK";
    case DNSC_NXDOMAIN: return "NXDOMAIN";
    case DNSC_SERVFAIL: return "SERVFAIL";
    case DNSC_TIMEOUT: return "TIMEOUT";
    case DNSC_BADNAME: return "BADNAME";
    }
    return "?";
}

/* dns_key_hash - FNV-1a over the name and the type */
uint64_t dns_key_hash(const char *name, uint16_t type)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h = (h ^ (type & 0xff)) * 1099511628211ULL;
    h = (h ^ (type >> 8)) * 1099511628211ULL;
    return h;
}

/* ---- the table ---- */

/* dns_cache_new - empty cache with its bucket array */
struct dns_cache *dns_cache_new(size_t max_entries, size_t max_bytes, dns_cache_clock now, void *now_arg)
{
    if (max_entries == 0 || max_bytes == 0 || now == NULL)
        return NULL;
    struct dns_cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    /* About one entry per bucket when full; the cap keeps the array small
     * even for an absurd max_entries. */
    size_t nb = 16;
    while (nb < max_entries && nb < ((size_t)1 << 20))
        nb <<= 1;
    c->buckets = calloc(nb, sizeof *c->buckets);
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    c->nbuckets = nb;
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    c->now = now;
    c->now_arg = now_arg;
    return c;
}

/* lru_unlink - take e off the LRU list */
static void lru_unlink(struct dns_cache *c, struct cache_entry *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    e->older = e->newer = NULL;
}

/* lru_push - make e the newest */
static void lru_push(struct dns_cache *c, struct cache_entry *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
}

/* entry_remove - unlink e from its chain and the LRU list, free it */
static void entry_remove(struct dns_cache *c, struct cache_entry *e)
{
    struct cache_entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp == e)
        *pp = e->hnext;
    lru_unlink(c, e);
    c->entries--;
    c->bytes -= e->bytes;
    free(e);
}

/* entry_find - the entry of a key, expired or not, or NULL */
static struct cache_entry *entry_find(struct dns_cache *c, const char *name, uint16_t type, uint64_t h)
{
    for (struct cache_entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->type == type && strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

/* dns_cache_get - hit, miss, or expired (removed) */
bool dns_cache_get(struct dns_cache *c, const char *name, uint16_t type, struct dnsc_answer *out)
{
    uint64_t h = dns_key_hash(name, type);
    struct cache_entry *e = entry_find(c, name, type, h);
    if (e == NULL) {
        c->stats.misses++;
        return false;
    }
    uint64_t now = c->now(c->now_arg);
    if (now >= e->expires_ms) {
        entry_remove(c, e);
        c->stats.expired++;
        c->stats.misses++;
        return false;
    }
    lru_unlink(c, e);
    lru_push(c, e);
    out->rcode = e->rcode;
    out->ttl = (uint32_t)((e->expires_ms - now) / 1000);
    out->n = e->n;
    for (size_t i = 0; i < e->n; i++)
        out->records[i] = e->records[i];
    c->stats.hits++;
    return true;
}

/* entry_size - bytes of one allocation for a, false on overflow */
static bool entry_size(const char *name, const struct dnsc_answer *a, size_t *out)
{
    size_t sz = sizeof(struct cache_entry), part;
    if (!size_mul(a->n, sizeof(char *), &part) || !size_add(sz, part, &sz) ||
        !size_add(sz, strlen(name) + 1, &sz))
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (!size_add(sz, strlen(a->records[i]) + 1, &sz))
            return false;
    *out = sz;
    return true;
}

/* dns_cache_put - copy a in, evicting the oldest entries to make room */
bool dns_cache_put(struct dns_cache *c, const char *name, uint16_t type, const struct dnsc_answer *a)
{
    uint64_t h = dns_key_hash(name, type);
    struct cache_entry *old = entry_find(c, name, type, h);
    if (old)
        entry_remove(c, old);
    if ((a->rcode != DNSC_OK && a->rcode != DNSC_NXDOMAIN) || a->ttl == 0 || a->n > DNSC_RECORDS_MAX)
        return false;
    size_t sz;
    if (!entry_size(name, a, &sz) || sz > c->max_bytes / 8)
        return false;
    while (c->oldest && (c->entries >= c->max_entries || c->bytes + sz > c->max_bytes)) {
        entry_remove(c, c->oldest);
        c->stats.evicted++;
    }
    struct cache_entry *e = malloc(sz);
    if (e == NULL)
        return false;
    memset(e, 0, sizeof *e);
    char *p = (char *)&e->records[a->n];
    size_t len = strlen(name) + 1;
    memcpy(p, name, len);
    e->name = p;
    p += len;
    for (size_t i = 0; i < a->n; i++) {
        len = strlen(a->records[i]) + 1;
        memcpy(p, a->records[i], len);
        e->records[i] = p;
        p += len;
    }
    bool negative = a->rcode == DNSC_NXDOMAIN || a->n == 0;
    uint32_t cap = negative ? DNS_CACHE_NEG_TTL_MAX : DNS_CACHE_TTL_MAX;
    uint32_t ttl = a->ttl < cap ? a->ttl : cap;
    e->hash = h;
    e->type = type;
    e->rcode = a->rcode;
    e->n = a->n;
    e->bytes = sz;
    e->expires_ms = c->now(c->now_arg) + (uint64_t)ttl * 1000;
    size_t b = h & (c->nbuckets - 1);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_push(c, e);
    c->entries++;
    c->bytes += sz;
    c->stats.stored++;
    return true;
}

/* dns_cache_sweep - drop what has expired */
size_t dns_cache_sweep(struct dns_cache *c)
{
    uint64_t now = c->now(c->now_arg);
    size_t n = 0;
    for (struct cache_entry *e = c->oldest, *next; e; e = next) {
        next = e->newer;
        if (now >= e->expires_ms) {
            entry_remove(c, e);
            n++;
        }
    }
    c->stats.expired += n;
    return n;
}

/* dns_cache_flush - drop everything */
void dns_cache_flush(struct dns_cache *c)
{
    while (c->oldest)
        entry_remove(c, c->oldest);
}

void dns_cache_get_stats(const struct dns_cache *c, struct dns_cache_stats *out)
{
    *out = c->stats;
    out->entries = c->entries;
    out->bytes = c->bytes;
}

/* dns_cache_free - everything goes */
void dns_cache_free(struct dns_cache *c)
{
    if (c == NULL)
        return;
    dns_cache_flush(c);
    free(c->buckets);
    free(c);
}
