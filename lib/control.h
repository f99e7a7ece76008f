/* control.h - the control protocol between mailctl (and later the monitor)
 * and the master over $queue_directory/public/control: one CTL_REQUEST
 * (command + arguments), one CTL_REPLY (status + text), then close.
 *
 * Client side only; the server side is master/control_server.c. */
#ifndef BW_CONTROL_H
#define BW_CONTROL_H

#include <stddef.h>

#define CONTROL_TIMEOUT_MS 10000

/* control_call - connect to the socket at path, send argv[0..argc) as one
 * request and wait for the reply. Returns 0 with *status and *text (malloc'd,
 * the caller frees) set, or -1 with errno (ENOENT/ECONNREFUSED: not running). */
int control_call(const char *path, int argc, const char *const *argv, int timeout_ms, int *status, char **text);

#endif
