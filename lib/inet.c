/* inet.c - socket address and network parsing, matching and printing. */
#include "inet.h"
#include "str.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* parse_port - decimal 1..65535 */
static bool parse_port(const char *s, int *port)
{
    int64_t v;
    if (!str_to_i64(s, 1, 65535, &v) || *s == '+' || *s == '-')
        return false;
    *port = (int)v;
    return true;
}

/* fill_endpoint - numeric address text + port into ep */
static bool fill_endpoint(const char *host, int port, struct inet_endpoint *ep)
{
    memset(ep, 0, sizeof *ep);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ep->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ep->ss;
    if (strcmp(host, "*") == 0 || inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        if (strcmp(host, "*") == 0)
            in4->sin_addr.s_addr = htonl(INADDR_ANY);
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        ep->len = sizeof *in4;
        return true;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        ep->len = sizeof *in6;
        return true;
    }
    return false;
}

/* inet_parse_endpoint - addr:port parser */
bool inet_parse_endpoint(const char *s, int default_port, struct inet_endpoint *ep, char *err,
                         size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *port_text = NULL;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL)
            return str_fmt(err, errlen, "'%s': missing ']'", s), false;
        if (!str_ncopy(host, sizeof host, s + 1, (size_t)(close - s - 1)))
            return str_fmt(err, errlen, "'%s': address too long", s), false;
        if (close[1] == ':')
            port_text = close + 2;
        else if (close[1] != '\0')
            return str_fmt(err, errlen, "'%s': junk after ']'", s), false;
        struct in6_addr tmp;
        if (inet_pton(AF_INET6, host, &tmp) != 1)
            return str_fmt(err, errlen, "'%s': not an IPv6 address", s), false;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon && strchr(s, ':') != colon)
            return str_fmt(err, errlen, "'%s': IPv6 addresses need brackets: [addr]:port", s), false;
        size_t hlen = colon ? (size_t)(colon - s) : strlen(s);
        if (!str_ncopy(host, sizeof host, s, hlen))
            return str_fmt(err, errlen, "'%s': address too long", s), false;
        if (colon)
            port_text = colon + 1;
    }
    int port = default_port;
    if (port_text != NULL) {
        if (!parse_port(port_text, &port))
            return str_fmt(err, errlen, "'%s': bad port number", s), false;
    } else if (default_port <= 0) {
        return str_fmt(err, errlen, "'%s': missing :port", s), false;
    }
    if (!fill_endpoint(host, port, ep))
        return str_fmt(err, errlen, "'%s': not a numeric IP address", s), false;
    return true;
}

/* inet_parse_net - CIDR parser */
bool inet_parse_net(const char *s, struct inet_net *net, char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    const char *h = s;
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
        h = s + 1;
        hlen -= 2;
    }
    if (!str_ncopy(host, sizeof host, h, hlen))
        return str_fmt(err, errlen, "'%s': address too long", s), false;
    memset(net, 0, sizeof *net);
    int maxbits;
    if (inet_pton(AF_INET, host, net->addr) == 1) {
        net->family = AF_INET;
        maxbits = 32;
    } else if (inet_pton(AF_INET6, host, net->addr) == 1) {
        net->family = AF_INET6;
        maxbits = 128;
    } else {
        return str_fmt(err, errlen, "'%s': not a network address", s), false;
    }
    net->prefix = maxbits;
    if (slash) {
        int64_t p;
        if (!str_to_i64(slash + 1, 0, maxbits, &p) || slash[1] == '+' || slash[1] == '-')
            return str_fmt(err, errlen, "'%s': bad prefix length", s), false;
        net->prefix = (int)p;
    }
    if (net->family == AF_INET6 && net->prefix >= 96 && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)net->addr)) {
        memmove(net->addr, net->addr + 12, 4);
        memset(net->addr + 4, 0, 12);
        net->family = AF_INET;
        net->prefix -= 96;
        maxbits = 32;
    }
    for (int bit = net->prefix; bit < maxbits; bit++)
        net->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return true;
}

/* inet_net_match - membership test */
bool inet_net_match(const struct inet_net *net, const struct sockaddr *sa)
{
    uint8_t bytes[16];
    int family;
    if (sa->sa_family == AF_INET) {
        memcpy(bytes, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            memcpy(bytes, a6->s6_addr + 12, 4);
            family = AF_INET;
        } else {
            memcpy(bytes, a6->s6_addr, 16);
            family = AF_INET6;
        }
    } else {
        return false;
    }
    if (family != net->family)
        return false;
    for (int bit = 0; bit < net->prefix; bit++) {
        uint8_t mask = (uint8_t)(0x80u >> (bit % 8));
        if ((bytes[bit / 8] & mask) != (net->addr[bit / 8] & mask))
            return false;
    }
    return true;
}

/* inet_addr_str - numeric address text */
const char *inet_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    const void *a = NULL;
    if (sa->sa_family == AF_INET)
        a = &((const struct sockaddr_in *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (a == NULL || inet_ntop(sa->sa_family, a, buf, (socklen_t)len) == NULL)
        str_copy(buf, len, "unknown");
    return buf;
}

/* inet_endpoint_str - address and port text */
const char *inet_endpoint_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char a[INET6_ADDRSTRLEN];
    inet_addr_str(sa, a, sizeof a);
    if (sa->sa_family == AF_INET6)
        str_fmt(buf, len, "[%s]:%d", a, inet_port(sa));
    else
        str_fmt(buf, len, "%s:%d", a, inet_port(sa));
    return buf;
}

/* inet_port - port number */
int inet_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}
