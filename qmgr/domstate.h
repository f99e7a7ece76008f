/* domstate.h - the state machine of one (gateway, domain) queue (issue 4),
 * as a pure function over what a delivery attempt reported, so that it can
 * be tested alone: a domain goes down when an attempt reached none of its
 * hosts, and comes up when one answered; a refused connection just after
 * deliveries to the same domain is the receiver pushing back (too many
 * connections), not an outage; redirected mail and DNS trouble say nothing
 * about the domain's own hosts. Owns nothing. */
#ifndef BW_QMGR_DOMSTATE_H
#define BW_QMGR_DOMSTATE_H

#include <stdbool.h>
#include <stdint.h>

#define SITE_UNREACHABLE 0 /* DELIVERY_SITE: no host of the destination answered */
#define SITE_REACHED 1     /* a host answered (whatever it said then) */
#define SITE_UNKNOWN 2     /* no verdict (DNS trouble) */

enum site_verdict {
    SITE_NOTHING,  /* no change */
    SITE_PUSHBACK, /* the receiver is busy: fewer connections, the domain stays up */
    SITE_DOWN,     /* down (or still down): park, probe once per retry interval */
    SITE_UP        /* up again: release the parked mail */
};

/* site_judge - what a DELIVERY_SITE report means for a queue that is down
 * (or up), after failures unreachable attempts in a row, whose last
 * delivery was at last_success (seconds); busy_s: how recent a delivery
 * makes a refusal pushback. redirected: the job went to an operator's
 * host, not the domain's. */
enum site_verdict site_judge(bool redirected, bool down, int failures, unsigned reachable, int64_t now,
                             int64_t last_success, int64_t busy_s);

/* site_verdict_name - "nothing", "pushback", "down", "up" */
const char *site_verdict_name(enum site_verdict v);

#endif
