"""Outbound (issue 5): virtual gateways (classification by sender, sender
domain, recipient domain, client network and listener, first match wins;
each gateway's mail leaves from its own source address with its own HELO,
from its own delivery process; bounces on bounce_virtual_gateway; one
gateway blocked by the receiver while another keeps delivering to the same
domain; an unknown gateway in a table is a config error naming file and
line), connection management (many messages per connection with RSET
between, idle connections closed with QUIT, max_messages_per_connection,
max_connections never exceeded), the good-neighbour concurrency (raises
while the aggregate rate grows, holds when it flattens, backs off on 421,
good_neighbor=no) and domain debug logs.

Receivers are enginelib.Sink servers on 127.0.0.x that record the peer
address, HELO and transactions of every connection and how many
connections were open at once."""

import json
import os
import re
import time

import pytest

from conftest import wait_until
from enginelib import (SENDER, concurrency_changes, domain_obj, domain_objs, down_re, engine, inject,  # noqa: F401
                       queue_ids, ready, send1, send_from, sink_factory, sink_qids, up_re, write_table)
from relaylib import DSN, wait_delivery

GATEWAYS = ["gw1 source=127.0.0.11 helo=gw1.test.example",
            "gw2 source=127.0.0.12 helo=gw2.test.example"]
ONE = "one@client.test.example"     # -> gw1 (sender:)
TWO = "two@gw2.example"             # -> gw2 (sender_domain:)
CLASSES = ["sender:%s gw1" % ONE, "sender_domain:gw2.example gw2", "* default"]


def _route(sink, *domains):
    return [(d, "%s:%d" % (sink.host, sink.port)) for d in domains]


def _vg_of(bw, qid):
    m = bw.wait_for_log(r"breakwater/smtpd\[\d+\]: %s: vg=(\S+)$" % qid, 5)
    return m.group(1)


# ---------------------------------------------------------------- virtual gateways

def test_each_gateway_delivers_from_its_own_address_and_helo(bw_factory, sink_factory):
    rx = sink_factory("127.0.0.2")
    gateways = GATEWAYS + ["gw3 source=127.0.0.13 helo=gw3.test.example"]
    bw = engine(bw_factory, _route(rx, "dest.test", "r3.test"), gateways=gateways, start=False, listen_ports=2)
    port2 = bw.ports[1]
    classes = ["sender:%s gw1" % ONE,
               "sender_domain:client.test.example gw2",      # ONE matched the line above first
               "recipient_domain:r3.test gw3",
               "client:127.0.0.5/32 gw1",
               "listener:127.0.0.1:%d gw3" % port2,
               "* default"]
    bw.set_params(virtual_gateway_classes=write_table(bw, "virtual_gateway_classes", classes))
    bw.start()
    ready(bw, ["gw1", "gw2", "gw3"])
    rx.watch(bw)
    other = "s@else.example"
    cases = [  # (qid, expected gateway, expected recipient)
        (send1(bw, ["a@dest.test"], sender=ONE), "gw1", "a@dest.test"),
        (send1(bw, ["b@dest.test"], sender="x@client.test.example"), "gw2", "b@dest.test"),
        (send1(bw, ["c@r3.test"], sender=other), "gw3", "c@r3.test"),
        (send_from(bw, "127.0.0.5", ["d@dest.test"], sender=other), "gw1", "d@dest.test"),
        (send1(bw, ["e@dest.test"], sender=other, port=port2), "gw3", "e@dest.test"),
        (send1(bw, ["f@dest.test"], sender=other), "default", "f@dest.test"),
    ]
    source = {"gw1": ("127.0.0.11", "gw1.test.example"), "gw2": ("127.0.0.12", "gw2.test.example"),
              "gw3": ("127.0.0.13", "gw3.test.example"), "default": ("127.0.0.1", "mx.test.example")}
    got = {m.rcpts[0]: m for m in rx.wait_messages(len(cases), 20)}
    for qid, vg, rcpt in cases:
        assert _vg_of(bw, qid) == vg, "%s to %s: classified %s, want %s" % (qid, rcpt, _vg_of(bw, qid), vg)
        m = got[rcpt]
        assert (m.peer_ip, m.helo) == source[vg], "%s (vg %s) arrived from %s with HELO %s" % (
            rcpt, vg, m.peer_ip, m.helo)
        assert sink_qids([m]) == [qid]
    # one delivery process per gateway
    agents = [d for d in bw.status_json()["daemons"] if d["name"] == "delivery"]
    assert sorted(d["instance"] for d in agents) == ["default", "gw1", "gw2", "gw3"], agents
    assert len({d["pid"] for d in agents}) == 4 and all(d["state"] == "running" for d in agents), agents
    for g in ("gw1", "gw2", "gw3"):
        bw.wait_for_log(r"breakwater/delivery\[\d+\]: virtual gateway %s: 1 source address\(es\), helo %s\.test\.example$"
                        % (g, g), 2)
    # and one queue per (gateway, domain)
    vgs = sorted(o["vg"] for o in domain_objs(bw, "dest.test"))
    assert vgs == ["default", "gw1", "gw2", "gw3"], vgs


