/* neighbour.c - good-neighbour concurrency control (see neighbour.h): the
 * rate-driven search for the knee (slow start, additive, hold, trim) and the
 * throttle ceiling (AIMD with a remembered ceiling that decays). */
#include "neighbour.h"
#include "str.h"

#include <string.h>

static const char *const phase_names[GN_PHASE_MAX] = {"slow-start", "additive", "hold", "trim", "fixed"};

#define GN_TRIM_LOSS 0.05 /* one connection fewer may cost at most 5% */
#define GN_SS_SHARE 0.5   /* slow start doubles on while new connections carry half of the old ones' share */

const char *gn_phase_name(enum gn_phase p) { return p < GN_PHASE_MAX ? phase_names[p] : "?"; }

/* cap - the most connections allowed now: max_connections or the ceiling */
static int cap(const struct gn *g) { return g->ceiling > 0 && g->ceiling < g->max ? g->ceiling : g->max; }

static int clamp(int v, int max) { return v < 1 ? 1 : v > max ? max : v; }

/* set_limit - within 1..cap; a change makes the next window a settling one */
static void set_limit(struct gn *g, int v)
{
    v = clamp(v, cap(g));
    if (v != g->limit)
        g->settling = true;
    g->limit = v;
}

static void forget(struct gn *g, int64_t now)
{
    g->prev_rate = 0;
    g->prev_limit = 0;
    g->window_start = now;
    g->window_bytes = 0;
    g->window_busy = false;
    g->window_throttled = false;
    g->settling = false;
    g->clean_limit = 0;
}

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
        g->ceiling = g->ceiling_found = g->strikes = 0;
        str_fmt(g->reason, sizeof g->reason, "fixed at max_connections=%d (good_neighbor=no)", g->max);
        return;
    }
    if (g->phase == GN_FIXED || g->limit == 0) {
        g->phase = GN_SLOW_START;
        g->limit = clamp(GN_START, g->max);
        g->ceiling = g->ceiling_found = g->strikes = 0;
        g->ceiling_hold = g->last_strike = g->burst_until = 0;
        forget(g, now);
        str_fmt(g->reason, sizeof g->reason, "starting at %d connections", g->limit);
    }
    g->limit = clamp(g->limit, cap(g));
}

void gn_restart(struct gn *g, int64_t now)
{
    if (g->phase == GN_FIXED)
        return;
    g->phase = GN_SLOW_START;
    g->limit = clamp(GN_START, cap(g));
    forget(g, now);
    str_fmt(g->reason, sizeof g->reason, "restarting at %d connections (domain back up)", g->limit);
}

void gn_delivered(struct gn *g, uint64_t bytes) { g->window_bytes += bytes; }

/* ceiling_decay - after its hold the ceiling rises by one every
 * GN_CEILING_DECAY_MS (counting the time the domain had no traffic), then
 * goes */
static void ceiling_decay(struct gn *g, int64_t now)
{
    if (g->ceiling == 0 || now < g->ceiling_until)
        return;
    int64_t steps = 1 + (now - g->ceiling_until) / GN_CEILING_DECAY_MS;
    g->strikes = 0;
    if (steps >= g->max - g->ceiling) {
        g->ceiling = 0;
        return;
    }
    g->ceiling += (int)steps;
    g->ceiling_until += steps * GN_CEILING_DECAY_MS;
}

/* hold_at_cap - nothing to probe up to: hold where we are; gain is what the
 * last step added (percent), or none (a hold ran out) */
static void hold_at_cap(struct gn *g, int64_t now, const double *gain)
{
    g->phase = GN_HOLD;
    g->hold_until = now + GN_HOLD_MS;
    g->trim_next = true;
    g->prev_limit = g->limit;
    char step[32] = "";
    if (gain)
        str_fmt(step, sizeof step, "%+.0f%% rate; ", *gain);
    if (g->limit < g->max)
        str_fmt(g->reason, sizeof g->reason, "holding at the ceiling of %d connections (%sit rises in %llds)",
                g->limit, step, (long long)((g->ceiling_until - now + 999) / 1000));
    else if (gain)
        str_fmt(g->reason, sizeof g->reason, "at max_connections=%d (%+.0f%% rate)", g->max, *gain);
    else
        str_fmt(g->reason, sizeof g->reason, "holding at max_connections=%d", g->max);
}

