"""mailctl life cycle: start, status [--json], stop, a second start, stop
waiting for transactions in flight, not-running errors, several listeners."""

import os
import re
import socket
import time

from conftest import HOSTNAME, pid_alive, queued_id, simple_message, dot_stuff


def _refused(port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
    return False


def test_start_status_stop(bw_factory):
    bw = bw_factory(start=False)

    rc, obj = bw.status()
    assert rc == 1 and obj == {"running": False}, "status before start: rc %d %r" % (rc, obj)

    r = bw.start()
    m = re.fullmatch(r"breakwater started \(pid (\d+)\), smtpd listening on 127\.0\.0\.1:%d\n?" % bw.port, r.stdout)
    assert m, "start output: %r" % r.stdout
    pid = int(m.group(1))
    assert pid_alive(pid)

    with open(os.path.join(bw.queue_dir, "pid", "master.pid")) as f:
        assert int(f.read().split()[0]) == pid, "pid file does not hold the master pid"

    time.sleep(1.1)
    st = bw.status_json()
    assert st["running"] is True
    assert st["pid"] == pid
    assert isinstance(st["version"], str) and st["version"]
    assert isinstance(st["uptime_s"], int) and st["uptime_s"] >= 1, st
    assert os.path.realpath(st["config_dir"]) == os.path.realpath(bw.config_dir)
    assert os.path.realpath(st["queue_directory"]) == os.path.realpath(bw.queue_dir)
    assert st["listen"] == ["127.0.0.1:%d" % bw.port]
    smtpd = [d for d in st["daemons"] if d["name"] == "smtpd"]
    assert len(smtpd) == 1, st["daemons"]
    d = smtpd[0]
    assert d["slot"] == 0 and d["state"] == "running" and d["restarts"] == 0, d
    assert pid_alive(d["pid"]) and d["pid"] != pid

    plain = bw.mailctl("status")
    assert plain.returncode == 0 and plain.stdout.strip(), plain

    with bw.session() as c:
        assert c.cmd("QUIT").code == 221

    r = bw.stop()
    assert r.stdout.strip() == "breakwater stopped", r.stdout
    # stop returns only once every process has exited
    assert not pid_alive(pid), "master still alive when stop returned"
    assert not pid_alive(d["pid"]), "smtpd still alive when stop returned"
    assert _refused(bw.port), "port still accepting after stop"

    rc, obj = bw.status()
    assert rc == 1 and obj == {"running": False}, (rc, obj)
    plain = bw.mailctl("status")
    assert plain.returncode == 1

    for cmd in ("stop", "reload"):
        r = bw.mailctl(cmd)
        assert r.returncode == 1, (cmd, r)
        assert r.stderr == "mailctl: breakwater is not running\n", (cmd, r.stderr)

    # and it starts again from the same spool
    bw.start()
    with bw.session() as c:
        assert c.cmd("NOOP").code == 250


def test_second_start_refused(bw_factory):
    bw = bw_factory()
    st = bw.status_json()
    r = bw.mailctl("start")
    assert r.returncode != 0
    assert r.stderr == "mailctl: breakwater is already running (pid %d)\n" % st["pid"], r.stderr
    st2 = bw.status_json()
    assert st2["pid"] == st["pid"]
    assert [d["pid"] for d in st2["daemons"]] == [d["pid"] for d in st["daemons"]]
    with bw.session() as c:
        assert c.cmd("NOOP").code == 250


def test_several_listeners(bw_factory):
    bw = bw_factory(listen_ports=2)
    st = bw.status_json()
    assert sorted(st["listen"]) == sorted("127.0.0.1:%d" % p for p in bw.ports)
    for p in bw.ports:
        with bw.session(port=p) as c:
            c.ehlo()
            assert c.cmd("QUIT").code == 221


def test_start_prints_all_listeners(bw_factory):
    bw = bw_factory(listen_ports=2, start=False)
    r = bw.start()
    want = ", ".join("127.0.0.1:%d" % p for p in bw.ports)
    assert re.fullmatch(r"breakwater started \(pid \d+\), smtpd listening on %s\n?" % re.escape(want), r.stdout), r.stdout


def test_stop_waits_for_transaction_in_flight(bw_factory):
    bw = bw_factory({"stop_timeout": "15s"})
    st = bw.status_json()
    pids = [st["pid"]] + [d["pid"] for d in st["daemons"]]
    content = simple_message("in flight", b"line\r\n" * 100)
    stream = dot_stuff(content)
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<b@dest.test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(stream[:200])
        time.sleep(0.2)
        stop = bw.mailctl_async("stop")
        try:
            time.sleep(1.5)
            assert stop.running(), "stop returned while a transaction was in flight"
            c.send(stream[200:])
            r = c.reply()
            qid = queued_id(r)
        finally:
            res = stop.wait(20)
    assert res.returncode == 0, res
    assert res.stdout.strip() == "breakwater stopped"
    assert stop.elapsed < 10, "stop took %.1fs after the transaction ended" % stop.elapsed
    for p in pids:
        assert not pid_alive(p), "pid %d alive after stop" % p
    bw.started = False
    q = bw.read_queued(qid)
    assert q.split_received()[1] == content


def test_stop_does_not_wait_for_idle_sessions(bw_factory):
    bw = bw_factory({"stop_timeout": "15s"})
    with bw.session() as c:
        c.ehlo()
        t0 = time.monotonic()
        r = bw.stop()
        elapsed = time.monotonic() - t0
        assert r.returncode == 0
        assert elapsed < 5, "stop waited %.1fs for an idle session" % elapsed
        data = c.pending(1.0)
        assert data == b"" or data.startswith(b"421 4.3.2 %s " % HOSTNAME.encode()), data
        assert c.eof or c.wait_closed(2), "idle session still open after stop"


def test_stop_timeout_bounds_the_wait(bw_factory):
    bw = bw_factory({"stop_timeout": "2s"})
    st = bw.status_json()
    pids = [st["pid"]] + [d["pid"] for d in st["daemons"]]
    before = bw.queue_files()
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<b@dest.test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: stalled\r\n\r\npartial")
        t0 = time.monotonic()
        r = bw.stop(timeout=30)
        elapsed = time.monotonic() - t0
        assert r.returncode == 0, r
        assert 1.5 <= elapsed < 8, "stop with stop_timeout=2s took %.1fs" % elapsed
        for p in pids:
            assert not pid_alive(p), "pid %d alive after stop" % p
        assert c.wait_closed(2), "stalled session still open after stop"
    assert bw.queue_files() == before, "the unfinished message was queued"


def test_unknown_command_is_one_line_error(bw_factory):
    bw = bw_factory(start=False)
    for args in (["frobnicate"], ["status", "--bogus-option"], []):
        r = bw.mailctl(*args)
        assert r.returncode != 0, (args, r)
        assert r.stderr.startswith("mailctl: ") or r.stderr.lower().startswith("usage"), (args, r.stderr)
        assert r.stderr.count("\n") >= 1
        if args:
            assert r.stderr.count("\n") == 1, "more than one line on stderr for %r: %r" % (args, r.stderr)