def test_bounces_go_out_on_the_bounce_gateway(bw_factory, sink_factory):
    rx, brx = sink_factory("127.0.0.2"), sink_factory("127.0.0.9")
    bw = engine(bw_factory, _route(rx, "dest.test") + _route(brx, "client.test.example"),
                gateways=GATEWAYS, classes=CLASSES, params={"bounce_virtual_gateway": "gw2"})
    brx.watch(bw)
    rx.rcpt_default = "550 5.1.1 <x>: no such user"
    q1 = send1(bw, ["nobody@dest.test"], sender=ONE)
    assert _vg_of(bw, q1) == "gw1"
    m = rx.wait_conns(1)[0]
    assert m.peer_ip == "127.0.0.11", m
    b = brx.wait_messages(1, 20)[0]
    assert b.mail_from == "" and b.rcpts == [ONE], b
    assert (b.peer_ip, b.helo) == ("127.0.0.12", "gw2.test.example"), "DSN sent from %s HELO %s" % (b.peer_ip, b.helo)
    assert DSN(b.data).recipient("nobody@dest.test")["action"] == "failed"
    # without bounce_virtual_gateway a bounce uses the message's own gateway
    bw.set_params(bounce_virtual_gateway="")
    bw.reload()
    time.sleep(0.5)
    send1(bw, ["nobody2@dest.test"], sender=ONE)
    b = brx.wait_messages(2, 20)[1]
    assert (b.peer_ip, b.helo) == ("127.0.0.11", "gw1.test.example"), "DSN sent from %s HELO %s" % (b.peer_ip, b.helo)


def test_unknown_gateway_in_a_table_is_a_config_error(bw_factory):
    bw = bw_factory(start=False)
    gw = write_table(bw, "virtual_gateways", GATEWAYS)
    cls = write_table(bw, "virtual_gateway_classes", ["sender:%s gw1" % ONE, "* nosuch"])
    bw.set_params(virtual_gateways=gw, virtual_gateway_classes=cls)
    want = "%s:3: unknown virtual gateway 'nosuch'" % cls   # line 1 is a comment
    for args in (("config", "check"), ("start",)):
        r = bw.mailctl(*args, timeout=60)
        assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mailctl: " + want), (args, r.stderr)
    assert bw.status()[0] == 1, "started with an unknown gateway in a table"
    # a bad source address names its line too
    gw = write_table(bw, "virtual_gateways", GATEWAYS + ["gw3 source=not-an-ip helo=gw3.test.example"])
    cls = write_table(bw, "virtual_gateway_classes", ["* gw1"])
    r = bw.mailctl("config", "check")
    assert r.returncode == 1 and "%s:4:" % gw in r.stderr and "not-an-ip" in r.stderr, r.stderr
    # an unknown bounce_virtual_gateway
    write_table(bw, "virtual_gateways", GATEWAYS)
    bw.set_params(bounce_virtual_gateway="nosuch")
    r = bw.mailctl("config", "check")
    assert r.returncode == 1 and "bounce_virtual_gateway" in r.stderr and "nosuch" in r.stderr, r.stderr
    bw.set_params(bounce_virtual_gateway="gw2")
    r = bw.mailctl("config", "check")
    assert r.returncode == 0, r.stderr
    # a running instance refuses a reload with a bad table and keeps its gateways
    write_table(bw, "virtual_gateway_classes", CLASSES)
    bw.start()
    ready(bw, ["gw1", "gw2"])
    cls = write_table(bw, "virtual_gateway_classes", ["sender:%s gw1" % ONE, "sender:x@y.example gw9"])
    r = bw.reload(check=False)
    assert r.returncode == 1 and "%s:3: unknown virtual gateway 'gw9'" % cls in r.stderr, (r.returncode, r.stderr)
    assert bw.status_json()["running"] is True
    q = send1(bw, ["a@dest.test"], sender=TWO)
    assert _vg_of(bw, q) == "gw2", "classification changed after a refused reload"
    agents = sorted(d["instance"] for d in bw.status_json()["daemons"] if d["name"] == "delivery")
    assert agents == ["default", "gw1", "gw2"], agents


