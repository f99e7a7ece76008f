"""Many connections on one smtpd: 1,000 concurrent sessions all greeted and
answered; smtpd_max_connections pauses accepting (never crashes) and resumes
once sessions close; running out of file descriptors (RLIMIT_NOFILE lowered
on the running smtpd) neither kills smtpd nor makes it spin."""

import errno
import shutil
import subprocess
import os
import re
import selectors
import socket
import threading
import time

import pytest

from conftest import HOSTNAME, SMTPClient, queued_id, simple_message, wait_until, wrap_smtpd

GREETING = ("220 %s ESMTP Breakwater\r\n" % HOSTNAME).encode()


def GREETED(data):
    return len(data) >= len(GREETING)


def ANY(data):
    return data.endswith(b"\r\n")


def EHLO_DONE(data):
    return re.search(rb"(^|\r\n)250 [^\r\n]*\r\n$", data) is not None


def _open_many(port, n, timeout=20.0):
    """n non-blocking connections, all established (or an assertion)."""
    socks = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex(("127.0.0.1", port))
            assert rc in (0, errno.EINPROGRESS), "connect: %s" % os.strerror(rc)
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE)
        pending = len(socks)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            assert left > 0, "%d of %d connections not established in %ss" % (pending, n, timeout)
            for key, _ in sel.select(min(left, 1.0)):
                err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert err == 0, "connect failed: %s" % os.strerror(err)
                sel.unregister(key.fileobj)
                pending -= 1
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()


def _read_until(socks, done, timeout):
    """Read from every socket until done(data so far) holds for each, or EOF,
    or timeout. Returns {sock: bytes}."""
    got = {s: b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    open_ = len(socks)
    deadline = time.monotonic() + timeout
    try:
        while open_:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 0.5)):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                got[s] += data
                if not data or done(got[s]):
                    sel.unregister(s)
                    open_ -= 1
    finally:
        sel.close()
    return got


def test_listen_backlog_is_somaxconn(bw_factory):
    ss = shutil.which("ss") or "/usr/bin/ss"
    if not os.access(ss, os.X_OK):
        pytest.skip("ss (iproute2) not installed")
    bw = bw_factory({"smtpd_processes": "2"})
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    want = min(somaxconn, 4096)
    out = subprocess.run([ss, "-ltnH", "sport = :%d" % bw.port], capture_output=True, text=True, timeout=10).stdout
    rows = [ln.split() for ln in out.splitlines() if ln.strip()]
    assert rows, "no listening socket on port %d: %r" % (bw.port, out)
    backlog = int(rows[0][2])        # Send-Q of a listening socket is its backlog
    assert backlog >= want, "listen backlog of 127.0.0.1:%d is %d, want SOMAXCONN (%d)" % (bw.port, backlog, want)


def test_thousand_concurrent_connections(bw_factory):
    bw = bw_factory({"smtpd_processes": "1"})
    pid = bw.smtpd_pids()[0]
    n = 1000
    socks = _open_many(bw.port, n)
    try:
        got = _read_until(socks, GREETED, 30)
        greeted = sum(1 for v in got.values() if v == GREETING)
        assert greeted == n, "%d of %d connections greeted; e.g. %r" % (
            greeted, n, [v for v in got.values() if v != GREETING][:3])
        for s in socks:
            s.send(b"EHLO many.test.example\r\n")
        got = _read_until(socks, EHLO_DONE, 30)
        answered = sum(1 for s in socks if got[s].startswith(b"250-" + HOSTNAME.encode()) and EHLO_DONE(got[s]))
        assert answered == n, "%d of %d connections answered EHLO" % (answered, n)
        st = bw.daemons("smtpd")
        assert [d["pid"] for d in st] == [pid] and st[0]["restarts"] == 0, st
    finally:
        for s in socks:
            s.close()
    with bw.session() as c:
        c.ehlo()


