"""Outbound (issue 5 items 1 and 4): the mail exchangers of a domain as
`mailctl domain show` reports them, and IPv6 source addresses of virtual
gateways.

MX (item 4): the delivery agent tells qmgr (DELIVERY_MX) the hosts it
resolved for a (gateway, domain), in preference order, with their
addresses and which addresses it avoids for a while after a failure; the
JSON "mx" list is [{host, preference, addresses, avoided}], and the text
line carries one field mx=PREF:HOST[ADDR,...],... . A static route reports
its hosts with preference 0, in the route's order.

IPv6 (item 1): a gateway with source=::1 delivers to a receiver on [::1]
(routed there by smtp_routes) from ::1 with its own HELO; a gateway with an
IPv4 and an IPv6 source uses the source of each destination's family; a
gateway with only an IPv6 source cannot reach an IPv4 destination and says
why. These tests skip, saying why, when [::1] cannot be used here.

Receivers listen on 127.0.0.x and [::1] only, never on port 2024; every
wait is bounded."""

import socket

import pytest

from conftest import free_port, wait_until
from enginelib import domain_obj, engine, ready, send1, sink_factory, write_table  # noqa: F401
from relaylib import (dns_factory, free_port_on, relay, rx_factory, wait_delivery,  # noqa: F401
                      wait_removed)

ZONE = "mx6.test"


def zone(records):
    return {ZONE: {"soa": {"ttl": 300, "minimum": 60}, "records": records}}


def mx_of(bw, domain, vg="default", want=None, timeout=5.0):
    """The "mx" list of domain show --json; with want, wait until it is that."""
    def get():
        mx = domain_obj(bw, domain, vg)["mx"]
        return mx if want is None or mx == want else None
    try:
        return wait_until(get, timeout, 0.1, "mx of %s (vg %s)" % (domain, vg))
    except AssertionError:
        raise AssertionError("mx of %s (vg %s): %r, want %r" % (domain, vg, domain_obj(bw, domain, vg)["mx"], want))


def show_text(bw, domain):
    r = bw.mailctl("domain", "show", domain)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


@pytest.fixture
def mx_setup(relay, dns_factory, rx_factory):
    """make(records, listen) -> (Relay, {ip: Receiver}, port): MX by DNS,
    every host on the same port, smtp_remote_port."""
    def make(records, listen):
        port = free_port_on(["127.0.0.%d" % i for i in range(3, 8)])
        dns = dns_factory(zone(records))
        rxs = {ip: rx_factory(ip, port) for ip in listen}
        r = relay(params={"smtp_remote_port": str(port)}, dns=dns)
        for x in rxs.values():
            x.watch(r.bw)
        return r, rxs, port
    return make


# ---------------------------------------------------------------- MX (item 4)

def test_domain_show_lists_every_mx_in_preference_order(mx_setup):
    # Worst first in the answer: the order shown is the preference order,
    # equal preferences by name (they are tried in a random order).
    r, rxs, port = mx_setup({
        "three.mx6.test": {"MX": (300, ["20 c.mx6.test.", "10 b.mx6.test.", "10 a.mx6.test."])},
        "a.mx6.test": {"A": (300, ["127.0.0.3"])},
        "b.mx6.test": {"A": (300, ["127.0.0.5", "127.0.0.4"])},
        "c.mx6.test": {"A": (300, ["127.0.0.6"]), "AAAA": (300, ["::1"])},
    }, listen=("127.0.0.3", "127.0.0.4", "127.0.0.5"))
    qid = r.send(["u@three.mx6.test"])
    wait_delivery(r.bw, qid, "u@three.mx6.test", "sent")
    want = [
        {"host": "a.mx6.test", "preference": 10, "addresses": ["127.0.0.3"], "avoided": []},
        {"host": "b.mx6.test", "preference": 10, "addresses": ["127.0.0.4", "127.0.0.5"], "avoided": []},
        {"host": "c.mx6.test", "preference": 20, "addresses": ["127.0.0.6", "::1"], "avoided": []},
    ]
    mx = mx_of(r.bw, "three.mx6.test", want=want)
    assert [m["preference"] for m in mx] == sorted(m["preference"] for m in mx)
    text = show_text(r.bw, "three.mx6.test")
    assert " mx=10:a.mx6.test[127.0.0.3],10:b.mx6.test[127.0.0.4,127.0.0.5],20:c.mx6.test[127.0.0.6,::1]" in text, text
    wait_removed(r.bw, qid)


def test_failed_address_is_shown_avoided(mx_setup):
    r, rxs, port = mx_setup({
        "av.mx6.test": {"MX": (300, ["10 down.mx6.test.", "20 up.mx6.test."])},
        "down.mx6.test": {"A": (300, ["127.0.0.7"])},   # nothing listens there
        "up.mx6.test": {"A": (300, ["127.0.0.4"])},
    }, listen=("127.0.0.4",))
    qid = r.send(["u@av.mx6.test"])
    line = wait_delivery(r.bw, qid, "u@av.mx6.test", "sent")[0]
    assert line["relay"] == "up.mx6.test[127.0.0.4]:%d" % port
    mx = mx_of(r.bw, "av.mx6.test", want=[
        {"host": "down.mx6.test", "preference": 10, "addresses": ["127.0.0.7"], "avoided": ["127.0.0.7"]},
        {"host": "up.mx6.test", "preference": 20, "addresses": ["127.0.0.4"], "avoided": []},
    ])
    assert mx[0]["avoided"] == ["127.0.0.7"]
    assert "10:down.mx6.test[127.0.0.7(avoided)],20:up.mx6.test[127.0.0.4]" in show_text(r.bw, "av.mx6.test")


