/* neighbour.h - the good-neighbour concurrency controller of one (gateway,
 * domain) queue (issue 5): how many connections (jobs in flight) the domain
 * gets. It measures the aggregate delivered data rate per window and keeps
 * adding connections only while each addition raises that rate: doubling at
 * first (slow start), then one at a time; when the rate flattens it drops the
 * newest connections and holds; after a hold it tries one connection fewer
 * (kept when the rate stays within 5%) and then one more, and it backs
 * off at once on throttling replies (421, 4.7.x) or connection errors.
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
    int64_t hold_until;
    bool trim_next;         /* the next probe after a hold goes down, not up */
    char reason[160];
};

/* gn_init - enabled false: a fixed limit of max (good_neighbor=no). */
void gn_init(struct gn *g, bool enabled, int max, int64_t now);

/* gn_set_max - new max_connections / good_neighbor after a reload. */
void gn_configure(struct gn *g, bool enabled, int max, int64_t now);

/* gn_restart - slow start again from GN_START (a domain came back up). */
void gn_restart(struct gn *g, int64_t now);

/* gn_delivered - bytes of a message delivered now. */
void gn_delivered(struct gn *g, uint64_t bytes);

/* gn_tick - call at least once per window with whether the domain had more
 * ready work than the limit allowed; closes windows and adapts the limit. */
void gn_tick(struct gn *g, int64_t now, bool backlogged);

/* gn_throttled - the receiver pushed back (421, 4.7.x, too many
 * connections) or a connection failed: back off now and hold. */
void gn_throttled(struct gn *g, int64_t now, const char *why);

/* gn_phase_name - "slow-start", "additive", "hold", "fixed" */
const char *gn_phase_name(enum gn_phase p);

#endif
