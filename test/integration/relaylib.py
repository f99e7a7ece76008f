"""relaylib.py - helpers for the relay (qmgr / delivery / dnscache) tests.

  Receiver      an aiosmtpd SMTP server on a loopback address and port, in a
                background thread with its own event loop. What it answers is
                set by attributes that a test may change at any time:
                per-recipient replies, a reply to MAIL, to the DATA command or
                to the final dot, a connection drop or a stall at any stage,
                PIPELINING and SIZE advertisement. It records every session
                (peer, EHLO name, commands) and every message (envelope, exact
                content bytes, arrival time).
  closed_port   an address:port where nothing listens (connection refused).
  SmtpSink      Postfix's smtp-sink, dumping every transaction to one file;
                counts messages and extracts the Breakwater queue ids from
                the Received: headers.
  DNSServer     test/integration/dnsserver.py (dnslib, UDP + TCP).
  relay_instance  a Breakwater instance configured for relay tests: routes
                table (or none: MX by DNS), dns_servers, short retries.
  DSN, delivery-log and `mailctl queue` helpers; LoadClient, a bounded
  concurrent SMTP client that retries a message until it gets its 250.

Fixtures (import them into the test module): rx_factory, dns_factory, and
relay, which makes an instance with dest.test routed to a Receiver and the
senders' domain client.test.example (where DSNs go) to another.

Everything listens on 127.0.0.x only, never on port 2024, and every wait is
bounded.
"""

import asyncio
import email
import email.policy
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from aiosmtpd.smtp import SMTP, syntax

from conftest import LOG_PREFIX, SMTPClient, free_port, pid_alive, queued_id, wait_until  # noqa: F401
from dnsserver import DNSServer  # noqa: F401  (re-exported for the tests)

SMTP_SINK = "/usr/sbin/smtp-sink"

# As test/integration/run.sh does: LeakSanitizer at exit keeps a stopped
# master alive (ptrace-stopped) after "mailctl stop" returned, which the
# teardown reports as a leftover process.
os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
SENDER = "sender@client.test.example"
BOUNCE_DOMAIN = "client.test.example"


# ---------------------------------------------------------------- ports

def free_port_on(hosts, tries=200):
    """A TCP port free on every address in hosts (never 2024, never twice)."""
    for _ in range(tries):
        port = free_port()
        ok = True
        for h in hosts:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((h, port))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return port
    raise RuntimeError("no port free on all of %r" % (hosts,))


def closed_port(host="127.0.0.1"):
    """A port where nothing listens on host: connections are refused."""
    return free_port_on([host])


# ---------------------------------------------------------------- receiver

class Message:
    """One message a Receiver accepted (its DATA got a 2xx from us)."""

    def __init__(self, peer, helo, mail_from, mail_options, rcpt_tos, content, session_no):
        self.peer = peer
        self.helo = helo
        self.mail_from = mail_from
        self.mail_options = mail_options
        self.rcpt_tos = list(rcpt_tos)
        self.content = content
        self.session_no = session_no
        self.time = time.monotonic()

    def parsed(self):
        return email.message_from_bytes(self.content, policy=email.policy.compat32)

    def header(self, name):
        return self.parsed().get(name)

    def __repr__(self):
        return "Message(from=%r, to=%r, %d bytes)" % (self.mail_from, self.rcpt_tos, len(self.content))


