#!/usr/bin/python3
"""relay.py - end-to-end relay benchmark: Breakwater against Postfix, same run.

    smtp-source --(50 sessions)--> MTA --(its own route/relayhost)--> smtp-sink

For each message size (4 KiB and 51,200 bytes) and each system it starts a
fresh private instance (bench/benchlib.py: /tmp/bw-bench-*, loopback ports)
whose only route is a fresh Postfix smtp-sink on a loopback port:

  * Breakwater: smtp_routes = a table with "*  127.0.0.1:SINKPORT";
  * Postfix:    relayhost = [127.0.0.1]:SINKPORT (benchlib mode "relay":
                default queue, default concurrency, its own queue directory).

It times smtp-source until it exits (accept rate) and until the sink has
counted every message (end-to-end rate), checks that the sink got exactly
the number sent, that the MTA logged one status=sent per message and that
its queue is empty at the end, and prints per system the CPU seconds of each
process per 1,000 messages and (Breakwater) the fsync/fdatasync/syncfs calls
per message per daemon, counted with perf stat on the syscall tracepoints.

With --profile (or BENCH_PROFILE=1) it then does quick runs for "where the
time goes": a perf record CPU profile of smtpd, qmgr and delivery (hottest
functions, and samples by the syscall they are under), a perf trace -s
syscall wall-time summary of the same daemons, and strace -f -c sync counts
of Postfix (its smtpd/cleanup are forked during the run, which perf stat -p
cannot follow).  See bench/RELAY.md.

Environment:
  BENCH_QUICK=1          2,000 messages instead of 20,000
  BENCH_MESSAGES=N       message count (overrides BENCH_QUICK)
  BENCH_SESSIONS=N       smtp-source sessions (default 50)
  BENCH_SIZES="a b"      payload sizes (default "4096 51200")
  BENCH_RUNS=N           repeat the whole measurement N times (default 1)
  BENCH_ONLY=breakwater|postfix
  BENCH_BW_PARAMS="k=v"  extra Breakwater main.cf settings
  BENCH_PF_PARAMS="k=v"  extra Postfix main.cf settings
  BENCH_TIMEOUT=S        limit for one system's run (default 900 s)
  BENCH_STALL=S          give up when the sink count has not moved for S s
                         after smtp-source finished (default 120 s)
  BENCH_PROFILE=1        also run the profile phase (or --profile;
                         --profile-only skips the measurement)
  BENCH_PROFILE_MESSAGES=N  messages per profile run (default 2000)
  BENCH_KEEP=1           keep the work dir of a failed run
  BW_RELAY_BUILD=DIR     build dir (default /tmp/bw-relay-bench-build)
  BENCH_NO_BUILD=1       use the build dir as it is (no make)
"""
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib as bl  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
PERF = "/usr/bin/perf"
STRACE = "/usr/bin/strace"
BUILD = os.environ.get("BW_RELAY_BUILD", "/tmp/bw-relay-bench-build")
CLK = os.sysconf("SC_CLK_TCK")
SYNC_EVENTS = ["syscalls:sys_enter_fsync", "syscalls:sys_enter_fdatasync",
               "syscalls:sys_enter_syncfs"]

_children = []      # Popen objects we started (sinks, perf, strace)
_workdirs = []


def say(msg):
    print("relay: " + msg, file=sys.stderr, flush=True)


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default


def label(size):
    return {4096: "4KiB", 51200: "50KiB"}.get(size, "%dB" % size)


def kv_env(name):
    return bl.parse_kv(os.environ.get(name, "").split())


# ---------------------------------------------------------------- build