@pytest.mark.parametrize("block", ["554 5.7.1 your address is blocked", "421 4.7.0 your address is blocked, try later"])
def test_one_gateway_blocked_while_another_flows_to_the_same_domain(bw_factory, sink_factory, block):
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _route(rx, "dest.test"), gateways=GATEWAYS, classes=CLASSES,
                params={"retry_schedule": "2s"})
    rx.watch(bw)
    rx.greeting_by_ip = {"127.0.0.11": block}
    blocked = inject(bw, 5, lambda k: "b%d@dest.test" % k, sessions=1, sender=ONE)
    bw.wait_for_log(down_re("dest.test", "gw1"), 15)
    t0 = time.monotonic()
    flowing = inject(bw, 40, lambda k: "f%d@dest.test" % k, sessions=4, sender=TWO)
    got = rx.wait_messages(40, 20)
    took = time.monotonic() - t0
    assert took < 15, "40 messages on gw2 took %.1fs while gw1 was blocked" % took
    assert sorted(sink_qids(got)) == sorted(flowing.values())
    assert {m.peer_ip for m in got} == {"127.0.0.12"}, {m.peer_ip for m in got}
    # the sink has the data a moment before qmgr has the agent's result
    deadline = time.monotonic() + 5
    while True:
        by = {o["vg"]: o for o in domain_objs(bw, "dest.test")}
        if by["gw2"]["delivered"] == 40 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert by["gw1"]["state"] == "down" and by["gw1"]["queued"] == 5, by["gw1"]
    assert block[:3] in by["gw1"]["last_error"], by["gw1"]
    assert by["gw2"]["state"] == "up" and by["gw2"]["delivered"] == 40, by["gw2"]
    assert not bw.log_matches(down_re("dest.test", "gw2"))
    # the receiver lifts the block: gw1's mail follows from its own address
    rx.greeting_by_ip = {}
    bw.mailctl("flush", "dest.test")
    got = rx.wait_messages(45, 20)
    assert sorted(q for q, m in zip(sink_qids(got), got) if m.peer_ip == "127.0.0.11") == sorted(blocked.values())


def test_queue_list_by_gateway(bw_factory, sink_factory):
    """`mailctl queue list --vg V` (DESIGN section 4) lists that gateway's messages only."""
    rx = sink_factory("127.0.0.2", mode="close")
    bw = engine(bw_factory, _route(rx, "dest.test"), gateways=GATEWAYS, classes=CLASSES,
                params={"retry_schedule": "1h"})
    q1 = send1(bw, ["a@dest.test"], sender=ONE)
    q2 = send1(bw, ["b@dest.test"], sender=TWO)
    q3 = send1(bw, ["c@dest.test"])
    for vg in ("gw1", "gw2", "default"):
        bw.wait_for_log(down_re("dest.test", vg), 15)
    assert sorted(queue_ids(bw)) == sorted([q1, q2, q3])
    got = {}
    for vg in ("gw1", "gw2", "default"):
        r = bw.mailctl("queue", "list", "--vg", vg, "--json")
        assert r.returncode == 0, (vg, r.stderr)
        got[vg] = sorted((m["id"], m["vg"]) for m in json.loads(r.stdout))
    assert got == {"gw1": [(q1, "gw1")], "gw2": [(q2, "gw2")], "default": [(q3, "default")]}, got


