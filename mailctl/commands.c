/* commands.c - mailctl start/stop/reload/status/config/ipc. */
#include "commands.h"
#include "config.h"
#include "control.h"
#include "ipc.h"
#include "paths.h"
#include "schedule.h"
#include "server.h"
#include "addr.h"
#include "str.h"
#include "table.h"
#include "vg.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 60000
#define STOP_EXTRA_S 15

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mailctl: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* load - main.cf or an error line */
static struct config *load(struct mailctl *mc, bool warn)
{
    char err[CONFIG_ERR_MAX];
    struct config *cfg = config_load(mc->config_dir, NULL, 0, err);
    if (cfg == NULL && !warn) {
        /* stop and status must work on a broken main.cf (say, after a refused
         * reload): find queue_directory with the bad values left out. */
        cfg = config_load_flags(mc->config_dir, NULL, 0, CONFIG_LENIENT, err);
        if (cfg)
            fprintf(stderr, "mailctl: warning: %s has errors; using defaults for them\n", config_path(cfg));
    }
    if (cfg == NULL) {
        fail("%s", err);
        return NULL;
    }
    for (size_t i = 0; warn && config_warning(cfg, i); i++)
        fprintf(stderr, "mailctl: warning: %s\n", config_warning(cfg, i));
    return cfg;
}

/* tables_ok - every table file named in main.cf parses, with FILE:LINE errors */
static bool tables_ok(const struct config *cfg)
{
    char err[VG_ERR_MAX > TABLE_ERR_MAX ? VG_ERR_MAX : TABLE_ERR_MAX];
    struct vg_set *vs = vg_load(cfg, err);
    if (vs == NULL) {
        fail("%s", err);
        return false;
    }
    vg_free(vs);
    const enum param_id tables[] = {P_smtp_routes, P_destination_controls};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        struct table *t = table_load(cfg_str(cfg, tables[i]), err);
        if (t == NULL) {
            fail("%s: %s", param_table[tables[i]].name, err);
            return false;
        }
        table_free(t);
    }
    if (!controls_file_check(cfg_str(cfg, P_destination_controls), err, sizeof err)) {
        fail("destination_controls: %s", err);
        return false;
    }
    return true;
}

/* running_pid - pid of the master holding the instance lock, or 0 */
static long running_pid(const struct config *cfg)
{
    char path[PATHS_MAX];
    if (!paths_pid_file(cfg_str(cfg, P_queue_directory), path, sizeof path))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    long pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
        char text[32] = "";
        ssize_t n = read(fd, text, sizeof text - 1);
        text[n > 0 ? n : 0] = '\0';
        pid = strtol(text, NULL, 10);
        if (pid <= 0)
            pid = 1; /* locked, pid not written yet */
    }
    close(fd);
    return pid;
}