def build():
    src = bl.SRC
    if not os.access(os.path.join(src, "configure"), os.X_OK):
        say("autoreconf -fi in %s" % src)
        bl.run(["autoreconf", "-fi"], cwd=src, timeout=600)
    os.makedirs(BUILD, exist_ok=True)
    if not os.path.exists(os.path.join(BUILD, "config.status")):
        say("configuring %s (CFLAGS='-O2 -g')" % BUILD)
        bl.run([os.path.join(src, "configure"), "-q", "CFLAGS=-O2 -g"], cwd=BUILD, timeout=600)
    stamp = os.path.join(BUILD, "relay-bench-source.txt")
    if os.environ.get("BENCH_NO_BUILD") != "1" or not os.path.exists(stamp):
        say("make -j2 -s in %s" % BUILD)
        version = source_version()
        bl.run(["make", "-j2", "-s"], cwd=BUILD, timeout=1800)
        with open(stamp, "w") as f:
            f.write("%s, built %s\n" % (version, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    paths = bl.build_paths(BUILD)
    for d in ("master", "smtpd", "qmgr", "delivery", "dnscache"):
        if not os.access(os.path.join(paths["daemon_directory"], d), os.X_OK):
            raise RuntimeError("%s/%s missing" % (paths["daemon_directory"], d))
    return paths


def source_version():
    try:
        head = bl.run(["git", "-C", bl.SRC, "rev-parse", "--short", "HEAD"], timeout=10).stdout.strip()
        dirty = bl.run(["git", "-C", bl.SRC, "status", "--porcelain", "--untracked-files=no"],
                       timeout=10).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except RuntimeError:
        return "unknown"


# ---------------------------------------------------------------- /proc

def proc_stat(pid):
    """(comm, utime+stime, cutime+cstime) in seconds, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    f = s[s.rindex(")") + 2:].split()
    # fields after ')' start at field 3 (state): utime=14 stime=15 cutime=16 cstime=17
    return comm, (int(f[11]) + int(f[12])) / CLK, (int(f[13]) + int(f[14])) / CLK


# ---------------------------------------------------------------- sink

class Sink:
    """Postfix's smtp-sink on a loopback port; -c writes running counters
    ("sess=N quit=N mesg=N\\r") to stdout, which goes to a file."""

    def __init__(self, workdir, name):
        self.port = bl.free_port()
        self.out = os.path.join(workdir, name + ".sink.out")
        self.err = os.path.join(workdir, name + ".sink.err")
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.proc = subprocess.Popen([SMTP_SINK, "-c", "-u", "nobody",
                                          "127.0.0.1:%d" % self.port, "1024"],
                                         stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        _children.append(self.proc)
        bl.wait_port(self.port, timeout=15)
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

    def sessions(self):
        return self.counters("sess")

    def cpu(self):
        st = proc_stat(self.proc.pid)
        return st[1] if st else 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        os.close(self.fd)


# ---------------------------------------------------------------- perf stat

class SyncCounter:
    """perf stat on the fsync/fdatasync/syncfs tracepoints of given pids (one
    perf process per pid, so each daemon gets its own count)."""

    def __init__(self, workdir, tag, pids):
        self.files = {}
        self.procs = []
        if not os.access(PERF, os.X_OK):
            return
        for name, pid in pids.items():
            out = os.path.join(workdir, "%s.%s.perfstat" % (tag, name.replace("/", "_")))
            p = subprocess.Popen([PERF, "stat", "-x,", "-o", out, "-e", ",".join(SYNC_EVENTS),
                                  "-p", str(pid)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _children.append(p)
            self.procs.append(p)
            self.files[name] = out
        time.sleep(0.3)   # let perf attach

    def stop(self):
        """{name: {event: count}}"""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        out = {}
        for name, f in self.files.items():
            counts = {}
            try:
                with open(f) as fh:
                    for line in fh:
                        parts = line.strip().split(",")
                        if len(parts) >= 3 and parts[2].startswith("syscalls:"):
                            ev = parts[2].split("sys_enter_")[-1]
                            counts[ev] = int(parts[0]) if parts[0].isdigit() else None
            except OSError:
                pass
            out[name] = counts
        return out


# ---------------------------------------------------------------- instances

def bw_daemons(inst):
    """{"smtpd[0]": pid, ..., "master": pid} from mailctl status --json."""
    st = inst.status()
    if not st.get("running"):
        raise RuntimeError("breakwater not running: %r" % st)
    d = {"master": st["pid"]}
    names = [x["name"] for x in st.get("daemons", [])]
    for x in st.get("daemons", []):
        key = x["name"] if names.count(x["name"]) == 1 else "%s[%s]" % (x["name"], x.get("slot", "?"))
        d[key] = x["pid"]
    return d, st


def cpu_snapshot_bw(pids):
    out = {}
    for name, pid in pids.items():
        st = proc_stat(pid)
        if st:
            out[name] = st[1] + (st[2] if name == "master" else 0.0)
    return out


class PfCpu:
    """CPU of a Postfix instance by program name.  Postfix's smtpd, cleanup
    and smtp exit after max_use (100) requests, so the live processes are
    polled during the run (poll()) and an exited process is counted with the
    CPU last seen; what it used after that is in "(unattributed)", from the
    master's cutime+cstime (its reaped children)."""

    def __init__(self, master_pid):
        self.master = master_pid
        self.base = {}
        self.seen = {}
        for pid, st in self._scan().items():
            self.base[pid] = st[1]
            self.seen[pid] = st
        self.cutime0 = self.seen.get(master_pid, ("", 0, 0))[2]

    def _scan(self):
        out = {}
        for pid in [self.master] + bl.descendants(self.master):
            st = proc_stat(pid)
            if st:
                out[pid] = st
        return out

    def poll(self):
        cur = self._scan()
        self.seen.update(cur)
        return cur

    def result(self):
        cur = self.poll()
        out = {}
        exited = 0.0
        for pid, (comm, cpu, _) in self.seen.items():
            d = cpu - self.base.get(pid, 0.0)
            out[comm] = out.get(comm, 0.0) + d
            if pid not in cur:
                exited += d
        cutime = cur.get(self.master, ("", 0, self.cutime0))[2] - self.cutime0
        out["(unattributed)"] = max(0.0, cutime - exited)
        return out


def cpu_delta(a, b):
    return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in sorted(set(a) | set(b))}


def count_log(path, pattern):
    n = 0
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if pattern in line:
                    n += 1
    except OSError:
        pass
    return n


def start_system(kind, workdir, sink, paths):
    if kind == "breakwater":
        routes = os.path.join(workdir, "relay_routes")
        with open(routes, "w") as f:
            f.write("# bench/relay.py: everything to the smtp-sink\n*  127.0.0.1:%d\n" % sink.port)
        os.chmod(routes, 0o644)
        params = {"smtp_routes": routes}
        params.update(kv_env("BENCH_BW_PARAMS"))
        inst = bl.Breakwater(workdir, paths=paths, params=params)
    else:
        params = {"relayhost": "[127.0.0.1]:%d" % sink.port}
        params.update(kv_env("BENCH_PF_PARAMS"))
        inst = bl.Postfix(workdir, mode="relay", params=params)
    port = inst.start()
    return inst, port


def queue_count(kind, inst):
    q, other = inst.count_queued()
    return q + other


# ---------------------------------------------------------------- one run

class RunFailed(Exception):
    pass


def run_one(kind, size, count, sessions, paths, hooks=None):
    """Run the load through one system; return a result dict."""
    timeout = env_int("BENCH_TIMEOUT", 900)
    stall = env_int("BENCH_STALL", 120)
    workdir = bl.new_workdir()
    _workdirs.append(workdir)
    res = {"kind": kind, "size": size, "count": count, "ok": False, "workdir": workdir,
           "problems": []}
    sink = None
    inst = None
    counter = None
    try:
        sink = Sink(workdir, kind)
        inst, port = start_system(kind, workdir, sink, paths)
        if kind == "breakwater":
            pids, st = bw_daemons(inst)
            res["pids"] = pids
            res["restarts_before"] = {x["name"] + str(x.get("slot", "")): x.get("restarts", 0)
                                      for x in st.get("daemons", [])}
            counter = SyncCounter(workdir, kind, {k: v for k, v in pids.items() if k != "master"})
            cpu0 = cpu_snapshot_bw(pids)
        else:
            pfcpu = PfCpu(inst.master_pid)
        hook_state = hooks["start"](kind, inst) if hooks else None
        bl.run(["sync"], timeout=120)
        sink0 = sink.count()         # the wait_port probe is a session, not a message
        sess0 = sink.sessions()
        sink_cpu0 = sink.cpu()
        err = os.path.join(workdir, "smtp-source.err")
        cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-l", str(size),
               "-f", "from@example.com", "-t", "to@example.net", "127.0.0.1:%d" % port]
        res["command"] = " ".join(cmd)
        with open(err, "w") as ef:
            t0 = time.monotonic()
            src = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=ef)
        _children.append(src)
        t_acc = t_e2e = None
        src_rc = None
        last_n, last_change = 0, t0
        next_poll = t0 + 0.5
        # bounded: at most timeout/0.02 iterations
        for _ in range(int(timeout / 0.02) + 1):
            now = time.monotonic()
            if t_acc is None:
                pid, status, ru = os.wait4(src.pid, os.WNOHANG)
                if pid:
                    t_acc = now
                    src.returncode = src_rc = os.waitstatus_to_exitcode(status)
                    res["source_cpu"] = ru.ru_utime + ru.ru_stime
            n = sink.count() - sink0
            if n != last_n:
                last_n, last_change = n, now
            if t_e2e is None and n >= count:
                t_e2e = now
            if t_acc is not None and (t_e2e is not None or src_rc != 0):
                break
            if t_acc is not None and now - last_change > stall:
                res["problems"].append("STALL: sink count stuck at %d/%d for %ds after "
                                       "smtp-source finished" % (n, count, stall))
                break
            if kind == "postfix" and now >= next_poll:
                pfcpu.poll()
                next_poll = now + 0.5
            if now - t0 > timeout:
                res["problems"].append("TIMEOUT after %ds: sink %d/%d, smtp-source %s"
                                       % (timeout, n, count,
                                          "done" if t_acc else "still running"))
                break
            time.sleep(0.02)
        if t_acc is None:
            src.kill()
            src.wait(10)
        if src_rc not in (0, None):
            with open(err, errors="replace") as f:
                res["problems"].append("smtp-source exit %d: %s" % (src_rc, f.read()[:1500]))
        res["accept_s"] = (t_acc - t0) if t_acc else None
        res["e2e_s"] = (t_e2e - t0) if t_e2e else None
        # settle: duplicates would arrive after the count reached N
        settle_end = time.monotonic() + 3
        while time.monotonic() < settle_end:
            if kind == "postfix":
                pfcpu.poll()
            time.sleep(0.25)
        # queue empty (files are removed after the delivery is recorded)
        left = None
        for _ in range(600):
            left = queue_count(kind, inst)
            if left == 0:
                break
            if kind == "postfix":
                pfcpu.poll()
            time.sleep(0.1)
        res["queue_left"] = left
        res["sink_count"] = sink.count() - sink0
        res["sink_sessions"] = sink.sessions() - sess0
        res["sink_cpu"] = sink.cpu() - sink_cpu0
        if hooks:
            res["hook"] = hooks["stop"](kind, inst, hook_state)
        if kind == "breakwater":
            res["cpu"] = cpu_delta(cpu0, cpu_snapshot_bw(pids))
            res["fsync"] = counter.stop()
            counter = None
            pids2, st2 = bw_daemons(inst)
            if pids2 != pids:
                res["problems"].append("daemon pids changed during the run (crash/restart?): "
                                       "%s -> %s" % (pids, pids2))
            log = inst.log_file
            res["sent"] = count_log(log, "status=sent")
            res["deferred"] = count_log(log, "status=deferred")
            res["bounced"] = count_log(log, "status=bounced")
            res["removed"] = count_log(log, ": removed")
            res["queued_log"] = count_log(log, "(queued)")
            for bad in ("panic", "fatal", "error:"):
                c = count_log(log, bad)
                if c:
                    res["problems"].append("%d log lines containing %r" % (c, bad))
        else:
            res["cpu"] = pfcpu.result()
            log = inst.log_file
            time.sleep(0.5)      # postlogd
            res["sent"] = count_log(log, "status=sent")
            res["deferred"] = count_log(log, "status=deferred")
            res["bounced"] = count_log(log, "status=bounced")
            res["removed"] = count_log(log, ": removed")
            for bad in ("panic:", "fatal:"):
                c = count_log(log, bad)
                if c:
                    res["problems"].append("%d log lines containing %r" % (c, bad))
        if res["sink_count"] != count:
            res["problems"].append("sink has %d messages, %d sent (%s)" % (
                res["sink_count"], count,
                "DUPLICATES" if res["sink_count"] > count else "LOST or stuck"))
        if left:
            res["problems"].append("%d queue files left after delivery" % left)
        if res["sent"] != count:
            res["problems"].append("log has %d status=sent lines for %d messages"
                                   % (res["sent"], count))
        res["ok"] = not res["problems"] and res["accept_s"] and res["e2e_s"]
        if not res["ok"]:
            res["log_tail"] = inst.log_tail(40)
            if kind == "breakwater":
                try:
                    res["queue_list"] = inst.mailctl("queue", "list", timeout=30,
                                                     check=False).stdout[:3000]
                except RuntimeError as e:
                    res["queue_list"] = str(e)
    except (RuntimeError, OSError) as e:
        res["problems"].append("error: %s" % e)
        if inst is not None:
            res["log_tail"] = inst.log_tail(40)
    finally:
        if counter is not None:
            counter.stop()
        if inst is not None:
            inst.stop()
        if sink is not None:
            sink.stop()
        if res["ok"] or os.environ.get("BENCH_KEEP") != "1":
            bl.cleanup(workdir)
            _workdirs.remove(workdir)
        else:
            for k in ("bw", "pf"):
                try:
                    os.unlink(os.path.join(workdir, k + ".state.json"))
                except OSError:
                    pass
            say("keeping %s" % workdir)
            _workdirs.remove(workdir)
    return res