def test_static_route_reports_its_hosts_in_route_order(relay, rx_factory):
    a = rx_factory("127.0.0.4")
    b = rx_factory("127.0.0.3")
    r = relay(routes={"routed.test": "127.0.0.4:%d,127.0.0.3:%d" % (a.port, b.port)})
    a.watch(r.bw)
    qid = r.send(["u@routed.test"])
    wait_delivery(r.bw, qid, "u@routed.test", "sent")
    mx_of(r.bw, "routed.test", want=[
        {"host": "127.0.0.4", "preference": 0, "addresses": ["127.0.0.4"], "avoided": []},
        {"host": "127.0.0.3", "preference": 0, "addresses": ["127.0.0.3"], "avoided": []},
    ])
    # the route's own domain keeps its own hosts
    q2 = r.send(["v@dest.test"])
    r.rx.wait_messages(1)
    wait_delivery(r.bw, q2, "v@dest.test", "sent")
    mx_of(r.bw, "dest.test", want=[{"host": "127.0.0.2", "preference": 0, "addresses": ["127.0.0.2"], "avoided": []}])


# ---------------------------------------------------------------- IPv6 (item 1)

def _ipv6_problem():
    """None when a TCP socket can listen on [::1] here, else why not."""
    if not socket.has_ipv6:
        return "this Python has no IPv6 support"
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as e:
        return "no IPv6 sockets on this machine: %s" % e
    try:
        s.bind(("::1", 0))
        s.listen(1)
    except OSError as e:
        return "cannot listen on [::1] on this machine: %s" % e
    finally:
        s.close()
    return None


IPV6_PROBLEM = _ipv6_problem()
needs_ipv6 = pytest.mark.skipif(IPV6_PROBLEM is not None, reason="IPv6 loopback unavailable: %s" % IPV6_PROBLEM)


def free_port_v6():
    """A port free on [::1] (never 2024, never given twice by conftest)."""
    for _ in range(200):
        port = free_port()
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no port free on [::1]")


@needs_ipv6
def test_ipv6_source_address_and_helo(bw_factory, sink_factory):
    rx6 = sink_factory("::1", free_port_v6())
    bw = engine(bw_factory, [("v6.test", "[::1]:%d" % rx6.port)],
                gateways=["gw6 source=::1 helo=gw6.test.example"],
                classes=["recipient_domain:v6.test gw6", "* default"])
    rx6.watch(bw)
    bw.wait_for_log(r"breakwater/delivery\[\d+\]: virtual gateway gw6: 1 source address\(es\), helo gw6\.test\.example$", 5)
    qid = send1(bw, ["a@v6.test"])
    (m,) = rx6.wait_messages(1)
    assert (m.peer_ip, m.helo, m.rcpts) == ("::1", "gw6.test.example", ["a@v6.test"]), m
    line = wait_delivery(bw, qid, "a@v6.test", "sent")[0]
    assert line["relay"] == "::1[::1]:%d" % rx6.port, line
    mx_of(bw, "v6.test", "gw6", want=[{"host": "::1", "preference": 0, "addresses": ["::1"], "avoided": []}])


@needs_ipv6
def test_gateway_with_both_families_uses_the_destinations_family(bw_factory, sink_factory):
    rx4 = sink_factory("127.0.0.2")
    rx6 = sink_factory("::1", free_port_v6())
    bw = engine(bw_factory, [("v4.dual.test", "127.0.0.2:%d" % rx4.port), ("v6.dual.test", "[::1]:%d" % rx6.port)],
                gateways=["gw46 source=127.0.0.21,[::1] helo=gw46.test.example"],
                classes=["recipient_domain:v4.dual.test gw46", "recipient_domain:v6.dual.test gw46", "* default"])
    rx4.watch(bw)
    rx6.watch(bw)
    # Alternating, so that the gateway's source rotation meets both families.
    for k in range(3):
        send1(bw, ["a%d@v4.dual.test" % k])
        send1(bw, ["a%d@v6.dual.test" % k])
    got4 = rx4.wait_messages(3)
    got6 = rx6.wait_messages(3)
    assert {(m.peer_ip, m.helo) for m in got4} == {("127.0.0.21", "gw46.test.example")}, got4
    assert {(m.peer_ip, m.helo) for m in got6} == {("::1", "gw46.test.example")}, got6


@needs_ipv6
def test_ipv6_only_gateway_cannot_reach_an_ipv4_destination(bw_factory, sink_factory):
    rx4 = sink_factory("127.0.0.2")
    bw = engine(bw_factory, [("v4only.test", "127.0.0.2:%d" % rx4.port)],
                gateways=["gw6 source=::1 helo=gw6.test.example"],
                classes=["recipient_domain:v4only.test gw6", "* default"], params={"retry_schedule": "1h"})
    qid = send1(bw, ["a@v4only.test"])
    line = wait_delivery(bw, qid, "a@v4only.test", "deferred")[0]
    assert "virtual gateway gw6: no source address of this address family" in line["reply"], line
    assert rx4.connections() == [], "connected to an IPv4 address from an IPv6-only gateway"
