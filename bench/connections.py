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


def run_round(host, port, n, greet_timeout=5.0, ehlo_timeout=5.0, hold=3.0,
              window=4000, batch=250, measure=None, label=""):
    """Open n sessions; return a dict of results.  measure() is called while
    all sessions are held open and returns (rss_kb, pss_kb, nprocs)."""
    raise_nofile(n + 1024)
    ep = select.epoll(sizehint=n + 16)
    sessions = {}
    launched = 0
    pending = 0                       # CONNECTING + GREETING
    greeted = greeted_late = ehlo_ok = 0
    fail = {}
    codes = {}
    latencies = []
    t0 = time.monotonic()
    limit = t0 + 30 + n / 500.0       # hard bound on the whole open phase
    last_greet = None
    next_sweep = t0 + 0.25
    ehlo_line = b"EHLO bench-client.example\r\n"

    def fail_session(s, why):
        nonlocal pending
        if s.state in (CONNECTING, GREETING):
            pending -= 1
        s.state = FAILED
        fail[why] = fail.get(why, 0) + 1
        try:
            ep.unregister(s.sock.fileno())
        except (OSError, ValueError):
            pass

    while True:
        now = time.monotonic()
        # launch a batch while the number of sessions waiting for a greeting
        # stays under the window (the client must not outrun itself)
        if launched < n and pending < window and now < limit:
            k = min(batch, n - launched, window - pending)
            for _ in range(k):
                src = "127.0.0.%d" % (1 + launched // PER_SOURCE)
                launched += 1
                try:
                    sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                except OSError as e:
                    fail[errno.errorcode.get(e.errno, str(e.errno))] = \
                        fail.get(errno.errorcode.get(e.errno, str(e.errno)), 0) + 1
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
                    fail_session(s, "connect:" + errno.errorcode.get(rc, str(rc)))
                    continue
                ep.register(sk.fileno(), select.EPOLLOUT | select.EPOLLIN)
        busy = launched < n and pending < window and now < limit
        events = ep.poll(0 if busy else 0.05, 4096)
        now = time.monotonic()
        for fd, ev in events:
            s = sessions.get(fd)
            if s is None or s.state not in (CONNECTING, GREETING, EHLO, HELD):
                continue
            if s.state == CONNECTING:
                err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail_session(s, "connect:" + errno.errorcode.get(err, str(err)))
                    continue
                if ev & select.EPOLLOUT:
                    s.state = GREETING
                    ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
                if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    continue
            try:
                data = s.sock.recv(8192)
            except BlockingIOError:
                continue
            except OSError as e:
                fail_session(s, "%s:%s" % (("greeting", "greeting", "ehlo", "held")[s.state],
                                           errno.errorcode.get(e.errno, str(e.errno))))
                continue
            if not data:
                fail_session(s, "closed-by-server-in-" +
                             ("connect", "greeting", "ehlo", "hold")[s.state])
                continue
            if s.state == HELD:
                continue                  # unexpected chatter; ignore
            s.buf += data
            code, done = final_reply(s.buf)
            if not done:
                continue
            s.buf = b""
            if s.state == GREETING:
                pending -= 1
                if code != 220:
                    s.state = FAILED
                    codes[code] = codes.get(code, 0) + 1
                    fail["greeting-code-%s" % code] = fail.get("greeting-code-%s" % code, 0) + 1
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
                    fail_session(s, "send-ehlo:" + errno.errorcode.get(e.errno, str(e.errno)))
                    continue
                s.t_ehlo_sent = now
                s.state = EHLO
            elif s.state == EHLO:
                if code == 250:
                    ehlo_ok += 1
                    s.state = HELD
                else:
                    fail["ehlo-code-%s" % code] = fail.get("ehlo-code-%s" % code, 0) + 1
                    s.state = FAILED
                    ep.unregister(fd)
        if now >= next_sweep:
            next_sweep = now + 0.25
            for fd, s in sessions.items():
                if s.state in (CONNECTING, GREETING) and now - s.t_start > greet_timeout:
                    # not greeted in time: stop waiting, keep the socket open
                    s.state = TIMED_OUT
                    pending -= 1
                    try:
                        ep.unregister(fd)
                    except (OSError, ValueError):
                        pass
                elif s.state == EHLO and now - s.t_ehlo_sent > ehlo_timeout:
                    s.state = TIMED_OUT
                    fail["ehlo-timeout"] = fail.get("ehlo-timeout", 0) + 1
                    try:
                        ep.unregister(fd)
                    except (OSError, ValueError):
                        pass
            active = sum(1 for s in sessions.values() if s.state in (CONNECTING, GREETING, EHLO))
            if launched >= n and active == 0:
                break
            if now > limit:
                fail["client-phase-limit"] = active
                break
    t_open = time.monotonic() - t0
    timed_out = sum(1 for s in sessions.values() if s.state == TIMED_OUT and s.t_greet is None)

    # all sessions are open now: measure, hold, measure again
    m1 = measure() if measure else None
    hold_end = time.monotonic() + hold
    while time.monotonic() < hold_end:
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
                fail_session(s, "closed-by-server-in-hold")
    m2 = measure() if measure else None
    held = sum(1 for s in sessions.values() if s.state == HELD)

    # close: QUIT on the held sessions, wait a little for the server's close,
    # then reset everything still open (bounded)
    quit_sent = 0
    for s in sessions.values():
        if s.state == HELD:
            try:
                s.sock.send(b"QUIT\r\n")
                quit_sent += 1
            except OSError:
                pass
    open_fds = {fd for fd, s in sessions.items() if s.state == HELD}
    quit_end = time.monotonic() + min(10.0, 2.0 + n / 10000.0)
    while open_fds and time.monotonic() < quit_end:
        for fd, ev in ep.poll(0.1, 4096):
            if fd not in open_fds:
                continue
            s = sessions[fd]
            try:
                data = s.sock.recv(8192)
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
    latencies.sort()

    def pct(p):
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "n": n, "launched": launched, "greeted": greeted, "greeted_late": greeted_late,
        "ehlo": ehlo_ok, "held": held, "timed_out": timed_out, "fail": fail,
        "t_open": t_open,
        "t_all_greeted": (last_greet - t0) if (last_greet and greeted == n) else None,
        "lat_p50": pct(0.50), "lat_p99": pct(0.99), "lat_max": latencies[-1] if latencies else None,
        "m1": m1, "m2": m2, "quit_unanswered": len(open_fds), "quit_sent": quit_sent,
    }


