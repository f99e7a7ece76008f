/* main.c - master: the supervisor. Reads main.cf, takes the instance lock,
 * creates the spool tree, binds the listeners, spawns and watches the daemons,
 * serves the control socket, reloads on SIGHUP, stops gracefully on SIGTERM.
 * Options: -c CONFIG_DIR, -r FD (start-up result pipe from mailctl), -f (stay
 * in the foreground, log to stderr unless log_file is set). */
#include "children.h"
#include "config.h"
#include "control_server.h"
#include "listeners.h"
#include "log.h"
#include "paths.h"
#include "schedule.h"
#include "server.h"
#include "spool.h"
#include "str.h"
#include "table.h"
#include "vg.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define STOP_GRACE_S 5    /* after stop_timeout, this long before SIGKILL */
#define STARTUP_WAIT_S 30 /* longest wait for the daemons' ready notes at start */

struct master {
    const char *config_dir;
    struct config *cfg;
    struct event_base *base;
    struct listeners listeners;
    struct children *children;
    struct control_server *control;
    int pid_fd;
    int alive_pipe[2];
    unsigned owner_uid, owner_gid;
    time_t started;
    bool stopping;
    struct event *ev_chld, *ev_term, *ev_int, *ev_hup, *stop_timer;
    char pid_path[PATHS_MAX];
};

/* report - tell mailctl (ready pipe) or stderr how start-up went */
static void report(int ready_fd, const char *text)
{
    if (ready_fd >= 0) {
        ssize_t w = write(ready_fd, text, strlen(text));
        (void)w;
    } else {
        fprintf(stderr, "%s\n", text);
    }
}

static _Noreturn void startup_fail(int ready_fd, const char *text)
{
    log_error("%s", text);
    report(ready_fd, text);
    exit(1);
}

/* raise_nofile - lift RLIMIT_NOFILE for 50,000 connections per instance */
static void raise_nofile(void)
{
    struct rlimit rl;
    long want = 1048576;
    FILE *fp = fopen("/proc/sys/fs/nr_open", "r");
    if (fp) {
        if (fscanf(fp, "%ld", &want) != 1)
            want = 1048576;
        fclose(fp);
    }
    if (want > 1048576)
        want = 1048576;
    rl.rlim_cur = rl.rlim_max = (rlim_t)want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* make_tree - the directories under queue_directory */
static void make_tree(struct master *m, int ready_fd)
{
    const char *q = cfg_str(m->cfg, P_queue_directory);
    char err[512], path[PATHS_MAX];
    struct {
        const char *sub;
        mode_t mode;
        bool owned;
    } dirs[] = {{"", 0755, false},       {"/pid", 0755, false}, {"/public", 0755, false},
                {"/private", 0700, true}, {"/log", 0755, true},  {"/log/debug", 0755, true}};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        str_fmt(path, sizeof path, "%s%s", q, dirs[i].sub);
        if (mkdir(path, dirs[i].mode) != 0 && errno != EEXIST) {
            str_fmt(err, sizeof err, "cannot create %s: %s", path, strerror(errno));
            startup_fail(ready_fd, err);
        }
        if (dirs[i].owned && geteuid() == 0 && chown(path, m->owner_uid, m->owner_gid) != 0) {
            str_fmt(err, sizeof err, "cannot chown %s: %s", path, strerror(errno));
            startup_fail(ready_fd, err);
        }
    }
    if (spool_init_dirs(q, geteuid() == 0 ? m->owner_uid : (uid_t)-1, m->owner_gid, err, sizeof err) != 0)
        startup_fail(ready_fd, err);
}

