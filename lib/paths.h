/* paths.h - the fixed places under queue_directory that are not spool files:
 * pid file, control socket, private sockets, logs (DESIGN §1, §6).
 * Spool paths proper are spool.h's. All builders return false when the
 * result does not fit. */
#ifndef BW_PATHS_H
#define BW_PATHS_H

#include <stdbool.h>
#include <stddef.h>

#define PATHS_MAX 4096

/* paths_pid_file - $queue_directory/pid/master.pid (also the instance lock). */
bool paths_pid_file(const char *qdir, char *out, size_t len);

/* paths_control_socket - $queue_directory/public/control (mailctl <-> master). */
bool paths_control_socket(const char *qdir, char *out, size_t len);

/* paths_private_socket - $queue_directory/private/NAME (daemon <-> daemon). */
bool paths_private_socket(const char *qdir, const char *name, char *out, size_t len);

/* paths_debug_log - $queue_directory/log/debug/DOMAIN.log */
bool paths_debug_log(const char *qdir, const char *domain, char *out, size_t len);

#endif