# ---------------------------------------------------------------- connections

def test_many_messages_per_connection_with_rset_and_quit_when_idle(bw_factory, sink_factory):
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _route(rx, "dest.test"))
    rx.watch(bw)
    ids = inject(bw, 60, lambda k: "u%d@dest.test" % k, sessions=3)
    got = rx.wait_messages(60, 30)
    t_last = time.monotonic()
    assert sorted(sink_qids(got)) == sorted(ids.values())
    conns = rx.connections()
    per = [c.transactions for c in conns]
    assert len(conns) <= 20, "%d connections for 60 messages: %r" % (len(conns), per)
    assert max(per) >= 5, "messages per connection %r" % per
    for c in conns:
        # RSET before every transaction on a reused connection
        assert c.rsets >= c.transactions - 1, c
        verbs = [x.split()[0].upper() for x in c.commands if x]
        for i, v in enumerate(verbs):
            if v == "MAIL" and "MAIL" in verbs[:i]:
                prev = max(j for j in range(i) if verbs[j] in ("MAIL", "RSET"))
                assert verbs[prev] == "RSET", "no RSET between transactions on %r: %r" % (c, verbs)
    # idle connections are closed with QUIT after about 5 s
    conns = rx.wait_all_closed(15)
    assert all(c.quit for c in conns), [c for c in conns if not c.quit]
    msgs = rx.snapshot()
    for c in conns:
        last = max([m.time for m in msgs if m.conn == c.no] or [c.t_open])
        idle = c.t_quit - last
        assert 3.5 <= idle <= 9.0, "connection %r said QUIT %.1fs after its last message" % (c, idle)
    assert time.monotonic() - t_last < 15


def test_max_messages_per_connection(bw_factory, sink_factory):
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _route(rx, "dest.test"), controls=["dest.test max_messages_per_connection=3"])
    rx.watch(bw)
    inject(bw, 30, lambda k: "u%d@dest.test" % k, sessions=2)
    rx.wait_messages(30, 30)
    conns = rx.wait_all_closed(15)
    per = [c.transactions for c in conns if c.transactions]
    assert max(per) == 3, "transactions per connection with max_messages_per_connection=3: %r" % per
    assert len(per) >= 10, per
    full = [c for c in conns if c.transactions == 3]
    msgs = rx.snapshot()
    for c in full:  # closed at once after the third, not left idle
        last = max(m.time for m in msgs if m.conn == c.no)
        assert c.quit and c.t_quit - last < 2.0, (c, c.t_quit - last)


def test_max_connections_is_never_exceeded(bw_factory, sink_factory):
    rx, fx = sink_factory("127.0.0.2"), sink_factory("127.0.0.3")
    bw = engine(bw_factory, _route(rx, "dest.test") + _route(fx, "fixed.test"),
                controls=["dest.test max_connections=3", "fixed.test max_connections=5 good_neighbor=no"],
                params={"retry_schedule": "1h"})
    rx.watch(bw)
    fx.watch(bw)
    for s in (rx, fx):
        s.rcpt_default = "450 4.2.0 <x>: wait"
    inject(bw, 60, lambda k: "u%d@dest.test" % k, sessions=4)
    inject(bw, 40, lambda k: "u%d@fixed.test" % k, sessions=4)
    wait_until(lambda: len(rx.rcpt_log) >= 60 and len(fx.rcpt_log) >= 40, 30, 0.1, "every message tried once")
    for s in (rx, fx):
        s.rcpt_default = None
        s.dot_delay = 0.3
        s.open_max = s.open_now  # idle connections from the first attempts count
    bw.mailctl("flush")
    rx.wait_messages(60, 60)
    fx.wait_messages(40, 60)
    assert rx.open_max <= 3, "max_connections=3: %d connections at once" % rx.open_max
    assert rx.open_max >= 2, rx.open_max
    assert fx.open_max == 5, "good_neighbor=no max_connections=5: %d connections at once" % fx.open_max
    d = domain_obj(bw, "fixed.test")
    assert d["concurrency"] == 5 and d["max_connections"] == 5, d
    assert d["good_neighbor"] == "fixed" and "good_neighbor=no" in d["concurrency_reason"], d
    assert domain_obj(bw, "dest.test")["max_connections"] == 3


