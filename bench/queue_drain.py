#!/usr/bin/python3
"""queue_drain.py - a destination that is down, a large queue for it, then the
drain (issue #4, "Measure it"); Breakwater and Postfix in the same run.

For each system and each queue size Q it starts a fresh private instance
(bench/benchlib.py: /tmp/bw-bench-*, loopback ports) whose route for the test
domain dest.bench is a "dead" test sink on 127.0.0.5 (Breakwater) or
127.0.0.6 (Postfix):

  1. down: the dead sink is a Python listener that accepts each connection,
     records it with a time stamp and closes it at once (BENCH_DEAD=close,
     the default) or after a "421 4.3.2" greeting (BENCH_DEAD=421).  One
     message is sent and the script waits until the system has given up on
     the destination (Breakwater: `mailctl domain show dest.bench --json`
     says "down"; Postfix: the message is in deferred/);
  2. the queue manager's VmRSS is taken ("before");
  3. Q messages are injected with smtp-source in 10 consecutive chunks of
     Q/10 (one message per connection, 50 sessions, 1,024-byte payload); each
     chunk is timed, so each tenth of the injection has its own rate.  qmgr's
     VmRSS is sampled after each chunk;
  4. the script waits until the queue manager has taken in every message
     (Breakwater: the domain shows Q+1 queued and spool new/ and incoming/
     are empty; Postfix: incoming/ is empty and Q+1 queue files exist),
     takes qmgr's VmRSS again ("after"), and keeps the destination down
     until it has been down for at least BENCH_MIN_DOWN seconds;
  5. up: the dead listener is closed and Postfix's smtp-sink is started on
     the same address and port; the mail is flushed (`mailctl flush
     dest.bench` / `postqueue -f`) and the sink's message counter is polled
     until it reaches Q+1: drain rate overall and per tenth;
  6. time to empty: from the flush until the queue is empty (Breakwater:
     the domain shows 0 queued and no file is left under queue/; Postfix: no
     queue file left in incoming, active, deferred, hold);
  7. checks: the sink got exactly Q+1 messages (none lost, none twice), no
     Breakwater daemon restarted, the log's status=sent count.

Connection attempts while down are the connections the dead sink accepted,
from the first one (the first message's delivery) until the sink was
switched to up.  Retry settings: Breakwater retry_schedule = 10s (one probe
per interval, +-10 % jitter), max_queue_lifetime = 30d; Postfix
minimal_backoff_time = maximal_backoff_time = queue_run_delay = 10s,
maximal_queue_lifetime = 30d.

Output: progress on stderr, summary lines on stdout (see bench/QUEUE.md),
raw results as JSON in /tmp/queue-drain-YYYYmmdd-HHMMSS.json.

Environment:
  BENCH_QUICK=1         Q = 2,000 and 20,000 for both systems, BENCH_MIN_DOWN 40
  BENCH_BW_Q="a b"      Breakwater queue sizes (default "10000 1000000")
  BENCH_PF_Q="a b"      Postfix queue sizes (default "10000 100000")
  BENCH_ONLY=breakwater|postfix
  BENCH_SIZE=N          smtp-source payload bytes (default 1024)
  BENCH_SESSIONS=N      smtp-source sessions (default 50)
  BENCH_SOURCE_REUSE=1  smtp-source -d: all messages of a session over one
                        connection (default: one message per connection)
  BENCH_RETRY=S         retry interval in seconds (default 10)
  BENCH_MIN_DOWN=S      keep the destination down at least S s (default 70)
  BENCH_DEAD=close|421  how the dead sink treats a connection (default close)
  BENCH_PHASE_TIMEOUT=S hard limit of each phase (default 3600 s)
  BENCH_STALL=S         give up a drain when the sink count has not moved
                        for S s (default 300)
  BENCH_BW_PARAMS="k=v" extra Breakwater main.cf settings
  BENCH_PF_PARAMS="k=v" extra Postfix main.cf settings
  BENCH_KEEP=1          keep the work directories (logs, spool) at the end
  BW_BENCH_BUILD=DIR    build directory (benchlib's default otherwise)
  BW_SRC=DIR            source tree for that build
  BENCH_NO_BUILD=1      use the build directory as it is (no make)
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib as bl  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTQUEUE = "/usr/sbin/postqueue"
DOMAIN = "dest.bench"
SENDER = "sender@bench.example"
RCPT = "rcpt@" + DOMAIN
BW_SINK_HOST = "127.0.0.5"
PF_SINK_HOST = "127.0.0.6"
CLK = os.sysconf("SC_CLK_TCK")

_children = []      # Popen objects we started (smtp-source, smtp-sink)
_workdirs = []
_dead = []          # DeadSink objects


def say(msg):
    print("queue-drain: " + msg, file=sys.stderr, flush=True)


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default


def env_list(name, default):
    v = os.environ.get(name)
    return [int(x) for x in v.replace(",", " ").split()] if v else list(default)


def kv_env(name):
    return bl.parse_kv(os.environ.get(name, "").split())


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def proc_cpu(pid):
    """utime+stime of pid in seconds, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        f = s[s.rindex(")") + 2:].split()
        return (int(f[11]) + int(f[12])) / CLK
    except (OSError, ValueError, IndexError):
        return None