def rate(n, t):
    return n / t if t else None


def fmt_rate(r):
    return "%.0f" % r if r else "FAILED"


def fmt_ratio(a, b):
    return "%.2f" % (a / b) if a and b else "n/a"


def describe(res):
    n = res["count"]
    parts = ["%s %s: accept %.2fs, e2e %s, sink %d/%d messages in %d sessions, queue left %s, "
             "log sent=%d deferred=%d bounced=%d removed=%d" % (
                 label(res["size"]), res["kind"], res.get("accept_s") or -1,
                 "%.2fs" % res["e2e_s"] if res.get("e2e_s") else "none",
                 res.get("sink_count", -1), n, res.get("sink_sessions", -1), res.get("queue_left"),
                 res.get("sent", -1), res.get("deferred", -1), res.get("bounced", -1),
                 res.get("removed", -1))]
    return parts[0]


def cpu_line(res):
    n = res["count"]
    cpu = res.get("cpu", {})
    items = ["%s %.2f" % (k, v * 1000.0 / n) for k, v in cpu.items() if v > 0.005 or k in
             ("smtpd", "qmgr", "delivery")]
    tot = sum(cpu.values())
    extra = ""
    if "source_cpu" in res:
        extra = "; client smtp-source %.2f, smtp-sink %.2f" % (res["source_cpu"] * 1000.0 / n,
                                                               res.get("sink_cpu", 0) * 1000.0 / n)
    return ("cpu %s %s (s per 1000 msg): %s; total %.2f%s" %
            (label(res["size"]), res["kind"], ", ".join(items), tot * 1000.0 / n, extra))


