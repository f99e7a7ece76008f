"""Relay by DNS (no static route): MX preference, fallback to the next MX
(and the next address) when a host refuses connections, random choice among
equal preferences, implicit MX (A record only), null MX, NXDOMAIN, an MX
without address, temporary DNS failure, truncated UDP answers (TCP retry),
caching, and `mailctl dns lookup`. The test DNS server (dnsserver.py) serves
the zone on a loopback port; every MX host is a 127.0.0.x address and all of
them listen on the same port, smtp_remote_port."""

import re
import time

import pytest

from relaylib import (DEST, dns_factory, free_port_on, relay, rx_factory,  # noqa: F401
                      wait_delivery, wait_removed)

ZONE = "dns.test"
HOSTS = ["127.0.0.%d" % i for i in range(3, 8)]


def zone(records, minimum=60):
    return {ZONE: {"soa": {"ttl": 300, "minimum": minimum}, "records": records}}


@pytest.fixture
def mx_setup(relay, dns_factory, rx_factory):
    """make(records, listen=HOSTS subset, **relay kw) -> (Relay, dns, {ip: Receiver}, port)."""
    def make(records, listen=("127.0.0.3", "127.0.0.4"), params=None, **kw):
        port = free_port_on(HOSTS)
        dns = dns_factory(zone(records))
        rxs = {ip: rx_factory(ip, port) for ip in listen}
        p = {"smtp_remote_port": str(port)}
        p.update(params or {})
        r = relay(params=p, dns=dns, **kw)
        for x in rxs.values():
            x.watch(r.bw)
        return r, dns, rxs, port
    return make


def test_mx_preference(mx_setup):
    # Listed worst first: the order of the answer must not matter.
    r, dns, rxs, port = mx_setup({
        "pref.dns.test": {"MX": (300, ["20 backup.dns.test.", "10 primary.dns.test."])},
        "primary.dns.test": {"A": (300, ["127.0.0.3"])},
        "backup.dns.test": {"A": (300, ["127.0.0.4"])},
    })
    qids = [r.send(["u%d@pref.dns.test" % i]) for i in range(3)]
    got = rxs["127.0.0.3"].wait_messages(3)
    assert sorted(m.rcpt_tos[0] for m in got) == ["u0@pref.dns.test", "u1@pref.dns.test", "u2@pref.dns.test"]
    assert rxs["127.0.0.4"].snapshot() == [], "the backup MX got mail while the primary was up"
    for qid in qids:
        line = wait_delivery(r.bw, qid, None, "sent")[0]
        assert line["relay"] == "primary.dns.test[127.0.0.3]:%d" % port
        wait_removed(r.bw, qid)


def test_mx_fallback_when_first_refuses(mx_setup):
    r, dns, rxs, port = mx_setup({
        "fb.dns.test": {"MX": (300, ["10 down.dns.test.", "20 up.dns.test."])},
        "down.dns.test": {"A": (300, ["127.0.0.5"])},   # nothing listens there
        "up.dns.test": {"A": (300, ["127.0.0.4"])},
    }, listen=("127.0.0.4",))
    mark = r.bw.log_mark()
    qid = r.send(["a@fb.dns.test", "b@fb.dns.test"])
    (m,) = rxs["127.0.0.4"].wait_messages(1)
    assert sorted(m.rcpt_tos) == ["a@fb.dns.test", "b@fb.dns.test"]
    for rc in ("a@fb.dns.test", "b@fb.dns.test"):
        line = wait_delivery(r.bw, qid, rc, "sent", start=mark)[0]
        assert line["relay"] == "up.dns.test[127.0.0.4]:%d" % port
    r.bw.wait_for_log(r"%s: connect to down\.dns\.test\[127\.0\.0\.5\]:%d: Connection refused" % (qid, port), 3, mark)
    wait_removed(r.bw, qid)


def test_next_address_of_same_mx(mx_setup):
    r, dns, rxs, port = mx_setup({
        "multi.dns.test": {"MX": (300, ["10 mx.multi.dns.test."])},
        "mx.multi.dns.test": {"A": (300, ["127.0.0.6", "127.0.0.3"])},
    }, listen=("127.0.0.3",))
    qid = r.send(["a@multi.dns.test"])
    rxs["127.0.0.3"].wait_messages(1)
    line = wait_delivery(r.bw, qid, "a@multi.dns.test", "sent")[0]
    assert line["relay"] == "mx.multi.dns.test[127.0.0.3]:%d" % port
    wait_removed(r.bw, qid)