/* process_running - pid exists and is not a zombie */
static bool process_running(long pid)
{
    char path[64], stat[512];
    str_fmt(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return false;
    size_t n = fread(stat, 1, sizeof stat - 1, fp);
    fclose(fp);
    stat[n] = '\0';
    const char *close = strrchr(stat, ')');
    return close && close[1] == ' ' && close[2] != 'Z' && close[2] != 'X';
}

/* call - one control request; 0/1 as the master says, -1 not running */
static int call(const struct config *cfg, int argc, const char *const *argv, int *status, char **text)
{
    char sock[PATHS_MAX];
    if (!paths_control_socket(cfg_str(cfg, P_queue_directory), sock, sizeof sock))
        return errno = ENAMETOOLONG, -1;
    return control_call(sock, argc, argv, CONTROL_TIMEOUT_MS, status, text);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int cmd_start(struct mailctl *mc, int argc, char **argv)
{
    struct config *cfg = load(mc, true);
    if (cfg == NULL)
        return 1;
    if (!tables_ok(cfg)) {
        config_free(cfg);
        return 1;
    }
    long pid = running_pid(cfg);
    if (pid > 0) {
        fprintf(stderr, "mailctl: breakwater is already running (pid %ld)\n", pid);
        config_free(cfg);
        return 1;
    }
    char master[PATHS_MAX];
    str_fmt(master, sizeof master, "%s/master", cfg_str(cfg, P_daemon_directory));
    if (access(master, X_OK) != 0) {
        fprintf(stderr, "mailctl: cannot execute %s: %s (check daemon_directory)\n", master, strerror(errno));
        config_free(cfg);
        return 1;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        config_free(cfg);
        return fail("pipe: %s", strerror(errno));
    }
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        config_free(cfg);
        return fail("fork: %s", strerror(errno));
    }
    if (child == 0) {
        setsid();
        int wfd = fcntl(p[1], F_DUPFD, 10); /* without close-on-exec */
        char fdtext[16];
        str_fmt(fdtext, sizeof fdtext, "%d", wfd);
        char *args[] = {"master", "-c", (char *)mc->config_dir, "-r", fdtext, NULL};
        execv(master, args);
        char err[PATHS_MAX + 64];
        str_fmt(err, sizeof err, "cannot execute %s: %s", master, strerror(errno));
        ssize_t w = write(p[1], err, strlen(err));
        (void)w;
        _exit(127);
    }
    close(p[1]);
    char text[8192];
    size_t len = 0;
    long deadline = now_ms() + START_TIMEOUT_MS;
    while (len < sizeof text - 1) {
        struct pollfd pfd = {p[0], POLLIN, 0};
        long left = deadline - now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        ssize_t n = read(p[0], text + len, sizeof text - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(p[0]);
    text[len] = '\0';
    config_free(cfg);
    if (strncmp(text, "ok ", 3) == 0) {
        printf("%s\n", text + 3);
        return 0;
    }
    /* Start-up failed: the master has exited or is exiting; reap it if it was ours. */
    waitpid(child, NULL, WNOHANG);
    if (len == 0)
        return fail("%s", "the master exited during start-up without a reason (see the log)");
    return fail("%s", text);
}

int cmd_stop(struct mailctl *mc, int argc, char **argv)
{
    struct config *cfg = load(mc, false);
    if (cfg == NULL)
        return 1;
    int status;
    char *text = NULL;
    const char *req[] = {"stop"};
    long pid = running_pid(cfg); /* wait for this process itself too, not only its lock */
    if (call(cfg, 1, req, &status, &text) != 0) {
        config_free(cfg);
        if (errno == ENOENT || errno == ECONNREFUSED)
            return fail("%s", "breakwater is not running");
        return fail("cannot reach the master: %s", strerror(errno));
    }
    free(text);
    long deadline = now_ms() + (cfg_int(cfg, P_stop_timeout) + STOP_EXTRA_S) * 1000;
    while (running_pid(cfg) > 0 || (pid > 1 && process_running(pid))) {
        if (now_ms() > deadline) {
            config_free(cfg);
            return fail("%s", "breakwater did not stop in time");
        }
        usleep(20000);
    }
    config_free(cfg);
    printf("breakwater stopped\n");
    return 0;
}

/* print_reply - a daemon's answer: text on stdout (status 0) or as the one
 * error line; rc != 0 means the daemon could not be reached */
static int print_reply(int rc, int status, char *text, bool json, const char *who, const char *not_running)
{
    if (rc != 0) {
        if (errno == ENOENT || errno == ECONNREFUSED) {
            if (json)
                printf("{\"running\": false}\n");
            return fail("%s", not_running);
        }
        return fail("cannot reach %s: %s", who, strerror(errno));
    }
    if (status == 0)
        printf("%s\n", text);
    else
        fail("%s", text);
    free(text);
    return status;
}

/* simple_call - commands whose reply is just printed */
static int simple_call(struct mailctl *mc, int argc, const char *const *argv, bool json)
{
    struct config *cfg = load(mc, false);
    if (cfg == NULL)
        return 1;
    int status;
    char *text = NULL;
    int rc = call(cfg, argc, argv, &status, &text);
    config_free(cfg);
    return print_reply(rc, status, text, json, "the master", "breakwater is not running");
}

/* qmgr_call - a request to qmgr over private/qmgr (root reaches it) */
#define REINDEX_TIMEOUT_MS (3600 * 1000) /* a rebuild reads the whole spool */

/* qmgr_call_timeout - one request to qmgr, its answer printed */
static int qmgr_call_timeout(struct mailctl *mc, int argc, const char *const *argv, bool json, int timeout_ms)
{
    struct config *cfg = load(mc, false);
    if (cfg == NULL)
        return 1;
    char sock[PATHS_MAX];
    int status;
    char *text = NULL;
    int rc = paths_private_socket(cfg_str(cfg, P_queue_directory), "qmgr", sock, sizeof sock)
                 ? control_call(sock, argc, argv, timeout_ms, &status, &text)
                 : -1;
    config_free(cfg);
    return print_reply(rc, status, text, json, "the queue manager",
                       "the queue manager is not running (is breakwater started?)");
}

static int qmgr_call(struct mailctl *mc, int argc, const char *const *argv, bool json)
{
    return qmgr_call_timeout(mc, argc, argv, json, CONTROL_TIMEOUT_MS);
}

int cmd_flush(struct mailctl *mc, int argc, char **argv)
{
    if (argc > 2) {
        fprintf(stderr, "usage: mailctl flush [DOMAIN]\n");
        return 2;
    }
    const char *req[] = {"flush", argc == 2 ? argv[1] : NULL};
    return qmgr_call(mc, argc == 2 ? 2 : 1, req, false);
}

int cmd_queue(struct mailctl *mc, int argc, char **argv)
{
    static const char *const subs[] = {"list", "show", "delete", "redirect", "reindex"};
    bool known = false;
    for (size_t i = 0; argc >= 2 && i < 5; i++)
        known = known || strcmp(argv[1], subs[i]) == 0;
    if (!known || argc > 15) {
        fprintf(stderr, "usage: mailctl queue list [--domain D] [--vg V] [--offset N] [--limit N] [--json] | show ID "
                        "[--json] | delete ID...|--domain D | redirect (ID...|--domain D) HOST[:PORT] | reindex\n");
        return 2;
    }
    if (strcmp(argv[1], "reindex") == 0) {
        if (argc != 2) {
            fprintf(stderr, "usage: mailctl queue reindex\n");
            return 2;
        }
        const char *req[] = {"reindex"};
        return qmgr_call_timeout(mc, 1, req, false, REINDEX_TIMEOUT_MS);
    }
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[1], "list") == 0 && (strcmp(argv[i], "--offset") == 0 || strcmp(argv[i], "--limit") == 0)) {
            int64_t n;
            if (i + 1 >= argc || !str_to_i64(argv[i + 1], 0, INT64_MAX, &n)) {
                fprintf(stderr, "mailctl: %s needs a number\n", argv[i]);
                return 2;
            }
            i++;
        }
    const char *req[16];
    bool json = false;
    for (int i = 1; i < argc; i++) {
        req[i - 1] = argv[i];
        json = json || strcmp(argv[i], "--json") == 0;
    }
    if (strcmp(argv[1], "show") == 0 && (argc < 3 || argv[2][0] == '-')) {
        fprintf(stderr, "usage: mailctl queue show ID [--json]\n");
        return 2;
    }
    return qmgr_call(mc, argc - 1, req, json);
}

/* domain_debug - add or remove a domain in log/debug/domains (atomically);
 * the delivery agents notice within a second, and it survives reloads */
static int domain_debug(struct mailctl *mc, const char *domain, bool on)
{
    if (!addr_domain_valid(domain, strlen(domain), false) || domain[0] == '[')
        return fail("'%s' is not a domain name", domain);
    struct config *cfg = load(mc, false);
    if (cfg == NULL)
        return 1;
    char path[PATHS_MAX], tmp[PATHS_MAX + 8], logp[PATHS_MAX], lower[ADDR_DOMAIN_MAX + 1];
    const char *q = cfg_str(cfg, P_queue_directory);
    str_copy(lower, sizeof lower, domain);
    domain = str_lower(lower); /* the agents name the file in lower case */
    str_fmt(path, sizeof path, "%s/log/debug/domains", q);
    str_fmt(tmp, sizeof tmp, "%s.tmp", path);
    paths_debug_log(q, domain, logp, sizeof logp);
    config_free(cfg);
    FILE *in = fopen(path, "r"), *out = fopen(tmp, "w");
    if (out == NULL) {
        if (in)
            fclose(in);
        return fail("cannot write %s: %s (is the spool set up? start breakwater once)", tmp, strerror(errno));
    }
    char line[512];
    bool present = false;
    while (in && fgets(line, sizeof line, in)) {
        char *d = str_trim(line);
        if (*d == '\0')
            continue;
        if (str_case_eq(d, domain)) {
            present = true;
            if (!on)
                continue;
        }
        fprintf(out, "%s\n", d);
    }
    if (on && !present)
        fprintf(out, "%s\n", domain);
    if (in)
        fclose(in);
    if (fclose(out) != 0 || chmod(tmp, 0644) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return fail("cannot update %s: %s", path, strerror(errno));
    }
    if (on)
        printf("debug logging for %s is on: %s\n", domain, logp);
    else
        printf("debug logging for %s is off\n", domain);
    return 0;
}

int cmd_domain(struct mailctl *mc, int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "debug") == 0 && (strcmp(argv[3], "on") == 0 || strcmp(argv[3], "off") == 0))
        return domain_debug(mc, argv[2], strcmp(argv[3], "on") == 0);
    if (argc >= 2 && strcmp(argv[1], "debug") == 0) {
        fprintf(stderr, "usage: mailctl domain debug DOMAIN on|off\n");
        return 2;
    }
    bool json = false;
    const char *req[6];
    int n = 0;
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: mailctl domain list [--json] | domain show DOMAIN [--json]\n");
        return 2;
    }
    req[n++] = "domain";
    for (int i = 1; i < argc; i++) {
        req[n++] = argv[i];
        json = json || strcmp(argv[i], "--json") == 0;
    }
    return qmgr_call(mc, n, req, json);
}

