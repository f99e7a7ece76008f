"""enginelib.py - helpers for the queue engine and outbound tests
(test_queue_engine.py, test_outbound.py).

  Sink          a small asyncio SMTP server of our own on a loopback address,
                in a background thread, that records every connection: peer
                address and port, HELO/EHLO name, every command, the
                transactions carried, RSETs, whether the client said QUIT,
                open/close times; and the number of connections open at once
                (a connection that said QUIT no longer counts). What it does
                is set by attributes a test may change at any time:
                  mode            "smtp" (default), "close" (accept the
                                  connection and close it at once: the
                                  destination looks dead, but every attempt
                                  is counted) or "silent" (accept and never
                                  say anything, until the client gives up
                                  or 60 s pass)
                  greeting_by_ip  {peer ip: reply} - greet that client with
                                  the reply (e.g. 554 or 421) and close
                  max_conns       N: a connection beyond N open ones gets
                                  "421 4.7.0 too many connections" and is
                                  closed, at the greeting (max_conns_stage
                                  "greeting", the default) or in reply to
                                  MAIL ("mail")
                  rcpt_replies    {address: reply}, rcpt_default, rcpt_by_ip
                  mail_by_ip      {peer ip: reply} for MAIL
                  dot_reply       reply after the final dot (None: 250)
                  dot_delay       seconds to wait before answering the dot
                  dot_slots       K: at most K transactions are in their dot
                                  wait at once (a receiver with a fixed
                                  capacity: more connections than K add
                                  nothing)
  engine        a Breakwater instance for these tests: routes, the
                destination_controls / virtual_gateways /
                virtual_gateway_classes tables, short retries; waits until
                qmgr answers and every delivery agent is connected.
  inject        many messages through smtpd from a few parallel sessions.
  log helpers   the domain state, probe and concurrency lines of qmgr.

Everything listens on 127.0.0.x only, never on port 2024, every wait is
bounded.
"""

import asyncio
import json
import os
import re
import socket
import threading
import time

from conftest import LOG_PREFIX, SMTPClient, free_port, queued_id, wait_until  # noqa: F401
from relaylib import RELAY_DEFAULTS, SENDER, closed_port, free_port_on, write_routes  # noqa: F401

# As relaylib does (and test/integration/run.sh): LeakSanitizer at exit keeps
# a stopped master alive after "mailctl stop" returned.
os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")

QID = r"[0-9A-F]{18}"


# ---------------------------------------------------------------- the sink

class Conn:
    """One connection the sink accepted."""

    def __init__(self, no, peer, local):
        self.no = no
        self.peer_ip, self.peer_port = peer[0], peer[1]
        self.local = local
        self.t_open = time.monotonic()
        self.t_close = None
        self.t_quit = None
        self.helo = None
        self.commands = []
        self.transactions = 0      # messages accepted (250 after the dot)
        self.rsets = 0
        self.quit = False
        self.greeted = None        # the greeting line sent
        self.counted = False       # counted in the open connections

    def __repr__(self):
        return "Conn(#%d %s:%d helo=%r tx=%d rset=%d quit=%s)" % (
            self.no, self.peer_ip, self.peer_port, self.helo, self.transactions, self.rsets, self.quit)


class SinkMessage:
    def __init__(self, conn, mail_from, rcpts, data):
        self.conn = conn.no
        self.peer_ip = conn.peer_ip
        self.helo = conn.helo
        self.mail_from = mail_from
        self.rcpts = list(rcpts)
        self.data = data
        self.time = time.monotonic()

    def header(self, name):
        m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*(.*?)\r?$", self.data.split(b"\r\n\r\n", 1)[0])
        return m.group(1).decode("latin-1") if m else None

    def __repr__(self):
        return "SinkMessage(conn=%d from=%r to=%r %d bytes)" % (self.conn, self.mail_from, self.rcpts, len(self.data))


