#!/usr/bin/python3
"""connections.py - concurrent-session benchmark: Breakwater against Postfix.

Opens N concurrent SMTP sessions against one instance (default N = 10,000,
then 50,000), each of which must get its 220 greeting within 5 s of its
connect() and then get an answer to EHLO.  All sessions are held open while
the total RSS of the server's processes is measured, then closed (QUIT, and a
reset for whatever is still open after a few seconds).  The same counts are
then run against a private Postfix instance, which greets only as many
sessions as its smtpd process limit allows.  See README.md.

    /usr/bin/python3 bench/connections.py [--counts 10000,50000]
        [--only breakwater|postfix] [--hold SECONDS] [--target HOST:PORT]

BENCH_QUICK=1 runs 1,000 and 3,000 sessions.  --target measures an already
running server (no RSS).  Every phase is bounded in time; the client binds
source addresses 127.0.0.1, 127.0.0.2, ... (20,000 sessions each) so the
ephemeral port range (about 28,000 ports per source address) never runs out.
"""
import argparse
import errno
import os
import resource
import select
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True          # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

PER_SOURCE = 20000            # sessions per client source address
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# session states
CONNECTING, GREETING, EHLO, HELD, TIMED_OUT, FAILED, CLOSED = range(7)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            nr_open = int(f.read())
    except OSError:
        nr_open = hard
    want = min(max(need, soft), nr_open)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def final_reply(buf):
    """(code, complete) for the SMTP reply at the start of buf."""
    pos = 0
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None, False
        line = buf[pos:end]
        if len(line) >= 3 and line[:3].isdigit() and (len(line) == 3 or line[3:4] == b" "):
            return int(line[:3]), True
        if len(line) < 4 or line[3:4] != b"-":
            return None, True            # garbage: treat as a complete bad reply
        pos = end + 2


class Session:
    __slots__ = ("sock", "state", "t_start", "t_greet", "t_ehlo_sent", "buf", "src")

    def __init__(self, sock, src, now):
        self.sock = sock
        self.src = src
        self.state = CONNECTING
        self.t_start = now
        self.t_greet = None
        self.t_ehlo_sent = None
        self.buf = b""