def test_max_connections_pauses_and_resumes(bw_factory):
    bw = bw_factory({"smtpd_processes": "1", "smtpd_max_connections": "50"})
    pid = bw.smtpd_pids()[0]
    first = _open_many(bw.port, 50)
    extra = []
    try:
        got = _read_until(first, GREETED, 20)
        assert sum(v == GREETING for v in got.values()) == 50, "not all of the first 50 were greeted"
        extra = _open_many(bw.port, 30)
        got = _read_until(extra, GREETED, 2)
        greeted_extra = [s for s in extra if got[s] == GREETING]
        assert not greeted_extra, "%d connections beyond smtpd_max_connections=50 were greeted" % len(greeted_extra)
        busy = "421 4.7.0 %s Error: too many connections\r\n" % HOSTNAME
        for s in extra:
            assert got[s] in (b"", busy.encode()), "unexpected answer beyond the limit: %r" % got[s]
        waiting = [s for s in extra if got[s] == b""]

        # close 10: at most 10 more sessions may start
        for s in first[:10]:
            s.close()
        first = first[10:]
        got = _read_until(waiting, GREETED, 3)
        newly = [s for s in waiting if got[s] == GREETING]
        assert len(newly) <= 10, "%d sessions started after 10 closed (limit 50)" % len(newly)
        if len(waiting) >= 10:
            assert len(newly) == 10, "smtpd did not resume accepting: %d of 10 free slots used" % len(newly)

        # close everything: a new client is served again
        for s in first + extra:
            s.close()
        first, extra = [], []
        with SMTPClient(bw.port, timeout=5) as c:
            c.greeting(timeout=5)
            c.ehlo()
        assert bw.smtpd_pids() == [pid], "smtpd was restarted"
    finally:
        for s in first + extra:
            s.close()


@pytest.mark.parametrize("sync", ["syncfs", "fsync"])
def test_concurrent_senders_group_commit(bw_factory, sync):
    bw = bw_factory({"smtpd_processes": "2", "spool_sync_method": sync})
    results, errors = {}, []

    def sender(t):
        try:
            with bw.session() as c:
                c.ehlo()
                for i in range(5):
                    content = simple_message("t%d m%d" % (t, i), (b"thread %d message %d\r\n" % (t, i)) * 20)
                    r = c.mail("t%d@client.test.example" % t, ["m%d@dest.test.example" % i], content)
                    results[queued_id(r)] = (t, i, content)
                c.cmd("QUIT")
        except Exception as e:      # reported below
            errors.append("sender %d: %r" % (t, e))
    threads = [threading.Thread(target=sender, args=(t,)) for t in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert len(results) == 100, "%d distinct queue ids for 100 messages" % len(results)
    assert len(bw.queue_files()) == 100
    for qid, (t, i, content) in results.items():
        q = bw.read_queued(qid)
        assert q.sender == "t%d@client.test.example" % t
        assert q.rcpt_addresses == ["m%d@dest.test.example" % i]
        assert q.split_received()[1] == content


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _nofile(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-files limit for %d" % pid)


def test_descriptor_exhaustion(bw_factory):
    limit = 64
    bw = bw_factory({"smtpd_processes": "1"}, start=False)
    # smtpd starts with at most 64 descriptors (soft and hard limit)
    wrap_smtpd(bw, "ulimit -n %d || exit 1" % limit)
    bw.start()
    pid = bw.smtpd_pids()[0]
    if _nofile(pid) > limit:
        pytest.skip("smtpd raised its hard descriptor limit (CAP_SYS_RESOURCE): cannot exhaust it here")
    nfd = len(os.listdir("/proc/%d/fd" % pid))
    free = limit - nfd
    assert 5 < free < limit, (nfd, limit)
    socks = []
    try:
        socks = _open_many(bw.port, 100)
        got = _read_until(socks, GREETED, 3)
        greeted = [s for s in socks if got[s] == GREETING]
        assert 1 <= len(greeted) <= free, "%d of 100 greeted with %d free descriptors" % (len(greeted), free)
        # descriptors exhausted: smtpd must neither die nor spin on accept()
        cpu0 = _cpu_seconds(pid)
        time.sleep(2.0)
        cpu = _cpu_seconds(pid) - cpu0
        assert cpu < 1.0, "smtpd used %.2fs CPU in 2s while out of descriptors (busy accept loop?)" % cpu
        assert bw.smtpd_pids() == [pid], "smtpd died when descriptors ran out"
        for s in greeted:
            s.send(b"NOOP\r\n")
        got2 = _read_until(greeted, ANY, 5)
        assert all(got2[s].startswith(b"250 ") for s in greeted), "greeted sessions stopped answering"
        # free them all: smtpd serves new clients again
        for s in socks:
            s.close()
        socks = []

        def served():
            try:
                with SMTPClient(bw.port, timeout=3, connect_timeout=2) as c:
                    return c.greeting(timeout=3)
            except Exception:
                return None
        wait_until(served, 10, 0.3, "smtpd to serve again after descriptors were freed")
    finally:
        for s in socks:
            s.close()
    assert bw.smtpd_pids() == [pid]
    assert bw.read_queued(bw.send_message())
