"""Per-recipient and per-transaction replies of the receiving server: mixed
250/450/550 (delivered / deferred, then delivered after `mailctl flush` /
bounced with a DSN), 4xx at MAIL, 5xx at DATA and after the final dot, SIZE
refusal, dropped and stalled connections, refused connections, the null
sender (no bounce), several failures of one message in one DSN, and a
DSN for a hard bounce sent at once (once) while another recipient waits."""

import time

from conftest import wait_until
from relaylib import (SENDER, closed_port, delivery_lines, queue_show, rcpt_state,  # noqa: F401
                      relay, rx_factory, wait_delivery, wait_removed)

A, B, C = "a@dest.test", "b@dest.test", "c@dest.test"
TEXT_450 = "450 4.2.0 <b@dest.test>: mailbox busy, come back later"
TEXT_550 = "550 5.1.1 <c@dest.test>: no such user here"


def test_mixed_recipient_replies(relay):
    r = relay(params={"retry_schedule": "1h"})
    r.rx.rcpt_replies = {B: TEXT_450, C: TEXT_550}
    qid = r.send([A, B, C], subject="mixed replies")
    (m,) = r.rx.wait_messages(1)
    assert m.rcpt_tos == [A]
    sent = wait_delivery(r.bw, qid, A, "sent")[0]
    deferred = wait_delivery(r.bw, qid, B, "deferred")[0]
    bounced = wait_delivery(r.bw, qid, C, "bounced")[0]
    assert deferred["dsn"] == "4.2.0" and deferred["reply"] == TEXT_450, deferred
    assert bounced["dsn"] == "5.1.1" and bounced["reply"] == TEXT_550, bounced
    assert sent["dsn"] == "2.0.0"
    # The DSN for c goes out now, while b still waits for its retry (1 h).
    (dsn,) = r.dsns(1)
    # State on disk and in qmgr: c bounced and its sender told (N).
    wait_until(lambda: dict((a, s) for s, a in r.bw.read_queued(qid).recipients).get(C) == "N", 10, 0.1,
               "c's state to become N (bounced, DSN queued)")
    states = dict((a, s) for s, a in r.bw.read_queued(qid).recipients)
    assert states == {A: "D", B: "-", C: "N"}, states
    now = time.time()
    show = queue_show(r.bw, qid)
    st = {x["address"]: x for x in show["recipients"]}
    assert st[A]["state"] == "delivered"
    assert st[B]["state"] == "deferred" and st[B]["last_error"] == TEXT_450, st[B]
    assert now + 3000 < st[B]["next_retry"] < now + 3700, (st[B], now)
    assert st[C]["state"] == "bounced" and st[C]["last_error"] == TEXT_550, st[C]
    # The server changes its mind; flush retries b only, now.
    r.rx.rcpt_replies = {}
    mark = r.bw.log_mark()
    res = r.bw.mailctl("flush")
    assert res.returncode == 0, res.stderr
    (m2,) = r.rx.wait_messages(2)[1:]
    assert m2.rcpt_tos == [B], "flush retried %r, not just the deferred recipient" % m2.rcpt_tos
    wait_delivery(r.bw, qid, B, "sent", start=mark)
    wait_removed(r.bw, qid)
    # One DSN, for c only, with the remote text and its status; none more
    # when the message is removed.
    assert [x["final-recipient"] for x in dsn.recipients] == ["rfc822; " + C], dsn.recipients
    rc = dsn.recipient(C)
    assert rc["action"] == "failed"
    assert rc["status"] == "5.1.1"
    assert "no such user here" in rc["diagnostic-code"] and rc["diagnostic-code"].startswith("smtp;"), rc
    assert "no such user here" in dsn.text
    assert "Subject: mixed replies" in dsn.headers
    assert r.brx.quiet(0.5) == []
    # Each recipient got exactly one final line.
    assert len(delivery_lines(r.bw, qid, A, "sent")) == 1
    assert len(delivery_lines(r.bw, qid, C, "bounced")) == 1