def test_all_mx_down_defers_then_delivers(mx_setup, rx_factory):
    r, dns, rxs, port = mx_setup({
        "down.dns.test": {"MX": (300, ["10 a.down.dns.test.", "20 b.down.dns.test."])},
        "a.down.dns.test": {"A": (300, ["127.0.0.6"])},
        "b.down.dns.test": {"A": (300, ["127.0.0.7"])},
    }, listen=(), params={"retry_schedule": "1h"})
    qid = r.send(["a@down.dns.test"])
    line = wait_delivery(r.bw, qid, "a@down.dns.test", "deferred")[0]
    assert line["dsn"].startswith("4."), line
    assert "Connection refused" in line["reply"], line
    assert r.bw.read_queued(qid).recipients == [("-", "a@down.dns.test")]
    late = rx_factory("127.0.0.7", port).watch(r.bw)
    assert r.bw.mailctl("flush").returncode == 0
    late.wait_messages(1)
    line = wait_delivery(r.bw, qid, "a@down.dns.test", "sent")[0]
    assert line["relay"] == "b.down.dns.test[127.0.0.7]:%d" % port
    wait_removed(r.bw, qid)


def test_equal_preference_spreads(mx_setup):
    # One domain each: a connection kept open for the next message of the
    # same domain would otherwise decide where everything goes.
    n = 16
    records = {"one.dns.test": {"A": (300, ["127.0.0.3"])}, "two.dns.test": {"A": (300, ["127.0.0.4"])}}
    for i in range(n):
        records["eq%d.dns.test" % i] = {"MX": (300, ["10 one.dns.test.", "10 two.dns.test."])}
    r, dns, rxs, port = mx_setup(records)
    qids = [r.send(["u@eq%d.dns.test" % i]) for i in range(n)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(rxs["127.0.0.3"].snapshot()) + len(rxs["127.0.0.4"].snapshot()) >= n:
            break
        time.sleep(0.1)
    a, b = len(rxs["127.0.0.3"].snapshot()), len(rxs["127.0.0.4"].snapshot())
    assert a + b == n, (a, b)
    # Random among equal preferences: all 16 on one host has odds 2^-15.
    assert a > 0 and b > 0, "all %d messages went to one of two equal-preference MX hosts (%d, %d)" % (n, a, b)
    for qid in qids:
        wait_removed(r.bw, qid)


def test_implicit_mx(mx_setup):
    r, dns, rxs, port = mx_setup({
        "implicit.dns.test": {"A": (300, ["127.0.0.3"])},
    }, listen=("127.0.0.3",))
    qid = r.send(["a@implicit.dns.test"])
    (m,) = rxs["127.0.0.3"].wait_messages(1)
    assert m.rcpt_tos == ["a@implicit.dns.test"]
    line = wait_delivery(r.bw, qid, "a@implicit.dns.test", "sent")[0]
    assert line["relay"] == "implicit.dns.test[127.0.0.3]:%d" % port
    assert dns.count("implicit.dns.test", "MX") >= 1
    wait_removed(r.bw, qid)


def test_null_mx_bounces(mx_setup):
    r, dns, rxs, port = mx_setup({
        "nullmx.dns.test": {"MX": (300, ["0 ."]), "A": (300, ["127.0.0.3"])},
    }, listen=("127.0.0.3",))
    qid = r.send(["nobody@nullmx.dns.test"], subject="to a null MX")
    line = wait_delivery(r.bw, qid, "nobody@nullmx.dns.test", "bounced")[0]
    assert line["dsn"] in ("5.1.10", "5.1.2"), line
    assert line["relay"] == "none", line
    (dsn,) = r.dsns(1)
    rc = dsn.recipient("nobody@nullmx.dns.test")
    assert rc["action"] == "failed"
    assert rc["status"] in ("5.1.10", "5.1.2"), rc
    assert "null MX" in rc.get("diagnostic-code", "") or "does not accept mail" in rc.get("diagnostic-code", ""), rc
    assert "Subject: to a null MX" in dsn.headers
    assert rxs["127.0.0.3"].snapshot() == [], "mail went to the A record of a null-MX domain"
    wait_removed(r.bw, qid)


def test_nxdomain_bounces(mx_setup):
    r, dns, rxs, port = mx_setup({}, listen=())
    qid = r.send(["someone@nowhere.dns.test"], subject="to nowhere")
    line = wait_delivery(r.bw, qid, "someone@nowhere.dns.test", "bounced")[0]
    assert line["dsn"] == "5.1.2", line
    (dsn,) = r.dsns(1)
    rc = dsn.recipient("someone@nowhere.dns.test")
    assert rc["action"] == "failed" and rc["status"] == "5.1.2", rc
    assert dsn.per_message.get("x-breakwater-queue-id") == qid or qid in dsn.text
    assert "Subject: to nowhere" in dsn.headers
    wait_removed(r.bw, qid)


def test_mx_host_without_address_bounces(mx_setup):
    r, dns, rxs, port = mx_setup({
        "noaddr.dns.test": {"MX": (300, ["10 ghost.dns.test."])},
    }, listen=())
    qid = r.send(["a@noaddr.dns.test"])
    line = wait_delivery(r.bw, qid, "a@noaddr.dns.test", "bounced")[0]
    assert line["dsn"] == "5.1.2", line
    (dsn,) = r.dsns(1)
    assert dsn.recipient("a@noaddr.dns.test")["status"] == "5.1.2"


def test_dns_servfail_defers(mx_setup):
    r, dns, rxs, port = mx_setup({
        "flaky.dns.test": {"MX": (300, ["10 mx.flaky.dns.test."])},
        "mx.flaky.dns.test": {"A": (300, ["127.0.0.3"])},
    }, listen=("127.0.0.3",), params={"retry_schedule": "1h"})
    dns.servfail = True
    qid = r.send(["a@flaky.dns.test"])
    line = wait_delivery(r.bw, qid, "a@flaky.dns.test", "deferred", timeout=20)[0]
    assert line["dsn"].startswith("4."), line
    assert r.brx.quiet(0.3) == [], "a temporary DNS failure made a bounce"
    dns.servfail = False
    assert r.bw.mailctl("flush", "flaky.dns.test").returncode == 0
    rxs["127.0.0.3"].wait_messages(1)
    wait_delivery(r.bw, qid, "a@flaky.dns.test", "sent")
    wait_removed(r.bw, qid)


def test_truncated_udp_answer_retried_over_tcp(mx_setup):
    r, dns, rxs, port = mx_setup({
        "tc.dns.test": {"MX": (300, ["10 mx.tc.dns.test."])},
        "mx.tc.dns.test": {"A": (300, ["127.0.0.3"])},
    }, listen=("127.0.0.3",))
    dns.truncate_udp = True
    qid = r.send(["a@tc.dns.test"])
    rxs["127.0.0.3"].wait_messages(1)
    wait_delivery(r.bw, qid, "a@tc.dns.test", "sent")
    assert dns.count("tc.dns.test", "MX", "tcp") >= 1, dns.queries


def test_positive_answers_cached(mx_setup):
    r, dns, rxs, port = mx_setup({
        "cached.dns.test": {"MX": (300, ["10 mx.cached.dns.test."])},
        "mx.cached.dns.test": {"A": (300, ["127.0.0.3"])},
    }, listen=("127.0.0.3",))
    q1 = r.send(["a@cached.dns.test"])
    rxs["127.0.0.3"].wait_messages(1)
    wait_removed(r.bw, q1)
    q2 = r.send(["b@cached.dns.test"])
    rxs["127.0.0.3"].wait_messages(2)
    wait_removed(r.bw, q2)
    assert dns.count("cached.dns.test", "MX") == 1, dns.queries
    assert dns.count("mx.cached.dns.test", "A") == 1, dns.queries


def test_mailctl_dns_lookup(mx_setup):
    r, dns, rxs, port = mx_setup({
        "look.dns.test": {"MX": (300, ["20 b.look.dns.test.", "10 a.look.dns.test."])},
        "a.look.dns.test": {"A": (300, ["127.0.0.3"])},
    }, listen=())
    res = r.bw.mailctl("dns", "lookup", "look.dns.test", "MX")
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert re.search(r"\b10 a\.look\.dns\.test\.?", res.stdout), res.stdout
    assert re.search(r"\b20 b\.look\.dns\.test\.?", res.stdout), res.stdout
    res = r.bw.mailctl("dns", "lookup", "a.look.dns.test", "A")
    assert res.returncode == 0 and "127.0.0.3" in res.stdout, (res.stdout, res.stderr)
    res = r.bw.mailctl("dns", "lookup", "missing.dns.test", "MX")
    assert "NXDOMAIN" in res.stdout + res.stderr, (res.returncode, res.stdout, res.stderr)


def test_static_route_needs_no_dns(relay, dns_factory):
    dns = dns_factory(zone({}))
    r = relay(dns=dns)
    qid = r.send(["a@" + DEST])
    r.rx.wait_messages(1)
    wait_removed(r.bw, qid)
    assert not any(n.endswith(DEST) for n, _, _ in dns.queries), dns.queries