# ---------------------------------------------------------------- good neighbour

def test_good_neighbour_raises_then_holds_on_a_capped_receiver(bw_factory, sink_factory):
    """A receiver that handles at most 4 transactions at once (0.5 s each):
    up to 4 connections each one adds rate, beyond that nothing. The
    concurrency starts at 2, is raised while the rate grows, and when it
    flattens drops the newest connections and holds well below
    max_connections; the idle extra connections are closed."""
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _route(rx, "gn.test"), params={"retry_schedule": "1h"})
    rx.watch(bw)
    rx.rcpt_default = "450 4.2.0 <x>: not yet"
    body = b"".join(b"%05d the quick brown fox jumps over the lazy dog, again and again\r\n" % i for i in range(150))
    inject(bw, 150, lambda k: "u%d@gn.test" % k, sessions=4, body=body)
    wait_until(lambda: len(rx.rcpt_log) >= 150, 30, 0.1, "every message tried once")
    time.sleep(0.5)
    assert domain_obj(bw, "gn.test")["concurrency"] == 2
    rx.rcpt_default = None
    rx.dot_slots, rx.dot_delay = 4, 0.5
    rx.open_max = rx.open_now
    mark = bw.log_mark()
    bw.mailctl("flush", "gn.test")
    deadline = time.monotonic() + 20

    def held():
        ch = concurrency_changes(bw, "gn.test", start=mark)
        return any(b < a and why.startswith("holding at") for a, b, why in ch)
    while not held() and time.monotonic() < deadline:
        time.sleep(0.25)
    ch = concurrency_changes(bw, "gn.test", start=mark)
    assert ch, "no concurrency change in 20s"
    assert ch[0][0] == 2 and ch[0][1] > 2, ch
    peak = max(b for _, b, _ in ch)
    assert peak >= 4, ch
    assert held(), "the concurrency never held after the rate flattened: %r" % ch
    a, b, why = next(c for c in ch if c[1] < c[0])
    assert a == peak and b < peak, ch
    d = domain_obj(bw, "gn.test")
    assert d["concurrency"] == b and d["good_neighbor"] == "hold", d
    assert d["concurrency_reason"].startswith("holding at %d" % b), d
    assert 4 <= b <= 8, "held at %d connections for a receiver that takes 4 at a time" % b
    assert rx.open_max <= peak and peak < 20, (rx.open_max, peak)
    # It holds: no further rise for a few seconds, and the connections
    # beyond the held number go idle and are closed.
    time.sleep(6)
    later = concurrency_changes(bw, "gn.test", start=mark)[len(ch):]
    assert all(y <= x for x, y, _ in later), "raised again during the hold: %r" % later
    assert rx.open_now <= b + 1, "%d connections open while holding at %d" % (rx.open_now, b)