def test_4xx_at_mail_defers_all(relay):
    r = relay(params={"retry_schedule": "1h"})
    r.rx.mail_reply = "451 4.3.0 sender check temporarily unavailable"
    qid = r.send([A, B, C])
    for rc in (A, B, C):
        line = wait_delivery(r.bw, qid, rc, "deferred")[0]
        assert line["dsn"] == "4.3.0" and "sender check temporarily unavailable" in line["reply"], line
    assert [x["state"] for x in queue_show(r.bw, qid)["recipients"]] == ["deferred"] * 3
    assert r.rx.snapshot() == []
    assert r.brx.quiet(0.3) == []
    r.rx.mail_reply = None
    assert r.bw.mailctl("flush", "dest.test").returncode == 0
    (m,) = r.rx.wait_messages(1)
    assert sorted(m.rcpt_tos) == [A, B, C], "after a MAIL deferral all recipients go in one transaction"
    wait_removed(r.bw, qid)
    assert r.brx.snapshot() == []


def test_5xx_at_mail_bounces_all(relay):
    r = relay()
    r.rx.mail_reply = "553 5.7.1 sender address rejected by policy"
    qid = r.send([A, B])
    for rc in (A, B):
        assert wait_delivery(r.bw, qid, rc, "bounced")[0]["dsn"] == "5.7.1"
    (dsn,) = r.dsns(1)
    assert sorted(x["final-recipient"] for x in dsn.recipients) == ["rfc822; " + A, "rfc822; " + B]
    wait_removed(r.bw, qid)


def test_5xx_at_data_command_bounces_all(relay):
    r = relay()
    r.rx.data_reply = "554 5.5.0 no DATA for you today"
    qid = r.send([A, B, C], subject="data refused")
    for rc in (A, B, C):
        line = wait_delivery(r.bw, qid, rc, "bounced")[0]
        assert line["dsn"] == "5.5.0" and "no DATA for you today" in line["reply"], line
    (dsn,) = r.dsns(1)
    assert len(dsn.recipients) == 3
    for rc in (A, B, C):
        x = dsn.recipient(rc)
        assert x["status"] == "5.5.0" and "no DATA for you today" in x["diagnostic-code"], x
    wait_removed(r.bw, qid)
    assert r.rx.snapshot() == []


def test_5xx_after_dot_bounces_all(relay):
    r = relay()
    r.rx.dot_reply = "550 5.7.1 message content rejected: looks like spam"
    qid = r.send([A, B], subject="spammy")
    for rc in (A, B):
        assert wait_delivery(r.bw, qid, rc, "bounced")[0]["dsn"] == "5.7.1"
    (dsn,) = r.dsns(1)
    assert "looks like spam" in dsn.recipient(A)["diagnostic-code"]
    wait_removed(r.bw, qid)


def test_4xx_after_dot_defers_all(relay):
    r = relay(params={"retry_schedule": "1h"})
    r.rx.dot_reply = "451 4.3.0 queue full, try again"
    qid = r.send([A, B])
    for rc in (A, B):
        assert wait_delivery(r.bw, qid, rc, "deferred")[0]["dsn"] == "4.3.0"
    r.rx.dot_reply = None
    r.bw.mailctl("flush")
    (m,) = r.rx.wait_messages(1)
    assert sorted(m.rcpt_tos) == [A, B]
    wait_removed(r.bw, qid)
    assert r.brx.snapshot() == []


def test_size_refusal_bounces(relay):
    r = relay(size=1000)
    big = b"".join(b"line %04d of a message that is too big for the receiver\r\n" % i for i in range(60))
    qid = r.send([A], subject="too big", body=big)
    line = wait_delivery(r.bw, qid, A, "bounced")[0]
    assert line["dsn"] == "5.3.4", line
    (dsn,) = r.dsns(1)
    x = dsn.recipient(A)
    assert x["status"] == "5.3.4" and x["action"] == "failed", x
    assert "Subject: too big" in dsn.headers
    # Nothing was offered: no MAIL command reached the receiver.
    assert not any(c.startswith("MAIL") for s in r.rx.sessions for c in s["commands"]), r.rx.sessions
    wait_removed(r.bw, qid)
    # A small message to the same receiver goes through, with SIZE=.
    q2 = r.send([B], subject="small")
    (m,) = r.rx.wait_messages(1)
    assert any(o.upper().startswith("SIZE=") for o in m.mail_options), m.mail_options
    wait_removed(r.bw, q2)


