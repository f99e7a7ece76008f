/* addr.h - RFC 5321 mailbox and path syntax (section 4.1.2), with RFC 6531
 * (SMTPUTF8) when allowed.
 *
 * Owns nothing: parses caller text into caller buffers. Limits (RFC 5321
 * 4.5.3.1): local part 64 octets, domain 255, whole path 256 with brackets. */
#ifndef BW_ADDR_H
#define BW_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define ADDR_LOCAL_MAX 64
#define ADDR_DOMAIN_MAX 255
#define ADDR_PATH_MAX 256
#define ADDR_MAX (ADDR_LOCAL_MAX + 1 + ADDR_DOMAIN_MAX + 1)

enum addr_flags {
    ADDR_ALLOW_NULL = 1 << 0,        /* "<>" is valid (reverse-path) */
    ADDR_ALLOW_POSTMASTER = 1 << 1,  /* "<postmaster>" without a domain (forward-path) */
    ADDR_ALLOW_UTF8 = 1 << 2,        /* UTF-8 in local part and domain (SMTPUTF8) */
};

enum addr_status {
    ADDR_OK = 0,
    ADDR_ERR_SYNTAX,     /* not a path */
    ADDR_ERR_LOCAL,      /* bad local part */
    ADDR_ERR_DOMAIN,     /* bad domain */
    ADDR_ERR_TOO_LONG,   /* a length limit */
    ADDR_ERR_NULL,       /* "<>" where not allowed */
    ADDR_ERR_UTF8,       /* 8-bit bytes without SMTPUTF8 */
};

/* addr_parse_path - parse "<[@route:]local@domain>" at the start of s.
 * On ADDR_OK the mailbox (route dropped, "" for <>) is in out (ADDR_MAX+1
 * bytes) and *end points just past '>'. */
enum addr_status addr_parse_path(const char *s, unsigned flags, char out[ADDR_MAX + 1], const char **end);

/* addr_status_text - short reason for replies and logs. */
const char *addr_status_text(enum addr_status st);

/* addr_domain - pointer to the domain part of a parsed mailbox ("" if none). */
const char *addr_domain(const char *mailbox);

/* addr_domain_valid - RFC 5321 Domain (labels of letters, digits, hyphens) or
 * an address literal "[...]". */
bool addr_domain_valid(const char *d, size_t n, bool utf8);

#endif
