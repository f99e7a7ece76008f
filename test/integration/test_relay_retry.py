"""Retry timing (retry_schedule, the last interval repeats, never early),
max_queue_lifetime expiry with the DSN's full content, expiry of a message
that was already old when the queue manager started, and `mailctl flush`
of one domain only."""

import os
import re
import time

from relaylib import (SENDER, closed_port, delivery_lines, rcpt_state, relay, rx_factory,  # noqa: F401
                      wait_delivery, wait_removed)

A = "a@dest.test"
BUSY = "450 4.2.1 <a@dest.test>: mailbox busy, try later"


def _gaps(times):
    return [round(b - a, 2) for a, b in zip(times, times[1:])]


def test_retry_follows_schedule(relay):
    r = relay(params={"retry_schedule": "2s 4s"})
    r.rx.rcpt_default = BUSY
    qid = r.send([A])
    # attempts at 0, ~2, ~6, ~10 (the last interval repeats)
    deadline = time.monotonic() + 16
    while len(r.rx.rcpt_times(A)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    t = r.rx.rcpt_times(A)
    assert len(t) >= 4, "only %d attempts in 16s: %r" % (len(t), _gaps(t))
    g = _gaps(t)
    # (the first gap may be up to 1 s short: test_retry_never_early is about that)
    assert 0.9 <= g[0] <= 3.2, g
    assert 3.9 <= g[1] <= 5.2, g
    assert 3.9 <= g[2] <= 5.2, g
    lines = delivery_lines(r.bw, qid, A, "deferred")
    assert len(lines) >= 4 and all(x["reply"] == BUSY and x["dsn"] == "4.2.1" for x in lines), lines
    st = rcpt_state(r.bw, qid, A)
    assert st["state"] == "deferred" and st["attempts"] >= 4 and st["last_error"] == BUSY, st
    assert time.time() - 1 <= st["next_retry"] <= time.time() + 5, st


def test_retry_never_early(relay):
    """Failures at every phase of a second: no retry comes before the interval."""
    r = relay(params={"retry_schedule": "2s"})
    r.rx.rcpt_default = BUSY
    rcpts = ["p%d@dest.test" % i for i in range(10)]
    for rc in rcpts:
        r.send([rc])
        time.sleep(0.1)
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and not all(len(r.rx.rcpt_times(rc)) >= 2 for rc in rcpts):
        time.sleep(0.1)
    gaps = {rc: _gaps(r.rx.rcpt_times(rc))[:1] for rc in rcpts}
    assert all(gaps.values()), "not retried within 12s: %r" % gaps
    early = {rc: g[0] for rc, g in gaps.items() if g[0] < 1.8}
    late = {rc: g[0] for rc, g in gaps.items() if g[0] > 3.5}
    assert not early, "retried before retry_schedule=2s had passed: %r (all first gaps %r)" % (early, gaps)
    assert not late, "retried late: %r" % late


def test_no_retry_before_interval(relay):
    r = relay(params={"retry_schedule": "4s"})
    r.rx.rcpt_default = BUSY
    r.send([A])
    wait = time.monotonic() + 10
    while len(r.rx.rcpt_times(A)) < 1 and time.monotonic() < wait:
        time.sleep(0.05)
    t0 = r.rx.rcpt_times(A)[0]
    time.sleep(max(0, t0 + 2.8 - time.monotonic()))
    assert len(r.rx.rcpt_times(A)) == 1, "retried after %.2fs with retry_schedule=4s" % (r.rx.rcpt_times(A)[1] - t0)
    r.rx.rcpt_default = None
    r.rx.wait_messages(1, 8)
    t = r.rx.rcpt_times(A)
    assert 3.0 <= t[1] - t0 <= 5.5, _gaps(t)


def test_flush_one_domain(relay, rx_factory):
    other = rx_factory("127.0.0.4")
    r = relay(params={"retry_schedule": "1h"}, routes={"other.test": "127.0.0.4:%d" % other.port})
    other.watch(r.bw)
    r.rx.rcpt_default = BUSY
    other.rcpt_default = "451 4.3.0 other is busy too"
    q1 = r.send([A])
    q2 = r.send(["x@other.test"])
    wait_delivery(r.bw, q1, A, "deferred")
    wait_delivery(r.bw, q2, "x@other.test", "deferred")
    r.rx.rcpt_default = other.rcpt_default = None
    res = r.bw.mailctl("flush", "other.test")
    assert res.returncode == 0, res.stderr
    assert re.search(r"\b1\b", res.stdout) and "other.test" in res.stdout, res.stdout
    other.wait_messages(1)
    wait_removed(r.bw, q2)
    assert r.rx.quiet(1.0) == [], "flush other.test retried dest.test too"
    assert rcpt_state(r.bw, q1, A)["state"] == "deferred"
    res = r.bw.mailctl("flush")
    assert res.returncode == 0, res.stderr
    r.rx.wait_messages(1)
    wait_removed(r.bw, q1)
    # Nothing deferred any more.
    res = r.bw.mailctl("flush")
    assert res.returncode == 0 and re.search(r"\b0\b", res.stdout), res.stdout


def test_queue_lifetime_expiry_dsn(relay):
    r = relay(params={"retry_schedule": "2s", "max_queue_lifetime": "6s"})
    r.rx.rcpt_default = BUSY
    content = (b"From: Sender <" + SENDER.encode() + b">\r\nTo: <a@dest.test>\r\nSubject: will expire\r\n"
               b"Message-ID: <expire-1@client.test.example>\r\nX-Original: yes\r\n\r\nThe body is not returned.\r\n")
    t0 = time.monotonic()
    qid = r.bw.send_message(sender=SENDER, rcpts=[A], content=content)
    (dsn,) = r.dsns(1, timeout=20)
    took = time.monotonic() - t0
    assert 5.0 <= took <= 11, "bounced after %.1fs with max_queue_lifetime=6s, retry 2s" % took
    assert len(delivery_lines(r.bw, qid, A, "deferred")) >= 2
    wait_removed(r.bw, qid)
    # RFC 3464 / RFC 6522 shape
    assert dsn.msg["Subject"] and "Undelivered" in dsn.msg["Subject"], dsn.msg["Subject"]
    assert dsn.msg["To"] and SENDER in dsn.msg["To"]
    assert dsn.msg["Auto-Submitted"] == "auto-replied"
    assert dsn.per_message["reporting-mta"].startswith("dns;"), dsn.per_message
    assert "arrival-date" in dsn.per_message
    rc = dsn.recipient(A)
    assert rc["action"] == "failed", rc
    assert re.match(r"^[45]\.\d{1,3}\.\d{1,3}$", rc["status"]), rc
    assert rc["status"] == "4.2.1" or rc["status"].startswith("5."), rc
    assert "diagnostic-code" in rc and "mailbox busy" in rc["diagnostic-code"], rc
    assert "expired" in rc["diagnostic-code"] or "expired" in dsn.text, (rc, dsn.text)
    # The original headers, not the body.
    assert dsn.headers is not None
    for h in ("Subject: will expire", "Message-ID: <expire-1@client.test.example>", "X-Original: yes",
              "Received: from client.test.example"):
        assert h in dsn.headers, (h, dsn.headers)
    assert "The body is not returned" not in dsn.raw.decode("latin-1")
    assert qid in dsn.text
    assert r.brx.quiet(0.5) == []
    _assert_final_line(r.bw, qid, A)


def _assert_final_line(bw, qid, rcpt, start=0):
    """The recipient's end is logged: a status=bounced (or Postfix's
    status=expired) line for it, so log tools count the bounce."""
    rx = re.compile(r"breakwater/\w+\[\d+\]: %s: to=<%s>, .*status=(bounced|expired)" % (qid, re.escape(rcpt)))
    lines = [ln for ln in bw.log()[start:].splitlines() if rx.search(ln)]
    assert lines, "%s: no status=bounced/expired line for <%s> although its DSN was sent; lines for it:\n%s" % (
        qid, rcpt, "\n".join(ln for ln in bw.log()[start:].splitlines() if qid in ln))


def test_expiry_when_host_is_down(relay):
    dead = closed_port("127.0.0.3")
    r = relay(params={"retry_schedule": "1s", "max_queue_lifetime": "4s"}, routes={"down.test": "127.0.0.3:%d" % dead})
    qid = r.send(["x@down.test"], subject="down host")
    (dsn,) = r.dsns(1, timeout=15)
    rc = dsn.recipient("x@down.test")
    assert rc["action"] == "failed" and "Connection refused" in rc.get("diagnostic-code", ""), rc
    wait_removed(r.bw, qid)
    _assert_final_line(r.bw, qid, "x@down.test")


def _age_message(bw, qid, seconds):
    """Move the arrival time (T line, microseconds) of a stopped instance's
    queue file back by seconds (same length, so nothing else moves)."""
    path = bw.queue_path(qid)
    with open(path, "rb") as f:
        data = f.read()
    m = re.search(rb"\nT (\d+)\n", data)
    assert m, data[:200]
    old = m.group(1)
    new = str(int(old) - int(seconds * 1000000)).encode()
    assert len(new) == len(old)
    data = data[:m.start(1)] + new + data[m.end(1):]
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    st = os.stat(path)
    os.chown(path + ".tmp", st.st_uid, st.st_gid)
    os.chmod(path + ".tmp", st.st_mode & 0o7777)
    os.replace(path + ".tmp", path)


def test_old_message_after_restart(relay):
    """A deferred message that has been queued for 200 s when the instance
    starts again: delay= shows its age (as a plain number), and with a
    lifetime of 100 s its next failure bounces it."""
    r = relay(params={"retry_schedule": "1h", "max_queue_lifetime": "1h"})
    r.rx.rcpt_default = BUSY
    q_ok = r.send(["ok@dest.test"])
    q_exp = r.send([A], subject="aged")
    wait_delivery(r.bw, q_ok, "ok@dest.test", "deferred")
    wait_delivery(r.bw, q_exp, A, "deferred")
    r.bw.stop()
    _age_message(r.bw, q_ok, 200)
    _age_message(r.bw, q_exp, 200)
    r.bw.set_params(max_queue_lifetime="100s", retry_schedule="1s")
    r.rx.rcpt_replies = {"ok@dest.test": "250 2.1.5 fine now"}
    mark = r.bw.log_mark()
    r.bw.start()
    line = wait_delivery(r.bw, q_ok, "ok@dest.test", "sent", start=mark)[0]
    (dsn,) = r.dsns(1)
    assert dsn.recipient(A)["action"] == "failed"
    assert "expired" in dsn.recipient(A).get("diagnostic-code", "") + dsn.text
    wait_removed(r.bw, q_exp, start=mark)
    wait_removed(r.bw, q_ok, start=mark)
    assert float(line["delay"]) >= 199 and float(line["delay"]) <= 215, line
    assert re.match(r"^\d+(\.\d+)?$", line["delay"]), "delay=%s is not a plain number: %s" % (line["delay"], line)
    a = line["delays"].split("/")[0]
    assert re.match(r"^\d+(\.\d+)?$", a) and 199 <= float(a) <= 215, line