class Sink:
    """See the module docstring."""

    def __init__(self, host="127.0.0.2", port=None, name=None, mode="smtp"):
        self.host = host
        self.port = port or free_port_on([host])
        self.name = name or "%s:%d" % (host, self.port)
        self.mode = mode
        self.greeting_by_ip = {}
        self.max_conns = None
        self.max_conns_stage = "greeting"
        self.rcpt_replies = {}
        self.rcpt_default = None
        self.rcpt_by_ip = {}
        self.mail_by_ip = {}
        self.dot_reply = None
        self.dot_delay = 0.0
        self.dot_slots = None
        self.quit_delay = 0.0        # seconds before 221, the connection still counted
        self.pipelining = True
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.conns = []
        self.messages = []
        self.rcpt_log = []          # (address, reply code, time)
        self.open_now = 0
        self.open_max = 0
        self.open_samples = []      # (time, open connections) at every change
        self.rejected_421 = 0
        self.watched = None
        self._slots = None
        self._slots_k = None
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error = None
        self._server = None
        self.thread = threading.Thread(target=self._run, name="sink-" + self.name, daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("sink %s did not start" % self.name)
        if self._error:
            raise self._error

    # -- thread
    def _run(self):
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                asyncio.start_server(self._client, self.host, self.port, reuse_address=True, backlog=512,
                                     limit=1 << 20))
        except Exception as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self._server.close()
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                try:
                    self.loop.run_until_complete(asyncio.wait(pending, timeout=2))
                except Exception:
                    pass
            self.loop.close()

    def close(self):
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            pass
        self.thread.join(10)

    def watch(self, bw):
        self.watched = bw
        return self

    # -- bookkeeping (loop thread)
    def _count(self, c, delta):
        with self.lock:
            if delta > 0 and not c.counted:
                c.counted = True
                self.open_now += 1
            elif delta < 0 and c.counted:
                c.counted = False
                self.open_now -= 1
            else:
                return
            self.open_max = max(self.open_max, self.open_now)
            self.open_samples.append((time.monotonic(), self.open_now))
            self.cond.notify_all()

    async def _client(self, reader, writer):
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname")
        with self.lock:
            c = Conn(len(self.conns) + 1, peer, local)
            self.conns.append(c)
            self.cond.notify_all()
        try:
            await self._session(c, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            self._count(c, -1)
            with self.lock:
                c.t_close = time.monotonic()
                self.cond.notify_all()
            try:
                writer.close()
            except Exception:
                pass

    async def _session(self, c, reader, writer):
        if self.mode == "close":
            return
        if self.mode == "silent":
            try:
                await asyncio.wait_for(reader.read(), 60)
            except asyncio.TimeoutError:
                pass
            return

        async def say(line):
            writer.write(line.encode("latin-1") + b"\r\n")
            await writer.drain()

        g = self.greeting_by_ip.get(c.peer_ip)
        if g:
            c.greeted = g
            await say(g)
            return
        with self.lock:
            over = self.max_conns is not None and self.open_now >= self.max_conns
            if over and self.max_conns_stage == "greeting":
                self.rejected_421 += 1
        if over and self.max_conns_stage == "greeting":
            c.greeted = "421 4.7.0 rx-%s too many connections" % self.host
            await say(c.greeted)
            return
        if not over:
            self._count(c, +1)
        c.greeted = "220 rx-%s.test ESMTP engine sink" % self.host
        await say(c.greeted)
        mail_from, rcpts = None, []
        while True:
            line = await reader.readline()
            if not line:
                return
            text = line.decode("latin-1").rstrip("\r\n")
            with self.lock:
                c.commands.append(text)
            verb = text[:4].upper()
            if verb in ("EHLO", "HELO"):
                c.helo = text[5:].strip()
                if verb == "EHLO":
                    lines = ["250-rx-%s.test" % self.host]
                    if self.pipelining:
                        lines.append("250-PIPELINING")
                    lines += ["250-8BITMIME", "250 ENHANCEDSTATUSCODES"]
                    await say("\r\n".join(lines))
                else:
                    await say("250 rx-%s.test" % self.host)
            elif verb == "MAIL":
                r = self.mail_by_ip.get(c.peer_ip)
                if over:
                    with self.lock:
                        self.rejected_421 += 1
                    r = "421 4.7.0 rx-%s too many connections" % self.host
                if r:
                    await say(r)
                    if r.startswith("421"):
                        return
                    continue
                m = re.match(r"(?i)MAIL FROM:\s*<([^>]*)>", text)
                mail_from, rcpts = (m.group(1) if m else text[10:]), []
                await say("250 2.1.0 Ok")
            elif verb == "RCPT":
                m = re.match(r"(?i)RCPT TO:\s*<([^>]*)>", text)
                addr = m.group(1) if m else text[8:]
                r = self.rcpt_by_ip.get(c.peer_ip) or self.rcpt_replies.get(addr.lower()) or self.rcpt_default
                if mail_from is None:
                    r = "503 5.5.1 need MAIL first"
                with self.lock:
                    self.rcpt_log.append((addr, (r or "250")[:3], time.monotonic()))
                if r and not r.startswith("2"):
                    await say(r)
                    if r.startswith("421"):
                        return
                    continue
                rcpts.append(addr)
                await say("250 2.1.5 Ok")
            elif verb == "DATA":
                if mail_from is None or not rcpts:
                    await say("554 5.5.1 no valid recipients")
                    continue
                await say("354 go ahead")
                chunks = []
                while True:
                    ln = await reader.readline()
                    if not ln:
                        return
                    if ln == b".\r\n":
                        break
                    if ln.startswith(b"."):
                        ln = ln[1:]
                    chunks.append(ln)
                data = b"".join(chunks)
                await self._dot_wait()
                r = self.dot_reply
                if r and not r.startswith("2"):
                    await say(r)
                else:
                    with self.lock:
                        c.transactions += 1
                        self.messages.append(SinkMessage(c, mail_from, rcpts, data))
                        self.cond.notify_all()
                    await say(r or "250 2.0.0 Ok: accepted by the engine sink")
                mail_from, rcpts = None, []
            elif verb == "RSET":
                c.rsets += 1
                mail_from, rcpts = None, []
                await say("250 2.0.0 Ok")
            elif verb == "NOOP":
                await say("250 2.0.0 Ok")
            elif verb == "QUIT":
                with self.lock:
                    c.quit = True
                    c.t_quit = time.monotonic()
                if self.quit_delay:
                    await asyncio.sleep(self.quit_delay)
                self._count(c, -1)
                await say("221 2.0.0 Bye")
                return
            else:
                await say("502 5.5.2 command not recognised")

    async def _dot_wait(self):
        if self.dot_slots:
            if self._slots is None or self._slots_k != self.dot_slots:
                self._slots = asyncio.Semaphore(self.dot_slots)
                self._slots_k = self.dot_slots
            async with self._slots:
                if self.dot_delay:
                    await asyncio.sleep(self.dot_delay)
        elif self.dot_delay:
            await asyncio.sleep(self.dot_delay)

    # -- results (test thread)
    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def connections(self):
        with self.lock:
            return list(self.conns)

    def n_conns(self):
        with self.lock:
            return len(self.conns)

    def conn_times(self):
        with self.lock:
            return [c.t_open for c in self.conns]

    def rcpt_times(self, address):
        with self.lock:
            return [t for a, _, t in self.rcpt_log if a.lower() == address.lower()]

    def _context(self):
        bw = self.watched
        if bw is None:
            return ""
        try:
            d = bw.mailctl("domain", "list").stdout
        except Exception as e:
            d = repr(e)
        return "\ndomains:\n%s\nlog tail:\n%s" % (d[-2000:], bw.log()[-4000:])

    def wait_messages(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("sink %s: %d message(s) after %.1fs, wanted %d; %d connection(s)%s" % (
                        self.name, len(self.messages), timeout, n, len(self.conns), self._context()))
                self.cond.wait(min(left, 0.2))
            return list(self.messages)

    def wait_conns(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("sink %s: %d connection(s) after %.1fs, wanted %d%s" % (
                        self.name, len(self.conns), timeout, n, self._context()))
                self.cond.wait(min(left, 0.2))
            return list(self.conns)

    def wait_all_closed(self, timeout=15.0):
        """Until every connection is closed; returns the connections."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while any(c.t_close is None for c in self.conns):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("sink %s: connections still open after %.1fs: %r" % (
                        self.name, timeout, [c for c in self.conns if c.t_close is None]))
                self.cond.wait(min(left, 0.2))
            return list(self.conns)


# ---------------------------------------------------------------- instances

def write_table(bw, name, lines):
    """A table file in the instance's config dir from a list of lines."""
    path = os.path.join(bw.config_dir, name)
    with open(path + ".tmp", "w") as f:
        f.write("# written by the queue engine tests\n")
        for ln in lines:
            f.write(ln + "\n")
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    return path


ENGINE_DEFAULTS = dict(RELAY_DEFAULTS)
ENGINE_DEFAULTS.update({"retry_schedule": "2s", "smtp_connect_timeout": "3s", "smtp_timeout": "15s"})


def engine(bw_factory, routes, controls=None, gateways=None, classes=None, params=None, start=True, **bw_kw):
    """A Breakwater instance: routes (list of (domain, host:port)),
    controls / gateways / classes (lists of table lines, or None), params on
    top of ENGINE_DEFAULTS. Started and ready unless start=False."""
    p = dict(ENGINE_DEFAULTS)
    p.update(params or {})
    bw = bw_factory(p, start=False, **bw_kw)
    bw.set_params(smtp_routes=write_routes(bw, routes))
    if controls is not None:
        bw.set_params(destination_controls=write_table(bw, "destination_controls", controls))
    if gateways is not None:
        bw.set_params(virtual_gateways=write_table(bw, "virtual_gateways", gateways))
    if classes is not None:
        bw.set_params(virtual_gateway_classes=write_table(bw, "virtual_gateway_classes", classes))
    if start:
        bw.start()
        ready(bw, [g.split()[0] for g in gateways or []])
    return bw


def ready(bw, gateways=(), timeout=20.0):
    """qmgr answers and the delivery agent of every gateway is connected."""
    wait_until(lambda: bw.mailctl("queue", "list").returncode == 0, timeout, 0.1, "qmgr to answer queue list")
    names = {"default"} | set(gateways)
    for g in names:
        bw.wait_for_log(r"breakwater/qmgr\[\d+\]: delivery agent delivery(?:/%s)? connected" % re.escape(g)
                        if g == "default" else
                        r"breakwater/qmgr\[\d+\]: delivery agent delivery/%s connected" % re.escape(g), timeout)


# ---------------------------------------------------------------- injection

def message(rcpt, subject, body=b"Hello.\r\n", sender=SENDER, extra=b""):
    return (b"From: " + sender.encode() + b"\r\nTo: " + rcpt.encode() + b"\r\nSubject: " + subject.encode()
            + b"\r\nMessage-ID: <" + subject.replace(" ", ".").encode() + b"." + str(time.time()).encode()
            + b"@client.test.example>\r\n" + extra + b"\r\n" + body)


def send1(bw, rcpts, subject="engine test", body=b"Hello.\r\n", sender=SENDER, port=None, host="127.0.0.1"):
    """One message in one session; returns the queue id."""
    with SMTPClient(port or bw.port, host=host, timeout=30) as c:
        c.greeting()
        c.ehlo()
        qid = queued_id(c.mail(sender, list(rcpts), message(rcpts[0], subject, body, sender)))
        try:
            c.cmd("QUIT", timeout=5)
        except Exception:
            pass
    return qid


def send_from(bw, source, rcpts, sender=SENDER, subject="engine test", port=None):
    """One message from a client bound to the loopback address source."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port or bw.port))
    c = SMTPClient.__new__(SMTPClient)
    c.timeout, c.sock, c.buf, c.eof = 30.0, sock, b"", False
    with c:
        c.greeting()
        c.ehlo()
        qid = queued_id(c.mail(sender, list(rcpts), message(rcpts[0], subject, sender=sender)))
        try:
            c.cmd("QUIT", timeout=5)
        except Exception:
            pass
    return qid


def inject(bw, n, rcpt_of, sessions=6, body=b"Hello.\r\n", sender=SENDER, deadline_s=120.0, subject="bulk"):
    """n messages, message k to [rcpt_of(k)], from `sessions` parallel SMTP
    sessions (each message tried again on a new connection if its session
    breaks). Returns {k: queue id}; raises if any message was not accepted."""
    lock = threading.Lock()
    todo = list(range(n))
    got = {}
    errors = []
    stop_at = time.monotonic() + deadline_s

    def worker():
        c = None
        while time.monotonic() < stop_at:
            with lock:
                if not todo:
                    break
                k = todo.pop(0)
            for attempt in range(5):
                try:
                    if c is None:
                        c = SMTPClient(bw.port, timeout=30)
                        c.greeting()
                        c.ehlo()
                    rc = rcpt_of(k)
                    qid = queued_id(c.mail(sender, [rc], message(rc, "%s %d" % (subject, k), body, sender)))
                    with lock:
                        got[k] = qid
                    break
                except Exception as e:
                    if c is not None:
                        c.close()
                    c = None
                    if attempt == 4:
                        with lock:
                            errors.append((k, repr(e)))
                    time.sleep(0.1)
        if c is not None:
            try:
                c.cmd("QUIT", timeout=3)
            except Exception:
                pass
            c.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(sessions, max(1, n)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, stop_at - time.monotonic() + 5))
    assert len(got) == n, "injected %d of %d messages in %.0fs; errors %r" % (len(got), n, deadline_s, errors[:5])
    return got


# ---------------------------------------------------------------- qmgr state

def domain_objs(bw, domain=None):
    """domain list --json, or domain show D --json (list of objects)."""
    args = ["domain", "show", domain, "--json"] if domain else ["domain", "list", "--json"]
    r = bw.mailctl(*args)
    assert r.returncode == 0, "%s: rc %d %s %s" % (" ".join(args), r.returncode, r.stdout, r.stderr)
    obj = json.loads(r.stdout)
    assert isinstance(obj, list), obj
    return obj


def domain_obj(bw, domain, vg="default"):
    for d in domain_objs(bw, domain):
        if d["domain"] == domain and d["vg"] == vg:
            return d
    raise AssertionError("no queue (%s, %s) in %r" % (vg, domain, domain_objs(bw, domain)))


def queue_ids(bw, domain=None):
    args = ["queue", "list", "--json"] + (["--domain", domain] if domain else [])
    r = bw.mailctl(*args, timeout=60)
    assert r.returncode == 0, "queue list: %d %s %s" % (r.returncode, r.stdout, r.stderr)
    return [m["id"] for m in json.loads(r.stdout)]


def down_re(domain, vg="default"):
    return (r"breakwater/qmgr\[\d+\]: warning: domain %s \(vg %s\) is down: (?P<reason>.*); parked, next probe in "
            r"(?P<next>-?\d+)s$" % (re.escape(domain), re.escape(vg)))


def probe_re(domain, vg="default"):
    return r"breakwater/qmgr\[\d+\]: domain %s \(vg %s\): probe with (?P<id>%s)$" % (re.escape(domain), re.escape(vg), QID)


def up_re(domain, vg="default"):
    return (r"breakwater/qmgr\[\d+\]: domain %s \(vg %s\) is up after (?P<secs>\d+)s down; releasing "
            r"(?P<n>\d+) parked entries$" % (re.escape(domain), re.escape(vg)))


def concurrency_re(domain, vg="default"):
    return (r"breakwater/qmgr\[\d+\]: domain %s \(vg %s\): concurrency (?P<a>\d+) -> (?P<b>\d+): (?P<why>.*)$"
            % (re.escape(domain), re.escape(vg)))


def concurrency_changes(bw, domain, vg="default", start=0):
    return [(int(m.group("a")), int(m.group("b")), m.group("why"))
            for m in bw.log_matches(concurrency_re(domain, vg), start)]


def delivered_ids(bw, domain, start=0):
    """Queue ids with a status=sent delivery line for a recipient at domain."""
    rx = re.compile(r"breakwater/delivery\[\d+\]: (%s): to=<[^>]*@%s>, .*status=sent " % (QID, re.escape(domain)))
    return [m.group(1) for m in rx.finditer(bw.log()[start:])]


def sink_qids(msgs):
    """The Breakwater queue ids of messages a sink received (first Received: header)."""
    out = []
    for m in msgs:
        mm = re.search(rb"\(Breakwater\) with \S+ id (" + QID.encode() + rb")", m.data)
        out.append(mm.group(1).decode() if mm else None)
    return out


def gaps(times):
    return [round(b - a, 2) for a, b in zip(times, times[1:])]


# ---------------------------------------------------------------- fixtures

import pytest  # noqa: E402


@pytest.fixture
def sink_factory():
    """make(host="127.0.0.2", port=None, **kw) -> Sink; all closed at the end."""
    made = []

    def make(host="127.0.0.2", port=None, **kw):
        s = Sink(host, port, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()