int cmd_reload(struct mailctl *mc, int argc, char **argv)
{
    struct config *cfg = load(mc, true); /* report a bad main.cf here, with file:line */
    if (cfg == NULL)
        return 1;
    bool ok = tables_ok(cfg);
    config_free(cfg);
    if (!ok)
        return 1;
    const char *req[] = {"reload"};
    return simple_call(mc, 1, req, false);
}

int cmd_status(struct mailctl *mc, int argc, char **argv)
{
    bool json = argc > 1 && strcmp(argv[1], "--json") == 0;
    if (argc > 2 || (argc == 2 && !json)) {
        fprintf(stderr, "usage: mailctl status [--json]\n");
        return 2;
    }
    const char *req[] = {"status", "--json"};
    return simple_call(mc, json ? 2 : 1, req, json);
}

/* man_escape - print text safe for troff */
static void man_escape(const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", stdout);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", stdout);
        else if (*s == '-')
            fputs("\\-", stdout);
        else
            putchar(*s);
    }
}

static int config_man(void)
{
    printf(".TH MAIN.CF 5 \"\" \"Breakwater " BW_VERSION "\" \"File Formats\"\n"
           ".SH NAME\nmain.cf \\- Breakwater configuration parameters\n"
           ".SH SYNTAX\nPostfix syntax: \\fIname\\fR = \\fIvalue\\fR; lines starting with # are comments; "
           "a line starting with white space continues the previous one; $name, ${name} and $(name) expand "
           "other parameters, ${name?text} and ${name:text} are conditional; lists are separated by commas "
           "and/or white space; durations take s m h d w suffixes; sizes are bytes. An unknown parameter is "
           "a warning; an invalid value is an error naming file, line and parameter.\n"
           ".SH PARAMETERS\n");
    for (int i = 0; i < P_COUNT; i++) {
        const struct param_info *pi = &param_table[i];
        printf(".TP\n.B %s\n(%s; default: ", pi->name, param_type_name(pi->type));
        man_escape(*pi->def ? pi->def : "empty");
        printf(")\n");
        man_escape(pi->doc);
        printf(".\n");
    }
    printf(".SH SEE ALSO\nmailctl(8), breakwater(8)\n");
    return 0;
}