void gn_tick(struct gn *g, int64_t now, bool backlogged)
{
    g->window_busy = g->window_busy || backlogged;
    if (now - g->window_start < GN_WINDOW_MS)
        return;
    double rate = (double)g->window_bytes * 1000.0 / (double)(now - g->window_start);
    bool busy = g->window_busy, throttled = g->window_throttled, settling = g->settling;
    g->window_start = now;
    g->window_bytes = 0;
    g->window_busy = false;
    g->window_throttled = false;
    g->settling = false;
    g->rate = rate;
    if (g->phase == GN_FIXED)
        return;
    if (busy && !throttled && !settling)
        g->clean_limit = g->limit; /* this many connections worked */
    ceiling_decay(g, now);
    if (settling)
        return; /* the first window at a new limit says little about it */
    if (g->phase == GN_TRIM) {
        if (rate >= g->prev_rate * (1.0 - GN_TRIM_LOSS)) {
            str_fmt(g->reason, sizeof g->reason, "trimmed to %d connections: one fewer kept the rate (%.0f KB/s)",
                    g->limit, rate / 1024);
            g->trim_next = true;
        } else {
            set_limit(g, g->limit + 1);
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
            set_limit(g, g->limit - 1);
            str_fmt(g->reason, sizeof g->reason, "trying %d connections (%.0f KB/s at %d)", g->limit, rate / 1024,
                    g->limit + 1);
            return;
        }
        if (g->limit >= cap(g)) { /* at the ceiling or max_connections: stay */
            hold_at_cap(g, now, NULL);
            return;
        }
        g->trim_next = true;
        g->phase = GN_ADDITIVE; /* probe upward again from here */
        g->prev_rate = rate;
        g->prev_limit = g->limit;
        set_limit(g, g->limit + 1);
        str_fmt(g->reason, sizeof g->reason, "probing up to %d connections (%.0f KB/s at %d)", g->limit, rate / 1024,
                g->prev_limit);
        return;
    }
    if (!busy)
        return; /* not enough demand to learn anything: keep the limit */
    if (g->prev_rate <= 0 || g->limit == g->prev_limit) {
        g->prev_rate = rate;
        g->prev_limit = g->limit;
    } else if (rate >= g->prev_rate * (1.0 + GN_GAIN_MIN)) {
        double gain = (rate / g->prev_rate - 1) * 100;
        if (g->phase == GN_SLOW_START && g->limit > g->prev_limit + 1 &&
            rate - g->prev_rate <
                GN_SS_SHARE * g->prev_rate * (double)(g->limit - g->prev_limit) / (double)g->prev_limit) {
            /* The doubling paid, but the new connections each carried less
             * than GN_SS_SHARE of what the old ones did: the knee is in
             * between. Back, and on one at a time from there. */
            int from = g->limit;
            set_limit(g, g->prev_limit);
            g->phase = GN_ADDITIVE;
            g->prev_limit = g->limit; /* the next window measures it again */
            str_fmt(g->reason, sizeof g->reason,
                    "back to %d connections: going to %d added only %.0f%% rate (one at a time from here)", g->limit,
                    from, gain);
            return;
        }
        g->prev_rate = rate;
        g->prev_limit = g->limit;
        if (g->limit >= cap(g)) {
            if (g->limit < g->max)
                hold_at_cap(g, now, &gain);
            else
                str_fmt(g->reason, sizeof g->reason, "at max_connections=%d (+%.0f%% rate)", g->max, gain);
            return;
        }
        set_limit(g, g->phase == GN_SLOW_START ? g->limit * 2 : g->limit + 1);
        str_fmt(g->reason, sizeof g->reason, "raised to %d connections: the last ones added %.0f%% rate", g->limit,
                gain);
        return;
    } else {
        /* Flattened: the newest connections did not pay; drop them and hold. */
        double gain = (rate / g->prev_rate - 1) * 100;
        int from = g->limit;
        set_limit(g, g->prev_limit);
        g->phase = GN_HOLD;
        g->trim_next = true;
        g->hold_until = now + GN_HOLD_MS;
        str_fmt(g->reason, sizeof g->reason, "holding at %d connections: going to %d added only %.0f%% rate", g->limit,
                from, gain);
        g->prev_limit = g->limit;
        return;
    }
    if (g->limit < cap(g)) {
        set_limit(g, g->phase == GN_SLOW_START ? g->limit * 2 : g->limit + 1);
        str_fmt(g->reason, sizeof g->reason, "raised to %d connections (%.0f KB/s so far)", g->limit, rate / 1024);
    }
}