def open_sessions(host, port, first, count, greet_timeout, ehlo_timeout, window,
                  batch=250, limit_s=None):
    """Open sessions first..first+count-1 (the index picks the source
    address); return (state, stats) once each is greeted+EHLO-answered,
    failed or timed out.  Bounded by limit_s."""
    ep = select.epoll(sizehint=count + 16)
    sessions = {}
    launched = 0
    pending = 0                       # CONNECTING + GREETING
    greeted = greeted_late = ehlo_ok = 0
    fail = {}
    latencies = []
    t0 = time.monotonic()
    limit = t0 + (limit_s if limit_s else 30 + count / 500.0)
    last_greet = None
    next_sweep = t0 + 0.25
    ehlo_line = b"EHLO bench-client.example\r\n"

    def bump(key):
        fail[key] = fail.get(key, 0) + 1

    def ename(e):
        return errno.errorcode.get(e, str(e))

    def fail_session(s, why):
        nonlocal pending
        if s.state in (CONNECTING, GREETING):
            pending -= 1
        s.state = FAILED
        bump(why)
        try:
            ep.unregister(s.sock.fileno())
        except (OSError, ValueError):
            pass

    while True:
        now = time.monotonic()
        # launch a batch while the sessions waiting for their greeting stay
        # under the window (the client must not outrun itself)
        if launched < count and pending < window and now < limit:
            for _ in range(min(batch, count - launched, window - pending)):
                src = "127.0.0.%d" % (1 + (first + launched) // PER_SOURCE)
                launched += 1
                try:
                    sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                except OSError as e:
                    bump("socket:" + ename(e.errno))
                    continue
                sk.setblocking(False)
                try:
                    sk.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sk.bind((src, 0))
                    rc = sk.connect_ex((host, port))
                except OSError as e:
                    rc = e.errno
                s = Session(sk, src, time.monotonic())
                sessions[sk.fileno()] = s
                pending += 1
                if rc not in (0, errno.EINPROGRESS):
                    fail_session(s, "connect:" + ename(rc))
                    continue
                ep.register(sk.fileno(), select.EPOLLOUT | select.EPOLLIN)
        busy = launched < count and pending < window and now < limit
        events = ep.poll(0 if busy else 0.05, 4096)
        now = time.monotonic()
        for fd, ev in events:
            s = sessions.get(fd)
            if s is None or s.state not in (CONNECTING, GREETING, EHLO):
                continue
            if s.state == CONNECTING:
                err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail_session(s, "connect:" + ename(err))
                    continue
                if ev & select.EPOLLOUT:
                    s.state = GREETING
                    ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
                if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    continue
            where = "greeting" if s.state in (CONNECTING, GREETING) else "ehlo"
            try:
                data = s.sock.recv(8192)
            except BlockingIOError:
                continue
            except OSError as e:
                fail_session(s, "%s:%s" % (where, ename(e.errno)))
                continue
            if not data:
                fail_session(s, "closed-by-server-in-" + where)
                continue
            s.buf += data
            code, done = final_reply(s.buf)
            if not done:
                continue
            s.buf = b""
            if s.state == GREETING:
                pending -= 1
                if code != 220:
                    s.state = FAILED
                    bump("greeting-code-%s" % code)
                    ep.unregister(fd)
                    continue
                s.t_greet = now
                lat = now - s.t_start
                latencies.append(lat)
                if lat <= greet_timeout:
                    greeted += 1
                else:
                    greeted_late += 1
                last_greet = now
                try:
                    s.sock.send(ehlo_line)
                except OSError as e:
                    fail_session(s, "send-ehlo:" + ename(e.errno))
                    continue
                s.t_ehlo_sent = now
                s.state = EHLO
            else:
                if code == 250:
                    ehlo_ok += 1
                    s.state = HELD
                else:
                    bump("ehlo-code-%s" % code)
                    s.state = FAILED
                    ep.unregister(fd)
        if now >= next_sweep:
            next_sweep = now + 0.25
            active = 0
            for fd, s in sessions.items():
                if s.state in (CONNECTING, GREETING):
                    if now - s.t_start > greet_timeout:
                        # not greeted in time: stop waiting, keep it open
                        s.state = TIMED_OUT
                        pending -= 1
                        try:
                            ep.unregister(fd)
                        except (OSError, ValueError):
                            pass
                    else:
                        active += 1
                elif s.state == EHLO:
                    if now - s.t_ehlo_sent > ehlo_timeout:
                        s.state = TIMED_OUT
                        bump("ehlo-timeout")
                        try:
                            ep.unregister(fd)
                        except (OSError, ValueError):
                            pass
                    else:
                        active += 1
            if launched >= count and active == 0:
                break
            if now > limit:
                bump("client-phase-limit")
                fail["client-phase-limit"] = active + (count - launched)
                break
    stats = {
        "n": count, "launched": launched, "greeted": greeted, "greeted_late": greeted_late,
        "ehlo": ehlo_ok, "fail": fail, "t0": t0, "t_end": time.monotonic(),
        "last_greet": last_greet, "latencies": latencies,
        "timed_out": sum(1 for s in sessions.values()
                         if s.state == TIMED_OUT and s.t_greet is None),
    }
    return (ep, sessions), stats


def hold_and_close(state, should_stop, quit_wait):
    """Watch the held sessions until should_stop() (server closures count as
    drops), then QUIT them, wait up to quit_wait s, reset what is left."""
    ep, sessions = state
    dropped = 0
    while not should_stop():
        for fd, ev in ep.poll(0.1, 4096):
            s = sessions.get(fd)
            if s is None or s.state != HELD:
                continue
            try:
                data = s.sock.recv(8192)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                s.state = CLOSED
                dropped += 1
                try:
                    ep.unregister(fd)
                except (OSError, ValueError):
                    pass
    held = sum(1 for s in sessions.values() if s.state == HELD)
    open_fds = set()
    for fd, s in sessions.items():
        if s.state == HELD:
            try:
                s.sock.send(b"QUIT\r\n")
                open_fds.add(fd)
            except OSError:
                pass
    quit_sent = len(open_fds)
    quit_end = time.monotonic() + quit_wait
    while open_fds and time.monotonic() < quit_end:
        for fd, ev in ep.poll(0.1, 4096):
            if fd not in open_fds:
                continue
            try:
                data = sessions[fd].sock.recv(8192)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                open_fds.discard(fd)
    linger = struct.pack("ii", 1, 0)
    for s in sessions.values():
        try:
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.sock.close()
    ep.close()
    return {"held": held, "dropped_in_hold": dropped, "quit_sent": quit_sent,
            "quit_unanswered": len(open_fds)}


def worker_main(pipe, host, port, first, count, greet_timeout, ehlo_timeout, window,
                limit_s, quit_wait):
    """A client process: open its sessions, report, hold until told, close."""
    try:
        raise_nofile(count + 256)
        state, stats = open_sessions(host, port, first, count, greet_timeout,
                                     ehlo_timeout, window, limit_s=limit_s)
        pipe.send(("ready", stats))
        final = hold_and_close(state, lambda: pipe.poll(0), quit_wait)
        pipe.send(("done", final))
    except Exception as e:                       # report, never hang the parent
        try:
            pipe.send(("error", "%s: %s" % (type(e).__name__, e)))
        except OSError:
            pass
    finally:
        pipe.close()
        os._exit(0)


def tcp_counters():
    """Kernel counters that explain lost handshakes (ListenOverflows: the
    accept queue was full; SyncookiesSent: the SYN queue was full, and an
    ACK then dropped for a full accept queue leaves the client "connected"
    to a server that never knew of it - fatal for a server-speaks-first
    protocol)."""
    out = {}
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for a, b in zip(lines[::2], lines[1::2]):
            if a.startswith("TcpExt:"):
                out = dict(zip(a.split()[1:], (int(x) for x in b.split()[1:])))
    except (OSError, ValueError):
        pass
    return {k: out.get(k, 0) for k in ("ListenOverflows", "SyncookiesSent")}


def listen_backlog(port):
    """The listen backlog of 127.0.0.1:port as the kernel has it (ss Send-Q)."""
    try:
        p = benchlib.run(["ss", "-ltnH", "sport = :%d" % port], timeout=10, check=False)
        for line in p.stdout.splitlines():
            f = line.split()
            if len(f) >= 4 and f[0] == "LISTEN" and f[3].endswith(":%d" % port):
                return int(f[2])
    except (RuntimeError, ValueError):
        pass
    return None


def per_process_fd_limit():
    """Highest RLIMIT_NOFILE this process (and its children) can have."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            nr_open = int(f.read())
    except OSError:
        nr_open = hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nr_open, nr_open))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, nr_open))
        return nr_open
    except (ValueError, OSError):
        return hard          # no CAP_SYS_RESOURCE: the hard limit is the cap


def run_round(host, port, n, greet_timeout=5.0, ehlo_timeout=5.0, hold=3.0,
              window=4000, measure=None, max_per_worker=None):
    """Open n sessions from as many client processes as the descriptor limit
    needs; hold them all open while measure() runs (before and after `hold`
    seconds); close them.  Returns merged results."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    kern0 = tcp_counters()
    cap = max_per_worker or min(15000, per_process_fd_limit() - 512)
    k = max(1, -(-n // cap))
    base, extra = divmod(n, k)
    limit_s = 30 + n / 500.0
    workers = []
    first = 0
    for i in range(k):
        cnt = base + (1 if i < extra else 0)
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=worker_main,
                        args=(child_end, host, port, first, cnt, greet_timeout,
                              ehlo_timeout, max(1, window // k), limit_s,
                              min(10.0, 2.0 + n / 10000.0)))
        p.start()
        child_end.close()
        workers.append((p, parent_end))
        first += cnt
    stats, finals, errors = [], [], []
    deadline = time.monotonic() + limit_s + 30
    for p, pe in workers:
        left = max(0.1, deadline - time.monotonic())
        if pe.poll(left):
            try:
                kind, val = pe.recv()
            except EOFError:
                kind, val = "error", "worker exited"
            (stats if kind == "ready" else errors).append(val)
        else:
            errors.append("worker did not report within the time limit")
    m1 = measure() if measure else None
    time.sleep(hold)
    m2 = measure() if measure else None
    for p, pe in workers:
        try:
            pe.send("release")
        except OSError:
            pass
    for p, pe in workers:
        if pe.poll(30):
            try:
                kind, val = pe.recv()
                (finals if kind == "done" else errors).append(val)
            except EOFError:
                errors.append("worker exited before closing")
        p.join(10)
        if p.is_alive():                          # our own child: bounded
            p.kill()
            p.join(5)
        pe.close()

    kern1 = tcp_counters()
    lat = sorted(x for st in stats for x in st["latencies"])
    fail = {}
    for st in stats:
        for key, v in st["fail"].items():
            fail[key] = fail.get(key, 0) + v
    for e in errors:
        fail["client-error: " + str(e)[:120]] = fail.get("client-error: " + str(e)[:120], 0) + 1
    greeted = sum(st["greeted"] for st in stats)
    t0 = min((st["t0"] for st in stats), default=0)
    lasts = [st["last_greet"] for st in stats if st["last_greet"]]

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

    return {
        "n": n, "workers": k, "greeted": greeted,
        "greeted_late": sum(st["greeted_late"] for st in stats),
        "ehlo": sum(st["ehlo"] for st in stats),
        "timed_out": sum(st["timed_out"] for st in stats),
        "held": sum(f["held"] for f in finals),
        "dropped_in_hold": sum(f["dropped_in_hold"] for f in finals),
        "quit_sent": sum(f["quit_sent"] for f in finals),
        "quit_unanswered": sum(f["quit_unanswered"] for f in finals),
        "fail": fail,
        "t_open": max((st["t_end"] for st in stats), default=t0) - t0,
        "t_all_greeted": (max(lasts) - t0) if (lasts and greeted == n) else None,
        "lat_p50": pct(0.50), "lat_p99": pct(0.99), "lat_max": lat[-1] if lat else None,
        "m1": m1, "m2": m2,
        "kernel": {k: kern1[k] - kern0[k] for k in kern0},
        "backlog": listen_backlog(port),
    }


def fmt_s(x):
    return "-" if x is None else "%.2f s" % x


def detail(name, r):
    rss = max((m[0] for m in (r["m1"], r["m2"]) if m), default=0)
    pss = max((m[1] for m in (r["m1"], r["m2"]) if m), default=0)
    procs = max((m[2] for m in (r["m1"], r["m2"]) if m), default=0)
    fails = ", ".join("%s=%d" % kv for kv in sorted(r["fail"].items())) or "none"
    print("  %s %d: greeted within 5 s %d, greeted late %d, not greeted %d, EHLO answered %d, "
          "still open after the hold %d (closed by the server %d); %d client processes; "
          "open phase %.2f s, all greeted after %s; greeting latency p50 %s p99 %s max %s; "
          "rss %.1f MB (pss %.1f MB, %d processes); failures: %s; QUIT unanswered %d/%d; "
          "listen backlog %s, kernel ListenOverflows +%d, SyncookiesSent +%d"
          % (name, r["n"], r["greeted"], r["greeted_late"], r["timed_out"], r["ehlo"],
             r["held"], r["dropped_in_hold"], r["workers"], r["t_open"],
             fmt_s(r["t_all_greeted"]), fmt_s(r["lat_p50"]), fmt_s(r["lat_p99"]),
             fmt_s(r["lat_max"]), rss / 1024.0, pss / 1024.0, procs, fails,
             r["quit_unanswered"], r["quit_sent"], r["backlog"],
             r["kernel"]["ListenOverflows"], r["kernel"]["SyncookiesSent"]),
          file=sys.stderr, flush=True)
    r["rss"], r["pss"] = rss, pss
    return rss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick = os.environ.get("BENCH_QUICK") == "1"
    ap.add_argument("--counts", default="1000,3000" if quick else "10000,50000")
    ap.add_argument("--only", choices=("breakwater", "postfix"))
    ap.add_argument("--hold", type=float, default=3.0,
                    help="seconds to hold all sessions open (RSS measured before and after)")
    ap.add_argument("--greet-timeout", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=4000,
                    help="most sessions waiting for their greeting at once (all client processes)")
    ap.add_argument("--target", help="HOST:PORT of an already running server (no RSS)")
    ap.add_argument("--bw-param", action="append", default=[],
                    help="extra Breakwater main.cf setting k=v (repeatable)")
    args = ap.parse_args()
    counts = [int(x) for x in args.counts.split(",") if x]
    if max(counts) > 250 * PER_SOURCE:
        ap.error("too many sessions")
    kw = dict(greet_timeout=args.greet_timeout, hold=args.hold, window=args.window)

    if args.target:
        host, _, port = args.target.rpartition(":")
        for n in counts:
            r = run_round(host, int(port), n, **kw)
            detail("target", r)
            print("connections %d: target greeted %d/%d, ehlo %d/%d"
                  % (n, r["greeted"], n, r["ehlo"], n), flush=True)
        return 0

    if os.geteuid() != 0:
        ap.error("run as root (private instances, RLIMIT_NOFILE)")
    fd_cap = per_process_fd_limit()
    bw_params = benchlib.parse_kv(args.bw_param)
    notes = []
    if "smtpd_processes" not in bw_params:
        # two smtpd processes, unless this machine's per-process descriptor
        # cap (hard RLIMIT_NOFILE without CAP_SYS_RESOURCE) makes that
        # impossible for the largest count
        procs = max(2, -(-max(counts) // max(1, int(fd_cap * 0.9))))
        bw_params["smtpd_processes"] = str(procs)
        if procs > 2:
            notes.append("per-process descriptor cap here is %d (hard RLIMIT_NOFILE, no "
                         "CAP_SYS_RESOURCE): breakwater runs smtpd_processes=%d so that %d "
                         "sessions fit" % (fd_cap, procs, max(counts)))
    results = {}
    workdirs = []
    load_start = open("/proc/loadavg").read().split()[:3]
    try:
        for kind in ("breakwater", "postfix"):
            if args.only and args.only != kind:
                continue
            w = benchlib.new_workdir()
            workdirs.append(w)
            if kind == "breakwater":
                paths = benchlib.build()
                inst = benchlib.Breakwater(w, paths=paths, params=bw_params)
            else:
                inst = benchlib.Postfix(w)
            port = inst.start()
            idle = inst.rss_kb()
            print("connections: %s on 127.0.0.1:%d, idle rss %.1f MB (%d processes)%s"
                  % (kind, port, idle[0] / 1024.0, len(idle[2]),
                     ", smtpd_processes=%s" % bw_params["smtpd_processes"]
                     if kind == "breakwater" else ""), file=sys.stderr, flush=True)

            def measure(inst=inst):
                rss, pss, pids = inst.rss_kb()
                return rss, pss, len(pids)

            for n in counts:
                r = run_round("127.0.0.1", port, n, measure=measure, **kw)
                detail(kind, r)
                results[(kind, n)] = r
                if inst.master_pid and not benchlib.alive(inst.master_pid):
                    print("connections: %s master died! log tail:\n%s"
                          % (kind, inst.log_tail()), file=sys.stderr)
                time.sleep(3)                 # let the server settle
            if kind == "breakwater":
                try:
                    st = inst.status()
                    restarts = sum(d.get("restarts", 0) for d in st.get("daemons", []))
                    print("connections: breakwater daemon restarts during the run: %d" % restarts,
                          file=sys.stderr)
                    results["bw_restarts"] = restarts
                except RuntimeError as e:
                    print("connections: mailctl status failed: %s" % e, file=sys.stderr)
            inst.stop()
            benchlib.cleanup(w)
    finally:
        for w in workdirs:
            if os.path.isdir(w):
                benchlib.cleanup(w)

    print()
    print("== connection benchmark: %s, %d cores, greeting within %.0f s, then EHLO"
          % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(),
             args.greet_timeout))
    print("  load average at start: %s, at end: %s"
          % (" ".join(load_start), " ".join(open("/proc/loadavg").read().split()[:3])))
    for n in counts:
        parts = []
        for kind in ("breakwater", "postfix"):
            r = results.get((kind, n))
            if r:
                parts.append("%s greeted %d/%d, ehlo %d/%d, rss %.1f MB (pss %.1f MB)"
                             % (kind, r["greeted"], n, r["ehlo"], n, r["rss"] / 1024.0,
                                r["pss"] / 1024.0))
        print("connections %d: %s" % (n, "; ".join(parts)))
    for n in counts:
        r = results.get(("breakwater", n))
        if r:
            print("  breakwater %d: all greeted after %s, greeting latency p50 %s p99 %s max %s, "
                  "held %d through the hold, listen backlog %s, ListenOverflows +%d, "
                  "SyncookiesSent +%d, failures: %s"
                  % (n, fmt_s(r["t_all_greeted"]), fmt_s(r["lat_p50"]), fmt_s(r["lat_p99"]),
                     fmt_s(r["lat_max"]), r["held"], r["backlog"],
                     r["kernel"]["ListenOverflows"], r["kernel"]["SyncookiesSent"],
                     ", ".join("%s=%d" % kv for kv in sorted(r["fail"].items())) or "none"))
    if "bw_restarts" in results:
        print("  breakwater daemon restarts during the run: %d" % results["bw_restarts"])
    if ("breakwater", counts[0]) in results:
        print("  breakwater: smtpd_processes=%s" % bw_params["smtpd_processes"])
    for note in notes:
        print("  note: " + note)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        benchlib.log("error: %s" % e)
        sys.exit(1)