def proc_times(pid):
    """(utime+stime, cutime+cstime) of pid in seconds, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        f = s[s.rindex(")") + 2:].split()
        return (int(f[11]) + int(f[12])) / CLK, (int(f[13]) + int(f[14])) / CLK
    except (OSError, ValueError, IndexError):
        return None


def tree_cpu(master):
    """CPU seconds of master and every live descendant, plus what the master's
    reaped children used (Postfix's smtpd/cleanup/smtp come and go)."""
    if not master:
        return 0.0
    total = 0.0
    t = proc_times(master)
    if t:
        total += t[0] + t[1]
    for pid in bl.descendants(master):
        t = proc_times(pid)
        if t:
            total += t[0]
    return total


def machine_cpu():
    """(busy, iowait, all) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK, iowait / CLK, (busy + idle + iowait) / CLK


def self_and_children_cpu():
    import resource
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime, b.ru_utime + b.ru_stime


def proc_status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def count_log(path, patterns):
    """{pattern: number of lines containing it} (grep -c -F: the log of a
    1M-message run is about 1 GB)."""
    out = {}
    for p in patterns:
        r = bl.run(["grep", "-c", "-F", "-e", p, path], timeout=900, check=False)
        try:
            out[p] = int(r.stdout.split()[0])
        except (ValueError, IndexError):
            out[p] = 0
    return out


def grep_log(path, regex, limit=20):
    """The first limit lines matching an extended regex (case-insensitive)."""
    r = bl.run(["grep", "-E", "-i", "-m", str(limit), "-e", regex, path], timeout=900, check=False)
    return r.stdout.splitlines()


def free_port_on(host):
    """A free TCP port on host (never 2024)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in bl.FORBIDDEN_PORTS and port not in bl._handed_out:
            bl._handed_out.add(port)
            return port
    raise RuntimeError("no free port on %s" % host)


# ---------------------------------------------------------------- sinks

class DeadSink:
    """A destination that is down: accepts each connection, records it, and
    closes it at once (mode close) or after a 421 greeting (mode 421)."""

    def __init__(self, host, mode):
        self.host, self.mode = host, mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        if self.port in bl.FORBIDDEN_PORTS:
            raise RuntimeError("dead sink got port 2024")
        self.sock.listen(1024)
        self.times = []           # monotonic time of each accepted connection
        self.wall = []            # and its wall-clock time
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        _dead.append(self)

    def _loop(self):
        while not self.stopping:
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if not r:
                continue
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.times.append(time.monotonic())
            self.wall.append(time.time())
            if self.mode == "421":
                try:
                    c.sendall(b"421 4.3.2 queue-drain bench: destination down\r\n")
                except OSError:
                    pass
            c.close()

    def stop(self):
        if self.stopping:
            return
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


class Sink:
    """Postfix's smtp-sink on host:port; -c writes running counters
    ("sess=N quit=N mesg=N\\r") to stdout, which goes to a file."""

    def __init__(self, workdir, name, host, port):
        self.host, self.port = host, port
        self.out = os.path.join(workdir, name + ".sink.out")
        self.err = os.path.join(workdir, name + ".sink.err")
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.proc = subprocess.Popen([SMTP_SINK, "-c", "-u", "nobody",
                                          "%s:%d" % (host, port), "1024"],
                                         stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        _children.append(self.proc)
        bl.wait_port(port, timeout=15, host=host)
        self.fd = os.open(self.out, os.O_RDONLY)

    def counters(self, name):
        size = os.fstat(self.fd).st_size
        if size == 0:
            return 0
        data = os.pread(self.fd, 256, max(0, size - 256)).decode("ascii", "replace")
        m = re.findall(name + r"=(\d+)", data)
        return int(m[-1]) if m else 0

    def count(self):
        return self.counters("mesg")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            os.close(self.fd)
        except OSError:
            pass


# ---------------------------------------------------------------- systems

class BwSide:
    name = "breakwater"
    sink_host = BW_SINK_HOST

    def __init__(self, workdir, paths, dead, retry):
        routes = os.path.join(workdir, "queue_drain_routes")
        closed = bl.free_port()
        with open(routes, "w") as f:
            f.write("# bench/queue_drain.py\n%s  %s:%d\n*  127.0.0.1:%d\n"
                    % (DOMAIN, dead.host, dead.port, closed))
        os.chmod(routes, 0o644)
        params = {"smtp_routes": routes, "retry_schedule": "%ds" % retry,
                  "max_queue_lifetime": "30d"}
        params.update(kv_env("BENCH_BW_PARAMS"))
        self.params = params
        self.inst = bl.Breakwater(workdir, paths=paths, params=params)
        self.log_file = self.inst.log_file

    def start(self):
        self.port = self.inst.start()
        self.qmgr = self.qmgr_pid()
        return self.port

    def status(self):
        return self.inst.status()

    def qmgr_pid(self):
        for d in self.status().get("daemons", []):
            if d.get("name") == "qmgr":
                return d["pid"]
        raise RuntimeError("no qmgr in mailctl status --json")

    def restarts(self):
        return {"%s[%s]" % (d["name"], d.get("slot", 0)): d.get("restarts", 0)
                for d in self.status().get("daemons", [])}

    def domain(self):
        p = self.inst.mailctl("domain", "show", DOMAIN, "--json", timeout=30, check=False)
        try:
            v = json.loads(p.stdout)
        except ValueError:
            return None
        if isinstance(v, list):
            return v[0] if v else None
        return v

    def wait_down(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            d = self.domain()
            if d and d.get("state") == "down":
                return d
            time.sleep(0.2)
        raise RuntimeError("%s did not go down within %ss: %r" % (DOMAIN, timeout, self.domain()))

    def spool_counts(self):
        q, inc = self.inst.count_queued()
        new = bl.count_files(os.path.join(self.inst.queue, "new"))
        return {"queue": q, "incoming": inc, "new": new}

    def light_counts(self):
        """Cheap progress figures (no walk over queue/)."""
        d = self.domain() or {}
        return {"domain_queued": d.get("queued"), "in_index": d.get("in_index"),
                "new": bl.count_files(os.path.join(self.inst.queue, "new")),
                "incoming": bl.count_files(os.path.join(self.inst.queue, "incoming"))}

    def absorbed(self, total):
        """(done, detail): qmgr holds every message in its index."""
        d = self.domain() or {}
        sc = self.spool_counts()
        ok = d.get("queued") == total and sc["incoming"] == 0 and sc["new"] == 0
        return ok, {"domain_queued": d.get("queued"), "in_index": d.get("in_index"), **sc}

    def flush(self):
        p = self.inst.mailctl("flush", DOMAIN, timeout=60, check=False)
        return (p.stdout + p.stderr).strip()

    def empty(self):
        d = self.domain() or {}
        q, inc = self.inst.count_queued()
        return d.get("queued") == 0 and q == 0 and inc == 0, {"domain_queued": d.get("queued"),
                                                              "queue_files": q, "incoming": inc}

    def log_stats(self):
        c = count_log(self.log_file, ["status=sent", "status=deferred", "status=bounced",
                                      ": probe with ", "is down:", "still down:", "is up after"])
        return {"sent": c["status=sent"], "deferred": c["status=deferred"],
                "bounced": c["status=bounced"], "probes": c[": probe with "],
                "went_down": c["is down:"], "still_down": c["still down:"],
                "came_up": c["is up after"]}

    def problems(self):
        return grep_log(self.log_file, r"(fatal|panic|abort|assert|segv|signal [0-9]|crash|"
                                       r"exited|killed|error:|corrupt|duplicate)", limit=20)

    def stop(self):
        self.inst.stop()


class PostfixWithPickup(bl.Postfix):
    """benchlib's private Postfix plus a pickup service: `postqueue -f` also
    kicks pickup (maildrop), and exits 1 ("mail system is down") without it."""

    def write_config(self):
        super().write_config()
        with open(os.path.join(self.confdir, "master.cf"), "a") as f:
            f.write("pickup    unix  n       -       n       60      1       pickup\n")


class PfSide:
    name = "postfix"
    sink_host = PF_SINK_HOST

    def __init__(self, workdir, dead, retry):
        params = {"relayhost": "[%s]:%d" % (dead.host, dead.port),
                  "minimal_backoff_time": "%ds" % retry,
                  "maximal_backoff_time": "%ds" % retry,
                  "queue_run_delay": "%ds" % retry,
                  "maximal_queue_lifetime": "30d",
                  "bounce_queue_lifetime": "30d",
                  "delay_warning_time": "0"}
        params.update(kv_env("BENCH_PF_PARAMS"))
        self.params = params
        self.inst = PostfixWithPickup(workdir, mode="relay", params=params)
        self.log_file = self.inst.log_file

    def start(self):
        self.port = self.inst.start()
        self.qmgr = self.qmgr_pid()
        return self.port

    def qmgr_pid(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for pid in self.inst.pids():
                if proc_comm(pid) == "qmgr":
                    return pid
            time.sleep(0.2)
        raise RuntimeError("no postfix qmgr process under master %s" % self.inst.master_pid)

    def restarts(self):
        return {}

    def counts(self):
        d = {}
        for sub in ("incoming", "active", "deferred", "hold", "maildrop", "corrupt"):
            d[sub] = bl.count_files(os.path.join(self.inst.queue, sub))
        return d

    def wait_down(self, timeout, dead):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.counts()
            if dead.times and c["deferred"] >= 1 and c["active"] == 0 and c["incoming"] == 0:
                return c
            time.sleep(0.2)
        raise RuntimeError("postfix did not defer the first message within %ss: %r" % (timeout, self.counts()))

    def spool_counts(self):
        return self.counts()

    def light_counts(self):
        return self.counts()

    def absorbed(self, total):
        c = self.counts()
        q = c["incoming"] + c["active"] + c["deferred"] + c["hold"]
        return c["incoming"] == 0 and c["maildrop"] == 0 and q == total, c

    def flush(self):
        p = bl.run([POSTQUEUE, "-c", self.inst.confdir, "-f"], timeout=60, check=False)
        return ("exit %d %s%s" % (p.returncode, p.stdout, p.stderr)).strip()

    def empty(self):
        c = self.counts()
        q = c["incoming"] + c["active"] + c["deferred"] + c["hold"] + c["maildrop"]
        return q == 0, c

    def log_stats(self):
        c = count_log(self.log_file, ["status=sent", "status=deferred", "status=bounced",
                                      "delivery temporarily suspended", "lost connection",
                                      "refused to talk"])
        return {"sent": c["status=sent"], "deferred": c["status=deferred"],
                "bounced": c["status=bounced"],
                "deferred_suspended": c["delivery temporarily suspended"],
                "lost_connection": c["lost connection"], "refused_to_talk": c["refused to talk"]}

    def problems(self):
        return grep_log(self.log_file, r"(fatal|panic|warning: process .* exit)", limit=20)

    def stop(self):
        self.inst.stop()


# ---------------------------------------------------------------- one run

def smtp_source(port, count, size, sessions, timeout, reuse, workdir, tag):
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-l", str(size),
           "-f", SENDER, "-t", RCPT]
    if reuse:
        cmd.append("-d")
    cmd.append("127.0.0.1:%d" % port)
    out = os.path.join(workdir, "smtp-source.%s.out" % tag)
    with open(out, "w") as o:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT)
        _children.append(p)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            raise RuntimeError("smtp-source (%s) timed out after %ss" % (tag, timeout))
        except BaseException:       # Ctrl-C, SIGTERM: do not leave it running
            p.kill()
            p.wait(10)
            raise
        finally:
            _children.remove(p)
        dt = time.monotonic() - t0
    if rc != 0:
        with open(out, errors="replace") as f:
            raise RuntimeError("smtp-source (%s) exit %d: %s" % (tag, rc, f.read()[-2000:]))
    return dt


def rss_kb(pid):
    return proc_status_kb(pid, "VmRSS") or 0


def one_run(kind, q, cfg, paths):
    workdir = bl.new_workdir()
    _workdirs.append(workdir)
    res = {"system": kind, "Q": q, "workdir": workdir, "load_start": loadavg(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    say("%s Q=%d: work dir %s, load %s" % (kind, q, workdir, res["load_start"]))
    dead = DeadSink(BW_SINK_HOST if kind == "breakwater" else PF_SINK_HOST, cfg["dead"])
    side = BwSide(workdir, paths, dead, cfg["retry"]) if kind == "breakwater" \
        else PfSide(workdir, dead, cfg["retry"])
    res["params"] = side.params
    res["dead_sink"] = "%s:%d (%s)" % (dead.host, dead.port, cfg["dead"])
    sink = None
    pt = cfg["phase_timeout"]
    total = q + 1
    try:
        port = side.start()
        say("%s Q=%d: started on 127.0.0.1:%d, qmgr pid %d, dead sink %s"
            % (kind, q, port, side.qmgr, res["dead_sink"]))

        # 1. one message, wait until the destination counts as down
        smtp_source(port, 1, cfg["size"], 1, 60, False, workdir, "first")
        if kind == "breakwater":
            d = side.wait_down(60)
            say("%s Q=%d: %s is down: %s" % (kind, q, DOMAIN, d.get("last_error")))
        else:
            side.wait_down(60, dead)
            say("%s Q=%d: first message deferred" % (kind, q))
        time.sleep(1)
        t_down = dead.times[0] if dead.times else time.monotonic()

        # 2. qmgr before
        qpid = side.qmgr
        res["qmgr_pid"] = qpid
        res["rss_before_kb"] = rss_kb(qpid)
        cpu0 = proc_cpu(qpid) or 0.0

        # 3. inject in 10 chunks
        chunks = [q // 10 + (1 if i < q % 10 else 0) for i in range(10)]
        tenths = []
        t_inj0 = time.monotonic()
        master = side.inst.master_pid
        for i, n in enumerate(chunks):
            m0, s0, c0 = tree_cpu(master), self_and_children_cpu(), machine_cpu()
            dt = smtp_source(port, n, cfg["size"], cfg["sessions"], pt, cfg["reuse"], workdir,
                             "chunk%d" % i)
            m1, s1, c1 = tree_cpu(master), self_and_children_cpu(), machine_cpu()
            mta = m1 - m0
            src = s1[1] - s0[1]
            busy = c1[0] - c0[0]
            others = max(0.0, busy - mta - src - (s1[0] - s0[0]))
            sc = side.light_counts()
            tenths.append({"n": n, "seconds": round(dt, 3), "rate": round(n / dt, 1),
                           "qmgr_rss_kb": rss_kb(qpid), "attempts_so_far": len(dead.times),
                           "spool": sc, "load": loadavg(),
                           "mta_cpu_s": round(mta, 2), "mta_cpu_ms_per_msg": round(1000 * mta / n, 3),
                           "source_cpu_s": round(src, 2), "machine_busy_cores": round(busy / dt, 2),
                           "machine_iowait_cores": round((c1[1] - c0[1]) / dt, 2),
                           "others_cpu_cores": round(others / dt, 2)})
            say("%s Q=%d: tenth %d: %d msgs in %.1f s = %.0f msg/s, qmgr rss %.1f MB, "
                "attempts so far %d, spool %s, load %s, %s cpu %.3f ms/msg, other processes "
                "%.2f cores, iowait %.2f"
                % (kind, q, i + 1, n, dt, n / dt, tenths[-1]["qmgr_rss_kb"] / 1024.0,
                   len(dead.times), sc, tenths[-1]["load"], kind, 1000 * mta / n,
                   others / dt, tenths[-1]["machine_iowait_cores"]))
            if time.monotonic() - t_inj0 > pt:
                raise RuntimeError("injection took longer than %ss" % pt)
        t_inj = time.monotonic() - t_inj0
        res["inject"] = {"tenths": tenths, "seconds": round(t_inj, 2), "rate": round(q / t_inj, 1),
                         "first_tenth_rate": tenths[0]["rate"], "last_tenth_rate": tenths[-1]["rate"],
                         "last_over_first": round(tenths[-1]["rate"] / tenths[0]["rate"], 3)}
        cpu1 = proc_cpu(qpid) or 0.0

        # 4. qmgr has taken every message in
        t_abs0 = time.monotonic()
        while True:
            ok, detail = side.absorbed(total)
            if ok:
                break
            if time.monotonic() - t_abs0 > pt:
                raise RuntimeError("qmgr did not take in %d messages within %ss: %r" % (total, pt, detail))
            time.sleep(0.5)
        res["absorb_wait_s"] = round(time.monotonic() - t_abs0, 2)
        res["absorbed"] = detail
        time.sleep(1)
        res["rss_after_kb"] = rss_kb(qpid)
        res["hwm_after_kb"] = proc_status_kb(qpid, "VmHWM")
        res["qmgr_cpu_inject_s"] = round(cpu1 - cpu0, 2)
        say("%s Q=%d: all %d in the queue after %.1f s more (%s); qmgr rss %.1f -> %.1f MB (hwm %.1f)"
            % (kind, q, total, res["absorb_wait_s"], detail, res["rss_before_kb"] / 1024.0,
               res["rss_after_kb"] / 1024.0, (res["hwm_after_kb"] or 0) / 1024.0))
        if kind == "breakwater":
            res["domain_before_up"] = side.domain()

        # keep it down for at least min_down
        peak = res["rss_after_kb"]
        while time.monotonic() - t_down < cfg["min_down"]:
            time.sleep(0.5)
            peak = max(peak, rss_kb(qpid))
        res["rss_end_of_down_kb"] = rss_kb(qpid)
        res["rss_peak_down_kb"] = max(peak, res["rss_end_of_down_kb"])

        # 5. up: swap the dead listener for smtp-sink on the same host:port
        dead.stop()
        t_up = time.monotonic()
        down_s = t_up - t_down
        rel = [round(t - t_down, 2) for t in dead.times]
        gaps = [round(b - a, 2) for a, b in zip(dead.times, dead.times[1:])]
        res["down"] = {"seconds": round(down_s, 1), "attempts": len(dead.times),
                       "attempt_times_s": rel, "gaps_s": gaps,
                       "min_gap_s": min(gaps) if gaps else None,
                       "window_s": attempt_window(cfg["retry"]),
                       "max_in_one_interval": max_in_window(dead.times, attempt_window(cfg["retry"])),
                       "intervals": round(down_s / cfg["retry"], 1)}
        say("%s Q=%d: down for %.1f s, %d connection attempts (gaps %s)"
            % (kind, q, down_s, len(dead.times), gaps[:40]))
        sink = Sink(workdir, kind, dead.host, dead.port)
        cpu2 = proc_cpu(qpid) or 0.0
        t_flush = time.monotonic()
        res["flush_output"] = side.flush()
        marks = [total * k // 10 for k in range(1, 11)]
        samples = [(0.0, 0)]        # (seconds since the flush, sink count)
        last, last_move = 0, time.monotonic()
        peak_rss = rss_kb(qpid)
        n_poll = 0
        while True:
            c = sink.count()
            now = time.monotonic()
            if c != last:
                samples.append((now - t_flush, c))
                last, last_move = c, now
            if c >= total:
                break
            if now - last_move > cfg["stall"]:
                raise RuntimeError("drain stalled at %d/%d for %ss" % (c, total, cfg["stall"]))
            if now - t_flush > pt:
                raise RuntimeError("drain not done after %ss (%d/%d)" % (pt, c, total))
            n_poll += 1
            if n_poll % 20 == 0:
                peak_rss = max(peak_rss, rss_kb(qpid))
            if n_poll % 200 == 0:
                say("%s Q=%d: drain %d/%d after %.0f s" % (kind, q, c, total, now - t_flush))
            time.sleep(0.05)
        crossed = [crossing(samples, m) for m in marks]
        t_sunk = samples[-1][0]
        cpu3 = proc_cpu(qpid) or 0.0
        # 6. time to empty
        while True:
            ok, detail = side.empty()
            if ok:
                break
            if time.monotonic() - t_flush > pt:
                raise RuntimeError("queue not empty after %ss: %r" % (pt, detail))
            time.sleep(0.1)
        t_empty = time.monotonic() - t_flush
        prev = [0.0] + crossed[:-1]
        dtenths = []
        for k in range(10):
            n = marks[k] - (marks[k - 1] if k else 0)
            dt = crossed[k] - prev[k]
            dtenths.append({"n": n, "at_s": round(crossed[k], 3),
                            "rate": round(n / dt, 1) if dt > 0 else None})
        time.sleep(3)
        final = sink.count()
        res["drain"] = {"seconds_to_last_message": round(t_sunk, 2), "rate": round(total / t_sunk, 1),
                        "samples": [(round(t, 3), c) for t, c in samples[::max(1, len(samples) // 400)]],
                        "tenths": dtenths, "empty_after_s": round(t_empty, 2),
                        "sink_count": final, "expected": total, "lost": max(0, total - final),
                        "duplicates": max(0, final - total), "qmgr_peak_rss_kb": peak_rss,
                        "qmgr_cpu_s": round(cpu3 - cpu2, 2)}
        rates = sorted(t["rate"] for t in dtenths if t["rate"])
        res["drain"]["median_tenth_rate"] = rates[len(rates) // 2] if rates else None
        say("%s Q=%d: drained %d in %.1f s = %.0f msg/s, empty after %.1f s, sink count %d"
            % (kind, q, total, t_sunk, total / t_sunk, t_empty, final))
        res["restarts"] = side.restarts()
        res["qmgr_pid_end"] = side.qmgr_pid()
        res["log"] = side.log_stats()
        res["log_problems"] = side.problems()
        res["load_end"] = loadavg()
        res["ok"] = True
        say("%s Q=%d: log %s, restarts %s" % (kind, q, res["log"], res["restarts"]))
    except Exception as e:  # noqa: BLE001 - record and go on with the next run
        res["ok"] = False
        res["error"] = str(e)
        res["attempts_at_error"] = len(dead.times)
        say("%s Q=%d: FAILED: %s" % (kind, q, e))
        try:
            say("log tail:\n" + side.inst.log_tail(30))
        except Exception:  # noqa: BLE001
            pass
    finally:
        dead.stop()
        if sink:
            sink.stop()
            if sink.proc in _children:
                _children.remove(sink.proc)
        try:
            side.stop()
        except Exception as e:  # noqa: BLE001
            say("warning: stop: %s" % e)
        if os.environ.get("BENCH_KEEP") == "1":
            say("kept %s" % workdir)
        else:
            t0 = time.monotonic()
            bl.cleanup(workdir)
            say("removed %s in %.0f s" % (workdir, time.monotonic() - t0))
        _workdirs.remove(workdir)
    return res


def crossing(samples, mark):
    """When the count reached mark, interpolated between the polls around it."""
    prev = samples[0]
    for t, c in samples:
        if c >= mark:
            if c == prev[1]:
                return t
            return prev[0] + (t - prev[0]) * (mark - prev[1]) / (c - prev[1])
        prev = (t, c)
    return samples[-1][0]


def attempt_window(retry):
    """The window that may hold at most one attempt: the retry interval less
    Breakwater's -10 % jitter, less 1 s because qmgr schedules probes on a
    whole-second clock (time(NULL))."""
    return round(0.9 * retry - 1.0, 2)


def max_in_window(times, width):
    """Most attempts inside any window of the given width."""
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= width:
            j += 1
        best = max(best, i - j + 1)
    return best


# ---------------------------------------------------------------- summary

def mb(kb):
    return kb / 1024.0


def bytes_per_msg(r):
    return (r["rss_after_kb"] - r["rss_before_kb"]) * 1024.0 / r["Q"]


def summary_line(r, retry):
    if not r.get("ok"):
        return "queue-drain %s Q=%d: FAILED: %s" % (r["system"], r["Q"], r.get("error"))
    i, d, dr = r["inject"], r["down"], r["drain"]
    extra = ""
    if dr["lost"] or dr["duplicates"]:
        extra = ", LOST %d DUPLICATED %d" % (dr["lost"], dr["duplicates"])
    return ("queue-drain %s Q=%d: inject first/last tenth %.0f/%.0f msg/s (%.0f%%), "
            "attempts while down %d in %.0f s (retry %d s), qmgr rss %.1f->%.1f MB (%.0f B/msg), "
            "drain %.0f msg/s, empty after %.1f s%s"
            % (r["system"], r["Q"], i["first_tenth_rate"], i["last_tenth_rate"],
               100 * i["last_over_first"], d["attempts"], d["seconds"], retry,
               mb(r["rss_before_kb"]), mb(r["rss_after_kb"]), bytes_per_msg(r),
               dr["rate"], dr["empty_after_s"], extra))


def detail_line(r):
    if not r.get("ok"):
        return None
    i, d, dr = r["inject"], r["down"], r["drain"]
    return ("  %s Q=%d: inject %.0f msg/s overall (tenths %s), %d intervals down, min gap %s s, "
            "most attempts in any %.0f s %d; drain tenths %s msg/s, drain peak qmgr rss %.1f MB, "
            "qmgr cpu inject %.1f s drain %.1f s; sink %d/%d; log %s; restarts %s; load %s -> %s"
            % (r["system"], r["Q"], i["rate"], "/".join("%.0f" % t["rate"] for t in i["tenths"]),
               d["intervals"], d["min_gap_s"], d["window_s"], d["max_in_one_interval"],
               "/".join("%.0f" % t["rate"] if t["rate"] else "-" for t in dr["tenths"]),
               mb(dr["qmgr_peak_rss_kb"]), r["qmgr_cpu_inject_s"], dr["qmgr_cpu_s"],
               dr["sink_count"], dr["expected"], r["log"], r["restarts"] or "-",
               r["load_start"], r["load_end"]))


def attempts_ok(r, retry):
    d = r["down"]
    limit = int(d["seconds"] / (0.9 * retry)) + 1
    return d["max_in_one_interval"] <= 1 and d["attempts"] <= limit, limit


def verdicts(bw, retry):
    out = []
    okr = [r for r in bw if r.get("ok")]
    for r in bw:
        if not r.get("ok"):
            out.append("queue-drain target: breakwater Q=%d run FAILED (%s)" % (r["Q"], r.get("error")))
    for r in okr:
        x = r["inject"]["last_over_first"]
        t = r["inject"]["tenths"]
        cpu = ""
        if "mta_cpu_ms_per_msg" in t[0]:
            cpu = ("; breakwater cpu first/last tenth %.2f/%.2f ms/msg, other processes %.2f/%.2f cores"
                   % (t[0]["mta_cpu_ms_per_msg"], t[-1]["mta_cpu_ms_per_msg"],
                      t[0]["others_cpu_cores"], t[-1]["others_cpu_cores"]))
        out.append("queue-drain target inject Q=%d (last tenth >= 90%% of first): %s (%.0f/%.0f msg/s = %.0f%%%s)"
                   % (r["Q"], "MET" if x >= 0.9 else "MISSED", r["inject"]["last_tenth_rate"],
                      r["inject"]["first_tenth_rate"], 100 * x, cpu))
    if len(okr) >= 2:
        lo = min(okr, key=lambda r: r["Q"])
        hi = max(okr, key=lambda r: r["Q"])
        x = hi["drain"]["rate"] / lo["drain"]["rate"]
        out.append("queue-drain target drain Q=%d vs Q=%d (>= 90%%): %s (%.0f vs %.0f msg/s = %.0f%%; "
                   "median tenth %.0f vs %.0f msg/s)"
                   % (hi["Q"], lo["Q"], "MET" if x >= 0.9 else "MISSED", hi["drain"]["rate"],
                      lo["drain"]["rate"], 100 * x, hi["drain"]["median_tenth_rate"] or 0,
                      lo["drain"]["median_tenth_rate"] or 0))
    for r in okr:
        ok, limit = attempts_ok(r, retry)
        d = r["down"]
        out.append("queue-drain target attempts Q=%d (<= 1 per %d s retry interval): %s (%d attempts in "
                   "%.0f s, at most %d in any %.0f s, min gap %s s; limit %d)"
                   % (r["Q"], retry, "MET" if ok else "MISSED", d["attempts"], d["seconds"],
                      d["max_in_one_interval"], d["window_s"], d["min_gap_s"], limit))
    for r in okr:
        b = bytes_per_msg(r)
        out.append("queue-drain target memory Q=%d (qmgr < 200 B per parked message): %s (%.0f B/msg: "
                   "%.1f -> %.1f MB)" % (r["Q"], "MET" if b < 200 else "MISSED", b,
                                         mb(r["rss_before_kb"]), mb(r["rss_after_kb"])))
    for r in okr:
        dr = r["drain"]
        bad = []
        if dr["lost"] or dr["duplicates"]:
            bad.append("sink got %d of %d" % (dr["sink_count"], dr["expected"]))
        if any(r["restarts"].values()):
            bad.append("daemon restarts %s" % r["restarts"])
        if r["log"]["sent"] != dr["expected"]:
            bad.append("log status=sent %d" % r["log"]["sent"])
        out.append("queue-drain check integrity Q=%d (every message once, no restarts): %s"
                   % (r["Q"], "OK" if not bad else "PROBLEM: " + "; ".join(bad)))
    return out


def ratio_lines(bw, pf):
    out = []
    okb = {r["Q"]: r for r in bw if r.get("ok")}
    okp = {r["Q"]: r for r in pf if r.get("ok")}
    pairs = [(q, q) for q in sorted(okb) if q in okp]
    if okb and okp:
        qb, qp = max(okb), max(okp)
        if (qb, qp) not in pairs:
            pairs.append((qb, qp))
    for qb, qp in pairs:
        b, p = okb[qb], okp[qp]
        bpb, bpp = bytes_per_msg(b), bytes_per_msg(p)
        out.append("queue-drain ratio breakwater Q=%d / postfix Q=%d: inject %.2f (overall %.0f/%.0f msg/s), "
                   "drain %.2f (%.0f/%.0f msg/s), empty after %.1f/%.1f s, attempts while down %d/%d "
                   "(%.0f/%.0f s), qmgr rss after %.1f/%.1f MB, B/msg %.0f/%.0f"
                   % (qb, qp, b["inject"]["rate"] / p["inject"]["rate"], b["inject"]["rate"],
                      p["inject"]["rate"], b["drain"]["rate"] / p["drain"]["rate"], b["drain"]["rate"],
                      p["drain"]["rate"], b["drain"]["empty_after_s"], p["drain"]["empty_after_s"],
                      b["down"]["attempts"], p["down"]["attempts"], b["down"]["seconds"],
                      p["down"]["seconds"], mb(b["rss_after_kb"]), mb(p["rss_after_kb"]), bpb, bpp))
    return out


# ---------------------------------------------------------------- main

def cleanup_all():
    for d in list(_dead):
        d.stop()
    for p in list(_children):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
    for w in list(_workdirs):
        try:
            bl.cleanup(w)
        except (SystemExit, Exception) as e:  # noqa: BLE001
            say("warning: cleanup %s: %s" % (w, e))


def on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root (private Postfix instance, smtp-sink -u)")
    quick = os.environ.get("BENCH_QUICK") == "1"
    cfg = {
        "size": env_int("BENCH_SIZE", 1024),
        "sessions": env_int("BENCH_SESSIONS", 50),
        "reuse": os.environ.get("BENCH_SOURCE_REUSE") == "1",
        "retry": env_int("BENCH_RETRY", 10),
        "min_down": env_int("BENCH_MIN_DOWN", 40 if quick else 70),
        "dead": os.environ.get("BENCH_DEAD", "close"),
        "phase_timeout": env_int("BENCH_PHASE_TIMEOUT", 3600),
        "stall": env_int("BENCH_STALL", 300),
    }
    if cfg["dead"] not in ("close", "421"):
        raise SystemExit("BENCH_DEAD must be close or 421")
    bw_q = env_list("BENCH_BW_Q", (2000, 20000) if quick else (10000, 1000000))
    pf_q = env_list("BENCH_PF_Q", (2000, 20000) if quick else (10000, 100000))
    only = os.environ.get("BENCH_ONLY")
    if only == "breakwater":
        pf_q = []
    elif only == "postfix":
        bw_q = []
    signal.signal(signal.SIGINT, on_signal)     # also when started in the background
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    build_dir = os.environ.get("BW_BENCH_BUILD", bl.BUILD)
    if bw_q:
        if os.environ.get("BENCH_NO_BUILD") == "1":
            paths = bl.build_paths(build_dir)
        else:
            paths = bl.build(build=build_dir)
    else:
        paths = None
    t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = loadavg()
    results = {"started": t0, "config": cfg, "bw_q": bw_q, "pf_q": pf_q, "build": build_dir,
               "src": bl.SRC, "cores": os.cpu_count(), "load_start": load0, "runs": []}
    if paths:
        qm = os.path.join(paths["daemon_directory"], "qmgr")
        results["qmgr_binary_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                     time.gmtime(os.stat(qm).st_mtime))
    jpath = "/tmp/queue-drain-%s.json" % time.strftime("%Y%m%d-%H%M%S")
    say("results go to %s" % jpath)
    try:
        for kind, qs in (("breakwater", bw_q), ("postfix", pf_q)):
            for q in qs:
                r = one_run(kind, q, cfg, paths)
                results["runs"].append(r)
                with open(jpath, "w") as f:
                    json.dump(results, f, indent=1)
    except KeyboardInterrupt as e:
        say("interrupted (%s): cleaning up" % (e or "Ctrl-C"))
        cleanup_all()
        results["interrupted"] = True
        with open(jpath, "w") as f:
            json.dump(results, f, indent=1)
        return 130
    finally:
        cleanup_all()
    results["load_end"] = loadavg()
    with open(jpath, "w") as f:
        json.dump(results, f, indent=1)

    results["json"] = jpath
    with open(jpath, "w") as f:
        json.dump(results, f, indent=1)
    return report(results)


def report(results):
    """Print the summary of a results dict (also: --report FILE.json)."""
    cfg = results["config"]
    bw = [r for r in results["runs"] if r["system"] == "breakwater"]
    pf = [r for r in results["runs"] if r["system"] == "postfix"]
    retry = cfg["retry"]
    print("== queue drain benchmark: %s, %d cores, dead destination %s (%s), retry %d s, "
          "%d-byte messages, smtp-source %d sessions, %s"
          % (results["started"], results["cores"], DOMAIN, cfg["dead"], retry, cfg["size"],
             cfg["sessions"],
             "one connection per session (-d)" if cfg["reuse"] else "one message per connection"))
    print("  load average at start: %s, at end: %s" % (results["load_start"], results.get("load_end")))
    print("  breakwater Q = %s; postfix Q = %s; build %s" % (results["bw_q"], results["pf_q"],
                                                           results["build"]))
    for r in results["runs"]:
        print(summary_line(r, retry))
    for line in ratio_lines(bw, pf):
        print(line)
    for line in verdicts(bw, retry):
        print(line)
    for r in results["runs"]:
        line = detail_line(r)
        if line:
            print(line)
    for r in results["runs"]:
        for line in (memory_line(r), contention_line(r)):
            if line:
                print(line)
    for r in results["runs"]:
        if r.get("log_problems"):
            print("  %s Q=%d log lines worth a look: %d, first: %s"
                  % (r["system"], r["Q"], len(r["log_problems"]), r["log_problems"][0]))
    print("  raw results: %s" % results.get("json", "?"))
    return 0 if all(r.get("ok") for r in results["runs"]) else 1


def contention_line(r):
    """Per tenth of the injection: the MTA's own CPU per message, and the CPU
    that other processes on the machine used at the same time."""
    if not r.get("ok") or "mta_cpu_ms_per_msg" not in r["inject"]["tenths"][0]:
        return None
    t = r["inject"]["tenths"]
    return ("  %s Q=%d injection by tenth: %s cpu %s ms/msg; other processes %s cores; iowait %s cores"
            % (r["system"], r["Q"], r["system"], "/".join("%.2f" % x["mta_cpu_ms_per_msg"] for x in t),
               "/".join("%.2f" % x["others_cpu_cores"] for x in t),
               "/".join("%.2f" % x["machine_iowait_cores"] for x in t)))


def memory_line(r):
    """qmgr's VmRSS after each tenth of the injection, and the growth per
    message over the second half (the marginal cost once caches are warm)."""
    if not r.get("ok"):
        return None
    rss = [t["qmgr_rss_kb"] for t in r["inject"]["tenths"]]
    half = sum(t["n"] for t in r["inject"]["tenths"][5:])
    marginal = (rss[9] - rss[4]) * 1024.0 / half if half else 0.0
    return ("  %s Q=%d qmgr rss after each tenth: %s MB; growth over the second half %.2f B/msg; "
            "peak while down %.1f MB, during the drain %.1f MB"
            % (r["system"], r["Q"], "/".join("%.1f" % mb(x) for x in rss), marginal,
               mb(r.get("rss_peak_down_kb") or 0), mb(r["drain"]["qmgr_peak_rss_kb"])))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        with open(sys.argv[2]) as f:
            res = json.load(f)
        res.setdefault("json", sys.argv[2])
        sys.exit(report(res))
    if len(sys.argv) > 1:
        raise SystemExit("usage: queue_drain.py [--report RESULTS.json] (knobs: see the docstring)")
    sys.exit(main())
