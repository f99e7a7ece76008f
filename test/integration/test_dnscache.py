"""dnscache: what `mailctl dns lookup` shows of the running daemon, answered
by the dnslib test server of dnsserver.py on a free loopback port: MX, A,
AAAA, PTR, TXT answers; NXDOMAIN and NODATA with the RFC 2308 TTL; answers
served from the cache (the upstream query counter does not move) until their
TTL runs out; negative caching; a truncated UDP answer asked again over TCP;
concurrent identical lookups collapsed into one upstream query; SERVFAIL,
timeout and bad names; a dead first server; kill -9 of dnscache, after which
the master restarts it and lookups work again."""

import re
import time

import pytest

from conftest import Breakwater, wait_until
from dnsserver import DNSServer, free_udp_tcp_port

ZONES = {
    "example.test": {
        "soa": {"ttl": 300, "minimum": 45},
        "records": {
            "example.test": {
                "MX": (300, ["20 mx2.example.test.", "10 mx1.example.test."]),
                "A": (200, ["192.0.2.1", "192.0.2.2"]),
                "AAAA": (100, ["2001:db8::1"]),
                "TXT": (60, ['"v=spf1 " "ip4:192.0.2.0/24 -all"']),
            },
            "mx1.example.test": {"A": (300, ["192.0.2.10"])},
            "www.example.test": {"CNAME": (50, ["example.test."])},
            "null.example.test": {"MX": (300, ["0 ."])},
            "cached.example.test": {"MX": (300, ["10 mx1.example.test."])},
            "short.example.test": {"A": (1, ["192.0.2.77"])},
            "big.example.test": {"TXT": (300, ['"%s"' % ("%02d" % i * 100) for i in range(12)])},
            "collapse.example.test": {"MX": (300, ["10 mx1.example.test."])},
            "restart.example.test": {"A": (300, ["192.0.2.99"])},
            "dead.example.test": {"A": (300, ["192.0.2.98"])},
        },
    },
    "shortneg.test": {"soa": {"ttl": 300, "minimum": 1}, "records": {"shortneg.test": {"A": (300, ["192.0.2.3"])}}},
    "2.0.192.in-addr.arpa": {"records": {"1.2.0.192.in-addr.arpa": {"PTR": (3600, ["mx1.example.test."])}}},
}

LINE_RE = re.compile(r"^rcode=(\w+) ttl=(\d+) records=(\d+)$")


class Lookup:
    def __init__(self, r):
        self.rc, self.stdout, self.stderr = r.returncode, r.stdout, r.stderr
        lines = r.stdout.splitlines()
        m = LINE_RE.match(lines[0]) if lines else None
        assert m, "mailctl dns printed no rcode line (exit %d): %r %r" % (r.returncode, r.stdout, r.stderr)
        self.rcode, self.ttl = m.group(1), int(m.group(2))
        self.records = lines[1:]
        assert len(self.records) == int(m.group(3)), "record count mismatch: %r" % r.stdout

    def __repr__(self):
        return "Lookup(rc=%d, %s ttl=%d %r, stderr %r)" % (self.rc, self.rcode, self.ttl, self.records, self.stderr)


def lookup(bw, name, rtype=None, timeout=30):
    args = ["dns", "lookup", name] + ([rtype] if rtype else [])
    return Lookup(bw.mailctl(*args, timeout=timeout))


def wait_dnscache(bw, timeout=15):
    """Poll until dnscache answers (it binds its socket after the master's start)."""
    def ok():
        r = bw.mailctl("dns", "lookup", "example.test", "A")
        return r.returncode == 0 and r.stdout.startswith("rcode=OK")
    wait_until(ok, timeout, 0.1, "dnscache to answer")


