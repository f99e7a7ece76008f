"""Durability around kill -9 of smtpd: killed in the middle of DATA leaves
nothing in incoming/ or queue/ once the master has restarted it; killed
right after the 250 the message is in queue/ intact; queued messages survive
a stop and start."""

import time

from conftest import SMTPClosed, pid_alive, dot_stuff, queued_id, simple_message, wait_until

SENDER = "a@client.test.example"
RCPT = "b@dest.test.example"


def _restarted(bw, old, mark):
    bw.wait_for_log(r"daemon smtpd\[0\] pid %d killed by signal 9" % old, 5, mark)
    return bw.wait_smtpd_replaced(old, 5)


def test_kill_in_the_middle_of_data_leaves_nothing(bw_factory):
    bw = bw_factory()
    bw.allow_daemon_exits = True
    old = bw.smtpd_pids()[0]
    content = simple_message("interrupted", (b"q" * 98 + b"\r\n") * 1000)  # 100 KB
    stream = dot_stuff(content)
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<%s>" % RCPT).code == 250
        assert c.cmd("DATA").code == 354
        c.send(stream[:60000])
        had_incoming = bool(_poll(bw.incoming_files, 2.0))
        mark = bw.log_mark()
        bw.kill(old)
        try:
            c.send(stream[60000:])
            r = c.reply(timeout=5)
            raise AssertionError("got a reply after smtpd was killed: %s" % r)
        except (SMTPClosed, OSError):
            pass
    new = _restarted(bw, old, mark)
    assert new != old
    wait_until(lambda: bw.incoming_files() == [], 5, 0.1, "incoming/ to be cleaned after the restart")
    assert bw.queue_files() == [], "a half-received message reached queue/: %r" % bw.queue_files()
    assert had_incoming, "no incoming/ file while DATA was being received (contract: incoming/ID while receiving)"
    # the restarted smtpd takes mail
    qid = bw.send_message()
    assert bw.queue_files() == [bw.queue_path(qid)]


def _poll(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return None


def test_kill_right_after_250_keeps_message(bw_factory):
    bw = bw_factory()
    bw.allow_daemon_exits = True
    old = bw.smtpd_pids()[0]
    contents = [simple_message("durable %d" % i, b"payload %d\r\n.dot\r\n" % i) for i in range(3)]
    ids = []
    with bw.session() as c:
        c.ehlo()
        for i, content in enumerate(contents):
            r = c.mail(SENDER, [RCPT, "r%d@dest.test.example" % i], content)
            ids.append(queued_id(r))
        mark = bw.log_mark()
        bw.kill(old)          # right after the last 250, no QUIT
    _restarted(bw, old, mark)
    time.sleep(0.3)
    assert bw.incoming_files() == []
    for i, qid in enumerate(ids):
        q = bw.read_queued(qid)   # parses and checks header, length and trailer
        assert q.id == qid
        assert q.sender == SENDER
        assert q.rcpt_addresses == [RCPT, "r%d@dest.test.example" % i]
        assert q.split_received()[1] == contents[i]
    assert sorted(bw.queue_files()) == sorted(bw.queue_path(q) for q in ids)


def test_kill_during_pipelined_burst_no_partial_files(bw_factory):
    bw = bw_factory()
    bw.allow_daemon_exits = True
    old = bw.smtpd_pids()[0]
    stream = b"EHLO c.test.example\r\n"
    for i in range(30):
        stream += (b"MAIL FROM:<s@client.test.example>\r\nRCPT TO:<r@dest.test.example>\r\nDATA\r\n"
                   + dot_stuff(simple_message("burst %d" % i, b"z" * 2000 + b"\r\n")))
    acked = []
    with bw.session() as c:
        c.send(stream)
        deadline = time.monotonic() + 10
        while len(acked) < 3 and time.monotonic() < deadline:
            r = c.reply()
            if r.last.startswith("250 2.0.0 Ok: queued as "):
                acked.append(queued_id(r))
        mark = bw.log_mark()
        bw.kill(old)
        try:
            while True:
                r = c.reply(timeout=3)
                if r.last.startswith("250 2.0.0 Ok: queued as "):
                    acked.append(queued_id(r))
        except (SMTPClosed, OSError):
            pass
    _restarted(bw, old, mark)
    wait_until(lambda: bw.incoming_files() == [], 5, 0.1, "incoming/ to be cleaned after the restart")
    files = bw.queue_files()
    for qid in acked:
        assert bw.queue_path(qid) in files, "acknowledged message %s lost" % qid
    for path in files:
        bw.read_queue_file(path)      # every file in queue/ is complete and valid


def test_queue_survives_stop_and_start(bw_factory):
    bw = bw_factory()
    qid = bw.send_message(content=simple_message("persist"))
    before = open(bw.queue_path(qid), "rb").read()
    bw.stop()
    bw.start()
    assert open(bw.queue_path(qid), "rb").read() == before
    qid2 = bw.send_message()
    assert qid2 != qid
    assert sorted(bw.queue_files()) == sorted([bw.queue_path(qid), bw.queue_path(qid2)])


def test_stale_incoming_file_of_a_dead_smtpd_removed_at_start(bw_factory):
    bw = bw_factory()
    bw.allow_daemon_exits = True
    old = bw.smtpd_pids()[0]
    master = bw.master_pid()
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<%s>" % RCPT).code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: half\r\n\r\n" + b"h" * 50000)
        _poll(lambda: bw.incoming_files(), 2.0)
        # the whole instance dies at once: nobody cleans up before the next start
        bw.kill(old)
        bw.kill(master)
    wait_until(lambda: not pid_alive(master) and not pid_alive(old), 5, 0.05, "master and smtpd to die")
    bw.started = False
    rc, st = bw.status()
    assert rc == 1 and st == {"running": False}, "status after the master was killed: %d %r" % (rc, st)
    bw.start()
    wait_until(lambda: bw.incoming_files() == [], 5, 0.1, "incoming/ to be cleaned at start")
    assert bw.queue_files() == []
