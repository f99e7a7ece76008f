"""conftest.py - fixtures and helpers for the Breakwater integration suite.

Everything here drives the real binaries of a build tree ($BW_BUILD) on
loopback ports, each instance in its own temporary directory under /tmp:

  Breakwater      one instance: config dir, spool, log file, free port;
                  start/stop/reload/status, log polling, spool inspection,
                  and a teardown that always stops it and kills only the
                  processes it reported itself.
  SMTPClient      a raw-socket SMTP client: exact bytes out, replies in
                  (multi-line aware), every read with a deadline.
  parse_queue_file  the spool file format of notes/CONTRACT.md.
  wrap_smtpd      a private daemon_directory whose smtpd is a shell wrapper
                  (crash loops, descriptor limits).

Fixtures: `bw_factory` (function-scoped instances), `module_bw` (one started
instance per test module, configured by the module's BW_PARAMS dict), and an
autouse health check that fails a test when a daemon died unexpectedly or a
sanitizer wrote a report while it ran.
"""

import glob
import json
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

BW_SRC = os.path.realpath(os.environ.get("BW_SRC") or os.path.join(os.path.dirname(__file__), "..", ".."))
BW_BUILD = os.path.realpath(os.environ.get("BW_BUILD") or os.path.join(BW_SRC, "build"))
MAILCTL = os.path.join(BW_BUILD, "mailctl", "mailctl")
DAEMON_DIR = os.path.join(BW_BUILD, "libexec", "breakwater")
HOSTNAME = "mx.test.example"
CLIENT_HELO = "client.test.example"
QID_RE = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-F]{18})$")
LOG_PREFIX = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ "

# Lines that mean a daemon died on its own (exit status 0 at stop is normal).
DAEMON_DEATH_RE = re.compile(
    r"breakwater/master\[\d+\]: (?:\w+: )?daemon (\S+) pid (\d+) (killed by signal \d+|exited with status [1-9]\d*)")
SANITIZER_RE = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:")


def _raise_nofile():
    """Let this process open the many sockets the concurrency tests need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    want = min(want, 65536)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


_raise_nofile()

_ports_given = set()


def free_port():
    """A loopback TCP port that was free a moment ago (never 2024, never twice)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port != 2024 and port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a true value (returned) or timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def pid_alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    # state is the field after the parenthesised comm
    state = stat[stat.rfind(")") + 2:].split()[0]
    return state not in ("Z", "X")


