/* inet.h - socket addresses and networks: parsing "addr:port", "[v6]:port",
 * CIDR networks, matching a client against a network list, printing.
 *
 * Owns nothing beyond the caller's structures; all parsers are strict and
 * bounded (numeric addresses only: no DNS from here). */
#ifndef BW_INET_H
#define BW_INET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct inet_endpoint {
    struct sockaddr_storage ss;
    socklen_t len;
};

struct inet_net {
    int family;        /* AF_INET or AF_INET6 */
    uint8_t addr[16];  /* network bytes, host bits cleared */
    int prefix;        /* 0..32 or 0..128 */
};

#define INET_STR_MAX 64 /* "[ffff:...:ffff]:65535" fits */

/* inet_parse_endpoint - "1.2.3.4:25", "[::1]:25", "*:25" (all IPv4), or,
 * when default_port > 0, a bare address. False with a reason in err. */
bool inet_parse_endpoint(const char *s, int default_port, struct inet_endpoint *ep, char *err,
                         size_t errlen);

/* inet_parse_net - "10.0.0.0/8", "[::1]/128", "::1/128", "1.2.3.4" (a host).
 * False with a reason in err. */
bool inet_parse_net(const char *s, struct inet_net *net, char *err, size_t errlen);

/* inet_net_match - true when sa (IPv4, IPv6 or v4-mapped IPv6) is in net. */
bool inet_net_match(const struct inet_net *net, const struct sockaddr *sa);

/* inet_addr_str - numeric address without port into buf ("127.0.0.1", "::1"). */
const char *inet_addr_str(const struct sockaddr *sa, char *buf, size_t len);

/* inet_endpoint_str - "addr:port" or "[v6addr]:port" into buf. */
const char *inet_endpoint_str(const struct sockaddr *sa, char *buf, size_t len);

/* inet_port - port of sa in host order. */
int inet_port(const struct sockaddr *sa);

#endif