/* daemons_present - config check: the programs the master will run */
static bool daemons_present(const struct config *cfg)
{
    static const char *const progs[] = {"master", "smtpd", "qmgr", "dnscache", "delivery"};
    /* the daemons master starts */
    bool ok = true;
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        char path[PATHS_MAX];
        str_fmt(path, sizeof path, "%s/%s", cfg_str(cfg, P_daemon_directory), progs[i]);
        if (access(path, X_OK) != 0) {
            fprintf(stderr, "mailctl: %s: daemon_directory: %s is not executable: %s\n", config_path(cfg), path,
                    strerror(errno));
            ok = false;
        }
    }
    return ok;
}

int cmd_config(struct mailctl *mc, int argc, char **argv)
{
    bool only_set = false, expanded = false;
    if (argc == 2 && strcmp(argv[1], "--man") == 0)
        return config_man();
    if (argc == 2 && strcmp(argv[1], "check") == 0) {
        struct config *cfg = load(mc, true);
        if (cfg == NULL)
            return 1;
        char err[256];
        unsigned uid, gid;
        bool ok = daemons_present(cfg) && tables_ok(cfg);
        if (!server_owner_ids(cfg_str(cfg, P_mail_owner), &uid, &gid, err, sizeof err)) {
            fprintf(stderr, "mailctl: %s: %s\n", config_path(cfg), err);
            ok = false;
        }
        if (ok)
            printf("%s: ok\n", config_path(cfg));
        config_free(cfg);
        return ok ? 0 : 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0)
            only_set = true;
        else if (strcmp(argv[i], "-x") == 0)
            expanded = true;
        else {
            fprintf(stderr, "usage: mailctl config [-n] [-x] | config check\n");
            return 2;
        }
    }
    struct config *cfg = load(mc, true);
    if (cfg == NULL)
        return 1;
    for (int i = 0; i < P_COUNT; i++) {
        if (only_set && !cfg_is_set(cfg, (enum param_id)i))
            continue;
        const char *v = expanded ? cfg_str(cfg, (enum param_id)i) : cfg_raw(cfg, (enum param_id)i);
        printf("%s =%s%s\n", param_table[i].name, *v ? " " : "", v);
    }
    config_free(cfg);
    return 0;
}

int cmd_ipc(struct mailctl *mc, int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--man") != 0) {
        fprintf(stderr, "usage: mailctl ipc --man\n");
        return 2;
    }
    printf(".TH BREAKWATER-IPC 7 \"\" \"Breakwater " BW_VERSION "\" \"Miscellaneous\"\n"
           ".SH NAME\nbreakwater-ipc \\- messages between Breakwater processes\n"
           ".SH WIRE FORMAT\nA frame is a 32-bit big-endian length, a 16-bit type and the fields; "
           "a field is 'u' and a 64-bit big-endian integer, or 's', a 32-bit length and the bytes "
           "(no NUL). Frames are at most %d bytes. IPC version %d.\n.SH MESSAGES\n",
           IPC_FRAME_MAX, IPC_VERSION);
#define MSG(name, from, to, fields, doc)                                                                     \
    printf(".TP\n.B " #name "\n" #from " \\(-> " #to ": "), man_escape(fields), printf("\n"), man_escape(doc), \
        printf(".\n");
#include "ipc_msgs.def"
#undef MSG
    return 0;
}
