/* domstate.c - a domain queue's state transitions. See domstate.h. */
#include "domstate.h"

enum site_verdict site_judge(bool redirected, bool down, int failures, unsigned reachable, int64_t now,
                             int64_t last_success, int64_t busy_s)
{
    if (redirected || reachable == SITE_UNKNOWN || reachable > SITE_UNKNOWN)
        return SITE_NOTHING;
    if (reachable == SITE_UNREACHABLE) {
        if (!down && last_success > 0 && now - last_success < busy_s)
            return SITE_PUSHBACK;
        return SITE_DOWN;
    }
    return down || failures > 0 ? SITE_UP : SITE_NOTHING;
}

const char *site_verdict_name(enum site_verdict v)
{
    static const char *const names[] = {"nothing", "pushback", "down", "up"};
    return (unsigned)v < 4 ? names[v] : "?";
}
