/* neighbour.c - good-neighbour concurrency control (see neighbour.h). */
#include "neighbour.h"
#include "str.h"

#include <string.h>

static const char *const phase_names[GN_PHASE_MAX] = {"slow-start", "additive", "hold", "trim", "fixed"};

#define GN_TRIM_LOSS 0.05 /* one connection fewer may cost at most 5% */

const char *gn_phase_name(enum gn_phase p) { return p < GN_PHASE_MAX ? phase_names[p] : "?"; }

static int clamp(int v, int max) { return v < 1 ? 1 : v > max ? max : v; }

void gn_init(struct gn *g, bool enabled, int max, int64_t now)
{
    memset(g, 0, sizeof *g);
    gn_configure(g, enabled, max, now);
}

void gn_configure(struct gn *g, bool enabled, int max, int64_t now)
{
    g->max = max < 1 ? 1 : max;
    if (!enabled) {
        g->phase = GN_FIXED;
        g->limit = g->max;
        str_fmt(g->reason, sizeof g->reason, "fixed at max_connections=%d (good_neighbor=no)", g->max);
        return;
    }
    if (g->phase == GN_FIXED || g->limit == 0) {
        g->phase = GN_SLOW_START;
        g->limit = clamp(GN_START, g->max);
        g->prev_rate = 0;
        g->window_start = now;
        g->window_bytes = 0;
        str_fmt(g->reason, sizeof g->reason, "starting at %d connections", g->limit);
    }
    g->limit = clamp(g->limit, g->max);
}

void gn_restart(struct gn *g, int64_t now)
{
    if (g->phase == GN_FIXED)
        return;
    g->phase = GN_SLOW_START;
    g->limit = clamp(GN_START, g->max);
    g->prev_rate = 0;
    g->prev_limit = 0;
    g->window_start = now;
    g->window_bytes = 0;
    g->window_busy = false;
    str_fmt(g->reason, sizeof g->reason, "restarting at %d connections (domain back up)", g->limit);
}

void gn_delivered(struct gn *g, uint64_t bytes) { g->window_bytes += bytes; }

void gn_tick(struct gn *g, int64_t now, bool backlogged)
{
    g->window_busy = g->window_busy || backlogged;
    if (now - g->window_start < GN_WINDOW_MS)
        return;
    double rate = (double)g->window_bytes * 1000.0 / (double)(now - g->window_start);
    bool busy = g->window_busy;
    g->window_start = now;
    g->window_bytes = 0;
    g->window_busy = false;
    g->rate = rate;
    if (g->phase == GN_FIXED)
        return;
    if (g->phase == GN_TRIM) {
        if (rate >= g->prev_rate * (1.0 - GN_TRIM_LOSS)) {
            str_fmt(g->reason, sizeof g->reason, "trimmed to %d connections: one fewer kept the rate (%.0f KB/s)",
                    g->limit, rate / 1024);
            g->trim_next = true;
        } else {
            g->limit = clamp(g->limit + 1, g->max);
            str_fmt(g->reason, sizeof g->reason, "holding at %d connections: one fewer lost %.0f%% rate", g->limit,
                    (1 - rate / g->prev_rate) * 100);
            g->trim_next = false;
        }
        g->phase = GN_HOLD;
        g->hold_until = now + GN_HOLD_MS;
        g->prev_limit = g->limit;
        return;
    }
    if (g->phase == GN_HOLD) {
        if (now < g->hold_until || !busy)
            return;
        if (g->trim_next && g->limit > 1) { /* fewest connections first: try one less */
            g->phase = GN_TRIM;
            g->prev_rate = rate;
            g->limit--;
            str_fmt(g->reason, sizeof g->reason, "trying %d connections (%.0f KB/s at %d)", g->limit, rate / 1024,
                    g->limit + 1);
            return;
        }
        g->trim_next = true;
        g->phase = GN_ADDITIVE; /* probe upward again from here */
        g->prev_rate = rate;
        g->prev_limit = g->limit;
        if (g->limit < g->max) {
            g->limit++;
            str_fmt(g->reason, sizeof g->reason, "probing up to %d connections (%.0f KB/s at %d)", g->limit,
                    rate / 1024, g->prev_limit);
        }
        return;
    }
    if (!busy)
        return; /* not enough demand to learn anything: keep the limit */
    if (g->prev_rate <= 0 || g->limit == g->prev_limit) {
        g->prev_rate = rate;
        g->prev_limit = g->limit;
    } else if (rate >= g->prev_rate * (1.0 + GN_GAIN_MIN)) {
        double gain = g->prev_rate > 0 ? (rate / g->prev_rate - 1) * 100 : 100;
        g->prev_rate = rate;
        g->prev_limit = g->limit;
        if (g->limit >= g->max) {
            str_fmt(g->reason, sizeof g->reason, "at max_connections=%d (+%.0f%% rate)", g->max, gain);
            return;
        }
        g->limit = clamp(g->phase == GN_SLOW_START ? g->limit * 2 : g->limit + 1, g->max);
        str_fmt(g->reason, sizeof g->reason, "raised to %d connections: the last ones added %.0f%% rate", g->limit,
                gain);
        return;
    } else {
        /* Flattened: the newest connections did not pay; drop them and hold. */
        double gain = (rate / g->prev_rate - 1) * 100;
        int from = g->limit;
        g->limit = clamp(g->prev_limit, g->max);
        g->phase = GN_HOLD;
        g->trim_next = true;
        g->hold_until = now + GN_HOLD_MS;
        str_fmt(g->reason, sizeof g->reason, "holding at %d connections: going to %d added only %.0f%% rate", g->limit,
                from, gain);
        g->prev_limit = g->limit;
        return;
    }
    if (g->limit < g->max) {
        g->limit = clamp(g->phase == GN_SLOW_START ? g->limit * 2 : g->limit + 1, g->max);
        str_fmt(g->reason, sizeof g->reason, "raised to %d connections (%.0f KB/s so far)", g->limit, rate / 1024);
    }
}

void gn_throttled(struct gn *g, int64_t now, const char *why)
{
    if (g->phase == GN_FIXED)
        return;
    int from = g->limit;
    g->limit = clamp(g->limit / 2, g->max);
    g->phase = GN_HOLD;
    g->hold_until = now + GN_HOLD_MS;
    g->prev_rate = 0;
    g->prev_limit = g->limit;
    str_fmt(g->reason, sizeof g->reason, "backed off from %d to %d connections: %.100s", from, g->limit, why);
}
