/* addr.c - RFC 5321 path parser. */
#include "addr.h"
#include "str.h"

#include <arpa/inet.h>
#include <string.h>


/* utf8_len - length of the well-formed UTF-8 sequence at s (RFC 3629), 0 if none */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c == 0xe0) n = 3, lo = 0xa0;
    else if (c >= 0xe1 && c <= 0xec) n = 3;
    else if (c == 0xed) n = 3, hi = 0x9f;
    else if (c >= 0xee && c <= 0xef) n = 3;
    else if (c == 0xf0) n = 4, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3) n = 4;
    else if (c == 0xf4) n = 4, hi = 0x8f;
    else return 0;
    if (n > avail) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return n;
}

/* utf8_ok - every 8-bit byte of s[0..n) is part of a well-formed sequence */
static bool utf8_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        if ((unsigned char)s[i] < 0x80) { i++; continue; }
        size_t l = utf8_len((const unsigned char *)s + i, n - i);
        if (l == 0) return false;
        i += l;
    }
    return true;
}

static bool has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return true;
    return false;
}

static bool is_atext(unsigned char c, bool utf8)
{
    if (c >= 0x80)
        return utf8;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool is_letdig(unsigned char c, bool utf8)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (utf8 && c >= 0x80);
}

/* addr_domain_valid - dot-separated labels or an address literal */
bool addr_domain_valid(const char *d, size_t n, bool utf8)
{
    if (n == 0 || n > ADDR_DOMAIN_MAX)
        return false;
    if (utf8 && !utf8_ok(d, n))
        return false;
    if (d[0] == '[') {
        if (d[n - 1] != ']' || n < 3)
            return false;
        char lit[ADDR_DOMAIN_MAX + 1];
        str_ncopy(lit, sizeof lit, d + 1, n - 2);
        unsigned char tmp[16];
        if (strncmp(lit, "IPv6:", 5) == 0)
            return inet_pton(AF_INET6, lit + 5, tmp) == 1;
        return inet_pton(AF_INET, lit, tmp) == 1;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-')
                return false;
            label = 0;
        } else if (is_letdig(c, utf8) || (c == '-' && label > 0)) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && d[n - 1] != '-';
}

/* parse_local - Dot-string or Quoted-string; returns bytes consumed or 0 */
static size_t parse_local(const char *s, bool utf8, enum addr_status *st)
{
    size_t i = 0;
    if (s[0] == '"') {
        for (i = 1; s[i] != '"'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\\') {
                unsigned char q = (unsigned char)s[++i];
                if (q < 32 || q > 126)
                    return *st = ADDR_ERR_LOCAL, 0;
            } else if (c >= 0x80) {
                if (!utf8)
                    return *st = ADDR_ERR_UTF8, 0;
            } else if (c < 32 || c > 126) {
                return *st = ADDR_ERR_LOCAL, 0; /* includes NUL: unterminated */
            }
        }
        return i + 1;
    }
    bool dot_ok = false;
    for (;; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (!dot_ok)
                return *st = ADDR_ERR_LOCAL, 0;
            dot_ok = false;
        } else if (is_atext(c, utf8)) {
            dot_ok = true;
        } else {
            if (c >= 0x80)
                return *st = ADDR_ERR_UTF8, 0;
            break;
        }
    }
    if (i == 0 || !dot_ok)
        return *st = ADDR_ERR_LOCAL, 0;
    return i;
}

/* addr_parse_path - the path grammar */
enum addr_status addr_parse_path(const char *s, unsigned flags, char out[ADDR_MAX + 1], const char **end)
{
    bool utf8 = (flags & ADDR_ALLOW_UTF8) != 0;
    out[0] = '\0';
    if (s[0] != '<')
        return ADDR_ERR_SYNTAX;
    const char *close = NULL;
    /* Find the closing '>' outside a quoted string. */
    bool quoted = false;
    for (const char *p = s + 1; *p; p++) {
        if (quoted && *p == '\\' && p[1]) {
            p++;
            continue;
        }
        if (*p == '"')
            quoted = !quoted;
        else if (*p == '>' && !quoted) {
            close = p;
            break;
        }
    }
    if (close == NULL)
        return ADDR_ERR_SYNTAX;
    if ((size_t)(close - s + 1) > ADDR_PATH_MAX)
        return ADDR_ERR_TOO_LONG;
    *end = close + 1;
    const char *p = s + 1;
    if (p == close) {
        if (!(flags & ADDR_ALLOW_NULL))
            return ADDR_ERR_NULL;
        return ADDR_OK;
    }
    if (*p == '@') { /* A-d-l source route: "@a,@b:" is accepted and ignored */
        const char *colon = memchr(p, ':', (size_t)(close - p));
        if (colon == NULL)
            return ADDR_ERR_SYNTAX;
        const char *r = p;
        while (r < colon) {
            if (*r != '@')
                return ADDR_ERR_SYNTAX;
            const char *comma = memchr(r, ',', (size_t)(colon - r));
            const char *stop = comma ? comma : colon;
            if (!addr_domain_valid(r + 1, (size_t)(stop - r - 1), utf8))
                return ADDR_ERR_DOMAIN;
            r = stop + (comma ? 1 : 0);
        }
        p = colon + 1;
    }
    enum addr_status st = ADDR_OK;
    char local[ADDR_PATH_MAX + 1];
    str_ncopy(local, sizeof local, p, (size_t)(close - p));
    size_t llen = parse_local(local, utf8, &st);
    if (llen == 0)
        return st;
    if (utf8 && !utf8_ok(local, llen))
        return ADDR_ERR_UTF8;
    if (llen > ADDR_LOCAL_MAX)
        return ADDR_ERR_TOO_LONG;
    const char *at = local + llen;
    if (*at == '\0') {
        if ((flags & ADDR_ALLOW_POSTMASTER) && str_case_eq(local, "postmaster")) {
            str_copy(out, ADDR_MAX + 1, local);
            return ADDR_OK;
        }
        return ADDR_ERR_DOMAIN;
    }
    if (*at != '@')
        return ADDR_ERR_LOCAL;
    if (!addr_domain_valid(at + 1, strlen(at + 1), utf8)) {
        if (strlen(at + 1) > ADDR_DOMAIN_MAX)
            return ADDR_ERR_TOO_LONG;
        return has_8bit(at + 1, strlen(at + 1)) ? ADDR_ERR_UTF8 : ADDR_ERR_DOMAIN;
    }
    if (!str_copy(out, ADDR_MAX + 1, local))
        return ADDR_ERR_TOO_LONG;
    return ADDR_OK;
}

const char *addr_status_text(enum addr_status st)
{
    switch (st) {
    case ADDR_OK: return "ok";
    case ADDR_ERR_SYNTAX: return "bad address syntax";
    case ADDR_ERR_LOCAL: return "bad local part";
    case ADDR_ERR_DOMAIN: return "bad domain";
    case ADDR_ERR_TOO_LONG: return "address too long";
    case ADDR_ERR_NULL: return "null address not allowed here";
    case ADDR_ERR_UTF8: return "8-bit address without SMTPUTF8";
    }
    return "bad address";
}

/* addr_domain - the part after the last '@' outside quotes */
const char *addr_domain(const char *mailbox)
{
    const char *at = strrchr(mailbox, '@');
    return at ? at + 1 : "";
}