@pytest.fixture(scope="module")
def dns():
    server = DNSServer(ZONES)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def bw(dns):
    inst = Breakwater({"dns_servers": "127.0.0.1:%d" % dns.port})
    problems = []
    try:
        inst.start()
        wait_dnscache(inst)
        yield inst
    finally:
        problems = inst.cleanup()
    if problems:
        pytest.fail("instance teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _reset_switches(dns):
    dns.truncate_udp = dns.drop = dns.servfail = False
    dns.delay = 0.0
    yield
    dns.truncate_udp = dns.drop = dns.servfail = False
    dns.delay = 0.0


# ---------------------------------------------------------------- answers

def test_mx_default_type_in_server_order(bw):
    r = lookup(bw, "example.test")
    assert (r.rc, r.rcode, r.ttl) == (0, "OK", 300), r
    assert r.records == ["20 mx2.example.test", "10 mx1.example.test"]
    assert lookup(bw, "Example.TEST.", "mx").records == r.records


def test_a_and_aaaa(bw):
    a = lookup(bw, "example.test", "A")
    assert (a.rc, a.rcode, a.records) == (0, "OK", ["192.0.2.1", "192.0.2.2"]), a
    assert 0 < a.ttl <= 200
    aaaa = lookup(bw, "example.test", "AAAA")
    assert (aaaa.rcode, aaaa.records) == ("OK", ["2001:db8::1"]), aaaa
    assert 0 < aaaa.ttl <= 100


def test_txt_ptr_cname_null_mx(bw):
    txt = lookup(bw, "example.test", "TXT")
    assert txt.records == ["v=spf1 ip4:192.0.2.0/24 -all"], txt
    ptr = lookup(bw, "1.2.0.192.in-addr.arpa", "PTR")
    assert (ptr.rcode, ptr.records, ptr.ttl) == ("OK", ["mx1.example.test"], 3600), ptr
    cname = lookup(bw, "www.example.test", "A")
    assert cname.records == ["192.0.2.1", "192.0.2.2"] and 0 < cname.ttl <= 50, cname
    null = lookup(bw, "null.example.test", "MX")
    assert null.records == ["0 ."], null


def test_nxdomain_with_soa_minimum(bw, dns):
    r = lookup(bw, "nosuch.example.test", "MX")
    # RFC 2308: min(SOA TTL 300, SOA MINIMUM 45)
    assert (r.rc, r.rcode, r.records, r.ttl) == (0, "NXDOMAIN", [], 45), r
    assert dns.count("nosuch.example.test", "MX") == 1


def test_nodata(bw):
    r = lookup(bw, "mx1.example.test", "MX")
    assert (r.rc, r.rcode, r.records, r.ttl) == (0, "OK", [], 45), r


# ---------------------------------------------------------------- cache

def test_second_lookup_from_cache(bw, dns):
    first = lookup(bw, "cached.example.test", "MX")
    assert first.rcode == "OK" and first.ttl == 300
    assert dns.count("cached.example.test", "MX") == 1
    for _ in range(3):
        again = lookup(bw, "CACHED.example.test.", "MX")
        assert again.records == first.records and again.ttl <= first.ttl, again
    assert dns.count("cached.example.test", "MX") == 1, "cached answer was asked upstream again: %r" % dns.queries


def test_ttl_expiry(bw, dns):
    first = lookup(bw, "short.example.test", "A")
    assert (first.rcode, first.records) == ("OK", ["192.0.2.77"]), first
    assert first.ttl <= 1
    n = dns.count("short.example.test", "A")
    assert n == 1
    time.sleep(2.2)
    again = lookup(bw, "short.example.test", "A")
    assert again.records == ["192.0.2.77"], again
    assert dns.count("short.example.test", "A") == n + 1, "expired answer served from the cache"


def test_negative_cache(bw, dns):
    for _ in range(3):
        r = lookup(bw, "neg.example.test", "A")
        assert (r.rcode, r.rc) == ("NXDOMAIN", 0), r
    assert dns.count("neg.example.test", "A") == 1, "NXDOMAIN not cached: %r" % dns.queries
    for _ in range(2):
        r = lookup(bw, "example.test", "PTR")
        assert (r.rcode, r.records) == ("OK", []), r
    assert dns.count("example.test", "PTR") == 1, "NODATA not cached"
    # A negative answer expires with the SOA minimum (1 s in this zone).
    r = lookup(bw, "gone.shortneg.test", "A")
    assert (r.rcode, r.ttl) == ("NXDOMAIN", 1), r
    time.sleep(2.2)
    r = lookup(bw, "gone.shortneg.test", "A")
    assert r.rcode == "NXDOMAIN", r
    assert dns.count("gone.shortneg.test", "A") == 2


# ---------------------------------------------------------------- transport

def test_truncated_udp_retried_over_tcp(bw, dns):
    dns.truncate_udp = True
    r = lookup(bw, "big.example.test", "TXT")
    assert (r.rc, r.rcode) == (0, "OK"), r
    assert r.records == [("%02d" % i) * 100 for i in range(12)]
    assert dns.count("big.example.test", "TXT", "udp") == 1
    assert dns.count("big.example.test", "TXT", "tcp") == 1


def test_concurrent_lookups_collapsed(bw, dns):
    dns.delay = 1.0  # every lookup arrives while the first is still upstream
    procs = [bw.mailctl_async("dns", "lookup", "collapse.example.test", "MX") for _ in range(6)]
    results = [Lookup(p.wait(30)) for p in procs]
    for r in results:
        assert (r.rc, r.rcode, r.records) == (0, "OK", ["10 mx1.example.test"]), r
    assert dns.count("collapse.example.test", "MX") == 1, "identical lookups not collapsed: %r" % dns.queries


# ---------------------------------------------------------------- failures

def test_servfail_when_every_server_fails(bw, dns):
    r = lookup(bw, "outside.invalid-zone", "A")
    assert (r.rc, r.rcode, r.records) == (1, "SERVFAIL", []), r
    assert "SERVFAIL" in r.stderr
    assert dns.count("outside.invalid-zone", "A") == 2  # one server, tried twice
    again = lookup(bw, "outside.invalid-zone", "A")
    assert again.rcode == "SERVFAIL"
    assert dns.count("outside.invalid-zone", "A") == 4, "a failure was cached"


def test_upstream_timeout(bw, dns):
    dns.drop = True
    start = time.monotonic()
    r = lookup(bw, "silent.example.test", "A")
    took = time.monotonic() - start
    assert (r.rc, r.rcode) == (1, "TIMEOUT"), r
    assert took < 10, "a timed-out lookup took %.1fs" % took
    bw.wait_for_log(r"breakwater/dnscache\[\d+\]: warning: silent\.example\.test A: no answer in time", 3)


@pytest.mark.parametrize("name,rtype", [("bad..name", "A"), ("exa mple.test", "A"), ("x" * 300, "A"),
                                        ("example.test", "SRV")])
def test_bad_names(bw, dns, name, rtype):
    r = lookup(bw, name, rtype)
    assert (r.rc, r.rcode) == (1, "BADNAME"), r
    assert "BADNAME" in r.stderr


def test_usage_and_not_running(bw_factory):
    inst = bw_factory(start=False)
    r = inst.mailctl("dns", "lookup", "example.test")
    assert r.returncode == 1 and "dnscache is not reachable" in r.stderr, r
    r = inst.mailctl("dns")
    assert r.returncode == 2 and "usage" in r.stderr


# ---------------------------------------------------------------- servers

def test_dead_first_server(bw_factory, dns):
    dead = free_udp_tcp_port()
    inst = bw_factory({"dns_servers": "127.0.0.1:%d 127.0.0.1:%d" % (dead, dns.port)})
    wait_dnscache(inst)
    start = time.monotonic()
    r = lookup(inst, "dead.example.test", "A")
    assert (r.rc, r.rcode, r.records) == (0, "OK", ["192.0.2.98"]), r
    assert time.monotonic() - start < 5
    inst.wait_for_log(r"breakwater/dnscache\[\d+\]: now asking server 127\.0\.0\.1:%d first" % dns.port, 3)


def test_kill9_restarted_by_master(bw_factory, dns):
    inst = bw_factory({"dns_servers": "127.0.0.1:%d" % dns.port})
    inst.allow_daemon_exits = True
    wait_dnscache(inst)

    def running_pid():
        for d in inst.daemons("dnscache"):
            if d.get("state") == "running" and d.get("pid", 0) > 0:
                return d["pid"]
        return None
    old = wait_until(running_pid, 10, 0.1, "dnscache to run")
    assert lookup(inst, "restart.example.test", "A").records == ["192.0.2.99"]
    inst.kill(old)
    new = wait_until(lambda: (running_pid() or old) != old and running_pid(), 15, 0.1, "dnscache to be restarted")
    assert new != old
    wait_dnscache(inst)
    # A fresh process: the cache is empty, the answer comes from upstream again.
    before = dns.count("restart.example.test", "A")
    r = lookup(inst, "restart.example.test", "A")
    assert (r.rc, r.records) == (0, ["192.0.2.99"]), r
    assert dns.count("restart.example.test", "A") == before + 1


def test_reload_switches_servers_and_flushes(bw_factory, dns):
    other_zones = {"example.test": {"records": {"dead.example.test": {"A": (300, ["198.51.100.1"])}}}}
    with DNSServer(other_zones) as other:
        inst = bw_factory({"dns_servers": "127.0.0.1:%d" % dns.port})
        wait_dnscache(inst)
        assert lookup(inst, "dead.example.test", "A").records == ["192.0.2.98"]
        mark = inst.log_mark()
        inst.set_params(dns_servers="127.0.0.1:%d" % other.port)
        inst.reload()
        inst.wait_for_log(r"breakwater/dnscache\[\d+\]: reloaded, cache flushed: dns servers 127\.0\.0\.1:%d$"
                          % other.port, 5, mark)
        r = lookup(inst, "dead.example.test", "A")
        assert (r.rc, r.records) == (0, ["198.51.100.1"]), r
        assert other.count("dead.example.test", "A") == 1