def pid_uids(pid):
    """(real, effective, saved, fs) uids of pid from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return tuple(int(x) for x in line.split()[1:5])
    raise AssertionError("no Uid line for pid %d" % pid)


def _pid_is_ours(pid):
    """True when pid runs a binary from the build tree (guards against pid reuse)."""
    try:
        exe = os.path.realpath("/proc/%d/exe" % pid)
    except OSError:
        return False
    return exe.startswith(BW_BUILD + os.sep) or exe.startswith(os.path.realpath(DAEMON_DIR) + os.sep)


def breakwater_uid():
    """The uid daemons must run as: mail_owner (breakwater) when started as
    root, else the current user."""
    if os.geteuid() != 0:
        return os.getuid()
    return pwd.getpwnam("breakwater").pw_uid


# ---------------------------------------------------------------- spool files

class QueueFile:
    """One parsed spool file: envelope (dict letter -> value), recipients
    [(state, address)], content bytes."""

    def __init__(self, path, envelope, recipients, content, envelope_lines):
        self.path = path
        self.envelope = envelope
        self.recipients = recipients
        self.content = content
        self.envelope_lines = envelope_lines

    @property
    def id(self):
        return self.envelope.get("I")

    @property
    def sender(self):
        return self.envelope.get("S")

    @property
    def rcpt_addresses(self):
        return [a for _, a in self.recipients]

    def split_received(self):
        """(first header with its continuation lines, rest of the content)."""
        c = self.content
        assert c.startswith(b"Received:"), "content does not start with a Received: header: %r" % c[:80]
        pos = 0
        while True:
            eol = c.find(b"\r\n", pos)
            assert eol >= 0, "Received: header not terminated by CRLF: %r" % c[:200]
            pos = eol + 2
            if c[pos:pos + 1] not in (b" ", b"\t"):
                return c[:pos], c[pos:]

    def __repr__(self):
        return "QueueFile(%s, env=%r, rcpts=%r, %d content bytes)" % (
            self.path, self.envelope, self.recipients, len(self.content))


def parse_queue_file(path, data=None):
    """Parse and validate a spool file (format of notes/CONTRACT.md / spool.h)."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    assert data[:5] == b"BWQ1 ", "%s: bad magic %r" % (path, data[:22])
    assert len(data) >= 22 and data[21:22] == b"\n" and data[5:21].isdigit(), "%s: bad header %r" % (path, data[:22])
    length = int(data[5:21])
    pos = 22
    envelope, recipients, lines = {}, [], []
    while True:
        eol = data.find(b"\n", pos)
        assert eol >= 0, "%s: envelope not terminated by an M line" % path
        line = data[pos:eol].decode("utf-8", "surrogateescape")
        pos = eol + 1
        if line == "M":
            break
        assert line, "%s: empty envelope line" % path
        lines.append(line)
        if line[0] == "R":
            assert len(line) >= 3 and line[2] == " ", "%s: bad recipient line %r" % (path, line)
            recipients.append((line[1], line[3:]))
        else:
            assert len(line) == 1 or line[1] == " ", "%s: bad envelope line %r" % (path, line)
            envelope[line[0]] = line[2:]
    content = data[pos:pos + length]
    assert len(content) == length, "%s: content shorter (%d) than header says (%d)" % (path, len(content), length)
    trailer = data[pos + length:]
    assert trailer == b"E\n", "%s: bad trailer %r (file %d bytes, content length %d)" % (
        path, trailer[:40], len(data), length)
    return QueueFile(path, envelope, recipients, content, lines)


def dot_stuff(content):
    """The DATA stream for content (CRLF lines): dot-stuffed, with the final dot."""
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    out = []
    for line in content.split(b"\r\n")[:-1] if content else []:
        if line.startswith(b"."):
            line = b"." + line
        out.append(line + b"\r\n")
    return b"".join(out) + b".\r\n"


# ---------------------------------------------------------------- SMTP client

class Reply:
    """One SMTP reply: all its lines (without CRLF), code of the last line."""

    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[-1][:3])
        self.first = lines[0]
        self.last = lines[-1]
        self.texts = [ln[4:] for ln in lines]

    def __str__(self):
        return "\n".join(self.lines)

    def __repr__(self):
        return "Reply(%r)" % (self.lines,)


class SMTPClosed(Exception):
    pass


