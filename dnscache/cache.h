/* cache.h - dnscache's answer cache: owns every cached answer (positive and
 * negative), the hash table and LRU list that index them, and the rules for
 * the (name, type) key.
 *
 * Keys are a normalized name (dns_name_normalize: lower case, no final dot,
 * LDH and '_' labels of 1..63 bytes, at most DNS_NAME_MAX bytes) and a query
 * type number (dns_type_parse). An entry holds one answer of lib/dnsc.h (rcode,
 * records as text) and the time it expires: now + ttl, ttl capped at
 * DNS_CACHE_TTL_MAX (positive) or DNS_CACHE_NEG_TTL_MAX (NXDOMAIN, NODATA).
 * Only DNSC_OK and DNSC_NXDOMAIN answers with ttl > 0 are cached; temporary
 * failures never are.
 *
 * Bounds: at most max_entries entries and max_bytes bytes of entries; a put
 * that would pass either evicts least-recently-used entries first. An
 * answer larger than max_bytes / 8 is not cached at all, so one huge TXT set
 * cannot flush the whole cache.
 *
 * Time comes from a clock function given at creation (milliseconds on any
 * monotonic scale), so tests can move time by hand.
 *
 * Errors: dns_cache_new returns NULL on ENOMEM; dns_cache_put returns false
 * when it did not store the answer (ENOMEM or not cacheable), which is never
 * an error for the caller. Nothing here panics. Single-threaded. */
#ifndef BW_DNSCACHE_CACHE_H
#define BW_DNSCACHE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dnsc.h"

#define DNS_NAME_MAX 253                 /* text form of the 255-octet wire limit (RFC 1035 2.3.4) */
#define DNS_LABEL_MAX 63
#define DNS_CACHE_TTL_MAX (7 * 86400)    /* positive answers: RFC 8767 suggests a 7-day cap */
#define DNS_CACHE_NEG_TTL_MAX (3 * 3600) /* negative answers: RFC 2308 section 5 suggests 1-3 hours */

/* Query types this cache and dnscache serve (RFC 1035 / 3596 numbers). */
#define DNS_TYPE_A 1
#define DNS_TYPE_PTR 12
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28

/* dns_name_normalize - check and normalize a domain name into out (lower
 * case, one final dot removed). False when in is empty, longer than
 * DNS_NAME_MAX, has an empty or too long label, or a byte other than
 * letters, digits, '-' and '_'. out is written only on success. */
bool dns_name_normalize(const char *in, char out[DNS_NAME_MAX + 1]);

/* dns_type_parse - "MX", "a", ... (any case) to its number; 0 if unknown. */
uint16_t dns_type_parse(const char *name);

/* dns_type_name - "MX" for 15, ...; "?" for a type not served. */
const char *dns_type_name(uint16_t type);

/* dns_key_hash - hash of a (normalized name, type) key (FNV-1a). */
uint64_t dns_key_hash(const char *name, uint16_t type);

/* dns_rcode_name - "OK", "NXDOMAIN", "SERVFAIL", "TIMEOUT", "BADNAME", "?". */
const char *dns_rcode_name(enum dnsc_rcode rcode);

/* dns_cache_clock - current time in milliseconds (monotonic). */
typedef uint64_t (*dns_cache_clock)(void *arg);

struct dns_cache;

struct dns_cache_stats {
    uint64_t hits, misses, expired, evicted, stored;
    size_t entries, bytes;
};

/* dns_cache_new - an empty cache; max_entries and max_bytes must be > 0.
 * now(now_arg) is called on every get and put. NULL on ENOMEM. */
struct dns_cache *dns_cache_new(size_t max_entries, size_t max_bytes, dns_cache_clock now, void *now_arg);

/* dns_cache_get - look up (name, type); name must be normalized. On a hit
 * fill out (rcode, ttl = whole seconds left, records) and return true. The
 * record pointers point into the cache and stay valid until the next call of
 * any dns_cache_* function on c. An expired entry is removed and is a miss. */
bool dns_cache_get(struct dns_cache *c, const char *name, uint16_t type, struct dnsc_answer *out);

/* dns_cache_put - store a copy of answer a for (name, type), replacing any
 * entry of that key. The ttl is capped as described above. False when not
 * stored (not cacheable, too large, or ENOMEM); a replaced entry is then
 * gone too. */
bool dns_cache_put(struct dns_cache *c, const char *name, uint16_t type, const struct dnsc_answer *a);

/* dns_cache_sweep - remove every expired entry; returns how many. */
size_t dns_cache_sweep(struct dns_cache *c);

/* dns_cache_flush - remove every entry. */
void dns_cache_flush(struct dns_cache *c);

/* dns_cache_get_stats - counters since creation plus the current size. */
void dns_cache_get_stats(const struct dns_cache *c, struct dns_cache_stats *out);

/* dns_cache_free - release everything; NULL is fine. */
void dns_cache_free(struct dns_cache *c);

#endif