def fsync_line(res):
    n = res["count"]
    fs = res.get("fsync")
    if not fs:
        return None
    items = []
    total = 0
    for name, c in fs.items():
        s = sum(v for v in c.values() if v)
        total += s
        if s:
            items.append("%s %.3f (%s)" % (name, s / n, " ".join(
                "%s=%d" % (k, v) for k, v in sorted(c.items()) if v)))
    return ("fsync %s %s (calls per message, perf stat tracepoints): %s; total %.3f" %
            (label(res["size"]), res["kind"], ", ".join(items) or "none", total / n))


# ---------------------------------------------------------------- profile phase

def tool_hooks(make_cmd, settle=0.5):
    """hooks for run_one: start a tool (perf/strace) on the instance's pids
    after it started, stop it with SIGINT after the run."""
    def start(kind, inst):
        cmd, out = make_cmd(kind, inst)
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        _children.append(p)
        time.sleep(settle)
        return {"proc": p, "out": out, "cmd": " ".join(cmd)}

    def stop(kind, inst, st):
        p = st["proc"]
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        return st
    return {"start": start, "stop": stop}


def bw_targets(inst, prefixes=("smtpd", "qmgr", "delivery")):
    pids, _ = bw_daemons(inst)
    return {k: v for k, v in pids.items() if k.startswith(prefixes)}


