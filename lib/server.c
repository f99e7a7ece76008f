/* server.c - daemon skeleton: options, config, log, privileges, loop. */
#include "server.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <event2/event.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OVERRIDES_MAX 64

struct server_run {
    struct server srv;
    const struct server_hooks *hooks;
    const char *config_dir;
    const char *overrides[OVERRIDES_MAX];
    size_t n_overrides;
    struct event *ev_term, *ev_int, *ev_hup, *ev_master;
};

/* server_owner_ids - look up mail_owner */
bool server_owner_ids(const char *user, unsigned *uid, unsigned *gid, char *err, size_t errlen)
{
    if (geteuid() != 0) {
        *uid = (unsigned)geteuid();
        *gid = (unsigned)getegid();
        return true;
    }
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        str_fmt(err, errlen, "mail_owner: user '%s' does not exist (scripts/deps.sh creates breakwater)", user);
        return false;
    }
    if (pw->pw_uid == 0) {
        str_fmt(err, errlen, "mail_owner: user '%s' must not be root", user);
        return false;
    }
    *uid = (unsigned)pw->pw_uid;
    *gid = (unsigned)pw->pw_gid;
    return true;
}

/* server_drop_privileges - setgroups, setresgid, setresuid, then verify */
bool server_drop_privileges(const char *user, char *err, size_t errlen)
{
    if (geteuid() != 0)
        return true;
    unsigned uid, gid;
    if (!server_owner_ids(user, &uid, &gid, err, errlen))
        return false;
    gid_t g = (gid_t)gid;
    if (setgroups(1, &g) != 0 || setresgid(g, g, g) != 0 || setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) {
        str_fmt(err, errlen, "cannot become %s: %s", user, strerror(errno));
        return false;
    }
    if (setuid(0) == 0 || geteuid() != (uid_t)uid) {
        str_fmt(err, errlen, "privilege drop to %s did not stick", user);
        return false;
    }
    return true;
}

void server_exit_loop(struct server *srv) { event_base_loopexit(srv->base, NULL); }

/* request_stop - SIGTERM or master gone */
static void request_stop(struct server_run *run, const char *why)
{
    if (run->srv.stopping)
        return;
    run->srv.stopping = true;
    log_info("stopping: %s", why);
    if (run->hooks->on_stop)
        run->hooks->on_stop(&run->srv);
    else
        server_exit_loop(&run->srv);
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
    request_stop(arg, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* on_master - the master's pipe became readable: EOF means it is gone */
static void on_master(evutil_socket_t fd, short what, void *arg)
{
    struct server_run *run = arg;
    char c[64];
    ssize_t n = read(fd, c, sizeof c);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        event_del(run->ev_master);
        request_stop(run, "master went away");
    }
}

/* on_hup - reload main.cf; keep the old configuration if the new one is bad */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct server_run *run = arg;
    char err[CONFIG_ERR_MAX];
    struct config *cfg = config_load(run->config_dir, run->overrides, run->n_overrides, err);
    if (cfg == NULL) {
        log_error("reload refused, keeping the running configuration: %s", err);
        return;
    }
    struct config *old = run->srv.cfg;
    run->srv.cfg = cfg;
    log_open(run->srv.program, cfg_str(cfg, P_syslog_name), cfg_str(cfg, P_log_file));
    if (run->hooks->on_reload)
        run->hooks->on_reload(&run->srv, old);
    config_free(old);
    log_info("reloaded configuration from %s", config_path(cfg));
}

static void usage(const char *program)
{
    fprintf(stderr, "usage: %s [-c CONFIG_DIR] [-o name=value]... [-n INSTANCE] [-i SLOT] [-l NLISTEN] [-v] [-S]\n",
            program);
    exit(2);
}

