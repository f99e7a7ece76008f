#!/usr/bin/python3
"""outbound.py - outbound benchmarks of Breakwater against Postfix (issue 5).

Two benchmarks, each against a test receiver of our own (an asyncio SMTP
server in a child process of this script, on 127.0.0.2, on a port it picks):

  reuse   Connection reuse.  10,000 small messages to one domain, injected
          with smtp-source; the receiver counts connections and transactions.
          Reports messages per connection for Breakwater (smtp_routes to the
          receiver, its defaults otherwise) and for Postfix (a private
          instance, relayhost = [127.0.0.2]:PORT, its connection cache on and
          its defaults otherwise) in the same run.

  gn      Good neighbour.  The receiver caps its total read throughput (a
          token bucket shared by all connections, 2 MB/s), adds 20 ms before
          every reply, and answers "421 4.7.0 too many connections" to a
          connection beyond the 8th.  5,000 messages of 50 KiB are injected
          with smtp-source, for:
            Breakwater good_neighbor=yes max_connections=50
            Breakwater good_neighbor=no  max_connections=30, 8, 4, 2
            Postfix with its defaults
          Reports per run the time to deliver all, the receiver's concurrent
          connections every 0.5 s, the 421s it sent, and (Breakwater) the
          concurrency, rate and reason from `mailctl domain show D --json`
          every 0.5 s; plots them into bench/outbound-goodneighbour.png.

Usage (as root; Postfix needs it):
    /usr/bin/python3 bench/outbound.py [reuse] [gn]      (default: both)
    /usr/bin/python3 bench/outbound.py report RESULTS.json [FIGURE.png]
                     (summary lines and figure again from a raw results file)

Environment:
  BENCH_QUICK=1            1,000 / 500 messages instead of 10,000 / 5,000
  BENCH_REUSE_MESSAGES=N   reuse: message count (10000)
  BENCH_REUSE_SIZE=B       reuse: message size (1024)
  BENCH_GN_MESSAGES=N      gn: message count (5000)
  BENCH_GN_SIZE=B          gn: message size (51200)
  BENCH_GN_RATE=B          gn: receiver cap in bytes/s, all connections (2000000)
  BENCH_GN_LATENCY_MS=MS   gn: extra delay before every reply (20)
  BENCH_GN_LIMIT=N         gn: 421 above N connections (8)
  BENCH_GN_RUNS="..."      gn: runs, default "gn:50 gn:50+retry_schedule=15s
                           fixed:30 fixed:8 fixed:4 fixed:2 postfix" (gn:M =
                           good_neighbor=yes max_connections=M; fixed:M =
                           good_neighbor=no; +attr=value adds destination_
                           controls attributes for example.net)
  BENCH_SESSIONS=N         smtp-source sessions (20)
  BENCH_TIMEOUT=S          limit for one run (reuse 300 s, gn 720 s)
  BENCH_PF_TIMEOUT=S       limit for the Postfix gn run (900 s)
  BENCH_BW_PARAMS="k=v"    extra Breakwater main.cf settings
  BENCH_PF_PARAMS="k=v"    extra Postfix main.cf settings
  BENCH_JSON=FILE          raw results (default /tmp/bw-outbound-results.json)
  BENCH_PLOT=FILE          figure (default bench/outbound-goodneighbour.png)
  BENCH_KEEP=1             keep the work dirs (/tmp/bw-bench-*)
  BW_OUT_BUILD=DIR         build dir (default /tmp/bw-out-bench-build)
  BENCH_NO_BUILD=1         use the build dir as it is (no make)
  BENCH_VERSION=TEXT       what the build is, for the results (default: from git)

Everything runs on loopback (smtpd on 127.0.0.1, the receivers on
127.0.0.2), never on port 2024; every run is bounded in messages and time;
only processes this script started are signalled.  See bench/OUTBOUND.md.
"""
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SMTP_SOURCE = "/usr/sbin/smtp-source"
PYTHON = "/usr/bin/python3"
RCV_HOST = "127.0.0.2"
DOMAIN = "example.net"
FORBIDDEN_PORTS = {2024}


# ====================================================================== receiver
# Runs in its own process: `outbound.py receiver --stats FILE ...`.

class Bucket:
    """Token bucket shared by every connection: reads of n bytes take n/rate
    seconds of the one shared budget (a small burst is allowed)."""

    def __init__(self, rate, burst_s=0.05):
        self.rate = float(rate)
        self.burst_s = burst_s
        self.next = time.monotonic()

    async def take(self, n):
        if self.rate <= 0:
            return
        now = time.monotonic()
        start = max(now - self.burst_s, self.next)
        self.next = start + n / self.rate
        delay = self.next - now
        if delay > 0:
            await asyncio.sleep(delay)


ID_RE = re.compile(rb"\bwith [A-Z]*SMTP[A-Z]* id ([0-9A-Za-z]+)")