class _Handler:
    def __init__(self, rx):
        self.rx = rx

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.rx._note(server, "EHLO " + hostname)
        if self.rx.ehlo_reply:
            return [self.rx.ehlo_reply]
        out = []
        for r in responses:
            if r.startswith("250-SIZE") and self.rx.size is None:
                continue
            if r.startswith("250-AUTH"):
                continue
            out.append(r)
        if self.rx.pipelining:
            out.insert(1, "250-PIPELINING")
        return out

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        self.rx._note(server, "HELO " + hostname)
        return "250 rx-%s.test" % self.rx.host

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.rx._note(server, "MAIL FROM:<%s> %s" % (address, " ".join(mail_options)))
        act = await self.rx._stage(server, "MAIL")
        if act is not None:
            return act
        reply = self.rx._reply_for("mail", address)
        if reply and not reply.startswith("2"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rx._note(server, "RCPT TO:<%s>" % address)
        act = await self.rx._stage(server, "RCPT")
        if act is not None:
            return act
        reply = self.rx._reply_for("rcpt", address)
        if reply and not reply.startswith("2"):
            with self.rx.lock:
                self.rx.rcpt_log.append((address, reply, time.monotonic()))
            return reply
        with self.rx.lock:
            self.rx.rcpt_log.append((address, "250", time.monotonic()))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.rx._note(server, "<content %d bytes>" % len(envelope.original_content or b""))
        act = await self.rx._stage(server, "DOT")
        if act is not None:
            return act
        reply = self.rx._reply_for("dot", envelope.rcpt_tos)
        if reply and not reply.startswith("2"):
            with self.rx.lock:
                self.rx.rejected.append((envelope.mail_from, list(envelope.rcpt_tos), reply))
            return reply
        with self.rx.lock:
            m = Message(session.peer, session.host_name, envelope.mail_from, list(envelope.mail_options),
                        envelope.rcpt_tos, bytes(envelope.original_content), getattr(server, "_rx_no", 0))
            self.rx.messages.append(m)
            self.rx.cond.notify_all()
        return reply or "250 2.0.0 Ok: accepted by test receiver"


class _SMTP(SMTP):
    """aiosmtpd's SMTP with hooks at connect and at the DATA command."""

    def __init__(self, rx, *a, **kw):
        self._rx = rx
        super().__init__(*a, **kw)

    def connection_made(self, transport):
        rx = self._rx
        with rx.lock:
            rx.n_sessions += 1
            self._rx_no = rx.n_sessions
            peer = transport.get_extra_info("peername")
            rx.sessions.append({"no": self._rx_no, "peer": peer, "commands": [], "time": time.monotonic()})
            rx.cond.notify_all()
        if rx.drop_at == "CONNECT":
            transport.abort()
            return
        super().connection_made(transport)

    async def _handle_client(self):
        act = await self._rx._stage(self, "CONNECT")
        if act is not None:
            return
        await super()._handle_client()

    @syntax("DATA")
    async def smtp_DATA(self, arg):
        self._rx._note(self, "DATA")
        if self.envelope.rcpt_tos and self.envelope.mail_from is not None:
            act = await self._rx._stage(self, "DATA")
            if act is not None:
                await self.push(act)
                return
            reply = self._rx._reply_for("data", self.envelope.rcpt_tos)
            if reply and not reply.startswith("3"):
                await self.push(reply)
                return
        await super().smtp_DATA(arg)


class Receiver:
    """A scriptable SMTP server on host:port (see the module docstring).

    Behaviour attributes (change them whenever):
      rcpt_replies   {address (lower case): reply} for RCPT; others get 250.
      rcpt_default   reply for addresses not in rcpt_replies (None: 250).
      ehlo_reply     reply to EHLO instead of the keyword list (HELO still works).
      mail_reply     reply to MAIL (None: 250).
      data_reply     reply to the DATA command (None: 354).
      dot_reply      reply after the final dot (None: 250).
      drop_at        "CONNECT", "MAIL", "RCPT", "DATA", "DOT": close the
                     connection without a reply when that stage is reached.
      stall_at       the same stages: sleep stall_s (bounded) and then close.
      pipelining     advertise PIPELINING (default True).
      size           advertise SIZE size (None: no SIZE keyword).
    """

    def __init__(self, host="127.0.0.1", port=None, size=None, pipelining=True, name=None):
        self.host = host
        self.port = port or free_port_on([host])
        self.name = name or "%s:%d" % (host, self.port)
        self.size = size
        self.pipelining = pipelining
        self.rcpt_replies = {}
        self.rcpt_default = None
        self.ehlo_reply = None
        self.mail_reply = None
        self.data_reply = None
        self.dot_reply = None
        self.drop_at = None
        self.stall_at = None
        self.stall_s = 30.0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.sessions = []
        self.messages = []
        self.rejected = []
        self.rcpt_log = []
        self.n_sessions = 0
        self.watched = None
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._ready = threading.Event()
        self._error = None
        self.thread = threading.Thread(target=self._run, name="receiver-" + self.name, daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("receiver %s did not start" % self.name)
        if self._error:
            raise self._error

    # -- server thread
    def _factory(self):
        return _SMTP(self, _Handler(self), data_size_limit=self.size or 0, hostname="rx-%s.test" % self.host,
                     decode_data=False, enable_SMTPUTF8=False, timeout=30, loop=self.loop)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                self.loop.create_server(self._factory, host=self.host, port=self.port, reuse_address=True))
        except Exception as e:  # reported to the constructor
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self._server.close()
            try:
                self.loop.run_until_complete(asyncio.wait_for(self._server.wait_closed(), 2))
            except Exception:
                pass
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- behaviour (called in the server thread)
    def _note(self, server, line):
        no = getattr(server, "_rx_no", 0)
        with self.lock:
            for s in self.sessions:
                if s["no"] == no:
                    s["commands"].append(line)
                    if line.startswith(("EHLO ", "HELO ")):
                        s["helo"] = line[5:]
                    break

    async def _stage(self, server, stage):
        """None to go on, or a reply to send (after which the hook returns)."""
        if self.stall_at == stage:
            await asyncio.sleep(min(self.stall_s, 60))
            self._close_transport(server)
            return "421 4.4.2 stalled"
        if self.drop_at == stage:
            self._close_transport(server)
            # The hook's reply goes nowhere: the transport is closed.
            return "421 4.4.2 dropped"
        return None

    @staticmethod
    def _close_transport(server):
        t = getattr(server, "transport", None)
        if t is not None:
            t.abort()

    def _reply_for(self, what, arg):
        if what == "mail":
            return self.mail_reply
        if what == "rcpt":
            return self.rcpt_replies.get(arg.lower(), self.rcpt_default)
        if what == "data":
            return self.data_reply
        if what == "dot":
            return self.dot_reply
        return None

    # -- results (test thread)
    def wait_messages(self, n, timeout=15.0):
        """Block until at least n messages arrived; returns a copy of the list."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("receiver %s: %d message(s) after %.1fs, wanted %d; sessions %r%s" % (
                        self.name, len(self.messages), timeout, n, self.sessions[-5:], self._context()))
                self.cond.wait(min(left, 0.2))
            return list(self.messages)

    def _context(self):
        """Diagnostics from the instance that sends to us (set by watch())."""
        bw = self.watched
        if bw is None:
            return ""
        try:
            q = bw.mailctl("queue", "list").stdout
        except Exception as e:
            q = repr(e)
        return "\nqueue:\n%s\nlog tail:\n%s" % (q[-2000:], bw.log()[-5000:])

    def watch(self, bw):
        self.watched = bw
        return self

    def wait_sessions(self, n, timeout=15.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.n_sessions < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("receiver %s: %d session(s) after %.1fs, wanted %d" % (
                        self.name, self.n_sessions, timeout, n))
                self.cond.wait(min(left, 0.2))
            return list(self.sessions)

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def rcpt_attempts(self, address):
        """Times address was offered in RCPT (any reply)."""
        with self.lock:
            return sum(1 for a, _, _ in self.rcpt_log if a.lower() == address.lower())

    def rcpt_times(self, address):
        """Monotonic times at which address was offered in RCPT."""
        with self.lock:
            return [t for a, _, t in self.rcpt_log if a.lower() == address.lower()]

    def quiet(self, seconds):
        """Sleep seconds and return the messages that arrived meanwhile."""
        n = len(self.snapshot())
        time.sleep(seconds)
        return self.snapshot()[n:]


# ---------------------------------------------------------------- smtp-sink

class SmtpSink:
    """Postfix smtp-sink on host:port, dumping all transactions to one file
    (-D), so messages can be counted and identified."""

    def __init__(self, host="127.0.0.1", port=None, extra_args=(), backlog=256):
        self.host = host
        self.port = port or free_port_on([host])
        self.dir = tempfile.mkdtemp(prefix="bw-sink-", dir="/tmp")
        os.chmod(self.dir, 0o777)
        self.dump = os.path.join(self.dir, "dump")
        argv = [SMTP_SINK, "-c", "-m", "512", "-D", self.dump]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        argv += list(extra_args) + ["%s:%d" % (host, self.port), str(backlog)]
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT)
        # Ready when it accepts a connection.
        def up():
            if self.proc.poll() is not None:
                self.out.seek(0)
                raise AssertionError("smtp-sink exited %s: %r" % (self.proc.returncode, self.out.read()[-2000:]))
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(up, 10, 0.05, "smtp-sink to listen on %s:%d" % (self.host, self.port))

    def data(self):
        try:
            with open(self.dump, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    RECEIVED_ID = re.compile(rb"^Received: from .*?\r?\n(?:[ \t].*\r?\n)*?[ \t]*by \S+ \(Breakwater\) with \S+ id ([0-9A-F]{18})",
                             re.M)

    def queue_ids(self):
        """Breakwater queue ids of the messages dumped so far, one per
        message (the first Breakwater Received: header of each), repeats kept."""
        ids = []
        for chunk in re.split(rb"(?m)^X-Client-Addr: ", self.data())[1:]:
            m = self.RECEIVED_ID.search(chunk)
            ids.append(m.group(1).decode() if m else None)
        return ids

    def count(self):
        return len(re.findall(rb"(?m)^X-Client-Addr: ", self.data()))

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- instances

def write_routes(bw, routes, name="smtp_routes"):
    """Write a routes table file into the instance (list of (key, value) or
    dict); returns its path."""
    path = os.path.join(bw.config_dir, name)
    items = routes.items() if isinstance(routes, dict) else routes
    with open(path + ".tmp", "w") as f:
        f.write("# routes written by the relay tests\n")
        for k, v in items:
            f.write("%s %s\n" % (k, v))
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    return path


RELAY_DEFAULTS = {
    "retry_schedule": "2s",
    "max_queue_lifetime": "1h",
    "smtp_connect_timeout": "3s",
    "smtp_timeout": "10s",
}


def relay_instance(bw_factory, routes=None, dns=None, params=None, start=True):
    """A Breakwater instance for relay tests: routes (dict/list or None),
    dns (a DNSServer or None), params on top of RELAY_DEFAULTS."""
    p = dict(RELAY_DEFAULTS)
    # No routes means no routes (MX by DNS), not conftest's hold route; and
    # no DNS server given means a closed loopback port, never the host's.
    p.update({"smtp_routes": "", "dns_servers": "127.0.0.1:9"})
    p.update(params or {})
    bw = bw_factory(p, start=False)
    if routes is not None:
        bw.set_params(smtp_routes=write_routes(bw, routes))
    if dns is not None:
        bw.set_params(dns_servers="127.0.0.1:%d" % dns.port)
    if start:
        bw.start()
        wait_ready(bw)
    return bw


def wait_ready(bw, timeout=10.0):
    """After start: qmgr answers on its socket and a delivery agent is
    connected to it, so timing tests measure delivery, not start-up."""
    wait_until(lambda: bw.mailctl("queue", "list").returncode == 0, timeout, 0.05, "qmgr to answer queue list")
    bw.wait_for_log(r"breakwater/qmgr\[\d+\]: delivery agent \S+ connected", timeout)


def send(bw, rcpts, sender=SENDER, content=None, subject="relay test", body=b"Hello.\r\n"):
    """One message through the instance's smtpd; returns the queue id."""
    if content is None:
        content = (b"From: " + sender.encode() + b"\r\nTo: " + rcpts[0].encode() + b"\r\nSubject: "
                   + subject.encode() + b"\r\nMessage-ID: <" + str(time.time()).encode() + b"@client.test.example>\r\n\r\n"
                   + body)
    return bw.send_message(sender=sender, rcpts=list(rcpts), content=content)


# ---------------------------------------------------------------- logs

# Loose enough to find every delivery line (the number format is checked by
# delivery_format_problems, so a bad number fails only the tests about it).
DELIVERY_RE = (r"breakwater/delivery\[\d+\]: (?P<id>[0-9A-F]{18}): to=<(?P<to>[^>]*)>, relay=(?P<relay>[^,]+), "
               r"delay=(?P<delay>[^,]+), delays=(?P<delays>[^,]+), dsn=(?P<dsn>[^,]+), "
               r"status=(?P<status>sent|deferred|bounced) \((?P<reply>.*)\)$")

# Postfix's shape: plain decimal numbers (pflogsumm and friends parse them).
NUM = r"\d+(?:\.\d+)?"
STRICT_DELIVERY_RE = re.compile(
    r"^" + LOG_PREFIX + r"breakwater/delivery\[\d+\]: [0-9A-F]{18}: to=<[^>]*>, relay=(?:none|\S+\[[0-9a-f.:]+\]:\d+), "
    r"delay=%s, delays=%s/%s/%s/%s, dsn=[245]\.\d{1,3}\.\d{1,3}, status=(?:sent|deferred|bounced) \(.*\)$"
    % ((NUM,) * 5))


def delivery_format_problems(bw, start=0):
    """Delivery log lines (those with to=<) that do not have the exact shape."""
    bad = []
    for line in bw.log()[start:].splitlines():
        if "breakwater/delivery[" in line and ": to=<" in line and not STRICT_DELIVERY_RE.match(line):
            bad.append(line)
    return bad


def delivery_lines(bw, qid=None, to=None, status=None, start=0):
    """Parsed delivery log lines (dicts), filtered."""
    out = []
    for m in re.finditer(DELIVERY_RE, bw.log()[start:], re.M):
        d = m.groupdict()
        if qid and d["id"] != qid:
            continue
        if to and d["to"].lower() != to.lower():
            continue
        if status and d["status"] != status:
            continue
        out.append(d)
    return out


def wait_delivery(bw, qid, to, status, timeout=15.0, start=0, count=1):
    """Wait for count delivery lines of qid/to/status; returns them."""
    def have():
        got = delivery_lines(bw, qid, to, status, start)
        return got if len(got) >= count else None
    try:
        return wait_until(have, timeout, 0.05, "%s to=<%s> status=%s (x%d)" % (qid, to, status, count))
    except AssertionError as e:
        raise AssertionError("%s\nlog tail:\n%s" % (e, bw.log()[start:][-4000:]))


def wait_removed(bw, qid, timeout=15.0, start=0):
    bw.wait_for_log(r"breakwater/qmgr\[\d+\]: %s: removed$" % qid, timeout, start)
    wait_until(lambda: not os.path.exists(bw.queue_path(qid)), 5, 0.05, "spool file of %s to go" % qid)


def bounce_id(bw, qid, timeout=15.0, start=0):
    """The queue id of the DSN qmgr made for qid."""
    m = bw.wait_for_log(r"breakwater/qmgr\[\d+\]: %s: sender non-delivery notification: ([0-9A-F]{18})$" % qid,
                        timeout, start)
    return m.group(1)


# ---------------------------------------------------------------- DSNs

class DSN:
    """A parsed RFC 3464 bounce: .msg (email.message), .text, .per_message
    (dict), .recipients (list of dicts, lower-case field names), .headers
    (the text/rfc822-headers part, str)."""

    def __init__(self, content):
        self.raw = content
        self.msg = email.message_from_bytes(content, policy=email.policy.compat32)
        assert self.msg.get_content_type() == "multipart/report", "not a multipart/report: %r" % content[:500]
        assert self.msg.get_param("report-type") == "delivery-status", self.msg.get("Content-Type")
        parts = self.msg.get_payload()
        assert isinstance(parts, list) and len(parts) >= 2, "DSN has %r parts" % (parts,)
        self.parts = parts
        self.text = parts[0].get_payload(decode=True).decode("ascii", "replace")
        assert parts[0].get_content_type() == "text/plain", parts[0].get_content_type()
        assert parts[1].get_content_type() == "message/delivery-status", parts[1].get_content_type()
        # email parses message/delivery-status into a list of header blocks
        blocks = parts[1].get_payload()
        assert isinstance(blocks, list) and len(blocks) >= 2, "delivery-status blocks %r" % (blocks,)
        self.per_message = {k.lower(): v for k, v in blocks[0].items()}
        self.recipients = [{k.lower(): " ".join(v.split()) for k, v in b.items()} for b in blocks[1:]]
        self.headers = None
        if len(parts) >= 3:
            p = parts[2]
            assert p.get_content_type() in ("text/rfc822-headers", "message/rfc822"), p.get_content_type()
            payload = p.get_payload(decode=True)
            self.headers = payload.decode("ascii", "replace") if payload is not None else str(p.get_payload())

    def recipient(self, address):
        for r in self.recipients:
            if r.get("final-recipient", "").lower() == "rfc822; " + address.lower():
                return r
        raise AssertionError("no Final-Recipient for %s in %r" % (address, self.recipients))


def queue_show(bw, qid):
    r = bw.mailctl("queue", "show", qid, "--json")
    assert r.returncode == 0, "queue show %s: %d %s %s" % (qid, r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def queue_list(bw, domain=None):
    args = ["queue", "list", "--json"] + (["--domain", domain] if domain else [])
    r = bw.mailctl(*args)
    assert r.returncode == 0, "queue list: %d %s %s" % (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def rcpt_state(bw, qid, address):
    for r in queue_show(bw, qid)["recipients"]:
        if r["address"].lower() == address.lower():
            return r
    raise AssertionError("%s not in queue show %s" % (address, qid))


# ---------------------------------------------------------------- load

class LoadClient:
    """n messages through the instance's smtpd from `sessions` threads, each
    message tried again (new connection) when a session breaks before its
    250, at most `tries` times. Records the queue ids that got 250."""

    def __init__(self, bw, n, sessions=20, rcpt="load@sink.test", tries=100, deadline_s=120.0, body_lines=20):
        self.bw = bw
        self.n = n
        self.sessions = sessions
        self.rcpt = rcpt
        self.tries = tries
        self.deadline = time.monotonic() + deadline_s
        self.body = b"".join(b"line %d of the load test body, to make it a few hundred bytes\r\n" % i
                             for i in range(body_lines))
        self.accepted = {}      # queue id -> message number
        self.failed = []        # message numbers given up
        self.errors = 0
        self.lock = threading.Lock()
        self.next = 0
        self.threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(sessions)]
        self.started = time.monotonic()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _take(self):
        with self.lock:
            if self.next >= self.n:
                return None
            self.next += 1
            return self.next - 1

    def _content(self, k):
        return (b"From: load@client.test.example\r\nTo: " + self.rcpt.encode() + b"\r\nSubject: load %d\r\n"
                b"X-Load-No: %d\r\n\r\n" % (k, k) + self.body)

    def _worker(self):
        c = None
        k = self._take()
        tries = 0
        while k is not None and time.monotonic() < self.deadline:
            try:
                if c is None:
                    c = SMTPClient(self.bw.port, timeout=20, connect_timeout=5)
                    c.greeting()
                    c.ehlo()
                r = c.mail("load@client.test.example", [self.rcpt], self._content(k))
                qid = queued_id(r)
                with self.lock:
                    self.accepted[qid] = k
                k = self._take()
                tries = 0
            except Exception:
                with self.lock:
                    self.errors += 1
                if c is not None:
                    c.close()
                c = None
                tries += 1
                if tries >= self.tries:
                    with self.lock:
                        self.failed.append(k)
                    k = self._take()
                    tries = 0
                time.sleep(0.1)
        if k is not None:
            with self.lock:
                self.failed.append(k)
        if c is not None:
            try:
                c.cmd("QUIT", timeout=2)
            except Exception:
                pass
            c.close()

    def done(self):
        return not any(t.is_alive() for t in self.threads)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.01, deadline - time.monotonic()))
        assert self.done(), "load client still running after %ss" % timeout
        return self


