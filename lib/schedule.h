/* schedule.h - retry schedules ("5m 10m 1h": the last interval repeats) and
 * the checking of destination_controls entries (DESIGN §5), shared by qmgr
 * (which uses them) and mailctl config check / master reload (which refuse
 * a bad table with FILE:LINE). Pure functions; owns nothing. */
#ifndef BW_SCHEDULE_H
#define BW_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCHEDULE_MAX 32          /* intervals in one schedule */
#define SCHEDULE_DEFAULT_S 300   /* the delay when a schedule is empty */

struct table;

/* schedule_parse - "1m,5m,1h" (commas and/or spaces) into seconds; returns
 * the number of intervals (1..max), or -1 with err set ("'5x' is not a
 * duration", "empty", "more than N intervals", "0 is not an interval"). */
int schedule_parse(const char *text, int64_t *out, int max, char *err, size_t errlen);

/* schedule_delay - seconds before attempt number attempts+1 (attempts >= 1
 * failures so far; the last interval repeats); SCHEDULE_DEFAULT_S when n is
 * 0. */
int64_t schedule_delay(const int64_t *sched, int n, int attempts);

/* schedule_jitter - delay (any unit) spread by up to +-10% with rnd (any
 * non-negative random number), so that destinations that failed together
 * are not all retried in one instant. Delays under 10 units are kept. */
int64_t schedule_jitter(int64_t delay, long rnd);

/* controls_check - every entry of a destination_controls table: known
 * attributes with valid values (max_connections, max_messages_per_connection,
 * retry_schedule, retry=0, good_neighbor=yes|no; max_rate and tls are
 * accepted for later issues). False with "PATH:LINE: ..." in err. */
bool controls_check(const struct table *t, const char *path, char *err, size_t errlen);

/* controls_file_check - load the destination_controls file at path ("" is
 * an empty table) and check it; false with "PATH:LINE: ..." in err. */
bool controls_file_check(const char *path, char *err, size_t errlen);

#endif