def test_good_neighbour_backs_off_on_421(bw_factory, sink_factory):
    """A receiver that answers 421 to MAIL beyond 3 connections: the
    concurrency backs off (and says so), the domain is not marked down and
    every message is delivered."""
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _route(rx, "busy.test"), params={"retry_schedule": "1s"})
    rx.watch(bw)
    rx.max_conns, rx.max_conns_stage, rx.dot_delay = 3, "mail", 0.3
    mark = bw.log_mark()
    ids = inject(bw, 60, lambda k: "u%d@busy.test" % k, sessions=4)
    got = rx.wait_messages(60, 60)
    assert sorted(set(sink_qids(got))) == sorted(ids.values())
    assert rx.rejected_421 >= 1, "the receiver never had to say 421 (open_max %d)" % rx.open_max
    assert not bw.log_matches(down_re("busy.test"), mark), "a 421 to MAIL marked the domain down"
    deferred = bw.log_matches(r"status=deferred \(421 4\.7\.0", mark)
    assert deferred, "no deferral logged for the 421"
    d = domain_obj(bw, "busy.test")  # the back-off holds for 30 s: still shown
    assert d["state"] == "up" and d["good_neighbor"] == "hold", d
    assert re.match(r"backed off from (\d+) to (\d+) connections: 421 4\.7\.0", d["concurrency_reason"]), d
    ch = concurrency_changes(bw, "busy.test", start=mark)
    backed = [c for c in ch if c[1] < c[0] and "backed off" in c[2]]
    assert backed, "no 'concurrency A -> B: backed off ...' line after %d 421 replies; changes %r" % (
        rx.rejected_421, ch)
    assert rx.rejected_421 <= 6, "%d 421 replies: the concurrency did not settle" % rx.rejected_421


def test_a_closing_connection_keeps_its_slot_until_the_receiver_lets_go(bw_factory, sink_factory):
    """max_messages_per_connection=3 with max_connections=2 against a
    receiver that takes 2 connections and answers QUIT slowly (0.4 s, still
    counting the connection): each rotation waits for the 221 before its
    replacement dials, so the receiver never has to say 421."""
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _route(rx, "rot.test"),
                controls=["rot.test max_connections=2 good_neighbor=no max_messages_per_connection=3"],
                params={"retry_schedule": "1h"})
    rx.watch(bw)
    rx.max_conns, rx.quit_delay, rx.dot_delay = 2, 0.4, 0.05
    ids = inject(bw, 30, lambda k: "u%d@rot.test" % k, sessions=4)
    got = rx.wait_messages(30, 60)
    assert sorted(set(sink_qids(got))) == sorted(ids.values())
    conns = rx.wait_all_closed(15)
    assert rx.rejected_421 == 0, "%d connections met 421: a replacement dialled while the old one said QUIT" % (
        rx.rejected_421)
    used = [c for c in conns if c.transactions]
    assert len(used) >= 10 and max(c.transactions for c in used) == 3, [c.transactions for c in used]
    assert all(c.quit for c in used), "a connection closed without QUIT"
    assert rx.open_max <= 2, rx.open_max


def test_mail_refused_by_a_busy_receiver_is_retried_soon(bw_factory, sink_factory):
    """A receiver that takes one connection and answers 421 to the others
    while it delivers: the concurrency backs off, and the refused messages
    go back to the domain's queue within seconds instead of waiting for the
    retry schedule (1 h here)."""
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _route(rx, "one.test"), controls=["one.test max_connections=3"],
                params={"retry_schedule": "1h"})
    rx.watch(bw)
    rx.max_conns, rx.dot_delay = 1, 0.2
    first = inject(bw, 1, lambda k: "first@one.test")
    rx.wait_messages(1, 20)  # the receiver is known to deliver
    mark = bw.log_mark()
    ids = inject(bw, 20, lambda k: "u%d@one.test" % k, sessions=4)
    got = rx.wait_messages(21, 60)
    assert sorted(set(sink_qids(got))) == sorted(list(ids.values()) + list(first.values()))
    assert rx.rejected_421 >= 1, "the receiver never said 421"
    assert bw.log_matches(r"status=deferred \(421 4\.7\.0", mark), "no deferral logged for the 421"
    assert not bw.log_matches(down_re("one.test"), mark), "a busy receiver was marked down"


# ---------------------------------------------------------------- domain debug

TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"