def _drop_then_deliver(r, stage):
    r.rx.drop_at = stage
    qid = r.send([A, B], subject="drop at " + stage)
    for rc in (A, B):
        line = wait_delivery(r.bw, qid, rc, "deferred", timeout=20)[0]
        assert line["dsn"].startswith("4."), line
    assert r.rx.snapshot() == []
    assert [s for s, _ in r.bw.read_queued(qid).recipients] == ["-", "-"]
    r.rx.drop_at = None
    mark = r.bw.log_mark()
    assert r.bw.mailctl("flush").returncode == 0
    (m,) = r.rx.wait_messages(1)
    assert sorted(m.rcpt_tos) == [A, B]
    for rc in (A, B):
        wait_delivery(r.bw, qid, rc, "sent", start=mark)
    wait_removed(r.bw, qid)
    assert r.brx.snapshot() == []
    assert r.rx.quiet(0.3) == []


def test_drop_at_connect_defers(relay):
    _drop_then_deliver(relay(params={"retry_schedule": "1h"}), "CONNECT")


def test_drop_at_mail_defers(relay):
    _drop_then_deliver(relay(params={"retry_schedule": "1h"}), "MAIL")


def test_drop_at_rcpt_defers(relay):
    _drop_then_deliver(relay(params={"retry_schedule": "1h"}), "RCPT")


def test_drop_at_data_defers(relay):
    _drop_then_deliver(relay(params={"retry_schedule": "1h"}), "DATA")


def test_drop_after_content_defers(relay):
    _drop_then_deliver(relay(params={"retry_schedule": "1h"}), "DOT")


def test_stalled_server_times_out(relay):
    r = relay(params={"retry_schedule": "1h", "smtp_timeout": "2s"})
    r.rx.stall_at = "RCPT"
    r.rx.stall_s = 20
    t0 = time.monotonic()
    qid = r.send([A])
    line = wait_delivery(r.bw, qid, A, "deferred", timeout=15)[0]
    took = time.monotonic() - t0
    assert 1.5 <= took <= 8, "deferred after %.1fs with smtp_timeout=2s" % took
    assert "timed out" in line["reply"], line
    r.rx.stall_at = None
    r.bw.mailctl("flush")
    r.rx.wait_messages(1)
    wait_removed(r.bw, qid)


def test_stalled_greeting_times_out(relay):
    r = relay(params={"retry_schedule": "1h", "smtp_timeout": "2s"})
    r.rx.stall_at = "CONNECT"
    r.rx.stall_s = 20
    qid = r.send([A])
    line = wait_delivery(r.bw, qid, A, "deferred", timeout=15)[0]
    assert "timed out" in line["reply"], line
    r.rx.stall_at = None
    r.bw.mailctl("flush")
    r.rx.wait_messages(1)
    wait_removed(r.bw, qid)


def test_connection_refused_defers(relay):
    dead = closed_port("127.0.0.3")
    r = relay(params={"retry_schedule": "1h"}, routes={"down.test": "127.0.0.3:%d" % dead})
    qid = r.send(["x@down.test"])
    line = wait_delivery(r.bw, qid, "x@down.test", "deferred")[0]
    assert line["dsn"] == "4.4.1", line
    assert "Connection refused" in line["reply"], line
    st = rcpt_state(r.bw, qid, "x@down.test")
    assert st["state"] == "deferred" and "Connection refused" in st["last_error"], st
    assert r.brx.quiet(0.3) == []


def test_null_sender_failure_is_not_bounced(relay):
    r = relay()
    r.rx.rcpt_replies = {A: TEXT_550.replace("c@", "a@")}
    mark = r.bw.log_mark()
    qid = r.bw.send_message(sender="", rcpts=[A], content=b"From: MAILER-DAEMON\r\nSubject: a bounce\r\n\r\nbody\r\n")
    wait_delivery(r.bw, qid, A, "bounced", start=mark)
    wait_removed(r.bw, qid, start=mark)
    r.bw.wait_for_log(r"breakwater/qmgr\[\d+\]: %s: undeliverable bounce \(null sender\)" % qid, 3, mark)
    assert r.bw.log_matches(r"%s: sender non-delivery notification" % qid, mark) == []
    assert r.brx.quiet(1.0) == [] and r.brx.n_sessions == 0, "a bounce was sent for a null-sender message"
    assert r.bw.queue_files() == []