void gn_throttled(struct gn *g, int64_t now, const char *why)
{
    if (g->phase == GN_FIXED)
        return;
    g->window_throttled = true;
    if (now < g->burst_until)
        return; /* the same event: other connections opened at the old limit */
    g->burst_until = now + GN_BURST_MS;
    int from = g->limit;
    bool stepped = g->clean_limit > 0 && g->clean_limit < from; /* just up from a limit that worked */
    char note[64];
    g->prev_rate = 0;
    g->phase = GN_HOLD;
    g->hold_until = now + GN_HOLD_MS;
    if (stepped && from - g->clean_limit > 1) {
        /* A jump (slow start): the receiver's limit is between the limit that
         * worked and this one. Back to the one that worked; after the hold,
         * search up one at a time, never to this one again. */
        g->ceiling = from - 1;
        g->ceiling_hold = g->ceiling_hold > GN_CEILING_HOLD_MS ? g->ceiling_hold : GN_CEILING_HOLD_MS;
        g->ceiling_until = now + g->ceiling_hold;
        set_limit(g, g->clean_limit);
        g->trim_next = false;
        g->prev_limit = g->limit;
        str_fmt(note, sizeof note, "searching up to %d after the hold", g->ceiling);
    } else {
        /* The connections that were working: N-1. */
        int ceil = from > 1 ? from - 1 : 1;
        /* At or under a ceiling found before, at a limit that had worked: the
         * receiver lowered its limit, or ours was one too many after all. */
        bool under = !stepped && g->ceiling > 0 && g->ceiling_found > 0 && from <= g->ceiling_found;
        int64_t hold = GN_CEILING_HOLD_MS;
        if (under) {
            if (g->ceiling_hold > hold)
                hold = g->ceiling_hold;
            g->strikes = now - g->last_strike < GN_REPEAT_MS ? g->strikes + 1 : 1;
            g->last_strike = now;
        } else {
            g->strikes = 0;
            if (g->ceiling_found > 0 && ceil <= g->ceiling_found && g->ceiling_hold > 0) /* found again */
                hold = g->ceiling_hold * 2 < GN_CEILING_HOLD_MAX_MS ? g->ceiling_hold * 2 : GN_CEILING_HOLD_MAX_MS;
        }
        g->ceiling = g->ceiling_found = ceil;
        g->ceiling_hold = hold;
        g->ceiling_until = now + hold;
        bool halve = under && g->strikes >= 2; /* again at once under the ceiling */
        set_limit(g, halve ? from / 2 : ceil);
        g->trim_next = !halve; /* after halving, the hold ends in climbing back */
        g->prev_limit = g->limit;
        str_fmt(note, sizeof note, "%sceiling %d for %llds", halve ? "halved, throttled again; " : "", ceil,
                (long long)(hold / 1000));
    }
    str_fmt(g->reason, sizeof g->reason, "backed off from %d to %d connections: %.96s [%s]", from, g->limit, why,
            note);
}
