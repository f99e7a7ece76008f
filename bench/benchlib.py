#!/usr/bin/python3
"""benchlib.py - shared setup for the Breakwater benchmarks (see bench/README.md).

Builds Breakwater optimised out of tree, and starts/stops private instances of
Breakwater and of Postfix on free loopback ports, each with its own config dir
and queue under a mode-0755 work directory in /tmp.  Nothing here touches the
system's /etc/postfix instance or /var/spool.  Only processes this module
started (recorded pids and their descendants) are ever signalled.

Used as a module by connections.py and as a command line by accept.sh:

    benchlib.py build                      build, print the build dir
    benchlib.py workdir                    make a fresh work dir, print it
    benchlib.py port                       print a free loopback port
    benchlib.py bw-start WORKDIR [k=v...]  start Breakwater, print its port
    benchlib.py pf-start WORKDIR [k=v...]  start Postfix, print its port
    benchlib.py {bw,pf}-stop WORKDIR       stop it (graceful, then SIGKILL)
    benchlib.py {bw,pf}-count WORKDIR      print the number of queued messages
    benchlib.py {bw,pf}-rss WORKDIR        print the summed VmRSS in kB
    benchlib.py {bw,pf}-durability WORKDIR print a one-line durability setting
    benchlib.py cleanup WORKDIR            stop whatever runs there, remove it
"""
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("BW_SRC") or os.path.dirname(HERE)
BUILD = os.environ.get("BW_BENCH_BUILD", "/tmp/bw-bench-build")
PYTHON = "/usr/bin/python3"
FORBIDDEN_PORTS = {2024}
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"

_handed_out = set()


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def run(cmd, timeout=120, check=True, cwd=None, env=None, capture=True):
    """Run a command, bounded in time; return CompletedProcess.

    Output goes to temporary files, not pipes: a daemon started by the
    command that inherits its stdout/stderr must not make us wait for EOF."""
    import tempfile as _tf
    with _tf.TemporaryFile("w+") as out, _tf.TemporaryFile("w+") as err:
        try:
            p = subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout,
                               stdin=subprocess.DEVNULL,
                               stdout=out if capture else None,
                               stderr=err if capture else None, text=True)
        except subprocess.TimeoutExpired:
            raise RuntimeError("timed out after %ss: %s" % (timeout, " ".join(cmd)))
        if capture:
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read(), err.read()
        else:
            p.stdout = p.stderr = ""
    if check and p.returncode != 0:
        raise RuntimeError("%s: exit %d\n%s%s" % (" ".join(cmd), p.returncode,
                                                   p.stdout or "", p.stderr or ""))
    return p


# ---------------------------------------------------------------- build

def build_paths(build=BUILD):
    return {
        "build": build,
        "daemon_directory": os.path.join(build, "libexec", "breakwater"),
        "mailctl": os.path.join(build, "mailctl", "mailctl"),
    }


def build(build=BUILD, quiet=False):
    """Build Breakwater with CFLAGS=-O2 out of tree; return build_paths()."""
    if not os.access(os.path.join(SRC, "configure"), os.X_OK):
        log("autoreconf -fi in %s" % SRC)
        run(["autoreconf", "-fi"], cwd=SRC, timeout=600)
    os.makedirs(build, exist_ok=True)
    if not os.path.exists(os.path.join(build, "config.status")):
        log("configuring %s (CFLAGS=-O2)" % build)
        run([os.path.join(SRC, "configure"), "CFLAGS=-O2", "-q"], cwd=build,
            timeout=600)
    if not quiet:
        log("make -j2 -s in %s" % build)
    run(["make", "-j2", "-s"], cwd=build, timeout=1800)
    paths = build_paths(build)
    for prog in (os.path.join(paths["daemon_directory"], "master"),
                 os.path.join(paths["daemon_directory"], "smtpd"),
                 paths["mailctl"]):
        if not os.access(prog, os.X_OK):
            raise RuntimeError("build finished but %s is missing" % prog)
    return paths


# ---------------------------------------------------------------- helpers