# ---------------------------------------------------------------- fixtures

import pytest  # noqa: E402


@pytest.fixture
def rx_factory():
    """make(host="127.0.0.2", port=None, **kw) -> Receiver; all closed at the end."""
    made = []

    def make(host="127.0.0.2", port=None, **kw):
        r = Receiver(host, port, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


@pytest.fixture
def dns_factory():
    """make(zones) -> DNSServer; all closed at the end."""
    made = []

    def make(zones):
        d = DNSServer(zones)
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()


class Relay:
    """An instance with the standard routes: DEST (dest.test) to .rx,
    the senders' domain client.test.example (where DSNs go) to .brx, plus
    extra routes."""

    def __init__(self, bw, rx, brx):
        self.bw = bw
        self.rx = rx
        self.brx = brx

    def send(self, rcpts, **kw):
        return send(self.bw, rcpts, **kw)

    def dsns(self, n, timeout=15.0):
        """Wait for n messages at the bounce receiver; all must be DSNs sent
        with the null sender to SENDER."""
        got = self.brx.wait_messages(n, timeout)
        for m in got:
            assert m.mail_from in ("", "<>"), "DSN not sent with the null sender: %r" % m.mail_from
            assert m.rcpt_tos == [SENDER], m.rcpt_tos
        return [DSN(m.content) for m in got]


DEST = "dest.test"


@pytest.fixture
def relay(bw_factory, rx_factory):
    """make(params=None, routes=None, dns=None, start=True, **rx_kw) -> Relay."""
    def make(params=None, routes=None, dns=None, start=True, **rx_kw):
        rx = rx_factory("127.0.0.2", **rx_kw)
        brx = rx_factory("127.0.0.9")
        r = [(DEST, "127.0.0.2:%d" % rx.port), (BOUNCE_DOMAIN, "127.0.0.9:%d" % brx.port)]
        r += list((routes or {}).items()) if isinstance(routes, dict) else list(routes or [])
        bw = relay_instance(bw_factory, r, dns, params, start)
        rx.watch(bw)
        brx.watch(bw)
        made.append(bw)
        return Relay(bw, rx, brx)
    made = []
    yield make
    # Stop here, before conftest's teardown, to name any process that
    # outlives `mailctl stop` (conftest only gives its pid).
    problems = []
    for bw in made:
        if not bw.started:
            continue
        try:
            st = bw.status_json()
        except AssertionError:
            continue
        names = {d["pid"]: "%s[%s]" % (d.get("name"), d.get("slot")) for d in st.get("daemons", [])
                 if isinstance(d.get("pid"), int)}
        names[st["pid"]] = "master"
        res = bw.mailctl("stop", timeout=60)
        if res.returncode == 0:
            bw.started = False
        left = [(p, names.get(p, "?")) for p in sorted(bw.known_pids) if pid_alive(p)]
        if left:
            states = []
            for p, name in left:
                try:
                    with open("/proc/%d/status" % p) as f:
                        st_line = [ln.strip() for ln in f if ln.startswith(("State:", "TracerPid:"))]
                except OSError:
                    st_line = ["gone"]
                states.append("%s pid %d %s" % (name, p, " ".join(st_line)))
            problems.append("still alive right after mailctl stop (exit %d): %s" % (res.returncode, "; ".join(states)))
    if problems:
        pytest.fail("relay teardown:\n" + "\n".join(problems), pytrace=False)
