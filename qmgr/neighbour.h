/* neighbour.h - the good-neighbour concurrency controller of one (gateway,
 * domain) queue (issue 5): how many connections (jobs in flight) the domain
 * gets. It measures the aggregate delivered data rate per window and keeps
 * adding connections only while each addition raises that rate: doubling at
 * first (slow start, while the new connections each carry at least half of
 * what the old ones did), then one at a time; when the rate flattens it drops
 * the newest connections and holds; after a hold it tries one connection
 * fewer (kept when the rate stays within 5%) and then one more. The first
 * window at a new limit is not measured (new connections are still opening,
 * closing ones still finishing).
 *
 * Throttling replies (421, 4.7.x, "too many connections") and refused
 * connections are AIMD with a remembered ceiling; each one backs off at once
 * and holds for GN_HOLD_MS. A throttle at concurrency N, one step up from a
 * limit that worked, sets a ceiling of N-1 (the connections that were
 * working) and drops to it. After a bigger step (a slow-start doubling from
 * M) it drops to M, and after the hold searches up one at a time, never to N
 * again; the throttle that search meets sets the ceiling. Nothing probes
 * above a ceiling for GN_CEILING_HOLD_MS; then it rises by one every
 * GN_CEILING_DECAY_MS until it is gone, so a receiver that raised its limit
 * is found again (finding the same ceiling again doubles the hold, up to
 * GN_CEILING_HOLD_MAX_MS). A throttle at or under the ceiling, at a limit
 * that had worked, lowers the ceiling by one; a second one within
 * GN_REPEAT_MS halves the limit, which climbs back after the hold. Throttles
 * within GN_BURST_MS of the first are one event: the other connections
 * opened at the old limit, and the several reports (site, recipients) of
 * one refused connection.
 *
 * A pure state machine over a caller-given clock (milliseconds), so it can be
 * tested with a simulated receiver. Owns nothing. */
#ifndef BW_QMGR_NEIGHBOUR_H
#define BW_QMGR_NEIGHBOUR_H

#include <stdbool.h>
#include <stdint.h>

#define GN_WINDOW_MS 1000     /* one rate measurement */
#define GN_GAIN_MIN 0.10      /* a new connection must add at least 10% */
#define GN_HOLD_MS 30000      /* after flattening, hold this long before probing up */
#define GN_START 2            /* connections before anything is known */
#define GN_BURST_MS 2000      /* throttles this close together are one event */
#define GN_CEILING_HOLD_MS 300000      /* no probing above a throttle ceiling for 5 min */
#define GN_CEILING_HOLD_MAX_MS 1800000 /* the hold doubles up to 30 min when re-found */
#define GN_CEILING_DECAY_MS 60000      /* after the hold, the ceiling rises one a minute */
#define GN_REPEAT_MS 10000    /* a second throttle under the ceiling this soon halves */

enum gn_phase { GN_SLOW_START, GN_ADDITIVE, GN_HOLD, GN_TRIM, GN_FIXED, GN_PHASE_MAX };

struct gn {
    enum gn_phase phase;
    int limit;              /* current concurrency */
    int max;                /* max_connections */
    int prev_limit;         /* the limit the previous window ran at */
    double prev_rate;       /* bytes/s at prev_limit (0: none yet) */
    double rate;            /* bytes/s of the last full window */
    int64_t window_start;
    uint64_t window_bytes;
    bool window_busy;       /* the queue had more work than connections */
    bool window_throttled;  /* a throttle came during this window */
    bool settling;          /* the limit changed: the next window is not measured */
    int64_t hold_until;
    bool trim_next;         /* the next probe after a hold goes down, not up */
    int clean_limit;        /* the limit of the last window without a throttle (0: none) */
    int ceiling;            /* throttle ceiling: never above it (0: none) */
    int ceiling_found;      /* the last ceiling a throttle set (to see it found again) */
    int64_t ceiling_until;  /* the hold on the ceiling ends; then it decays */
    int64_t ceiling_hold;   /* length of the current hold */
    int strikes;            /* throttles under the ceiling in quick succession */
    int64_t last_strike;
    int64_t burst_until;    /* throttles before this belong to the last event */
    char reason[160];
};

/* gn_init - enabled false: a fixed limit of max (good_neighbor=no). */
void gn_init(struct gn *g, bool enabled, int max, int64_t now);

/* gn_configure - new max_connections / good_neighbor after a reload; turning
 * it on starts afresh (no ceiling), a new max keeps what was learnt. */
void gn_configure(struct gn *g, bool enabled, int max, int64_t now);

/* gn_restart - slow start again from GN_START (a domain came back up); a
 * throttle ceiling still holds (it is the receiver's policy, not its state). */
void gn_restart(struct gn *g, int64_t now);

/* gn_delivered - bytes of a message delivered now. */
void gn_delivered(struct gn *g, uint64_t bytes);

/* gn_tick - call at least once per window with whether the domain had more
 * ready work than the limit allowed; closes windows, decays the ceiling and
 * adapts the limit. */
void gn_tick(struct gn *g, int64_t now, bool backlogged);

/* gn_throttled - the receiver pushed back (421, 4.7.x, too many
 * connections) or a connection failed: back off now to a ceiling and hold
 * (GN_HOLD); g->reason is "backed off from A to B connections: WHY [NOTE]"
 * with at most 96 characters of why and the ceiling in NOTE (see the top of
 * this file). May be called several times for one refused connection. No
 * effect when good_neighbor=no. */
void gn_throttled(struct gn *g, int64_t now, const char *why);

/* gn_phase_name - "slow-start", "additive", "hold", "trim", "fixed" */
const char *gn_phase_name(enum gn_phase p);

#endif
