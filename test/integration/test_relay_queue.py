"""`mailctl queue list [--domain D] [--json]`, `mailctl queue show ID
[--json]` and `mailctl flush [DOMAIN]`: recipient states (queued, active,
deferred, delivered, bounced), last error, next retry, attempts, errors for
unknown or malformed ids and when the queue manager is not running."""

import json
import re
import time

from relaylib import SENDER, queue_list, queue_show, relay, rx_factory, wait_delivery, wait_removed  # noqa: F401

A, B, C = "a@dest.test", "b@dest.test", "c@dest.test"
BUSY = "450 4.2.0 <b@dest.test>: busy"
GONE = "550 5.1.1 <c@dest.test>: gone"


def _deferred_message(r):
    r.rx.rcpt_replies = {B: BUSY, C: GONE}
    qid = r.send([A, B, C], subject="queue listing")
    wait_delivery(r.bw, qid, B, "deferred")
    wait_delivery(r.bw, qid, C, "bounced")
    wait_delivery(r.bw, qid, A, "sent")
    return qid


def test_queue_show_json(relay):
    r = relay(params={"retry_schedule": "1h"})
    t_send = time.time()
    qid = _deferred_message(r)
    obj = queue_show(r.bw, qid)
    assert obj["id"] == qid
    assert obj["sender"] == SENDER
    assert abs(obj["arrival"] - t_send) < 5, obj
    assert obj["size"] > 0
    rc = {x["address"]: x for x in obj["recipients"]}
    assert list(rc) == [A, B, C], "recipients not in envelope order: %r" % list(rc)
    assert rc[A]["state"] == "delivered" and rc[A]["attempts"] == 1
    assert rc[B]["state"] == "deferred" and rc[B]["attempts"] == 1
    assert rc[B]["last_error"] == BUSY
    assert t_send + 3500 < rc[B]["next_retry"] < time.time() + 3700, rc[B]
    assert rc[C]["state"] == "bounced" and rc[C]["last_error"] == GONE


def test_queue_show_text(relay):
    r = relay(params={"retry_schedule": "1h"})
    qid = _deferred_message(r)
    res = r.bw.mailctl("queue", "show", qid)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith(qid), out
    assert "<%s>" % SENDER in out
    assert re.search(r"^\s+delivered\s+<a@dest\.test>", out, re.M), out
    assert re.search(r"^\s+deferred\s+<b@dest\.test>.*next_retry=\d+.*\(%s\)" % re.escape(BUSY), out, re.M), out
    assert re.search(r"^\s+bounced\s+<c@dest\.test>.*\(%s\)" % re.escape(GONE), out, re.M), out


def test_queue_list_and_domain_filter(relay, rx_factory):
    other = rx_factory("127.0.0.4")
    r = relay(params={"retry_schedule": "1h"}, routes={"other.test": "127.0.0.4:%d" % other.port})
    other.watch(r.bw)
    other.rcpt_default = "451 4.3.0 later"
    q1 = _deferred_message(r)
    q2 = r.send(["x@other.test"])
    wait_delivery(r.bw, q2, "x@other.test", "deferred")
    ids = sorted(m["id"] for m in queue_list(r.bw))
    assert ids == sorted([q1, q2]), ids
    assert [m["id"] for m in queue_list(r.bw, "other.test")] == [q2]
    assert [m["id"] for m in queue_list(r.bw, "dest.test")] == [q1]
    assert [m["id"] for m in queue_list(r.bw, "DEST.TEST")] == [q1]
    assert queue_list(r.bw, "nothing.test") == []
    res = r.bw.mailctl("queue", "list")
    assert res.returncode == 0
    assert q1 in res.stdout and q2 in res.stdout
    assert re.search(r"^--.*\b2 message", res.stdout, re.M), res.stdout
    m = next(x for x in queue_list(r.bw) if x["id"] == q2)
    assert m["recipients"][0]["state"] == "deferred" and m["recipients"][0]["last_error"] == "451 4.3.0 later"


def test_queue_list_empty(relay):
    r = relay()
    assert queue_list(r.bw) == []
    res = r.bw.mailctl("queue", "list")
    assert res.returncode == 0 and re.search(r"\b0 message", res.stdout), res.stdout


def test_queued_and_active_states(relay):
    r = relay(params={"smtp_timeout": "20s"})
    r.rx.stall_at = "RCPT"
    r.rx.stall_s = 6
    qid = r.send([A])
    r.rx.wait_sessions(1)

    def active():
        return queue_show(r.bw, qid)["recipients"][0]["state"] == "active"
    deadline = time.monotonic() + 5
    while not active() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert active(), queue_show(r.bw, qid)
    r.rx.stall_at = None


def test_delivered_message_is_gone(relay):
    r = relay()
    qid = r.send([A])
    r.rx.wait_messages(1)
    wait_removed(r.bw, qid)
    res = r.bw.mailctl("queue", "show", qid)
    assert res.returncode == 1 and res.stdout == "", (res.returncode, res.stdout)
    assert res.stderr.strip() == "mailctl: no such message in the queue", res.stderr
    assert queue_list(r.bw) == []


def test_queue_show_errors(relay):
    r = relay()
    for args, rc, err in [
            (("queue", "show", "0123456789ABCDEF01"), 1, "mailctl: no such message in the queue"),
            (("queue", "show", "0123456789ABCDEF01", "--json"), 1, "mailctl: no such message in the queue"),
            (("queue", "show", "not-an-id"), 1, "mailctl: not a queue id"),
            (("queue", "show", "0123456789abcdef01"), 1, "mailctl: not a queue id"),
            (("queue", "show"), 2, "usage: mailctl queue show ID [--json]"),
            (("queue", "bogus"), 2, None),
            (("queue",), 2, None),
            (("flush", "a.test", "b.test"), 2, "usage: mailctl flush [DOMAIN]")]:
        res = r.bw.mailctl(*args)
        assert res.returncode == rc, (args, res.returncode, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, (args, res.stderr)
        if err:
            assert lines[0] == err, (args, res.stderr)
        assert res.stdout == "", (args, res.stdout)


def test_queue_commands_when_stopped(relay):
    r = relay(start=False)
    for args in (("queue", "list"), ("queue", "show", "0123456789ABCDEF01"), ("flush",)):
        res = r.bw.mailctl(*args)
        assert res.returncode == 1, (args, res.returncode, res.stdout, res.stderr)
        assert res.stderr.strip().splitlines() == ["mailctl: the queue manager is not running (is breakwater started?)"], (
            args, res.stderr)
    res = r.bw.mailctl("queue", "list", "--json")
    assert res.returncode == 1 and json.loads(res.stdout) == {"running": False}, res.stdout


def test_flush_reports_count(relay):
    r = relay(params={"retry_schedule": "1h"})
    r.rx.rcpt_default = "451 4.3.0 not now"
    qids = [r.send(["n%d@dest.test" % i]) for i in range(3)]
    for i, qid in enumerate(qids):
        wait_delivery(r.bw, qid, "n%d@dest.test" % i, "deferred")
    res = r.bw.mailctl("flush", "dest.test")
    assert res.returncode == 0, res.stderr
    assert re.search(r"\b3\b", res.stdout) and "dest.test" in res.stdout, res.stdout
    res = r.bw.mailctl("flush", "unknown.test")
    assert res.returncode == 0 and re.search(r"\b0\b", res.stdout), res.stdout
