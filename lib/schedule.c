/* schedule.c - retry schedule parsing and timing, destination_controls
 * checking. See schedule.h. */
#include "schedule.h"
#include "config.h"
#include "str.h"
#include "table.h"

#include <string.h>

int schedule_parse(const char *text, int64_t *out, int max, char *err, size_t errlen)
{
    char copy[1024];
    if (!str_copy(copy, sizeof copy, text)) {
        str_fmt(err, errlen, "schedule too long");
        return -1;
    }
    int n = 0;
    char *cur = copy, *tok;
    for (char *p = copy; *p; p++)
        if (*p == ',')
            *p = ' ';
    while ((tok = str_split_next(&cur)) != NULL) {
        int64_t sec;
        if (!parse_duration(tok, &sec)) {
            str_fmt(err, errlen, "'%s' is not a duration (like 30s, 5m, 1h, 1d)", tok);
            return -1;
        }
        if (sec <= 0) {
            str_fmt(err, errlen, "'%s': a retry interval must be longer than 0", tok);
            return -1;
        }
        if (n >= max) {
            str_fmt(err, errlen, "more than %d intervals", max);
            return -1;
        }
        out[n++] = sec;
    }
    if (n == 0) {
        str_fmt(err, errlen, "empty schedule");
        return -1;
    }
    return n;
}

int64_t schedule_delay(const int64_t *sched, int n, int attempts)
{
    if (n <= 0)
        return SCHEDULE_DEFAULT_S;
    int i = attempts - 1 < n ? attempts - 1 : n - 1;
    return sched[i < 0 ? 0 : i];
}

int64_t schedule_jitter(int64_t delay, long rnd)
{
    int64_t span = delay / 10;
    if (delay < 10 || span <= 0)
        return delay;
    return delay + (int64_t)(rnd % (2 * span + 1)) - span;
}

/* attr_names - every attribute name of an "a=1 b=2" value is known */
static bool attr_names(const char *value, const char **bad, size_t *badlen)
{
    static const char *const known[] = {"max_connections", "max_messages_per_connection", "retry_schedule", "retry",
                                        "good_neighbor", "max_rate", "tls"};
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '=')
            p++;
        size_t len = (size_t)(p - start);
        bool ok = *p == '=';
        if (ok) {
            ok = false;
            for (size_t i = 0; i < sizeof known / sizeof known[0] && !ok; i++)
                ok = strlen(known[i]) == len && strncmp(known[i], start, len) == 0;
        }
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (!ok) {
            *bad = start;
            *badlen = (size_t)(p - start);
            return false;
        }
    }
    return true;
}

bool controls_check(const struct table *t, const char *path, char *err, size_t errlen)
{
    for (size_t i = 0; t && i < table_size(t); i++) {
        const char *v = table_value(t, i);
        int line = table_line(t, i);
        const char *bad;
        size_t badlen;
        char val[1024], why[256];
        int64_t n;
        if (!attr_names(v, &bad, &badlen)) {
            str_fmt(err, errlen, "%s:%d: '%.*s' is not a destination control (max_connections=, "
                                 "max_messages_per_connection=, retry_schedule=, retry=0, good_neighbor=, max_rate=, tls=)",
                    path, line, (int)badlen, bad);
            return false;
        }
        if (table_attr(v, "max_connections", val, sizeof val) && !str_to_i64(val, 1, 10000, &n)) {
            str_fmt(err, errlen, "%s:%d: max_connections=%s: not a number from 1 to 10000", path, line, val);
            return false;
        }
        if (table_attr(v, "max_messages_per_connection", val, sizeof val) && !str_to_i64(val, 1, 100000, &n)) {
            str_fmt(err, errlen, "%s:%d: max_messages_per_connection=%s: not a number from 1 to 100000", path, line,
                    val);
            return false;
        }
        int64_t sched[SCHEDULE_MAX];
        if (table_attr(v, "retry_schedule", val, sizeof val) &&
            schedule_parse(val, sched, SCHEDULE_MAX, why, sizeof why) < 0) {
            str_fmt(err, errlen, "%s:%d: retry_schedule=%s: %s", path, line, val, why);
            return false;
        }
        if (table_attr(v, "retry", val, sizeof val) && strcmp(val, "0") != 0) {
            str_fmt(err, errlen, "%s:%d: retry=%s: only retry=0 (bounce at the first temporary failure) is known",
                    path, line, val);
            return false;
        }
        if (table_attr(v, "good_neighbor", val, sizeof val) && strcmp(val, "yes") != 0 && strcmp(val, "no") != 0 &&
            strcmp(val, "on") != 0 && strcmp(val, "off") != 0 && strcmp(val, "1") != 0 && strcmp(val, "0") != 0) {
            str_fmt(err, errlen, "%s:%d: good_neighbor=%s: yes or no", path, line, val);
            return false;
        }
        if (table_attr(v, "tls", val, sizeof val) && strcmp(val, "none") != 0 && strcmp(val, "may") != 0 &&
            strcmp(val, "encrypt") != 0) {
            str_fmt(err, errlen, "%s:%d: tls=%s: none, may or encrypt", path, line, val);
            return false;
        }
    }
    return true;
}

bool controls_file_check(const char *path, char *err, size_t errlen)
{
    char terr[TABLE_ERR_MAX];
    struct table *t = table_load(path, terr);
    if (t == NULL) {
        str_copy(err, errlen, terr);
        return false;
    }
    bool ok = controls_check(t, path, err, errlen);
    table_free(t);
    return ok;
}