def free_port():
    """A currently free TCP port on 127.0.0.1 (never 2024, never reused here)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port in FORBIDDEN_PORTS or port in _handed_out:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def new_workdir():
    d = tempfile.mkdtemp(prefix="bw-bench-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


def wait_port(port, timeout=30.0, host="127.0.0.1"):
    """Wait until something accepts on host:port and sends a 220 line."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=3) as s:
                s.settimeout(3)
                data = s.recv(512)
                if data.startswith(b"220"):
                    try:
                        s.sendall(b"QUIT\r\n")
                    except OSError:
                        pass
                    return
                last = data
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise RuntimeError("nothing greets on %s:%d after %ss (%r)" % (host, port, timeout, last))


def proc_ppids():
    """{pid: ppid} for every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
            # comm may contain spaces/parens: the ppid follows the last ')'
            out[int(name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return out


def descendants(root):
    """root's descendants (not root itself)."""
    ppids = proc_ppids()
    children = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def vm_rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def kill_pids(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


def count_files(top):
    n = 0
    if not os.path.isdir(top):
        return 0
    for _, _, files in os.walk(top):
        n += len(files)
    return n


def parse_kv(args):
    out = {}
    for a in args:
        k, sep, v = a.partition("=")
        if not sep:
            raise SystemExit("expected name=value, got %r" % a)
        out[k.strip()] = v.strip()
    return out


def _save_state(workdir, kind, state):
    with open(os.path.join(workdir, kind + ".state.json"), "w") as f:
        json.dump(state, f)


def _load_state(workdir, kind):
    try:
        with open(os.path.join(workdir, kind + ".state.json")) as f:
            return json.load(f)
    except OSError:
        return None


# ---------------------------------------------------------------- Breakwater

class Breakwater:
    """A private Breakwater instance under WORKDIR/bw."""

    kind = "bw"

    def __init__(self, workdir, paths=None, params=None):
        self.workdir = workdir
        self.paths = paths or build_paths()
        self.top = os.path.join(workdir, "bw")
        self.confdir = os.path.join(self.top, "etc")
        self.queue = os.path.join(self.top, "queue")
        self.logdir = os.path.join(self.top, "log")
        self.log_file = os.path.join(self.logdir, "breakwater.log")
        self.params = dict(params or {})
        self.port = None
        self.master_pid = None
        self.known_pids = set()
        st = _load_state(workdir, self.kind)
        if st:
            self.port = st["port"]
            self.master_pid = st.get("master_pid")
            self.known_pids = set(st.get("pids", []))
            self.paths = st.get("paths", self.paths)

    def mailctl(self, *args, timeout=60, check=True):
        return run([self.paths["mailctl"], "-c", self.confdir] + list(args),
                   timeout=timeout, check=check)

    def write_config(self):
        try:
            owner = pwd.getpwnam(self.params.get("mail_owner", "breakwater"))
        except KeyError:
            owner = None
        for d in (self.top, self.confdir, self.logdir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        if owner and os.geteuid() == 0:
            os.chown(self.logdir, owner.pw_uid, owner.pw_gid)
        self.port = self.port or free_port()
        # Mail must stay queued and nothing may leave the machine: every
        # destination is statically routed to a closed loopback port, and DNS
        # goes to a closed loopback port too (qmgr/delivery then defer).
        closed = free_port()
        routes = os.path.join(self.confdir, "smtp_routes")
        with open(routes, "w") as f:
            f.write("# written by bench/benchlib.py: nothing listens there\n"
                    "*  127.0.0.1:%d\n" % closed)
        cf = {
            "queue_directory": self.queue,
            "daemon_directory": self.paths["daemon_directory"],
            "log_file": self.log_file,
            "smtpd_listen": "127.0.0.1:%d" % self.port,
            "myhostname": "bw-bench.localdomain",
            "mynetworks": "127.0.0.0/8",
            "smtpd_processes": "2",
            "smtpd_max_connections": "100000",
            "monitor_listen": "",
            "smtp_routes": routes,
            "dns_servers": "127.0.0.1:%d" % closed,
        }
        cf.update(self.params)
        with open(os.path.join(self.confdir, "main.cf"), "w") as f:
            f.write("# written by bench/benchlib.py\n")
            for k, v in cf.items():
                f.write("%s = %s\n" % (k, v))
        self.cf = cf

    def start(self, timeout=60):
        self.write_config()
        p = self.mailctl("start", timeout=timeout, check=False)
        if p.returncode != 0:
            raise RuntimeError("mailctl start failed (exit %d): %s%s\nlog tail:\n%s"
                               % (p.returncode, p.stdout, p.stderr, self.log_tail()))
        self.refresh_pids()
        self._save()
        wait_port(self.port)
        return self.port

    def _save(self):
        _save_state(self.workdir, self.kind, {
            "port": self.port, "master_pid": self.master_pid,
            "pids": sorted(self.known_pids), "paths": self.paths})

    def status(self, timeout=15):
        p = self.mailctl("status", "--json", timeout=timeout, check=False)
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise RuntimeError("mailctl status --json: exit %d, not JSON: %r %r"
                               % (p.returncode, p.stdout[:300], p.stderr[:300]))

    def refresh_pids(self):
        """Pids of master + daemons, from status --json (falls back to /proc)."""
        pids = []
        try:
            st = self.status()
            if st.get("running"):
                self.master_pid = st["pid"]
                pids = [st["pid"]] + [d["pid"] for d in st.get("daemons", [])
                                      if d.get("pid")]
        except RuntimeError as e:
            log("warning: %s" % e)
        if not pids and self.master_pid and alive(self.master_pid):
            pids = [self.master_pid] + descendants(self.master_pid)
        self.known_pids |= set(pids)
        return pids

    def rss_kb(self):
        pids = self.refresh_pids()
        return sum(vm_rss_kb(p) for p in pids), sum(pss_kb(p) for p in pids), pids

    def count_queued(self):
        """(queued, incoming): files under queue/*/ and under incoming/."""
        q = 0
        qdir = os.path.join(self.queue, "queue")
        if os.path.isdir(qdir):
            for sub in os.listdir(qdir):
                p = os.path.join(qdir, sub)
                if os.path.isdir(p):
                    q += sum(1 for e in os.scandir(p) if e.is_file())
        return q, count_files(os.path.join(self.queue, "incoming"))

    def durability(self):
        method = self.params.get("spool_sync_method")
        try:
            p = self.mailctl("config", timeout=15, check=False)
            for line in p.stdout.splitlines():
                k, _, v = line.partition("=")
                if k.strip() == "spool_sync_method":
                    method = v.strip()
        except RuntimeError:
            pass
        how = {
            "syncfs": "per group-commit batch: syncfs() of the spool file system, "
                      "rename into queue/XX/, syncfs() again",
            "fsync": "fdatasync() of each queue file, rename into queue/XX/, "
                     "fsync() of each touched queue/XX/ directory",
        }.get(method or "", "see lib/spool.c")
        return ("spool_sync_method=%s: 250 only after the file and its directory "
                "entry are on stable storage (%s)" % (method or "default", how))

    def log_tail(self, n=20):
        try:
            with open(self.log_file, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log file %s)" % self.log_file

    def stop(self, timeout=90):
        if self.master_pid is None and not self.known_pids:
            return
        pids = set(self.known_pids)
        if self.master_pid and alive(self.master_pid):
            pids |= set(descendants(self.master_pid))
            pids.add(self.master_pid)
        try:
            p = self.mailctl("stop", timeout=timeout, check=False)
            if p.returncode != 0 and any(alive(x) for x in pids):
                log("warning: mailctl stop: exit %d %s%s" % (p.returncode, p.stdout, p.stderr))
        except RuntimeError as e:
            log("warning: %s" % e)
        if not wait_gone(pids, 10):
            left = [x for x in pids if alive(x)]
            log("warning: breakwater pids still alive after stop, SIGKILL: %s" % left)
            kill_pids(left)
            wait_gone(left, 10)
        self.master_pid = None
        self.known_pids = set()
        try:
            os.unlink(os.path.join(self.workdir, self.kind + ".state.json"))
        except OSError:
            pass


# ---------------------------------------------------------------- Postfix

POSTFIX_MASTER_CF = """\
# written by bench/benchlib.py: a private Postfix instance, nothing chrooted
{port}      inet  n       -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix instance under WORKDIR/pf (`postfix -c DIR`).

    Accepted mail stays queued: by default (mode "hold") every message is put
    on hold (check_client_access static:HOLD, the queue file goes to hold/
    and the queue manager never sees it); mode "defer" lets qmgr defer it
    (defer_transports = smtp, relay); mode "relay" lets qmgr hand it to the
    smtp client, which finds the relayhost closed and defers it - the same
    path Breakwater's qmgr and delivery take.  In every mode relayhost is a
    closed loopback port, so nothing can leave.  Postfix's cleanup fsync()s each queue file
    before smtpd sends 250 (compiled in; no parameter turns it off).
    """

    kind = "pf"

    def __init__(self, workdir, mode=None, params=None):
        self.workdir = workdir
        self.top = os.path.join(workdir, "pf")
        self.confdir = os.path.join(self.top, "etc")
        self.queue = os.path.join(self.top, "queue")
        self.data = os.path.join(self.top, "data")
        self.log_file = os.path.join(self.top, "maillog")
        self.mode = mode or os.environ.get("BENCH_POSTFIX_MODE", "hold")
        if self.mode not in ("hold", "defer", "relay"):
            raise ValueError("BENCH_POSTFIX_MODE must be hold, defer or relay")
        self.params = dict(params or {})
        self.port = None
        self.master_pid = None
        self.known_pids = set()
        st = _load_state(workdir, self.kind)
        if st:
            self.port = st["port"]
            self.master_pid = st.get("master_pid")
            self.known_pids = set(st.get("pids", []))
            self.mode = st.get("mode", self.mode)

    def write_config(self):
        if os.geteuid() != 0:
            raise RuntimeError("the private Postfix instance needs root")
        for d in (self.top, self.confdir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        # queue_directory: owned by root (Postfix insists); post-install
        # creates the subdirectories with postfix:postdrop ownership.
        os.makedirs(self.queue, exist_ok=True)
        os.chown(self.queue, 0, 0)
        os.chmod(self.queue, 0o755)
        pfu = pwd.getpwnam("postfix")
        os.makedirs(self.data, exist_ok=True)
        os.chown(self.data, pfu.pw_uid, pfu.pw_gid)
        os.chmod(self.data, 0o700)
        self.port = self.port or free_port()
        closed = free_port()          # nothing ever listens there
        cf = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": self.log_file,
            "maillog_file_prefixes": self.top,
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "pf-bench.localdomain",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "relayhost": "[127.0.0.1]:%d" % closed,
            # no artificial throttle of intake by the delivery side (the
            # queue manager never picks up held mail, so no flow tokens)
            "in_flow_delay": "0",
            # Breakwater does no reverse lookup either ("unknown[ip]")
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
        }
        if self.mode == "hold":
            cf["smtpd_client_restrictions"] = "check_client_access static:HOLD"
        if self.mode in ("hold", "defer"):
            cf["defer_transports"] = "smtp, relay"
        cf.update(self.params)
        with open(os.path.join(self.confdir, "main.cf"), "w") as f:
            f.write("# written by bench/benchlib.py (private instance, mode %s)\n" % self.mode)
            for k, v in cf.items():
                f.write("%s = %s\n" % (k, v))
        with open(os.path.join(self.confdir, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER_CF.format(port="127.0.0.1:%d" % self.port))
        self.cf = cf

    def postfix(self, *args, timeout=60, check=True):
        # postfix(1) reports errors on stderr only when stderr is a terminal
        # (else to the log it may not have opened): give it one with script(1).
        cmd = " ".join([POSTFIX, "-c", self.confdir] + list(args))
        return run(["script", "-qec", cmd, "/dev/null"], timeout=timeout, check=check)

    def pid_from_file(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout=60):
        self.write_config()
        p = self.postfix("start", timeout=timeout, check=False)
        if p.returncode != 0:
            raise RuntimeError("postfix -c %s start failed (exit %d): %s%s"
                               % (self.confdir, p.returncode, p.stdout, p.stderr))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pid = self.pid_from_file()
            if pid and alive(pid):
                self.master_pid = pid
                break
            time.sleep(0.1)
        if not self.master_pid:
            raise RuntimeError("postfix master did not write %s/pid/master.pid" % self.queue)
        self.known_pids.add(self.master_pid)
        self._save()
        wait_port(self.port)
        return self.port

    def _save(self):
        _save_state(self.workdir, self.kind, {
            "port": self.port, "master_pid": self.master_pid,
            "pids": sorted(self.known_pids), "mode": self.mode})

    def pids(self):
        if not self.master_pid or not alive(self.master_pid):
            return []
        return [self.master_pid] + descendants(self.master_pid)

    def rss_kb(self):
        pids = self.pids()
        return sum(vm_rss_kb(p) for p in pids), sum(pss_kb(p) for p in pids), pids

    def count_queued(self):
        """(queued, other): queue files in incoming+active+deferred+hold, and
        in maildrop+corrupt."""
        q = sum(count_files(os.path.join(self.queue, d))
                for d in ("incoming", "active", "deferred", "hold"))
        o = sum(count_files(os.path.join(self.queue, d)) for d in ("maildrop", "corrupt"))
        return q, o

    def count_queued_stable(self, timeout=60):
        """Count until two successive counts agree (files move between queues
        while qmgr works, mode defer)."""
        deadline = time.monotonic() + timeout
        prev = self.count_queued()
        while time.monotonic() < deadline:
            time.sleep(0.5 if self.mode != "hold" else 0.05)
            cur = self.count_queued()
            if cur == prev and (self.mode == "hold" or
                                count_files(os.path.join(self.queue, "incoming")) == 0):
                return cur
            prev = cur
        return prev

    def durability(self):
        how = {"hold": "mail put on hold by check_client_access static:HOLD",
               "defer": "qmgr defers all mail (defer_transports = smtp, relay)",
               "relay": "qmgr hands mail to smtp, which finds the relayhost closed "
                        "and defers it"}[self.mode]
        return ("cleanup fsync()s each queue file before 250 (compiled in, not "
                "configurable; no directory fsync); %s; relayhost a closed loopback port" % how)

    def log_tail(self, n=20):
        try:
            with open(self.log_file, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log file %s)" % self.log_file

    def stop(self, timeout=60):
        if self.master_pid is None:
            return
        pids = set(self.known_pids)
        if alive(self.master_pid):
            pids |= set(self.pids())
        try:
            p = self.postfix("stop", timeout=timeout, check=False)
            if p.returncode != 0 and any(alive(x) for x in pids):
                log("warning: postfix stop: exit %d %s%s" % (p.returncode, p.stdout, p.stderr))
        except RuntimeError as e:
            log("warning: %s" % e)
        if not wait_gone(pids, 15):
            left = [x for x in pids if alive(x)]
            log("warning: postfix pids still alive after stop, SIGKILL: %s" % left)
            kill_pids(left)
            wait_gone(left, 10)
        self.master_pid = None
        self.known_pids = set()
        try:
            os.unlink(os.path.join(self.workdir, self.kind + ".state.json"))
        except OSError:
            pass


# ---------------------------------------------------------------- cleanup

def cleanup(workdir):
    if not os.path.basename(os.path.normpath(workdir)).startswith("bw-bench-") \
            or not os.path.abspath(workdir).startswith("/tmp/"):
        raise SystemExit("refusing to clean %s (not a /tmp/bw-bench-* dir)" % workdir)
    if not os.path.isdir(workdir):
        return
    if _load_state(workdir, "bw"):
        Breakwater(workdir).stop()
    if _load_state(workdir, "pf"):
        Postfix(workdir).stop()
    shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- CLI

def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "build":
        print(build()["build"])
        return 0
    if cmd == "port":
        print(free_port())
        return 0
    if cmd == "workdir":
        print(new_workdir())
        return 0
    if cmd == "cleanup":
        cleanup(args[0])
        return 0
    kind, _, op = cmd.partition("-")
    if kind not in ("bw", "pf") or not args:
        print(__doc__, file=sys.stderr)
        return 2
    workdir = args[0]
    params = parse_kv(args[1:]) if op == "start" else {}
    inst = Breakwater(workdir, params=params) if kind == "bw" else Postfix(workdir, params=params)
    if op == "start":
        print(inst.start())
    elif op == "stop":
        inst.stop()
    elif op == "count":
        if kind == "pf":
            q, o = inst.count_queued_stable()
        else:
            q, o = inst.count_queued()
        print(q, o)
    elif op == "rss":
        rss, pss, pids = inst.rss_kb()
        print(rss, pss, len(pids))
    elif op == "durability":
        print(inst.durability())
    elif op == "logtail":
        print(inst.log_tail(int(args[1]) if len(args) > 1 else 20))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RuntimeError as e:
        log("error: %s" % e)
        sys.exit(1)