class SMTPClient:
    """Raw SMTP over a socket. Every read has a deadline."""

    def __init__(self, port, host="127.0.0.1", timeout=15.0, connect_timeout=5.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete reply in time; have %r" % self.buf[:300])
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no complete reply in time; have %r" % self.buf[:300])
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise SMTPClosed("connection closed; unread %r" % self.buf[:300])
        self.buf += chunk

    def readline(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\r\n" not in self.buf:
            if len(self.buf) > 100000:
                raise AssertionError("reply line too long: %r" % self.buf[:200])
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def reply(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        lines = []
        while True:
            line = self.readline(max(0.001, deadline - time.monotonic()))
            assert re.match(r"^\d{3}([ -]|$)", line), "malformed reply line %r (after %r)" % (line, lines)
            if lines:
                assert line[:3] == lines[0][:3], "reply code changed inside multi-line reply: %r" % (lines + [line])
            lines.append(line)
            if line[3:4] != "-":
                return Reply(lines)

    def replies(self, n, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return [self.reply(max(0.001, deadline - time.monotonic())) for _ in range(n)]

    def cmd(self, line, timeout=None):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(timeout)

    def greeting(self, timeout=None):
        r = self.reply(timeout)
        assert r.code == 220, "greeting: %s" % r
        return r

    def ehlo(self, name=CLIENT_HELO):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, "EHLO: %s" % r
        return r

    def pending(self, timeout=0.3):
        """Whatever the server sends within timeout (b"" if nothing); notes EOF."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except TimeoutError:
            pass
        except SMTPClosed:
            pass
        data, self.buf = self.buf, b""
        return data

    def wait_closed(self, timeout=5.0):
        """True when the server closes the connection within timeout (data discarded)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except TimeoutError:
                return False
            except SMTPClosed:
                return True
            self.buf = self.buf[-1000:]
        return True

    def mail(self, sender, rcpts, content, stuff=True, mail_params=""):
        """MAIL/RCPT/DATA one at a time; content is sent dot-stuffed (stuff=True)
        or as given (then it must end with the final dot). Returns the reply to
        the final dot; asserts the earlier replies are positive."""
        r = self.cmd("MAIL FROM:<%s>%s" % (sender, (" " + mail_params) if mail_params else ""))
        assert r.code == 250, "MAIL: %s" % r
        for rc in rcpts:
            r = self.cmd("RCPT TO:<%s>" % rc)
            assert r.code == 250, "RCPT %s: %s" % (rc, r)
        r = self.cmd("DATA")
        assert r.code == 354, "DATA: %s" % r
        self.send(dot_stuff(content) if stuff else content)
        return self.reply()


def queued_id(reply):
    """The queue id of a '250 2.0.0 Ok: queued as ID' reply (assertion otherwise)."""
    m = QID_RE.match(reply.last if isinstance(reply, Reply) else reply)
    assert m, "not a queued reply: %s" % reply
    return m.group(1)


def simple_message(subject="test", body=b"Hello.\r\n"):
    return (b"From: sender@client.test.example\r\nTo: rcpt@dest.test.example\r\nSubject: "
            + subject.encode() + b"\r\n\r\n" + body)


# ---------------------------------------------------------------- instances

_live = []


class AsyncCommand:
    """A command running in the background with its output in files."""

    def __init__(self, argv, env):
        self.argv = argv
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err, env=env)
        self.started = time.monotonic()

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("%s did not finish within %ss" % (" ".join(self.argv), timeout))
        self.elapsed = time.monotonic() - self.started
        self.out.seek(0)
        self.err.seek(0)
        res = subprocess.CompletedProcess(self.argv, rc, self.out.read().decode("utf-8", "replace"),
                                          self.err.read().decode("utf-8", "replace"))
        self.out.close()
        self.err.close()
        return res

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Breakwater:
    """One Breakwater instance in a fresh temporary directory."""

    def __init__(self, params=None, listen_ports=1, daemon_directory=None):
        self.root = tempfile.mkdtemp(prefix="bw-itest-", dir="/tmp")
        os.chmod(self.root, 0o755)
        self.config_dir = os.path.join(self.root, "etc")
        self.queue_dir = os.path.join(self.root, "spool")
        self.log_dir = os.path.join(self.root, "log")
        self.log_file = os.path.join(self.log_dir, "breakwater.log")
        self.sanitizer_log = os.path.join(self.root, "sanitizer")
        for d in (self.config_dir, self.log_dir):
            os.mkdir(d)
            os.chmod(d, 0o755)
        self.main_cf = os.path.join(self.config_dir, "main.cf")
        self.ports = [free_port() for _ in range(listen_ports)]
        self.port = self.ports[0]
        self.params = {
            "queue_directory": self.queue_dir,
            "daemon_directory": daemon_directory or DAEMON_DIR,
            "log_file": self.log_file,
            "smtpd_listen": " ".join("127.0.0.1:%d" % p for p in self.ports),
            "smtpd_processes": "1",
            "myhostname": HOSTNAME,
            "stop_timeout": "5s",
            "monitor_listen": "",
        }
        self.params.update(params or {})
        if "smtp_routes" not in self.params and "dns_servers" not in self.params:
            # Intake tests keep their mail queued: every destination is routed
            # to a closed loopback port, so delivery defers and files stay put
            # (no DNS traffic leaves the machine either).
            routes = os.path.join(self.config_dir, "hold_routes")
            with open(routes, "w") as f:
                f.write("* 127.0.0.1:9\n")
            os.chmod(routes, 0o644)
            self.params["smtp_routes"] = routes
            self.params["dns_servers"] = "127.0.0.1:9"
        self.known_pids = set()
        self.allow_daemon_exits = False
        self._health_offset = 0
        self._health_sanitizer_seen = set()
        self.started = False
        self.write_config()
        _live.append(self)

    # -- configuration
    def write_config(self, text=None):
        """Write main.cf from self.params (or the given text), atomically."""
        if text is None:
            text = "# written by the Breakwater integration tests\n" + "".join(
                "%s = %s\n" % (k, v) for k, v in self.params.items())
        tmp = self.main_cf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.main_cf)

    def set_params(self, **kw):
        self.params.update({k: str(v) for k, v in kw.items()})
        self.write_config()

    # -- commands
    def env(self, extra=None, config_env=False):
        env = dict(os.environ)
        env.pop("BREAKWATER_CONFIG", None)
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            opts = env.get(var, "")
            env[var] = (opts + ":" if opts else "") + "log_path=" + self.sanitizer_log
        if config_env:
            env["BREAKWATER_CONFIG"] = self.config_dir
        env.update(extra or {})
        return env

    def mailctl(self, *args, timeout=30, config_env=False, env=None):
        """Run mailctl -c DIR ARGS (or with BREAKWATER_CONFIG when config_env).
        Output goes through files, never pipes, so a daemon that inherits them
        cannot make this hang."""
        argv = [MAILCTL] + ([] if config_env else ["-c", self.config_dir]) + list(args)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   timeout=timeout, env=self.env(env, config_env))
                rc = p.returncode
            except subprocess.TimeoutExpired:
                out.seek(0)
                err.seek(0)
                raise AssertionError("%s did not finish within %ss (stdout %r, stderr %r)" % (
                    " ".join(argv), timeout, out.read()[:500], err.read()[:500]))
            out.seek(0)
            err.seek(0)
            res = subprocess.CompletedProcess(argv, rc, out.read().decode("utf-8", "replace"),
                                              err.read().decode("utf-8", "replace"))
        return res

    def mailctl_async(self, *args):
        """Start mailctl -c DIR ARGS in the background; returns an
        AsyncCommand whose wait(timeout) gives a CompletedProcess."""
        return AsyncCommand([MAILCTL, "-c", self.config_dir] + list(args), self.env())

    def start(self, check=True):
        r = self.mailctl("start", timeout=60)
        self._note_pidfile()
        if r.returncode == 0:
            self.started = True
        if check:
            assert r.returncode == 0, "mailctl start failed (%d): %s %s\nlog:\n%s" % (
                r.returncode, r.stdout, r.stderr, self.log()[-3000:])
            self.status_json()
        return r

    def stop(self, check=True, timeout=60):
        self._note_pidfile()
        try:
            self.status_json()
        except AssertionError:
            pass
        r = self.mailctl("stop", timeout=timeout)
        if r.returncode == 0:
            self.started = False
        if check:
            assert r.returncode == 0, "mailctl stop failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr)
        return r

    def reload(self, check=True):
        r = self.mailctl("reload")
        if check:
            assert r.returncode == 0, "mailctl reload failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr)
        return r

    def status(self):
        """(exit status, parsed JSON) of status --json."""
        r = self.mailctl("status", "--json")
        try:
            obj = json.loads(r.stdout)
        except ValueError:
            raise AssertionError("status --json printed no JSON (rc %d): %r %r" % (r.returncode, r.stdout, r.stderr))
        if isinstance(obj, dict) and obj.get("running"):
            if isinstance(obj.get("pid"), int):
                self.known_pids.add(obj["pid"])
            for d in obj.get("daemons") or []:
                if isinstance(d, dict) and isinstance(d.get("pid"), int) and d["pid"] > 0:
                    self.known_pids.add(d["pid"])
        return r.returncode, obj

    def status_json(self):
        rc, obj = self.status()
        assert rc == 0 and obj.get("running") is True, "instance not running: rc %d %r" % (rc, obj)
        return obj

    def daemons(self, name="smtpd"):
        return [d for d in self.status_json().get("daemons", []) if d.get("name") == name]

    def smtpd_pids(self):
        return [d["pid"] for d in self.daemons("smtpd") if d.get("state") == "running" and d.get("pid", 0) > 0]

    def master_pid(self):
        return self.status_json()["pid"]

    def _note_pidfile(self):
        for pf in glob.glob(os.path.join(self.queue_dir, "pid", "*.pid")):
            try:
                with open(pf) as f:
                    self.known_pids.add(int(f.read().split()[0]))
            except (OSError, ValueError, IndexError):
                pass

    def wait_smtpd_replaced(self, old_pid, timeout=5.0, slot=0):
        """Poll status until smtpd[slot] runs with a pid other than old_pid."""
        def new_pid():
            for d in self.daemons("smtpd"):
                if d.get("slot", 0) == slot and d.get("state") == "running" and d.get("pid") not in (None, 0, old_pid):
                    return d["pid"]
            return None
        return wait_until(new_pid, timeout, 0.1, "smtpd[%d] to be restarted" % slot)

    def kill(self, pid, sig=signal.SIGKILL):
        assert pid in self.known_pids, "refusing to signal pid %d that this instance did not report" % pid
        os.kill(pid, sig)

    # -- SMTP
    def connect(self, port=None, **kw):
        c = SMTPClient(port or self.port, **kw)
        return c

    def session(self, port=None, **kw):
        """Connected, greeted client."""
        c = self.connect(port, **kw)
        c.greeting()
        return c

    def send_message(self, sender="sender@client.test.example", rcpts=("rcpt@dest.test.example",),
                     content=None, ehlo=True):
        """One complete session; returns the queue id."""
        with self.session() as c:
            if ehlo:
                c.ehlo()
            else:
                assert c.cmd("HELO " + CLIENT_HELO).code == 250
            r = c.mail(sender, list(rcpts), content if content is not None else simple_message())
            qid = queued_id(r)
            c.cmd("QUIT")
        return qid

    # -- logs
    def log(self):
        try:
            with open(self.log_file, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """A position in the log; wait_for_log(start=mark) looks only after it."""
        return len(self.log())

    def wait_for_log(self, regex, timeout=5.0, start=0, flags=re.M):
        rx = re.compile(regex, flags)

        def find():
            return rx.search(self.log()[start:])
        try:
            return wait_until(find, timeout, 0.05, "log line /%s/" % regex)
        except AssertionError as e:
            raise AssertionError("%s\nlog tail:\n%s" % (e, self.log()[start:][-3000:]))

    def log_matches(self, regex, start=0, flags=re.M):
        return list(re.finditer(regex, self.log()[start:], flags))

    # -- spool
    def queue_files(self):
        return sorted(glob.glob(os.path.join(self.queue_dir, "queue", "*", "*")))

    def incoming_files(self):
        return sorted(glob.glob(os.path.join(self.queue_dir, "incoming", "*")))

    def queue_path(self, qid):
        return os.path.join(self.queue_dir, "queue", qid[11:13], qid)

    def read_queue_file(self, path):
        return parse_queue_file(path)

    def read_queued(self, qid):
        path = self.queue_path(qid)
        assert os.path.exists(path), "no spool file %s for queue id %s (have %r)" % (path, qid, self.queue_files())
        return parse_queue_file(path)

    # -- health and teardown
    def health_problems(self):
        """New unexpected daemon deaths and sanitizer reports since the last call."""
        problems = []
        text = self.log()
        new = text[self._health_offset:]
        self._health_offset = len(text)
        if not self.allow_daemon_exits:
            problems += ["unexpected: " + m.group(0) for m in DAEMON_DEATH_RE.finditer(new)]
        problems += ["sanitizer in log: " + ln for ln in new.splitlines() if SANITIZER_RE.search(ln)]
        for f in glob.glob(self.sanitizer_log + "*"):
            if f in self._health_sanitizer_seen:
                continue
            self._health_sanitizer_seen.add(f)
            try:
                with open(f, errors="replace") as fh:
                    problems.append("sanitizer report %s:\n%s" % (f, fh.read()[:4000]))
            except OSError:
                pass
        return problems

    def cleanup(self):
        """Stop the instance (mailctl stop, then SIGKILL of pids it reported
        that are still alive), remove its directory. Returns the problems seen
        (unexpected deaths, sanitizer reports, a stop that failed or left
        processes behind)."""
        if self in _live:
            _live.remove(self)
        problems = []
        self._note_pidfile()
        try:
            if self.started or any(pid_alive(p) for p in self.known_pids):
                try:
                    self.status()
                except AssertionError:
                    pass
                try:
                    r = self.mailctl("stop", timeout=30)
                    if self.started and r.returncode != 0:
                        problems.append("teardown: mailctl stop exited %d: %s" % (r.returncode, r.stderr.strip()))
                except AssertionError as e:
                    problems.append("teardown: %s" % e)
        finally:
            self._note_pidfile()
            left = [p for p in sorted(self.known_pids) if pid_alive(p) and _pid_is_ours(p)]
            if left and self.started:
                problems.append("teardown: pids %r still alive after mailctl stop returned" % left)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                problems += self.health_problems()
            except Exception as e:  # never keep the directory because of this
                problems.append("teardown: health check failed: %r" % e)
            shutil.rmtree(self.root, ignore_errors=True)
        return problems


def wrap_smtpd(bw, shell_lines):
    """Give bw a daemon_directory of its own where every daemon links to the
    build's except smtpd, a /bin/sh wrapper that runs shell_lines and then
    execs the real smtpd. Call before start()."""
    d = os.path.join(bw.root, "libexec")
    os.mkdir(d)
    os.chmod(d, 0o755)
    for name in os.listdir(DAEMON_DIR):
        if name != "smtpd":
            os.symlink(os.path.realpath(os.path.join(DAEMON_DIR, name)), os.path.join(d, name))
    wrapper = os.path.join(d, "smtpd")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n%s\nexec '%s' \"$@\"\n" % (shell_lines, os.path.realpath(os.path.join(DAEMON_DIR, "smtpd"))))
    os.chmod(wrapper, 0o755)
    bw.set_params(daemon_directory=d)
    return d


# ---------------------------------------------------------------- fixtures

def pytest_configure(config):
    if not os.access(MAILCTL, os.X_OK):
        raise pytest.UsageError("%s is not built (set BW_BUILD to the build tree)" % MAILCTL)


@pytest.fixture
def bw_factory():
    """make(params=None, start=True, **kw) -> Breakwater; all stopped at the end."""
    made = []

    def make(params=None, start=True, **kw):
        inst = Breakwater(params, **kw)
        made.append(inst)
        if start:
            inst.start()
        return inst
    yield make
    problems = []
    for inst in made:
        problems += inst.cleanup()
    if problems:
        pytest.fail("instance teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def module_bw(request):
    """One running instance shared by a module (params from its BW_PARAMS)."""
    inst = Breakwater(getattr(request.module, "BW_PARAMS", None))
    problems = []
    try:
        inst.start()
        yield inst
    finally:
        problems = inst.cleanup()
    if problems:
        pytest.fail("instance teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _instance_health():
    """Fail the test when a daemon of a live instance died unexpectedly or a
    sanitizer reported something while it ran."""
    yield
    problems = []
    for inst in list(_live):
        problems += inst.health_problems()
    if problems:
        pytest.fail("instance health:\n" + "\n".join(problems), pytrace=False)