def test_undeliverable_dsn_is_dropped(relay):
    """A DSN that itself bounces (null sender) is logged and removed."""
    r = relay()
    r.brx.rcpt_default = "550 5.1.1 the sender does not exist either"
    r.rx.rcpt_replies = {A: TEXT_550.replace("c@", "a@")}
    qid = r.send([A])
    wait_delivery(r.bw, qid, A, "bounced")
    m = r.bw.wait_for_log(r"%s: sender non-delivery notification: ([0-9A-F]{18})$" % qid, 10)
    dsn_id = m.group(1)
    wait_delivery(r.bw, dsn_id, SENDER, "bounced")
    wait_removed(r.bw, dsn_id)
    r.bw.wait_for_log(r"%s: undeliverable bounce \(null sender\)" % dsn_id, 3)
    time.sleep(0.5)
    assert r.bw.queue_files() == []
    assert r.bw.log_matches(r"%s: sender non-delivery notification" % dsn_id) == []


def test_hard_bounce_is_reported_once_while_another_recipient_waits(relay):
    """A 5xx for one recipient while another is deferred (retry in 1 h): the
    DSN comes at once, not when the last recipient is final; neither a
    restart of qmgr nor the final delivery of the other sends it again."""
    r = relay(params={"retry_schedule": "1h"})
    r.rx.rcpt_replies = {B: TEXT_450, C: TEXT_550}
    qid = r.send([B, C], subject="prompt bounce")
    wait_delivery(r.bw, qid, B, "deferred")
    (dsn,) = r.dsns(1, timeout=15)
    assert [x["final-recipient"] for x in dsn.recipients] == ["rfc822; " + C], dsn.recipients
    assert dsn.recipient(C)["status"] == "5.1.1" and "no such user here" in dsn.recipient(C)["diagnostic-code"]
    wait_until(lambda: dict((a, s) for s, a in r.bw.read_queued(qid).recipients) == {B: "-", C: "N"}, 10, 0.1,
               "states b pending, c bounced and notified")
    st = {x["address"]: x["state"] for x in queue_show(r.bw, qid)["recipients"]}
    assert st == {B: "deferred", C: "bounced"}, st
    # qmgr dies and comes back: the message is read again, no second DSN.
    r.rx.rcpt_replies = {}
    r.bw.allow_daemon_exits = True
    pids = [d["pid"] for d in r.bw.daemons("qmgr") if d.get("pid", 0) > 0]
    r.bw.kill(pids[0])
    wait_until(lambda: any(d.get("pid", 0) > 0 and d["pid"] != pids[0] for d in r.bw.daemons("qmgr")), 20, 0.2,
               "qmgr to be restarted")
    mark = r.bw.log_mark()
    wait_until(lambda: r.bw.mailctl("flush").returncode == 0, 10, 0.3, "flush to be taken")
    wait_delivery(r.bw, qid, B, "sent", start=mark)
    wait_removed(r.bw, qid)
    assert r.brx.quiet(1.0) == [], "a second DSN for the same bounce"


def test_several_failures_make_one_dsn(relay, rx_factory):
    other = rx_factory("127.0.0.4")
    r = relay(routes={"other.test": "127.0.0.4:%d" % other.port})
    other.watch(r.bw)
    r.rx.rcpt_replies = {A: "550 5.1.1 <a@dest.test>: unknown user a",
                         B: "552 5.2.2 <b@dest.test>: mailbox full"}
    other.rcpt_default = "554 5.7.1 <x@other.test>: relaying denied"
    qid = r.send([A, B, C, "x@other.test"], subject="several failures")
    r.rx.wait_messages(1)
    wait_removed(r.bw, qid)
    (dsn,) = r.dsns(1)
    assert r.brx.quiet(0.5) == [], "more than one DSN for one message"
    got = sorted(x["final-recipient"] for x in dsn.recipients)
    assert got == ["rfc822; a@dest.test", "rfc822; b@dest.test", "rfc822; x@other.test"], got
    assert dsn.recipient(A)["status"] == "5.1.1" and "unknown user a" in dsn.recipient(A)["diagnostic-code"]
    assert dsn.recipient(B)["status"] == "5.2.2" and "mailbox full" in dsn.recipient(B)["diagnostic-code"]
    assert dsn.recipient("x@other.test")["status"] == "5.7.1"
    assert "Subject: several failures" in dsn.headers
