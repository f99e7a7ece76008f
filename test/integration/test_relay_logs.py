"""Log lines of the relay path (DESIGN §6): qmgr's `from=... (queue active)`,
one delivery line per recipient and attempt with to=, relay=, delay=,
delays=a/b/c/d, dsn=, status=sent|deferred|bounced (reply), `ID: removed`,
the DSN notice, and pflogsumm --syslog_name=breakwater counting received,
delivered, deferred and bounced right."""

import os
import re
import shutil
import subprocess

import pytest

from relaylib import (SENDER, bounce_id, delivery_format_problems, delivery_lines, relay, rx_factory,  # noqa: F401
                      wait_delivery, wait_removed)

PFLOGSUMM = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"


def _scenario(r):
    """m1: two recipients sent; m2: deferred, then sent after flush;
    m3: bounced (550), its DSN sent. Returns (m1, m2, m3, dsn id)."""
    r.rx.rcpt_replies = {"later@dest.test": "451 4.3.0 later please",
                         "gone@dest.test": "550 5.1.1 <gone@dest.test>: no such user"}
    m1 = r.send(["one@dest.test", "two@dest.test"], subject="one")
    m2 = r.send(["later@dest.test"], subject="two")
    m3 = r.send(["gone@dest.test"], subject="three")
    wait_delivery(r.bw, m1, "one@dest.test", "sent")
    wait_delivery(r.bw, m1, "two@dest.test", "sent")
    wait_delivery(r.bw, m2, "later@dest.test", "deferred")
    wait_delivery(r.bw, m3, "gone@dest.test", "bounced")
    d = bounce_id(r.bw, m3)
    wait_delivery(r.bw, d, SENDER, "sent")
    r.rx.rcpt_replies = {}
    assert r.bw.mailctl("flush").returncode == 0
    wait_delivery(r.bw, m2, "later@dest.test", "sent")
    for q in (m1, m2, m3, d):
        wait_removed(r.bw, q)
    return m1, m2, m3, d


def test_log_lines(relay):
    r = relay(params={"retry_schedule": "1h"})
    m1, m2, m3, d = _scenario(r)
    log = r.bw.log()
    for q, n in ((m1, 2), (m2, 1), (m3, 1)):
        assert re.search(r"breakwater/qmgr\[\d+\]: %s: from=<%s>, size=\d+, nrcpt=%d \(queue active\)$"
                         % (q, re.escape(SENDER), n), log, re.M), q
    assert re.search(r"breakwater/qmgr\[\d+\]: %s: from=<>, size=\d+, nrcpt=1 \(queue active\)$" % d, log, re.M)
    for q in (m1, m2, m3, d):
        assert len(re.findall(r"breakwater/qmgr\[\d+\]: %s: removed$" % q, log, re.M)) == 1, q
    assert re.search(r"breakwater/qmgr\[\d+\]: %s: sender non-delivery notification: %s$" % (m3, d), log, re.M)
    sent = delivery_lines(r.bw, m1, "one@dest.test", "sent")[0]
    assert sent["relay"] == "127.0.0.2[127.0.0.2]:%d" % r.rx.port
    assert sent["dsn"] == "2.0.0" and sent["reply"].startswith("250 ")
    lines = delivery_lines(r.bw)
    assert len(lines) == 6, lines  # one, two, later (x2), gone, the DSN
    for x in lines:
        assert float(x["delay"]) >= 0, x
        parts = x["delays"].split("/")
        assert len(parts) == 4 and all(float(p) >= 0 for p in parts), x
        assert float(x["delay"]) + 0.01 >= max(float(p) for p in parts), x
    d2 = delivery_lines(r.bw, m2, "later@dest.test")
    assert [x["status"] for x in d2] == ["deferred", "sent"], d2
    assert d2[0]["dsn"] == "4.3.0" and d2[0]["reply"] == "451 4.3.0 later please"
    b = delivery_lines(r.bw, m3, "gone@dest.test")
    assert [(x["status"], x["dsn"]) for x in b] == [("bounced", "5.1.1")], b
    assert b[0]["reply"] == "550 5.1.1 <gone@dest.test>: no such user"


def test_delivery_line_format(relay):
    """Every delivery line has Postfix's exact shape: plain decimal numbers
    (no exponents) in delay= and delays=."""
    r = relay(params={"retry_schedule": "1h"})
    _scenario(r)
    assert delivery_format_problems(r.bw) == []


@pytest.mark.skipif(not os.access(PFLOGSUMM, os.X_OK), reason="pflogsumm is not installed")
def test_pflogsumm_counts(relay):
    r = relay(params={"retry_schedule": "1h"})
    _scenario(r)
    res = subprocess.run(["perl", PFLOGSUMM, "--syslog_name=breakwater", "--no_no_msg_size", r.bw.log_file],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stdout

    def count(label):
        m = re.search(r"^\s*(\d+)\s+%s\b" % label, out, re.M)
        assert m, "no %r in pflogsumm output:\n%s" % (label, out[:3000])
        return int(m.group(1))
    # received: the three messages from the client (the DSN is made inside)
    assert count("received") == 3, out[:2000]
    # delivered: one, two, later, and the DSN
    assert count("delivered") == 4, out[:2000]
    assert count("deferred") == 1, out[:2000]
    assert re.search(r"deferred\s+\(1\s+deferrals?\)", out), out[:2000]
    assert count("bounced") == 1, out[:2000]
    assert count("rejected") == 0, out[:2000]
