"""master: daemons run as mail_owner; a killed smtpd is restarted within about
a second while the listening socket keeps accepting; exits are logged with
their signal/status; a daemon that keeps dying is restarted with growing
back-off (capped by master_throttle_max) and comes back once it is healthy."""

import os
import re
import signal
import time

from conftest import (HOSTNAME, SMTPClient, breakwater_uid, pid_alive, pid_uids, queued_id, wait_until,
                      wrap_smtpd)


def test_daemons_run_as_mail_owner(bw_factory):
    bw = bw_factory({"smtpd_processes": "2"})
    smtpd = bw.daemons("smtpd")
    assert sorted(d["slot"] for d in smtpd) == [0, 1], smtpd
    assert all(d["state"] == "running" for d in smtpd), smtpd
    pids = [d["pid"] for d in smtpd]
    assert len(set(pids)) == 2
    uid = breakwater_uid()
    for pid in pids:
        assert pid_uids(pid) == (uid, uid, uid, uid), "smtpd pid %d runs with uids %r" % (pid, pid_uids(pid))
    # both processes together serve the listener
    clients = [bw.session() for _ in range(10)]
    for c in clients:
        c.ehlo()
        c.close()


def test_killed_smtpd_is_restarted_and_socket_stays_open(bw_factory):
    bw = bw_factory()
    bw.allow_daemon_exits = True
    old = bw.smtpd_pids()[0]
    master = bw.master_pid()
    mark = bw.log_mark()

    bw.kill(old)
    t0 = time.monotonic()
    # connections made while no smtpd runs are accepted by the kernel on the
    # master's listening socket and greeted once the new smtpd is up
    early = []
    refused = 0
    while time.monotonic() - t0 < 0.5:
        try:
            early.append(SMTPClient(bw.port, connect_timeout=2))
        except ConnectionRefusedError:
            refused += 1
        time.sleep(0.02)
    m = bw.wait_for_log(r"breakwater/master\[%d\]: daemon smtpd\[0\] started, pid (\d+)" % master, 5, mark)
    elapsed = time.monotonic() - t0
    new = int(m.group(1))
    try:
        assert refused == 0, "%d connections refused while smtpd was restarting" % refused
        assert new != old
        assert elapsed < 1.5, "smtpd restarted %.2fs after kill -9 (want about 1s)" % elapsed
        for c in early:
            assert c.greeting(timeout=5).first == "220 %s ESMTP Breakwater" % HOSTNAME
            c.ehlo()
    finally:
        for c in early:
            c.close()

    bw.wait_for_log(r"breakwater/master\[%d\]: (?:warning: )?daemon smtpd\[0\] pid %d killed by signal 9" % (master, old), 2, mark)
    assert not pid_alive(old)
    st = bw.status_json()
    assert st["pid"] == master
    d = [x for x in st["daemons"] if x["name"] == "smtpd"][0]
    assert d["pid"] == new and d["state"] == "running" and d["restarts"] == 1, d
    uid = breakwater_uid()
    assert pid_uids(new) == (uid, uid, uid, uid)
    # and it accepts mail
    assert bw.read_queued(bw.send_message())


def test_crash_looping_daemon_gets_growing_backoff(bw_factory):
    bw = bw_factory({"master_throttle_max": "4s"}, start=False)
    bw.allow_daemon_exits = True
    # smtpd becomes a wrapper that exits 7 at once while the file CRASH exists
    flag = os.path.join(bw.root, "CRASH")
    wrap_smtpd(bw, "[ -e '%s' ] && exit 7" % flag)
    bw.start()
    old = bw.smtpd_pids()[0]
    with bw.session() as c:
        c.ehlo()

    open(flag, "w").close()
    mark = bw.log_mark()
    bw.kill(old)
    exit_re = re.compile(r"daemon smtpd\[0\] pid \d+ exited with status 7")
    seen, times = 0, []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 9.0:
        n = len(exit_re.findall(bw.log()[mark:]))
        now = time.monotonic()
        times += [now] * (n - seen)
        seen = n
        time.sleep(0.02)
    assert bw.log_matches(r"daemon smtpd\[0\] pid %d killed by signal 9" % old, mark), "kill -9 not logged"
    assert 3 <= len(times) <= 25, "%d exits of a crash-looping smtpd in 9s (want back-off, not %s)" % (
        len(times), "spinning" if len(times) > 25 else "giving up")
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[-1] >= 2 * gaps[0] - 0.1 and gaps[-1] >= 0.8, "restart delays do not grow: %r" % gaps
    assert max(gaps) <= 4 + 1.5, "restart delay %r exceeds master_throttle_max=4s" % gaps
    st = bw.status_json()
    d = [x for x in st["daemons"] if x["name"] == "smtpd"][0]
    assert d["restarts"] >= len(times), d

    # healthy again: back within master_throttle_max
    os.unlink(flag)
    t1 = time.monotonic()

    def serving():
        try:
            with SMTPClient(bw.port, timeout=1, connect_timeout=1) as c:
                return c.greeting(timeout=1)
        except (OSError, TimeoutError, Exception):
            return None
    wait_until(serving, 8, 0.2, "smtpd to come back after the crash loop")
    assert time.monotonic() - t1 < 4 + 2.5
    assert bw.smtpd_pids(), bw.status_json()
    assert bw.read_queued(bw.send_message())


def test_kill_one_of_two_smtpd(bw_factory):
    bw = bw_factory({"smtpd_processes": "2"})
    bw.allow_daemon_exits = True
    before = {d["slot"]: d["pid"] for d in bw.daemons("smtpd")}
    mark = bw.log_mark()
    bw.kill(before[1])
    new = bw.wait_smtpd_replaced(before[1], 3, slot=1)
    bw.wait_for_log(r"daemon smtpd\[1\] pid %d killed by signal 9" % before[1], 2, mark)
    after = {d["slot"]: (d["pid"], d["restarts"]) for d in bw.daemons("smtpd")}
    assert after == {0: (before[0], 0), 1: (new, 1)}, after
    assert not bw.log_matches(r"daemon smtpd\[0\] pid %d" % before[0], mark), "slot 0 was touched"


def test_sigterm_to_master_is_a_graceful_stop(bw_factory):
    bw = bw_factory()
    st = bw.status_json()
    pids = [st["pid"]] + [d["pid"] for d in st["daemons"]]
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<b@dest.test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: sigterm\r\n\r\n")
        bw.kill(st["pid"], signal.SIGTERM)
        time.sleep(0.5)
        c.send(b"finished after SIGTERM\r\n.\r\n")
        qid = queued_id(c.reply())
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, 0.1, "all processes to exit after SIGTERM")
    bw.started = False
    rc, obj = bw.status()
    assert rc == 1 and obj == {"running": False}
    assert bw.read_queued(qid).split_received()[1] == b"Subject: sigterm\r\n\r\nfinished after SIGTERM\r\n"


def test_sighup_to_master_is_a_reload(bw_factory):
    bw = bw_factory({"message_size_limit": "10240"})
    master = bw.master_pid()
    bw.set_params(message_size_limit="40960")
    bw.kill(master, signal.SIGHUP)

    def size():
        with bw.session() as c:
            return "SIZE 40960" in c.ehlo().texts
    wait_until(size, 5, 0.2, "EHLO SIZE 40960 after SIGHUP")
    assert bw.master_pid() == master