/* server_main - the whole life of a daemon */
int server_main(int argc, char **argv, const char *program, const struct server_hooks *hooks)
{
    static struct server_run run;
    memset(&run, 0, sizeof run);
    run.hooks = hooks;
    run.srv.program = program;
    run.srv.instance = program;
    run.config_dir = getenv("BREAKWATER_CONFIG");
    bool standalone = false;
    int ready_fd = -1;
    int opt;
    while ((opt = getopt(argc, argv, "c:o:n:i:l:vSR:")) != -1) {
        int64_t v;
        switch (opt) {
        case 'c': run.config_dir = optarg; break;
        case 'o':
            if (run.n_overrides == OVERRIDES_MAX)
                usage(program);
            run.overrides[run.n_overrides++] = optarg;
            break;
        case 'n': run.srv.instance = optarg; break;
        case 'i':
            if (!str_to_i64(optarg, 0, 255, &v))
                usage(program);
            run.srv.slot = (int)v;
            break;
        case 'l':
            if (!str_to_i64(optarg, 0, SERVER_LISTEN_MAX, &v))
                usage(program);
            run.srv.n_listen = (int)v;
            break;
        case 'v': log_set_verbose(true); break;
        case 'S': standalone = true; break;
        case 'R':
            if (!str_to_i64(optarg, 3, 1024, &v))
                usage(program);
            ready_fd = (int)v;
            break;
        default: usage(program);
        }
    }
    if (run.config_dir == NULL)
        run.config_dir = SYSCONFDIR "/breakwater";
    for (int i = 0; i < run.srv.n_listen; i++)
        run.srv.listen_fds[i] = SERVER_LISTEN_FD + i;

    log_open(program, "breakwater", "-");
    char err[CONFIG_ERR_MAX];
    run.srv.cfg = config_load(run.config_dir, run.overrides, run.n_overrides, err);
    if (run.srv.cfg == NULL)
        log_fatal("%s", err);
    struct config *cfg = run.srv.cfg;
    if (!log_open(program, cfg_str(cfg, P_syslog_name), cfg_str(cfg, P_log_file)))
        log_fatal_errno("cannot open log_file %s", cfg_str(cfg, P_log_file));
    signal(SIGPIPE, SIG_IGN);

    if (hooks->pre_init && !hooks->pre_init(&run.srv))
        return 1;
    if (!server_drop_privileges(cfg_str(cfg, P_mail_owner), err, sizeof err))
        log_fatal("%s", err);

    struct event_config *ecfg = event_config_new();
    if (ecfg == NULL)
        log_fatal("out of memory");
    run.srv.base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    if (run.srv.base == NULL)
        log_fatal("cannot create the event base");
    run.ev_term = evsignal_new(run.srv.base, SIGTERM, on_term, &run);
    run.ev_int = evsignal_new(run.srv.base, SIGINT, on_term, &run);
    run.ev_hup = evsignal_new(run.srv.base, SIGHUP, on_hup, &run);
    if (!run.ev_term || !run.ev_int || !run.ev_hup || event_add(run.ev_term, NULL) || event_add(run.ev_int, NULL) ||
        event_add(run.ev_hup, NULL))
        log_fatal("cannot install signal handlers");
    sigset_t held;
    sigemptyset(&held);
    sigaddset(&held, SIGHUP);
    sigaddset(&held, SIGTERM);
    sigaddset(&held, SIGINT);
    sigprocmask(SIG_UNBLOCK, &held, NULL); /* the master starts us with these blocked */
    if (!standalone) {
        evutil_make_socket_nonblocking(SERVER_MASTER_FD);
        run.ev_master = event_new(run.srv.base, SERVER_MASTER_FD, EV_READ | EV_PERSIST, on_master, &run);
        if (run.ev_master == NULL || event_add(run.ev_master, NULL) != 0)
            log_fatal("cannot watch the master pipe");
    }
    if (hooks->post_init && !hooks->post_init(&run.srv))
        return 1;
    if (ready_fd >= 0) { /* tell the master we are initialised */
        ssize_t w = write(ready_fd, "R", 1);
        (void)w;
        close(ready_fd);
    }
    log_debug("started");
    event_base_dispatch(run.srv.base);
    if (hooks->on_exit)
        hooks->on_exit(&run.srv);
    if (run.ev_master)
        event_free(run.ev_master);
    event_free(run.ev_term);
    event_free(run.ev_int);
    event_free(run.ev_hup);
    event_base_free(run.srv.base);
    config_free(run.srv.cfg);
    return 0;
}
