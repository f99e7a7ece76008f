/* paths.c - fixed non-spool paths under queue_directory. */
#include "paths.h"
#include "str.h"

#include <sys/un.h>

bool paths_pid_file(const char *qdir, char *out, size_t len)
{
    return str_fmt(out, len, "%s/pid/master.pid", qdir);
}

bool paths_control_socket(const char *qdir, char *out, size_t len)
{
    /* A UNIX socket path must also fit sockaddr_un. */
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path);
    return str_fmt(out, len < max ? len : max, "%s/public/control", qdir);
}

bool paths_private_socket(const char *qdir, const char *name, char *out, size_t len)
{
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path);
    return str_fmt(out, len < max ? len : max, "%s/private/%s", qdir, name);
}

bool paths_debug_log(const char *qdir, const char *domain, char *out, size_t len)
{
    return str_fmt(out, len, "%s/log/debug/%s.log", qdir, domain);
}