def fmt_s(x):
    return "-" if x is None else "%.2f s" % x


def detail(name, r):
    rss = max((m[0] for m in (r["m1"], r["m2"]) if m), default=0)
    pss = max((m[1] for m in (r["m1"], r["m2"]) if m), default=0)
    procs = max((m[2] for m in (r["m1"], r["m2"]) if m), default=0)
    fails = ", ".join("%s=%d" % kv for kv in sorted(r["fail"].items())) or "none"
    print("  %s %d: greeted<=5s %d, greeted late %d, not greeted in 5s %d, EHLO answered %d, "
          "still open after hold %d; open phase %.2f s, all greeted after %s; "
          "greeting latency p50 %s p99 %s max %s; rss %.1f MB (pss %.1f MB, %d processes); "
          "failures: %s; QUIT unanswered %d/%d"
          % (name, r["n"], r["greeted"], r["greeted_late"], r["timed_out"], r["ehlo"],
             r["held"], r["t_open"], fmt_s(r["t_all_greeted"]), fmt_s(r["lat_p50"]),
             fmt_s(r["lat_p99"]), fmt_s(r["lat_max"]), rss / 1024.0, pss / 1024.0, procs,
             fails, r["quit_unanswered"], r["quit_sent"]), file=sys.stderr, flush=True)
    return rss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick = os.environ.get("BENCH_QUICK") == "1"
    ap.add_argument("--counts", default="1000,3000" if quick else "10000,50000")
    ap.add_argument("--only", choices=("breakwater", "postfix"))
    ap.add_argument("--hold", type=float, default=3.0, help="seconds to hold all sessions open")
    ap.add_argument("--greet-timeout", type=float, default=5.0)
    ap.add_argument("--target", help="HOST:PORT of an already running server (no RSS)")
    ap.add_argument("--bw-param", action="append", default=[], help="extra main.cf k=v")
    args = ap.parse_args()
    counts = [int(x) for x in args.counts.split(",") if x]
    if max(counts) > 250 * PER_SOURCE:
        ap.error("too many sessions")

    if args.target:
        host, _, port = args.target.rpartition(":")
        for n in counts:
            r = run_round(host, int(port), n, greet_timeout=args.greet_timeout, hold=args.hold)
            detail("target", r)
            print("connections %d: target greeted %d/%d, ehlo %d/%d"
                  % (n, r["greeted"], n, r["ehlo"], n), flush=True)
        return 0

    if os.geteuid() != 0:
        ap.error("run as root (private instances, RLIMIT_NOFILE)")
    results = {}
    workdirs = []
    try:
        for kind in ("breakwater", "postfix"):
            if args.only and args.only != kind:
                continue
            w = benchlib.new_workdir()
            workdirs.append(w)
            if kind == "breakwater":
                paths = benchlib.build()
                inst = benchlib.Breakwater(w, paths=paths, params=benchlib.parse_kv(args.bw_param))
            else:
                inst = benchlib.Postfix(w)
            port = inst.start()
            idle = inst.rss_kb()
            print("connections: %s on 127.0.0.1:%d, idle rss %.1f MB (%d processes)"
                  % (kind, port, idle[0] / 1024.0, len(idle[2])), file=sys.stderr, flush=True)

            def measure(inst=inst):
                rss, pss, pids = inst.rss_kb()
                return rss, pss, len(pids)

            for n in counts:
                r = run_round("127.0.0.1", port, n, greet_timeout=args.greet_timeout,
                              hold=args.hold, measure=measure, label=kind)
                r["rss"] = detail(kind, r)
                results[(kind, n)] = r
                if kind == "breakwater":
                    pids_alive = all(benchlib.alive(p) for p in inst.known_pids
                                     if p == inst.master_pid)
                    if not pids_alive:
                        print("connections: breakwater master died! log tail:\n" + inst.log_tail(),
                              file=sys.stderr)
                time.sleep(3)                 # let the server settle
            if kind == "breakwater":
                try:
                    st = inst.status()
                    restarts = sum(d.get("restarts", 0) for d in st.get("daemons", []))
                    print("connections: breakwater daemon restarts during the run: %d" % restarts,
                          file=sys.stderr)
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
    for n in counts:
        parts = []
        for kind in ("breakwater", "postfix"):
            r = results.get((kind, n))
            if r:
                parts.append("%s greeted %d/%d, ehlo %d/%d, rss %.1f MB"
                             % (kind, r["greeted"], n, r["ehlo"], n, r["rss"] / 1024.0))
        print("connections %d: %s" % (n, "; ".join(parts)))
    for n in counts:
        r = results.get(("breakwater", n))
        if r:
            print("  breakwater %d: all greeted after %s, greeting latency p99 %s"
                  % (n, fmt_s(r["t_all_greeted"]), fmt_s(r["lat_p99"])))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        benchlib.log("error: %s" % e)
        sys.exit(1)