class Receiver:
    def __init__(self, opts):
        self.o = opts
        self.bucket = Bucket(opts["rate"])
        self.latency = opts["latency_ms"] / 1000.0
        self.limit = opts["max_conn"]
        self.active = 0
        self.peak = 0
        self.conns = 0
        self.n421 = 0
        self.t421 = []
        self.txns = 0
        self.bytes = 0
        self.rsets = 0
        self.quits = 0
        self.aborted = 0          # connections closed without QUIT
        self.ids = {}
        self.dups = 0
        self.noid = 0
        self.per_conn = {}        # messages on a connection -> connections
        self.done_t = []          # completion time of every transaction
        self.peers = {}

    async def reply(self, w, text):
        if self.latency:
            await asyncio.sleep(self.latency)
        w.write(text.encode() + b"\r\n")
        await w.drain()

    async def handle(self, reader, writer):
        peer = writer.get_extra_info("peername")
        if self.limit and self.active >= self.limit:
            self.n421 += 1
            self.t421.append(time.monotonic())
            try:
                await self.reply(writer, "421 4.7.0 too many connections")
                writer.close()
            except (OSError, ConnectionError):
                pass
            return
        self.active += 1
        self.conns += 1
        self.peak = max(self.peak, self.active)
        if peer:
            self.peers[peer[0]] = self.peers.get(peer[0], 0) + 1
        msgs = 0
        buf = bytearray()
        quit = False

        async def more():
            data = await reader.read(16384)
            if not data:
                raise EOFError
            await self.bucket.take(len(data))
            buf.extend(data)

        async def line():
            while True:
                i = buf.find(b"\n")
                if i >= 0:
                    ln = bytes(buf[:i]).rstrip(b"\r")
                    del buf[:i + 1]
                    return ln
                if len(buf) > 65536:
                    raise EOFError
                await more()

        try:
            await self.reply(writer, "220 rcv.test ESMTP outbound-bench receiver")
            mail = False
            rcpts = 0
            while True:
                ln = await line()
                cmd = ln[:4].upper()
                if cmd in (b"EHLO",):
                    await self.reply(writer, "250-rcv.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n"
                                     "250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
                elif cmd == b"HELO":
                    await self.reply(writer, "250 rcv.test")
                elif cmd == b"MAIL":
                    mail, rcpts = True, 0
                    await self.reply(writer, "250 2.1.0 Ok")
                elif cmd == b"RCPT":
                    rcpts += 1
                    await self.reply(writer, "250 2.1.5 Ok")
                elif cmd == b"DATA":
                    if not (mail and rcpts):
                        await self.reply(writer, "503 5.5.1 Error: need RCPT command")
                        continue
                    await self.reply(writer, "354 End data with <CR><LF>.<CR><LF>")
                    # the data: up to CRLF.CRLF (which may come at once)
                    buf[0:0] = b"\r\n"
                    scan = 0
                    while True:
                        i = buf.find(b"\r\n.\r\n", scan)
                        if i >= 0:
                            break
                        scan = max(0, len(buf) - 4)
                        if len(buf) > 200 * 1024 * 1024:
                            raise EOFError
                        await more()
                    body = bytes(buf[2:i + 2])
                    del buf[:i + 5]
                    head = body[:8192]
                    m = ID_RE.search(head)
                    if m:
                        mid = m.group(1).decode()
                        if mid in self.ids:
                            self.dups += 1
                        self.ids[mid] = self.ids.get(mid, 0) + 1
                    else:
                        self.noid += 1
                    self.txns += 1
                    self.bytes += len(body)
                    self.done_t.append(time.monotonic())
                    msgs += 1
                    mail, rcpts = False, 0
                    await self.reply(writer, "250 2.0.0 Ok: queued as R%d" % self.txns)
                elif cmd == b"RSET":
                    self.rsets += 1
                    mail, rcpts = False, 0
                    await self.reply(writer, "250 2.0.0 Ok")
                elif cmd == b"NOOP":
                    await self.reply(writer, "250 2.0.0 Ok")
                elif cmd == b"QUIT":
                    self.quits += 1
                    quit = True
                    await self.reply(writer, "221 2.0.0 Bye")
                    break
                else:
                    await self.reply(writer, "502 5.5.2 Error: command not recognized")
        except (EOFError, OSError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not quit:
                self.aborted += 1
            self.active -= 1
            self.per_conn[msgs] = self.per_conn.get(msgs, 0) + 1
            try:
                writer.close()
            except (OSError, ConnectionError):
                pass

    def sample(self):
        return {"t": time.monotonic(), "active": self.active, "peak": self.peak,
                "conns": self.conns, "n421": self.n421, "txns": self.txns,
                "bytes": self.bytes, "unique": len(self.ids), "dups": self.dups,
                "noid": self.noid}

    def final(self):
        d = self.sample()
        d.update({"rsets": self.rsets, "quits": self.quits, "aborted": self.aborted,
                  "per_conn": {str(k): v for k, v in sorted(self.per_conn.items())},
                  "t421": self.t421, "done_t": self.done_t, "peers": self.peers,
                  "dup_ids": sorted(k for k, v in self.ids.items() if v > 1)[:50]})
        return d


async def receiver_main(opts):
    rcv = Receiver(opts)
    server = await asyncio.start_server(rcv.handle, opts["host"], 0, backlog=1024,
                                        limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    if port in FORBIDDEN_PORTS:     # practically impossible; be safe
        server.close()
        server = await asyncio.start_server(rcv.handle, opts["host"], 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
    stats = open(opts["stats"], "w", buffering=1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    tmp = opts["stats"] + ".port.tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, opts["stats"] + ".port")
    deadline = time.monotonic() + opts["lifetime"]
    while not stop.is_set() and time.monotonic() < deadline:
        stats.write(json.dumps(rcv.sample()) + "\n")
        try:
            await asyncio.wait_for(stop.wait(), opts["sample"])
        except asyncio.TimeoutError:
            pass
    server.close()
    stats.write(json.dumps(rcv.sample()) + "\n")
    stats.close()
    tmp = opts["stats"] + ".final.tmp"
    with open(tmp, "w") as f:
        json.dump(rcv.final(), f)
    os.rename(tmp, opts["stats"] + ".final")


def receiver_cli(argv):
    opts = {"host": RCV_HOST, "rate": 0, "latency_ms": 0, "max_conn": 0, "sample": 0.5,
            "lifetime": 3600, "stats": None}
    it = iter(argv)
    for a in it:
        k = a.lstrip("-").replace("-", "_")
        v = next(it)
        opts[k] = v if k in ("host", "stats") else float(v)
    opts["max_conn"] = int(opts["max_conn"])
    asyncio.run(receiver_main(opts))
    return 0


# ====================================================================== driver

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "receiver":
    sys.exit(receiver_cli(sys.argv[2:]))

import benchlib as bl  # noqa: E402

BUILD = os.environ.get("BW_OUT_BUILD", "/tmp/bw-out-bench-build")
_children = []
_instances = []
_workdirs = []


def say(msg):
    print("outbound: " + msg, file=sys.stderr, flush=True)


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default


def kv_env(name):
    return bl.parse_kv(os.environ.get(name, "").split())


def build():
    src = bl.SRC
    if not os.access(os.path.join(src, "configure"), os.X_OK):
        say("autoreconf -fi in %s" % src)
        bl.run(["autoreconf", "-fi"], cwd=src, timeout=600)
    os.makedirs(BUILD, exist_ok=True)
    if not os.path.exists(os.path.join(BUILD, "config.status")):
        say("configuring %s (CFLAGS=-O2)" % BUILD)
        bl.run([os.path.join(src, "configure"), "-q", "CFLAGS=-O2"], cwd=BUILD, timeout=600)
    if os.environ.get("BENCH_NO_BUILD") != "1":
        say("make -j2 -s in %s" % BUILD)
        bl.run(["make", "-j2", "-s"], cwd=BUILD, timeout=1800)
    paths = bl.build_paths(BUILD)
    for d in ("master", "smtpd", "qmgr", "delivery", "dnscache"):
        if not os.access(os.path.join(paths["daemon_directory"], d), os.X_OK):
            raise RuntimeError("%s/%s missing" % (paths["daemon_directory"], d))
    return paths


def source_version():
    if os.environ.get("BENCH_VERSION"):
        return os.environ["BENCH_VERSION"]
    try:
        head = bl.run(["git", "-C", bl.SRC, "rev-parse", "--short", "HEAD"], timeout=10).stdout.strip()
        dirty = bl.run(["git", "-C", bl.SRC, "status", "--porcelain", "--untracked-files=no",
                        "--", ":!bench"], timeout=10).stdout.strip()
        return head + (" + uncommitted changes outside bench/" if dirty else "")
    except RuntimeError:
        return "unknown"


class RcvProc:
    """The receiver child process and its stats files."""

    def __init__(self, workdir, name, rate=0, latency_ms=0, max_conn=0, lifetime=3600):
        self.stats = os.path.join(workdir, name + ".rcv.jsonl")
        self.err = os.path.join(workdir, name + ".rcv.err")
        cmd = [PYTHON, os.path.abspath(__file__), "receiver", "--host", RCV_HOST,
               "--stats", self.stats, "--rate", str(rate), "--latency-ms", str(latency_ms),
               "--max-conn", str(max_conn), "--sample", "0.5", "--lifetime", str(lifetime)]
        with open(self.err, "w") as e:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=e, stderr=e)
        _children.append(self.proc)
        for _ in range(200):
            if os.path.exists(self.stats + ".port"):
                break
            if self.proc.poll() is not None:
                raise RuntimeError("receiver exited: %s" % open(self.err).read()[-2000:])
            time.sleep(0.05)
        else:
            raise RuntimeError("receiver did not start")
        with open(self.stats + ".port") as f:
            self.port = int(f.read())
        self.fd = os.open(self.stats, os.O_RDONLY)

    def last(self):
        size = os.fstat(self.fd).st_size
        if size == 0:
            return None
        data = os.pread(self.fd, 1024, max(0, size - 1024)).decode("ascii", "replace")
        lines = [x for x in data.split("\n") if x.startswith("{") and x.endswith("}")]
        return json.loads(lines[-1]) if lines else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        os.close(self.fd)
        samples = []
        with open(self.stats) as f:
            for x in f:
                if x.startswith("{"):
                    try:
                        samples.append(json.loads(x))
                    except ValueError:
                        pass
        try:
            with open(self.stats + ".final") as f:
                final = json.load(f)
        except (OSError, ValueError):
            final = samples[-1] if samples else {}
        return samples, final


def count_log(path, needle):
    n = 0
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if needle in line:
                    n += 1
    except OSError:
        pass
    return n


def grep_log(path, regex, limit=400):
    out = []
    r = re.compile(regex)
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if r.search(line):
                    out.append(line.rstrip("\n"))
                    if len(out) >= limit:
                        break
    except OSError:
        pass
    return out


def start_system(kind, workdir, rcv_port, paths, controls=None):
    if kind == "breakwater":
        routes = os.path.join(workdir, "outbound_routes")
        with open(routes, "w") as f:
            f.write("# bench/outbound.py: the test receiver\n%s  %s:%d\n" % (DOMAIN, RCV_HOST, rcv_port))
        os.chmod(routes, 0o644)
        params = {"smtp_routes": routes}
        if controls:
            cpath = os.path.join(workdir, "outbound_controls")
            with open(cpath, "w") as f:
                f.write("# bench/outbound.py\n%s  %s\n" % (DOMAIN, controls))
            os.chmod(cpath, 0o644)
            params["destination_controls"] = cpath
        params.update(kv_env("BENCH_BW_PARAMS"))
        inst = bl.Breakwater(workdir, paths=paths, params=params)
    else:
        params = {"relayhost": "[%s]:%d" % (RCV_HOST, rcv_port)}
        params.update(kv_env("BENCH_PF_PARAMS"))
        inst = bl.Postfix(workdir, mode="relay", params=params)
    _instances.append(inst)
    port = inst.start()
    return inst, port


def queue_left(kind, inst):
    if kind == "postfix":
        q, o = inst.count_queued_stable(timeout=20)
    else:
        q, o = inst.count_queued()
    return q + o


class DomainSampler(threading.Thread):
    """`mailctl domain show D --json` every 0.5 s (Breakwater)."""

    def __init__(self, inst, t0):
        super().__init__(daemon=True)
        self.inst, self.t0 = inst, t0
        self.samples = []
        self.errors = 0
        self.stop_ev = threading.Event()

    def run(self):
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            t = time.monotonic()
            try:
                p = self.inst.mailctl("domain", "show", DOMAIN, "--json", timeout=10, check=False)
                d = json.loads(p.stdout) if p.returncode == 0 else None
            except (RuntimeError, ValueError):
                d = None
            if isinstance(d, dict) and "domains" in d:
                d = d["domains"]
            if isinstance(d, list):
                d = next((x for x in d if x.get("vg", "default") == "default"), d[0] if d else None)
            if d:
                self.samples.append({"t": t - self.t0, "concurrency": d.get("concurrency"),
                                     "connections": d.get("connections"),
                                     "rate": d.get("rate_bytes_per_s"),
                                     "phase": d.get("good_neighbor"),
                                     "reason": d.get("concurrency_reason"),
                                     "state": d.get("state"), "queued": d.get("queued"),
                                     "delivered": d.get("delivered"),
                                     "soft_bounces": d.get("soft_bounces")})
            else:
                self.errors += 1
            nxt += 0.5
            self.stop_ev.wait(max(0.0, nxt - time.monotonic()))

    def stop(self):
        self.stop_ev.set()
        self.join(15)
        return self.samples


def run_load(kind, label, count, size, sessions, paths, timeout, rcv_opts, controls=None,
             sample_domain=False):
    """Start a receiver and an MTA, inject COUNT messages with smtp-source,
    wait until the receiver has every one (bounded), collect everything."""
    workdir = bl.new_workdir()
    _workdirs.append(workdir)
    res = {"kind": kind, "label": label, "count": count, "size": size, "sessions": sessions,
           "controls": controls, "problems": [], "workdir": workdir, "receiver": rcv_opts}
    rcv = inst = sampler = src = None
    try:
        rcv = RcvProc(workdir, kind, lifetime=timeout + 300, **rcv_opts)
        inst, port = start_system(kind, workdir, rcv.port, paths, controls)
        if kind == "breakwater":
            st = inst.status()
            res["restarts_before"] = {"%s[%s]" % (x["name"], x.get("slot", "")): x.get("restarts", 0)
                                      for x in st.get("daemons", [])}
            res["pids_before"] = sorted(x["pid"] for x in st.get("daemons", []))
        base = rcv.last() or {}
        res["receiver_port"] = rcv.port
        cmd = [SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(count), "-l", str(size),
               "-f", "from@example.com", "-t", "to@" + DOMAIN, "127.0.0.1:%d" % port]
        res["command"] = " ".join(cmd)
        err = os.path.join(workdir, "smtp-source.err")
        wall0 = time.time()
        t0 = time.monotonic()
        with open(err, "w") as ef:
            src = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ef)
        _children.append(src)
        if sample_domain:
            sampler = DomainSampler(inst, t0)
            sampler.start()
        t_acc = t_all = None
        src_rc = None
        last = base
        marks = {}
        for _ in range(int(timeout / 0.1) + 2):
            now = time.monotonic()
            if t_acc is None and src.poll() is not None:
                t_acc, src_rc = now, src.returncode
            last = rcv.last() or last
            n = last.get("unique", 0) + last.get("noid", 0)
            for frac in (0.5, 0.9, 0.99):
                if frac not in marks and n >= frac * count:
                    marks[frac] = now - t0
            if n >= count:
                t_all = now
                break
            if t_acc is not None and src_rc != 0:
                break
            if now - t0 > timeout:
                res["problems"].append("TIMEOUT after %ds: receiver has %d/%d, smtp-source %s"
                                       % (timeout, n, count, "done" if t_acc else "still running"))
                break
            time.sleep(0.1)
        if t_acc is None:
            try:
                src.wait(max(1, timeout - (time.monotonic() - t0)) if t_all else 1)
                t_acc, src_rc = time.monotonic(), src.returncode
            except subprocess.TimeoutExpired:
                src.kill()
                src.wait(10)
        if src_rc not in (0, None):
            with open(err, errors="replace") as f:
                res["problems"].append("smtp-source exit %s: %s" % (src_rc, f.read()[:1500]))
        res["accept_s"] = (t_acc - t0) if t_acc else None
        res["all_s"] = (t_all - t0) if t_all else None
        res["marks"] = {str(k): v for k, v in marks.items()}
        # settle: duplicates, the idle connections closing (Breakwater keeps
        # them 5 s, Postfix 2 s)
        time.sleep(7)
        if sampler:
            res["domain_samples"] = sampler.stop()
            res["domain_sample_errors"] = sampler.errors
            sampler = None
        left = None
        for _ in range(100):
            left = queue_left(kind, inst)
            if left == 0:
                break
            time.sleep(0.1)
        res["queue_left"] = left
        if kind == "breakwater":
            st = inst.status()
            res["restarts_after"] = {"%s[%s]" % (x["name"], x.get("slot", "")): x.get("restarts", 0)
                                     for x in st.get("daemons", [])}
            res["pids_after"] = sorted(x["pid"] for x in st.get("daemons", []))
            if res["pids_after"] != res["pids_before"] or res["restarts_after"] != res["restarts_before"]:
                res["problems"].append("daemons restarted during the run: %s -> %s"
                                       % (res["restarts_before"], res["restarts_after"]))
            log = inst.log_file
            res["log_sent"] = count_log(log, "status=sent")
            res["log_deferred"] = count_log(log, "status=deferred")
            res["log_bounced"] = count_log(log, "status=bounced")
            res["log_concurrency"] = grep_log(log, r"\): concurrency \d+ -> \d+")
            res["log_down_up"] = grep_log(log, r"\) (is down|still down|is up)")
            res["log_is_down"] = count_log(log, ") is down:")
            res["log_still_down"] = count_log(log, ") still down:")
            res["log_is_up"] = count_log(log, ") is up after")
            res["log_errors"] = grep_log(log, r"(fatal|panic|error:|warning:)", 50)
            res["log_deferred_lines"] = grep_log(log, r"status=deferred", 20)
        else:
            log = inst.log_file
            res["log_sent"] = count_log(log, "status=sent")
            res["log_deferred"] = count_log(log, "status=deferred")
            res["log_bounced"] = count_log(log, "status=bounced")
            res["log_deferred_lines"] = grep_log(log, r"status=deferred", 20)
            res["log_errors"] = grep_log(log, r"(fatal|panic|warning:)", 50)
        res["wall0"] = wall0
        res["t0"] = t0
    finally:
        if sampler:
            sampler.stop()
        if src and src.poll() is None:
            src.kill()
            src.wait(10)
        if inst:
            inst.stop()
            if inst in _instances:
                _instances.remove(inst)
        if rcv:
            samples, final = rcv.stop()
            t0 = res.get("t0")
            if t0 is not None:
                for s in samples:
                    s["t"] -= t0
                final["t421"] = [t - t0 for t in final.get("t421", [])]
                final["done_t"] = [t - t0 for t in final.get("done_t", [])]
            res["rcv_samples"] = samples
            res["rcv"] = final
    r = res["rcv"]
    res["delivered"] = r.get("unique", 0) + r.get("noid", 0)
    res["duplicates"] = r.get("dups", 0)
    if res["duplicates"]:
        res["problems"].append("DUPLICATES: %d messages arrived more than once (ids %s)"
                               % (res["duplicates"], r.get("dup_ids", [])[:10]))
    if res["delivered"] < count:
        res["problems"].append("LOST/LATE: receiver has %d of %d at the end (queue left %s)"
                               % (res["delivered"], count, res.get("queue_left")))
    if res.get("queue_left"):
        res["problems"].append("queue not empty at the end: %s" % res["queue_left"])
    if r.get("noid"):
        res["problems"].append("%d messages without a queue id in Received:" % r["noid"])
    return res


def cleanup_all():
    for inst in list(_instances):
        try:
            inst.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            say("warning: stop: %s" % e)
    for p in _children:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
    if os.environ.get("BENCH_KEEP") != "1":
        for d in _workdirs:
            try:
                bl.cleanup(d)
            except SystemExit:
                pass
    elif _workdirs:
        say("kept work dirs: %s" % " ".join(_workdirs))


# ---------------------------------------------------------------- reuse

def bench_reuse(paths, out):
    quick = os.environ.get("BENCH_QUICK") == "1"
    count = env_int("BENCH_REUSE_MESSAGES", 1000 if quick else 10000)
    size = env_int("BENCH_REUSE_SIZE", 1024)
    sessions = env_int("BENCH_SESSIONS", 20)
    timeout = env_int("BENCH_TIMEOUT", 300)
    lines = []
    runs = [("breakwater", "Breakwater (defaults: max_messages_per_connection=100)", None),
            ("breakwater", "Breakwater (max_messages_per_connection=1000)",
             "max_messages_per_connection=1000"),
            ("postfix", "Postfix (defaults: connection cache on demand, reuse count unlimited, "
                        "reuse time 300s, cache time 2s)", None)]
    for kind, label, controls in runs:
        say("reuse: %s, %d messages of %d bytes" % (label, count, size))
        res = run_load(kind, label, count, size, sessions, paths, timeout, {}, controls=controls)
        r = res["rcv"]
        conns = r.get("conns", 0)
        res["msgs_per_conn"] = r.get("txns", 0) / conns if conns else 0
        pc = {int(k): v for k, v in r.get("per_conn", {}).items()}
        res["max_per_conn"] = max(pc) if pc else 0
        res["empty_conns"] = pc.get(0, 0)
        line = ("reuse %-10s %-38s %5d/%d delivered in %6.1fs, %d connections, "
                "%.1f messages/connection (max %d, %d with none), %d RSET, %d QUIT, "
                "%d closed without QUIT, peak %d concurrent, %d duplicates"
                % (kind, "[%s]" % (controls or "defaults"), res["delivered"], count,
                   res["all_s"] or float("nan"), conns, res["msgs_per_conn"],
                   res["max_per_conn"], res["empty_conns"], r.get("rsets", 0), r.get("quits", 0),
                   r.get("aborted", 0), r.get("peak", 0), res["duplicates"]))
        lines.append(line)
        print(line, flush=True)
        for p in res["problems"]:
            print("  PROBLEM: " + p, flush=True)
        out.setdefault("reuse", []).append(res)
    return lines


# ---------------------------------------------------------------- good neighbour

def parse_runs(spec):
    runs = []
    for tok in spec.split():
        if tok == "postfix":
            runs.append(("postfix", "postfix", None))
        else:
            # gn:M[+attr=v...] / fixed:M[+attr=v...]
            head, *extra = tok.split("+")
            kind, _, m = head.partition(":")
            gn = {"gn": "yes", "fixed": "no"}[kind]
            runs.append(("breakwater", tok, " ".join(["max_connections=%s good_neighbor=%s" % (m, gn)]
                                                     + extra)))
    return runs


def window_rate(done_t, size, lo, hi):
    """Delivered bytes/s between the lo-th and hi-th fraction of completions."""
    ts = sorted(done_t)
    if len(ts) < 10:
        return None
    a, b = ts[int(lo * (len(ts) - 1))], ts[int(hi * (len(ts) - 1))]
    n = int(hi * (len(ts) - 1)) - int(lo * (len(ts) - 1))
    return n * size / (b - a) if b > a else None


def gn_summary(res):
    r = res["rcv"]
    # The main flow: deliveries up to the first pause of 20 s or more (what
    # comes after it are retries of deferred messages).
    ts = sorted(r.get("done_t", []))
    res["main_flow_n"], res["main_flow_s"] = len(ts), ts[-1] if ts else None
    for i in range(1, len(ts)):
        if ts[i] - ts[i - 1] >= 20:
            res["main_flow_n"], res["main_flow_s"] = i, ts[i - 1]
            break
    end_main = res["main_flow_s"] or 0
    samples = [s for s in res["rcv_samples"] if 0 <= s["t"] <= end_main]
    act = [s["active"] for s in samples]
    res["conn_mean"] = sum(act) / len(act) if act else 0
    res["conn_max"] = max([s["active"] for s in res["rcv_samples"]] or [0])
    t421 = r.get("t421", [])
    res["n421"] = len(t421)
    end = res["all_s"] or (samples[-1]["t"] if samples else 0)
    res["n421_second_half"] = sum(1 for t in t421 if t > end / 2)
    res["last421"] = max(t421) if t421 else None
    # Good neighbour "settled": the first time it found the knee, either where
    # the rate flattens ("holding at N connections: going to M added only x%
    # rate") or where the receiver's connection limit is ("backed off from N
    # to N-1 connections: 421 ... [ceiling N-1 for S s]" or "holding at the
    # ceiling of N connections"; "... [searching up to N after the hold]"
    # after a slow-start overshoot is not settled yet).
    res["settled_at"] = None
    for s in res.get("domain_samples") or []:
        reason = s.get("reason") or ""
        if ((reason.startswith("holding at") and "added only" in reason)
                or reason.startswith("holding at the ceiling")
                or (reason.startswith("backed off") and "[ceiling " in reason)):
            res["settled_at"] = s["t"]
            break
    if res["settled_at"] is not None:
        res["n421_after_settle"] = sum(1 for t in t421 if t > res["settled_at"])
    else:
        res["n421_after_settle"] = res["n421_second_half"]
    size = res["size"]
    res["throughput"] = res["delivered"] * size / res["all_s"] if res["all_s"] else None
    res["steady_rate"] = window_rate(r.get("done_t", []), size, 0.1, 0.9)
    res["main_rate"] = res["main_flow_n"] * size / end_main if end_main else None
    ds = res.get("domain_samples") or []
    if ds:
        cc = [s["concurrency"] for s in ds if s["concurrency"] is not None and s["t"] <= end_main]
        res["gn_conc_mean"] = sum(cc) / len(cc) if cc else None
        res["gn_conc_max"] = max(cc) if cc else None
        res["gn_conc_final"] = cc[-1] if cc else None
        changes = 0
        for a, b in zip(cc, cc[1:]):
            changes += a != b
        res["gn_changes"] = changes
    return res


def fmt_rate(b):
    return "%.2f MB/s" % (b / 1e6) if b else "n/a"


def bench_gn(paths, out, plot_path):
    quick = os.environ.get("BENCH_QUICK") == "1"
    count = env_int("BENCH_GN_MESSAGES", 500 if quick else 5000)
    size = env_int("BENCH_GN_SIZE", 51200)
    rate = env_int("BENCH_GN_RATE", 2000000)
    latency = env_int("BENCH_GN_LATENCY_MS", 20)
    limit = env_int("BENCH_GN_LIMIT", 8)
    sessions = env_int("BENCH_SESSIONS", 20)
    timeout = env_int("BENCH_TIMEOUT", 720)
    pf_timeout = env_int("BENCH_PF_TIMEOUT", 900)
    spec = os.environ.get("BENCH_GN_RUNS", "gn:50 gn:50+retry_schedule=15s fixed:30 fixed:8 fixed:4 "
                                           "fixed:2 postfix")
    rcv_opts = {"rate": rate, "latency_ms": latency, "max_conn": limit}
    lines = []
    results = []
    for kind, label, controls in parse_runs(spec):
        say("gn: %s (%s), %d messages of %d bytes, receiver %d B/s, +%d ms, 421 above %d"
            % (label, controls or "defaults", count, size, rate, latency, limit))
        res = run_load(kind, label, count, size, sessions, paths,
                       pf_timeout if kind == "postfix" else timeout, rcv_opts,
                       controls=controls, sample_domain=(kind == "breakwater"))
        gn_summary(res)
        results.append(res)
        out.setdefault("gn", []).append(res)
        line = gn_line(res)
        lines.append(line)
        print(line, flush=True)
        for p in res["problems"]:
            print("  PROBLEM: " + p, flush=True)
    for v in gn_verdicts(results):
        lines.append(v)
        print(v, flush=True)
    try:
        plot(results, plot_path, rate, limit)
        say("figure: %s" % plot_path)
    except Exception as e:  # noqa: BLE001 - a missing matplotlib must not lose the numbers
        say("warning: no figure: %s (scripts/deps.sh --bench installs matplotlib; "
            "'outbound.py report RESULTS.json FIGURE.png' draws it afterwards)" % e)
    return lines


def gn_verdicts(results):
    """The target: good neighbour within 10% of the best fixed setting's
    throughput, with the fewest connections, and no 421 after it settles."""
    out = []
    # verdict: on the time to deliver all, and on the main flow (without
    # the retries of messages deferred by a 421)
    fixed = [r for r in results if r["label"].startswith("fixed:")]
    gns = [r for r in results if r["label"].startswith("gn:")]
    for g in gns[:1]:
        for metric, key in (("time to deliver all", "throughput"), ("main flow", "main_rate")):
            for what, pool in (("best fixed setting", fixed),
                               ("best fixed setting without 421s", [r for r in fixed if r["n421"] == 0])):
                # a main flow that is most of the messages, or it means little
                pool = [r for r in pool if r.get(key) and
                        (key == "throughput" or r["main_flow_n"] >= 0.95 * r["count"])]
                if not pool or not g.get(key):
                    continue
                best = max(pool, key=lambda r: r[key])
                ratio = g[key] / best[key]
                near = [r for r in pool if r[key] >= 0.9 * best[key]]
                # "fewest": no more than 10% above the leanest near-best fixed setting
                fewest = g["conn_mean"] <= 1.1 * min(r["conn_mean"] for r in near) + 1e-9
                bad = [x for x, b in (("throughput < 90%", ratio < 0.9),
                                      ("421 after settling", g["n421_after_settle"] > 0),
                                      ("not the fewest connections", not fewest)) if b]
                verdict = ("gn verdict (%s) vs %s: %s %s, mean %.1f connections; %s %s = %.0f%% of it, "
                           "mean %.1f connections, %d 421s after settling (at %s) -> %s"
                           % (metric, what, best["label"], fmt_rate(best[key]), best["conn_mean"],
                              g["label"], fmt_rate(g[key]), ratio * 100, g["conn_mean"],
                              g["n421_after_settle"],
                              "%.1f s" % g["settled_at"] if g["settled_at"] is not None else "never",
                              "TARGET MET" if not bad else "TARGET MISSED (%s)" % ", ".join(bad)))
                out.append(verdict)
    return out


def gn_line(res):
    extra = ""
    if res["kind"] == "breakwater" and res.get("gn_conc_mean") is not None:
        extra = (", concurrency mean %.1f max %d final %d (%d changes), domain went down %d times "
                 "(+%d 'still down', %d up)" % (
                     res["gn_conc_mean"], res["gn_conc_max"], res["gn_conc_final"], res["gn_changes"],
                     res.get("log_is_down", 0), res.get("log_still_down", 0), res.get("log_is_up", 0)))
    return ("gn %-10s %-9s %4d/%d delivered in %s (%s; steady 10-90%% %s; 50/90/99%% at %s s; "
            "main flow %d messages in %s = %s), "
            "connections mean %.1f (main flow) max %d (%d opened), 421s %d (%s: %d, last at %s), "
            "deferrals %d, duplicates %d%s"
            % (res["kind"], res["label"], res["delivered"], res["count"],
               "%.1f s" % res["all_s"] if res["all_s"] else "NOT ALL",
               fmt_rate(res["throughput"]), fmt_rate(res["steady_rate"]),
               "/".join("%.0f" % res["marks"][k] if k in res["marks"] else "-"
                        for k in ("0.5", "0.9", "0.99")),
               res["main_flow_n"], "%.1f s" % res["main_flow_s"] if res["main_flow_s"] else "-",
               fmt_rate(res["main_rate"]),
               res["conn_mean"], res["conn_max"], res["rcv"].get("conns", 0), res["n421"],
               "after settling at %.1f s" % res["settled_at"] if res["settled_at"] is not None
               else "in the second half", res["n421_after_settle"],
               "%.1f s" % res["last421"] if res["last421"] is not None else "-",
               res.get("log_deferred", 0), res["duplicates"], extra))


def plot(results, path, cap, limit):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    gn = [r for r in results if r["label"].startswith("gn:")]
    fig, axes = plt.subplots(4, 1, figsize=(10, 14))
    ax1, ax2, ax3, ax4 = axes
    ax2.sharex(ax1)
    if gn:
        g = gn[0]
        ds = g.get("domain_samples") or []
        t = [s["t"] for s in ds]
        ax1.step(t, [s["concurrency"] for s in ds], where="post", label="concurrency (limit)", lw=2)
        ax1.plot(t, [s["connections"] for s in ds], label="jobs in flight (qmgr)", lw=1, alpha=0.7)
        rs = g["rcv_samples"]
        ax1.plot([s["t"] for s in rs], [s["active"] for s in rs], label="receiver: open connections",
                 lw=1, ls="--")
        for i, x in enumerate(g["rcv"].get("t421", [])):
            ax1.axvline(x, color="red", alpha=0.3, lw=0.8, label="421 sent" if i == 0 else None)
        ax1.axhline(limit, color="grey", ls=":", lw=1, label="receiver limit (%d)" % limit)
        ax1.set_ylabel("connections")
        ax1.set_title("Breakwater good_neighbor=yes (%s): concurrency" % g["label"])
        ax1.legend(loc="upper right", fontsize=8)
        ax2.plot(t, [(s["rate"] or 0) / 1e6 for s in ds], label="rate_bytes_per_s (mailctl)", lw=2)
        rr = rate_series(rs)
        ax2.plot([x for x, _ in rr], [y / 1e6 for _, y in rr], label="receiver: bytes/s (2 s)", lw=1,
                 alpha=0.7)
        ax2.axhline(cap / 1e6, color="grey", ls=":", lw=1, label="receiver cap")
        ax2.set_ylabel("MB/s")
        ax2.set_title("Breakwater good_neighbor=yes: measured rate")
        ax2.set_xlabel("seconds since injection started")
        ax1.set_xlim(left=0)
        if g.get("main_flow_s") and g.get("all_s") and g["all_s"] > g["main_flow_s"] + 20:
            ax1.set_xlim(0, g["main_flow_s"] + 15)
            ax1.set_title(ax1.get_title() + "\n(main flow only: %d deferred messages were delivered "
                          "at %.0f s)" % (g["count"] - g["main_flow_n"], g["all_s"]), fontsize=10)
        ax2.legend(loc="lower right", fontsize=8)
    for r in results:
        rs = r["rcv_samples"]
        tt = [s["t"] for s in rs if s["t"] >= 0]
        aa = [s["active"] for s in rs if s["t"] >= 0]
        lab = "%s %s (%s, 421s %d)" % ("Breakwater" if r["kind"] == "breakwater" else "Postfix",
                                       r["label"] if r["kind"] == "breakwater" else "defaults",
                                       "%.0f s" % r["all_s"] if r["all_s"] else "not all", r["n421"])
        ax3.plot(tt, aa, label=lab, lw=1.2)
        ax4.plot(tt, [s["txns"] for s in rs if s["t"] >= 0], label=lab, lw=1.2)
    ax3.axhline(limit, color="grey", ls=":", lw=1)
    ax3.set_ylabel("open connections")
    mains = [r["main_flow_s"] for r in results if r.get("main_flow_s") and
             r["main_flow_n"] >= 0.5 * r["count"]]
    if mains:
        ax3.set_xlim(0, max(mains) + 15)
        ax3.set_xlabel("seconds since injection started (main flows; the retries later are in the "
                       "panel below)")
    ax4.set_xlim(left=0)
    ax4.set_ylabel("messages delivered")
    ax4.set_title("receiver: messages delivered, every run")
    ax4.legend(loc="lower right", fontsize=7)
    ax4.set_xlabel("seconds since injection started")
    ax3.set_title("receiver: concurrent connections (0.5 s samples), every run")
    ax3.legend(loc="upper right", fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def rate_series(samples, span=2.0):
    out = []
    for i, s in enumerate(samples):
        j = i
        while j > 0 and s["t"] - samples[j - 1]["t"] <= span + 1e-6:
            j -= 1
        if j < i and s["t"] > samples[j]["t"]:
            out.append((s["t"], (s["bytes"] - samples[j]["bytes"]) / (s["t"] - samples[j]["t"])))
    return out


# ---------------------------------------------------------------- main

def report(path, plot_path):
    """Summary lines and the figure again from a raw results file."""
    d = json.load(open(path))
    lines = []
    for r in d.get("reuse", []):
        lines.append("reuse %-10s [%s]: %d/%d delivered, %d connections, %.1f messages/connection"
                     % (r["kind"], r["controls"] or "defaults", r["delivered"], r["count"],
                        r["rcv"].get("conns", 0), r.get("msgs_per_conn", 0)))
    gn = d.get("gn", [])
    for r in gn:
        gn_summary(r)
        lines.append(gn_line(r))
    lines += gn_verdicts(gn)
    if gn and plot_path:
        rcv = gn[0]["receiver"]
        plot(gn, plot_path, rcv["rate"], rcv["max_conn"])
    print("\n".join(lines))
    return 0


def main(argv):
    if argv and argv[0] == "report":
        return report(argv[1], argv[2] if len(argv) > 2 else None)
    which = [a for a in argv if a in ("reuse", "gn")] or ["reuse", "gn"]
    if os.geteuid() != 0:
        raise SystemExit("outbound.py: run as root (the private Postfix instance needs it)")
    for prog in (SMTP_SOURCE, bl.POSTFIX):
        if not os.access(prog, os.X_OK):
            raise SystemExit("outbound.py: %s missing (apt-get install postfix)" % prog)
    paths = build()
    out = {"version": source_version(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "loadavg_start": open("/proc/loadavg").read().split()[:3],
           "nproc": os.cpu_count(), "postfix": bl.run(["/usr/sbin/postconf", "-d", "-h", "mail_version"],
                                                     timeout=10).stdout.strip()}
    jpath = os.environ.get("BENCH_JSON", "/tmp/bw-outbound-results.json")
    ppath = os.environ.get("BENCH_PLOT", os.path.join(HERE, "outbound-goodneighbour.png"))
    print("outbound: breakwater %s, postfix %s, %d CPUs, load %s" %
          (out["version"], out["postfix"], out["nproc"], " ".join(out["loadavg_start"])), flush=True)
    lines = []
    try:
        if "reuse" in which:
            lines += bench_reuse(paths, out)
        if "gn" in which:
            lines += bench_gn(paths, out, ppath)
    finally:
        out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        out["summary"] = lines
        with open(jpath, "w") as f:
            json.dump(out, f, indent=1)
        say("raw results: %s" % jpath)
        cleanup_all()
    print("\n".join(["", "summary:"] + lines), flush=True)
    return 0


if __name__ == "__main__":
    def _term(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        cleanup_all()
        sys.exit(130)
    except RuntimeError as e:
        say("error: %s" % e)
        cleanup_all()
        sys.exit(1)