/* take_lock - the pid file doubles as the instance lock */
static void take_lock(struct master *m, int ready_fd)
{
    char err[PATHS_MAX + 128];
    if (!paths_pid_file(cfg_str(m->cfg, P_queue_directory), m->pid_path, sizeof m->pid_path))
        startup_fail(ready_fd, "queue_directory path too long");
    m->pid_fd = open(m->pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (m->pid_fd < 0) {
        str_fmt(err, sizeof err, "cannot open %s: %s", m->pid_path, strerror(errno));
        startup_fail(ready_fd, err);
    }
    if (flock(m->pid_fd, LOCK_EX | LOCK_NB) != 0) {
        char pidtext[32] = "";
        ssize_t n = pread(m->pid_fd, pidtext, sizeof pidtext - 1, 0);
        pidtext[n > 0 ? n : 0] = '\0';
        str_fmt(err, sizeof err, "breakwater is already running (pid %ld)", strtol(pidtext, NULL, 10));
        report(ready_fd, err);
        exit(1);
    }
    char pidtext[32];
    str_fmt(pidtext, sizeof pidtext, "%ld\n", (long)getpid());
    if (ftruncate(m->pid_fd, 0) != 0 || pwrite(m->pid_fd, pidtext, strlen(pidtext), 0) < 0) {
        str_fmt(err, sizeof err, "cannot write %s: %s", m->pid_path, strerror(errno));
        startup_fail(ready_fd, err);
    }
}

static void children_env_of(struct master *m, struct children_env *env)
{
    env->daemon_directory = cfg_str(m->cfg, P_daemon_directory);
    env->config_dir = m->config_dir;
    env->master_pipe = m->alive_pipe[0];
    env->listeners = &m->listeners;
    env->throttle_max_ms = (int)cfg_int(m->cfg, P_master_throttle_max) * 1000;
}

/* ensure_deliveries - one delivery process per virtual gateway */
static bool ensure_deliveries(struct master *m, const struct config *cfg, char *err, size_t errlen)
{
    char verr[VG_ERR_MAX];
    struct vg_set *vs = vg_load(cfg, verr);
    if (vs == NULL) {
        str_copy(err, errlen, verr);
        return false;
    }
    const char *names[64];
    size_t n = vg_count(vs) < 64 ? vg_count(vs) : 64;
    for (size_t i = 0; i < n; i++)
        names[i] = vg_at(vs, i)->name;
    bool ok = children_ensure_named(m->children, "delivery", names, (int)n);
    vg_free(vs);
    if (!ok)
        str_copy(err, errlen, "out of memory");
    return ok;
}

/* start_stop - graceful stop: children get SIGTERM, stragglers SIGKILL later */
static void start_stop(struct master *m, const char *why)
{
    if (m->stopping)
        return;
    m->stopping = true;
    log_info("stopping (%s)", why);
    children_stop(m->children);
    listeners_close(&m->listeners);
    struct timeval tv = {cfg_int(m->cfg, P_stop_timeout) + STOP_GRACE_S, 0};
    evtimer_add(m->stop_timer, &tv);
    if (children_alive(m->children) == 0)
        event_base_loopexit(m->base, NULL);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct master *m = arg;
    log_warn("stop: %d daemons still running after stop_timeout, killing them", children_alive(m->children));
    children_signal(m->children, SIGKILL);
}

static void on_chld(evutil_socket_t sig, short what, void *arg)
{
    struct master *m = arg;
    children_reap(m->children);
    if (m->stopping && children_alive(m->children) == 0)
        event_base_loopexit(m->base, NULL);
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
    start_stop(arg, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* do_reload - new main.cf: check it, keep the old on error, tell the daemons */
static int do_reload(struct master *m, char *err, size_t errlen)
{
    char cerr[CONFIG_ERR_MAX];
    struct config *cfg = config_load(m->config_dir, NULL, 0, cerr);
    if (cfg == NULL) {
        log_error("reload refused, keeping the running configuration: %s", cerr);
        str_copy(err, errlen, cerr);
        return 1;
    }
    char verr[VG_ERR_MAX];
    struct vg_set *vs = vg_load(cfg, verr);
    if (vs == NULL) {
        log_error("reload refused, keeping the running configuration: %s", verr);
        str_copy(err, errlen, verr);
        config_free(cfg);
        return 1;
    }
    vg_free(vs);
    char terr[TABLE_ERR_MAX];
    if (!controls_file_check(cfg_str(cfg, P_destination_controls), terr, sizeof terr)) {
        log_error("reload refused, keeping the running configuration: destination_controls: %s", terr);
        str_copy(err, errlen, terr);
        config_free(cfg);
        return 1;
    }
    if (strcmp(cfg_str(cfg, P_smtpd_listen), cfg_str(m->cfg, P_smtpd_listen)) != 0 ||
        strcmp(cfg_str(cfg, P_queue_directory), cfg_str(m->cfg, P_queue_directory)) != 0)
        log_warn("reload: smtpd_listen or queue_directory changed; they take effect at the next start");
    struct config *old = m->cfg;
    m->cfg = cfg;
    log_open("master", cfg_str(cfg, P_syslog_name), cfg_str(cfg, P_log_file));
    struct children_env env;
    children_env_of(m, &env);
    children_set_env(m->children, &env);
    children_signal(m->children, SIGHUP);
    children_ensure(m->children, "smtpd", (int)cfg_int(cfg, P_smtpd_processes), true);
    char derr[VG_ERR_MAX];
    if (!ensure_deliveries(m, cfg, derr, sizeof derr))
        log_error("reload: %s", derr);
    config_free(old);
    log_info("reloaded configuration from %s", config_path(cfg));
    return 0;
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    char err[CONFIG_ERR_MAX];
    do_reload(arg, err, sizeof err);
}

/* status_reply - text or JSON for `mailctl status` */
static void status_reply(struct master *m, struct control_client *client, bool json)
{
    struct buf b;
    buf_init(&b, 1024 * 1024);
    long up = (long)(time(NULL) - m->started);
    bool ok;
    if (json) {
        ok = buf_printf(&b, "{\"running\": true, \"pid\": %ld, \"version\": \"%s\", \"uptime_s\": %ld, \"config_dir\": ",
                        (long)getpid(), BW_VERSION, up) &&
             buf_json_str(&b, m->config_dir) && buf_puts(&b, ", \"queue_directory\": ") &&
             buf_json_str(&b, cfg_str(m->cfg, P_queue_directory)) && buf_puts(&b, ", \"listen\": [");
        for (int i = 0; ok && i < m->listeners.n; i++)
            ok = buf_puts(&b, i ? ", " : "") && buf_json_str(&b, m->listeners.names[i]);
        ok = ok && buf_printf(&b, "], \"stopping\": %s, \"daemons\": ", m->stopping ? "true" : "false") &&
             children_json(m->children, &b) && buf_puts(&b, "}");
    } else {
        ok = buf_printf(&b, "breakwater is running (pid %ld), up %lds, config %s\n", (long)getpid(), up, m->config_dir);
        for (int i = 0; ok && i < m->listeners.n; i++)
            ok = buf_printf(&b, "  smtpd listening on %s\n", m->listeners.names[i]);
        ok = ok && children_text(m->children, &b);
        if (ok && b.len > 0 && b.data[b.len - 1] == '\n')
            b.data[--b.len] = '\0';
    }
    control_reply(client, ok ? 0 : 1, ok ? b.data : "status: out of memory");
    buf_free(&b);
}

/* on_control - mailctl commands that the master answers itself */
static void on_control(void *arg, struct control_client *client, int argc, const char **argv)
{
    struct master *m = arg;
    if (strcmp(argv[0], "status") == 0) {
        status_reply(m, client, argc > 1 && strcmp(argv[1], "--json") == 0);
    } else if (strcmp(argv[0], "stop") == 0) {
        control_reply(client, 0, "breakwater stopping");
        start_stop(m, "mailctl stop");
    } else if (strcmp(argv[0], "reload") == 0) {
        char err[CONFIG_ERR_MAX];
        if (m->stopping)
            control_reply(client, 1, "breakwater is stopping");
        else if (do_reload(m, err, sizeof err) == 0)
            control_reply(client, 0, "breakwater reloaded");
        else
            control_reply(client, 1, err);
    } else {
        char err[256];
        str_fmt(err, sizeof err, "unknown command '%s'", argv[0]);
        control_reply(client, 2, err);
    }
}

/* detach_stdio - after start-up: stdin/stdout to /dev/null, stderr to the
 * log file (so a daemon's crash report lands there) or /dev/null */
static void detach_stdio(bool foreground)
{
    int null = open("/dev/null", O_RDWR);
    if (null < 0)
        return;
    dup2(null, STDIN_FILENO);
    if (!foreground) {
        dup2(null, STDOUT_FILENO);
        dup2(log_fd() >= 0 ? log_fd() : null, STDERR_FILENO);
    }
    if (null > STDERR_FILENO)
        close(null);
}

int main(int argc, char **argv)
{
    static struct master m;
    int ready_fd = -1;
    bool foreground = false;
    int opt;
    m.config_dir = getenv("BREAKWATER_CONFIG");
    while ((opt = getopt(argc, argv, "c:r:f")) != -1) {
        switch (opt) {
        case 'c': m.config_dir = optarg; break;
        case 'r': ready_fd = atoi(optarg); break;
        case 'f': foreground = true; break;
        default: fprintf(stderr, "usage: master [-c CONFIG_DIR] [-r FD] [-f]\n"); return 2;
        }
    }
    if (m.config_dir == NULL)
        m.config_dir = SYSCONFDIR "/breakwater";
    if (ready_fd >= 0)
        fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
    log_open("master", "breakwater", "-");
    char err[CONFIG_ERR_MAX];
    if ((m.cfg = config_load(m.config_dir, NULL, 0, err)) == NULL)
        startup_fail(ready_fd, err);
    if (!log_open("master", cfg_str(m.cfg, P_syslog_name), cfg_str(m.cfg, P_log_file))) {
        str_fmt(err, sizeof err, "cannot open log_file %s: %s", cfg_str(m.cfg, P_log_file), strerror(errno));
        startup_fail(ready_fd, err);
    }
    if (!server_owner_ids(cfg_str(m.cfg, P_mail_owner), &m.owner_uid, &m.owner_gid, err, sizeof err))
        startup_fail(ready_fd, err);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    make_tree(&m, ready_fd);
    take_lock(&m, ready_fd);
    if (listeners_open(cfg_str(m.cfg, P_smtpd_listen), &m.listeners, err, sizeof err) != 0)
        startup_fail(ready_fd, err);
    if (pipe2(m.alive_pipe, O_CLOEXEC) != 0)
        startup_fail(ready_fd, "cannot create the liveness pipe");
    if ((m.base = event_base_new()) == NULL)
        startup_fail(ready_fd, "cannot create the event base");
    m.ev_chld = evsignal_new(m.base, SIGCHLD, on_chld, &m);
    m.ev_term = evsignal_new(m.base, SIGTERM, on_term, &m);
    m.ev_int = evsignal_new(m.base, SIGINT, on_term, &m);
    m.ev_hup = evsignal_new(m.base, SIGHUP, on_hup, &m);
    m.stop_timer = evtimer_new(m.base, on_stop_timer, &m);
    if (!m.ev_chld || !m.ev_term || !m.ev_int || !m.ev_hup || !m.stop_timer || event_add(m.ev_chld, NULL) ||
        event_add(m.ev_term, NULL) || event_add(m.ev_int, NULL) || event_add(m.ev_hup, NULL))
        startup_fail(ready_fd, "cannot install signal handlers");
    char sock[PATHS_MAX];
    if (!paths_control_socket(cfg_str(m.cfg, P_queue_directory), sock, sizeof sock))
        startup_fail(ready_fd, "control socket path too long (queue_directory too long)");
    if ((m.control = control_server_new(m.base, sock, m.owner_gid, on_control, &m, err, sizeof err)) == NULL)
        startup_fail(ready_fd, err);
    struct children_env env;
    children_env_of(&m, &env);
    if ((m.children = children_new(m.base, &env)) == NULL)
        startup_fail(ready_fd, "out of memory");
    m.started = time(NULL);
    /* Before any daemon inherits them: a caller's pipe must not stay open. */
    detach_stdio(foreground);
    log_info("breakwater %s starting, pid %ld, config %s", BW_VERSION, (long)getpid(), config_path(m.cfg));
    if (!ensure_deliveries(&m, m.cfg, err, sizeof err))
        startup_fail(ready_fd, err);
    if (!children_ensure(m.children, "dnscache", 1, false) || !children_ensure(m.children, "qmgr", 1, false) ||
        !children_ensure(m.children, "smtpd", (int)cfg_int(m.cfg, P_smtpd_processes), true))
        startup_fail(ready_fd, "out of memory");

    /* mailctl start returns once the daemons are up, not merely spawned. */
    struct timeval t0, now;
    gettimeofday(&t0, NULL);
    while (!children_settled(m.children)) {
        event_base_loop(m.base, EVLOOP_ONCE);
        gettimeofday(&now, NULL);
        if (now.tv_sec - t0.tv_sec > STARTUP_WAIT_S) {
            log_warn("start-up: some daemons did not report ready within %ds", STARTUP_WAIT_S);
            break;
        }
    }
    struct buf ok;
    buf_init(&ok, 8192);
    buf_printf(&ok, "ok breakwater started (pid %ld), smtpd listening on", (long)getpid());
    for (int i = 0; i < m.listeners.n; i++)
        buf_printf(&ok, "%s %s", i ? "," : "", m.listeners.names[i]);
    report(ready_fd, ok.data ? ok.data : "ok");
    buf_free(&ok);
    if (ready_fd >= 0)
        close(ready_fd);

    event_base_dispatch(m.base);

    log_info("breakwater stopped");
    control_server_free(m.control);
    children_free(m.children);
    listeners_close(&m.listeners);
    event_free(m.ev_chld);
    event_free(m.ev_term);
    event_free(m.ev_int);
    event_free(m.ev_hup);
    event_free(m.stop_timer);
    event_base_free(m.base);
    unlink(m.pid_path);
    close(m.pid_fd);
    config_free(m.cfg);
    return 0;
}