def test_domain_debug_on_and_off(bw_factory, sink_factory):
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _route(rx, "dbg.test", "other.test"))
    rx.watch(bw)
    ddir = os.path.join(bw.queue_dir, "log", "debug")
    path = os.path.join(ddir, "dbg.test.log")
    assert not os.path.exists(path)
    mark = bw.log_mark()
    late = []  # checked at the end, so that the rest is tested too
    r = bw.mailctl("domain", "debug", "DBG.test", "on")
    assert r.returncode == 0, r.stderr
    assert " on" in r.stdout, r.stdout
    if path not in r.stdout:
        late.append("'domain debug DBG.test on' names the log %r, the agent writes %s" % (r.stdout.strip(), path))
    bw.wait_for_log(r"breakwater/delivery\[\d+\]: domain debug: 1 domain\(s\) now logged$", 5, mark)
    body = b"".join(b"secret body line %d\r\n" % i for i in range(40))
    q1 = send1(bw, ["d1@dbg.test"], subject="debug subject one", body=body)
    q2 = send1(bw, ["o1@other.test"], subject="other subject", body=body)
    wait_delivery(bw, q1, "d1@dbg.test", "sent")
    wait_delivery(bw, q2, "o1@other.test", "sent")
    time.sleep(0.3)
    text = open(path, encoding="utf-8", errors="replace").read()
    lines = text.splitlines()
    assert lines and all(re.match(r"^%s (?:%s|-) [<>-] " % (TS, "[0-9A-F]{18}"), ln) for ln in lines), lines[:5]
    mine = [ln for ln in lines if " %s " % q1 in ln]

    def has(rx_):
        return any(re.search(rx_, ln) for ln in mine)
    assert has(r" - connecting to 127\.0\.0\.2\[127\.0\.0\.2\]:%d \(vg default\)$" % rx.port), mine
    assert has(r" < 220 "), mine
    assert has(r" > EHLO mx\.test\.example$"), mine
    assert has(r" < 250[ -]"), mine
    assert has(r" > MAIL FROM:<%s>" % re.escape(SENDER)), mine
    assert has(r" > RCPT TO:<d1@dbg\.test>$"), mine
    assert has(r" > DATA$") and has(r" < 354 "), mine
    assert has(r" > Subject: debug subject one$"), mine
    assert has(r" > \(message body elided: %d bytes\)$" % len(body)), mine
    assert has(r" > \.$") and has(r" < 250 2\.0\.0 Ok"), mine
    assert "secret body line" not in text, "the body was not elided"
    assert "other.test" not in text and q2 not in text, "other.test in the debug log of dbg.test"
    assert sorted(os.listdir(ddir)) == ["dbg.test.log", "domains"], os.listdir(ddir)
    # survives a reload
    bw.reload()
    time.sleep(1.5)
    q3 = send1(bw, ["d3@dbg.test"], subject="after reload")
    wait_delivery(bw, q3, "d3@dbg.test", "sent")
    time.sleep(0.3)
    assert q3 in open(path, errors="replace").read(), "nothing logged for dbg.test after mailctl reload"
    # off: nothing more is written
    mark = bw.log_mark()
    r = bw.mailctl("domain", "debug", "dbg.test", "off")
    assert r.returncode == 0 and "off" in r.stdout, (r.stdout, r.stderr)
    bw.wait_for_log(r"breakwater/delivery\[\d+\]: domain debug: 0 domain\(s\) now logged$", 5, mark)
    size = os.path.getsize(path)
    q4 = send1(bw, ["d4@dbg.test"], subject="after off")
    wait_delivery(bw, q4, "d4@dbg.test", "sent")
    time.sleep(0.5)
    after = open(path, errors="replace").read()[size:]
    if after:
        late.append("written after 'domain debug dbg.test off' (a connection opened while it was on was "
                    "reused): %r" % after[:600])
    assert sorted(os.listdir(ddir)) == ["dbg.test.log", "domains"], os.listdir(ddir)
    assert not late, "; ".join(late)


def test_domain_debug_errors(bw_factory):
    bw = bw_factory()
    for args, rc in ((("domain", "debug", "bad domain!", "on"), 1), (("domain", "debug", "dbg.test"), 2),
                     (("domain", "debug", "dbg.test", "maybe"), 2)):
        r = bw.mailctl(*args)
        assert r.returncode == rc, (args, r.returncode, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == "", (args, r.stdout, r.stderr)