def perf_script_breakdown(data):
    """{comm: {category: samples}} from perf script callchains: user-space
    samples by DSO, kernel samples by the syscall they are under (the frame
    called by do_syscall_64), other kernel samples as one category."""
    p = subprocess.Popen([PERF, "script", "-i", data, "-F", "comm,tid,ip,sym,dso"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, errors="replace")
    out = {}
    leaf = {}

    def account(comm, frames):
        if comm is None or not frames:
            return
        addr, sym, dso = frames[0]
        key = "%s %s" % (os.path.basename(dso.strip("()")) or "?", sym)
        lf = leaf.setdefault(comm, {})
        lf[key] = lf.get(key, 0) + 1
        if addr < 0xffff800000000000:
            cat = "user %s" % os.path.basename(dso.strip("()")) if dso else "user ?"
        else:
            cat = "kernel, not under a syscall (irq, softirq, fault, scheduler)"
            for i, (_, s, _) in enumerate(frames):
                if s == "do_syscall_64" and i > 0:
                    name = frames[i - 1][1]
                    for pre in ("__x64_sys_", "__do_sys_", "do_", "ksys_"):
                        if name.startswith(pre):
                            name = name[len(pre):]
                            break
                    cat = ("syscall return path (rescheduled, signals)"
                           if name.startswith("exit_to_user") else "syscall " + name)
                    break
        d = out.setdefault(comm, {})
        d[cat] = d.get(cat, 0) + 1

    comm, frames = None, []
    for line in p.stdout:
        if not line.strip():
            account(comm, frames)
            comm, frames = None, []
        elif not line[0].isspace():
            account(comm, frames)
            comm, frames = line.split()[0], []
        else:
            f = line.split(None, 2)
            try:
                addr = int(f[0], 16)
            except (ValueError, IndexError):
                continue
            rest = f[2] if len(f) > 2 else ""
            sym = f[1] if len(f) > 1 else "?"
            frames.append((addr, sym.split("+")[0], rest.strip()))
    account(comm, frames)
    p.wait(60)
    return out, leaf


def perf_record_report(comm, out, breakdown, leaf):
    b = breakdown.get(comm) or {}
    n = sum(b.values())
    if not n:
        out.append("  -- %s: no samples" % comm)
        return
    out.append("  -- %s: %d samples; hottest functions (self time, share of the process's "
               "samples):" % (comm, n))
    for key, c in sorted(leaf[comm].items(), key=lambda kv: -kv[1])[:14]:
        if 100.0 * c / n < 1.0:
            break
        out.append("    %5.1f%%  %s" % (100.0 * c / n, key))
    out.append("  -- %s: where its samples are (by call chain):" % comm)
    for cat, c in sorted(b.items(), key=lambda kv: -kv[1])[:10]:
        out.append("    %5.1f%%  %s" % (100.0 * c / n, cat))


def parse_perf_trace(path, top=7):
    """perf trace -s output -> lines per task: top syscalls by total msec."""
    out = []
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return ["  (no perf trace output)"]
    for block in re.split(r"\n(?= \S.*\(\d+\), \d+ events)", text):
        head = re.match(r"\s*(\S.*?) \((\d+)\), (\d+) events", block)
        if not head:
            continue
        rows = []
        for line in block.splitlines():
            f = line.split()
            if len(f) >= 8 and re.match(r"^\d+$", f[1]) and re.match(r"^[\d.]+$", f[3]):
                rows.append((float(f[3]), f[0], int(f[1]), float(f[5])))
        rows.sort(reverse=True)
        if not rows:
            continue
        total = sum(r[0] for r in rows)
        out.append("    %s (%s): %.0f ms in syscalls; %s" % (
            head.group(1), head.group(2), total, ", ".join(
                "%s %d calls %.0f ms (avg %.2f ms)" % (r[1], r[2], r[0], r[3]) for r in rows[:top])))
    return out


def profile_phase(paths, sizes, sessions):
    count = env_int("BENCH_PROFILE_MESSAGES", 2000)
    out = []
    for size in sizes:
        lbl = label(size)
        if os.access(PERF, os.X_OK):
            # 1. on-CPU: perf record of smtpd, qmgr and delivery
            data = "/tmp/bw-relay-perf-%s.data" % lbl

            def rec_cmd(kind, inst, data=data):
                t = bw_targets(inst)
                return ([PERF, "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-o", data,
                         "-p", ",".join(str(v) for v in t.values())], data)
            res = run_one("breakwater", size, count, sessions, paths, hooks=tool_hooks(rec_cmd))
            out.append("== profile %s breakwater, perf record -e cpu-clock -F 1999 -g on smtpd, "
                       "qmgr, delivery (%d messages): %s" % (lbl, count, describe(res)))
            out.append("  " + cpu_line(res))
            if res["problems"]:
                out.append("  problems: %s" % "; ".join(res["problems"]))
            if os.path.exists(data):
                bd, leaf = perf_script_breakdown(data)
                for comm in ("smtpd", "qmgr", "delivery"):
                    perf_record_report(comm, out, bd, leaf)
                out.append("  (perf data kept in %s)" % data)
            # 2. off-CPU: syscall wall time per task with perf trace -s
            trace = "/tmp/bw-relay-trace-%s.txt" % lbl

            def trace_cmd(kind, inst, trace=trace):
                t = bw_targets(inst)
                return ([PERF, "trace", "-s", "-o", trace,
                         "-p", ",".join(str(v) for v in t.values())], trace)
            res = run_one("breakwater", size, count, sessions, paths,
                          hooks=tool_hooks(trace_cmd, settle=1.0))
            out.append("== profile %s breakwater, perf trace -s on smtpd, qmgr, delivery "
                       "(%d messages; slowed by tracing): %s" % (lbl, count, describe(res)))
            if res["problems"]:
                out.append("  problems: %s" % "; ".join(res["problems"]))
            out.extend(parse_perf_trace(trace))
            try:
                os.unlink(trace)
            except OSError:
                pass
        if os.access(STRACE, os.X_OK):
            # 3. Postfix's fsyncs: strace -f follows the smtpd/cleanup it forks
            so = "/tmp/bw-relay-strace-pf-%s.txt" % lbl

            def strace_cmd(kind, inst, so=so):
                cmd = [STRACE, "-f", "-c", "-o", so, "-e",
                       "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2"]
                for p in [inst.master_pid] + bl.descendants(inst.master_pid):
                    cmd += ["-p", str(p)]
                return cmd, so
            res = run_one("postfix", size, count, sessions, paths,
                          hooks=tool_hooks(strace_cmd, settle=1.0))
            out.append("== strace -f -c postfix %s (%d messages; slowed by strace): %s"
                       % (lbl, count, describe(res)))
            try:
                text = open(so).read()
                os.unlink(so)
            except OSError:
                text = ""
            for line in text.splitlines():
                f = line.split()
                if len(f) >= 5 and f[-1] in ("fsync", "fdatasync", "syncfs", "rename",
                                             "renameat", "renameat2"):
                    calls = int(f[3])
                    out.append("    %-10s %8d calls  %.3f per message" % (f[-1], calls, calls / count))
    return out


# ---------------------------------------------------------------- main

def cleanup_all():
    for p in _children:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
    for w in list(_workdirs):
        try:
            bl.cleanup(w)
        except (SystemExit, Exception) as e:  # noqa: BLE001
            say("cleanup %s: %s" % (w, e))


def main(argv):
    if os.geteuid() != 0:
        raise SystemExit("relay.py: must run as root (private Postfix, mail_owner breakwater)")
    for prog in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(prog, os.X_OK):
            raise SystemExit("relay.py: %s missing (apt-get install postfix)" % prog)
    profile = "--profile" in argv or "--profile-only" in argv or \
        os.environ.get("BENCH_PROFILE") == "1"
    measure = "--profile-only" not in argv
    if os.environ.get("BENCH_MESSAGES"):
        count = int(os.environ["BENCH_MESSAGES"])
    elif os.environ.get("BENCH_QUICK") == "1":
        count = 2000
    else:
        count = 20000
    sessions = env_int("BENCH_SESSIONS", 50)
    sizes = [int(x) for x in os.environ.get("BENCH_SIZES", "4096 51200").split()]
    runs = env_int("BENCH_RUNS", 1)
    only = os.environ.get("BENCH_ONLY", "")
    kinds = [k for k in ("breakwater", "postfix") if not only or only == k]

    paths = build()
    with open(os.path.join(BUILD, "relay-bench-source.txt")) as f:
        version = f.read().strip()
    say("build %s, source %s" % (BUILD, version))
    summary = []
    details = []
    failures = []
    load0 = open("/proc/loadavg").read().split()[:3]
    if measure:
        for r in range(1, runs + 1):
            for size in sizes:
                results = {}
                order = kinds if r % 2 == 1 else list(reversed(kinds))
                for kind in order:
                    say("run %d %s %s: %d messages, %d sessions" % (r, label(size), kind,
                                                                  count, sessions))
                    res = run_one(kind, size, count, sessions, paths)
                    results[kind] = res
                    say(describe(res))
                    if res["problems"]:
                        failures.append(res)
                        say("PROBLEMS: %s" % "; ".join(res["problems"]))
                acc = {k: rate(count, v.get("accept_s")) if v["ok"] else None
                       for k, v in results.items()}
                e2e = {k: rate(count, v.get("e2e_s")) if v["ok"] else None
                       for k, v in results.items()}
                b, p = "breakwater", "postfix"
                line = "relay %s:" % label(size)
                segs = []
                for k in kinds:
                    segs.append(" %s accept %s msg/s e2e %s msg/s" % (
                        k, fmt_rate(acc.get(k)), fmt_rate(e2e.get(k))))
                line += ";".join(segs)
                if len(kinds) == 2:
                    line += "; ratio accept %s e2e %s" % (fmt_ratio(acc.get(b), acc.get(p)),
                                                         fmt_ratio(e2e.get(b), e2e.get(p)))
                if runs > 1:
                    line += "  (run %d)" % r
                summary.append(line)
                for k in kinds:
                    details.append("  " + describe(results[k]))
                for k in kinds:
                    details.append("  " + cpu_line(results[k]))
                for k in kinds:
                    fl = fsync_line(results[k])
                    if fl:
                        details.append("  " + fl)
    prof = profile_phase(paths, sizes, sessions) if profile else []

    print()
    print("== relay benchmark: %s, %d cores, %d messages x %d sessions, one recipient, "
          "smtp-source one message per connection" % (
              time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(), count, sessions))
    print("  breakwater source %s, in %s (CFLAGS=-O2 -g)" % (version, BUILD))
    print("  load average at start: %s, at end: %s" % (
        " ".join(load0), " ".join(open("/proc/loadavg").read().split()[:3])))
    for line in summary:
        print(line)
    for line in details:
        print(line)
    for line in prof:
        print(line)
    if failures:
        print("== FAILURES")
        for res in failures:
            print("  %s %s: %s" % (label(res["size"]), res["kind"], "; ".join(res["problems"])))
            if res.get("queue_list"):
                print("  queue list:\n" + res["queue_list"])
            if res.get("log_tail"):
                print("  log tail:\n" + res["log_tail"])
    return 1 if failures else 0


if __name__ == "__main__":
    def _sig(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _sig)
    rc = 1
    try:
        rc = main(sys.argv[1:])
    except KeyboardInterrupt:
        say("interrupted")
        rc = 130
    except RuntimeError as e:
        say("error: %s" % e)
    finally:
        cleanup_all()
    sys.exit(rc)
