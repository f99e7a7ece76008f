"""master: daemons run as mail_owner; a killed smtpd is restarted within about
a second while the listening socket keeps accepting; exits are logged with
their signal/status; a daemon that keeps dying is restarted with growing
back-off (capped by master_throttle_max) and comes back once it is healthy."""

import os
import re
import socket
import time

from conftest import (DAEMON_DIR, HOSTNAME, SMTPClient, breakwater_uid, pid_alive, pid_uids, queued_id,
                      wait_until)


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

    bw.wait_for_log(r"breakwater/master\[%d\]: daemon smtpd\[0\] pid %d killed by signal 9" % (master, old), 2, mark)
    assert not pid_alive(old)
    st = bw.status_json()
    assert st["pid"] == master
    d = [x for x in st["daemons"] if x["name"] == "smtpd"][0]
    assert d["pid"] == new and d["state"] == "running" and d["restarts"] == 1, d
    uid = breakwater_uid()
    assert pid_uids(new) == (uid, uid, uid, uid)
    # and it accepts mail
    assert bw.read_queued(bw.send_message())


def _crashing_daemon_dir(bw):
    """A daemon_directory where smtpd is a wrapper: it runs the real smtpd
    unless the file CRASH exists, then it exits 7 at once."""
    d = os.path.join(bw.root, "libexec")
    os.mkdir(d)
    os.chmod(d, 0o755)
    for name in os.listdir(DAEMON_DIR):
        if name != "smtpd":
            os.symlink(os.path.realpath(os.path.join(DAEMON_DIR, name)), os.path.join(d, name))
    flag = os.path.join(bw.root, "CRASH")
    wrapper = os.path.join(d, "smtpd")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n[ -e '%s' ] && exit 7\nexec '%s' \"$@\"\n"
                % (flag, os.path.realpath(os.path.join(DAEMON_DIR, "smtpd"))))
    os.chmod(wrapper, 0o755)
    return d, flag


def test_crash_looping_daemon_gets_growing_backoff(bw_factory):
    bw = bw_factory({"master_throttle_max": "4s"}, start=False)
    bw.allow_daemon_exits = True
    ddir, flag = _crashing_daemon_dir(bw)
    bw.set_params(daemon_directory=ddir)
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
