/* policy.h - relay control (DESIGN §5): who may send to which recipient.
 * A client in mynetworks may relay anywhere; anyone may send to a domain in
 * relay_domains ("example.org" exactly, ".example.org" its sub-domains).
 *
 * Owns the parsed network and domain lists of one configuration. */
#ifndef BW_SMTPD_POLICY_H
#define BW_SMTPD_POLICY_H

#include <stdbool.h>
#include <sys/socket.h>

#include "config.h"

struct policy;

/* policy_new - parse mynetworks and relay_domains of cfg; NULL on ENOMEM
 * (the values were validated by config_load). */
struct policy *policy_new(const struct config *cfg);

void policy_free(struct policy *p);

/* policy_client_trusted - client address in mynetworks */
bool policy_client_trusted(const struct policy *p, const struct sockaddr *client);

/* policy_relay_domain - domain (any case) listed in relay_domains */
bool policy_relay_domain(const struct policy *p, const char *domain);

#endif
