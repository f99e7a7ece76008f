"""The queue engine (issue 4): domain state (a (gateway, domain) queue goes
down when none of its hosts can be reached; its mail is parked and the
domain gets one probe per retry interval, whatever its queue size; other
domains keep flowing; the probe's success releases everything, at full
concurrency, oldest first), recipient-level 4xx replies do not mark a domain
down, destination_controls (retry=0, per-domain retry schedules with
`default` and `.domain` keys), `mailctl flush` of a down domain, `mailctl
queue delete|redirect` by id and by domain on a domain with hundreds of
messages, `mailctl domain list|show [--json]`, and the errors.

The destinations are enginelib.Sink servers on 127.0.0.x: a "dead" sink
accepts every connection and closes it at once (so every connection
attempt is counted), a live one speaks SMTP and records what it got."""

import os
import re
import time

import pytest

from conftest import wait_until
from enginelib import (SENDER, closed_port, domain_obj, domain_objs, down_re, engine, gaps, inject,  # noqa: F401
                       probe_re, queue_ids, send1, sink_factory, sink_qids, up_re)
from relaylib import DSN, wait_delivery

BOUNCE_DOMAIN = "client.test.example"


def _routes(**sinks):
    """routes(dead_test=sink, ...) -> [("dead.test", "127.0.0.2:PORT"), ...]"""
    return [(d.replace("_", "."), "%s:%d" % (s.host, s.port)) for d, s in sinks.items()]


def _wait_down(bw, domain, timeout=20.0, start=0, vg="default"):
    return bw.wait_for_log(down_re(domain, vg), timeout, start)


def _spool_gone(bw, qids, timeout=20.0):
    wait_until(lambda: not any(os.path.exists(bw.queue_path(q)) for q in qids), timeout, 0.1,
               "spool files of %d messages to go" % len(qids))


# ---------------------------------------------------------------- domain state

def test_down_domain_gets_one_probe_per_interval_whatever_its_queue_size(bw_factory, sink_factory):
    """Two dead domains, one with 300 queued messages and one with 3: each
    gets the same single probe per retry interval (2 s, from
    destination_controls; the global schedule is 1h), counted as
    connections at the dead sinks; each probe is logged and carries one
    message; the parked mail is never attempted on its own."""
    big, small = sink_factory("127.0.0.2", mode="close"), sink_factory("127.0.0.3", mode="close")
    bw = engine(bw_factory, _routes(big_test=big, small_test=small),
                controls=["big.test retry_schedule=2s", "small.test retry_schedule=2s"],
                params={"retry_schedule": "1h"})
    big.watch(bw)
    small.watch(bw)
    qb = inject(bw, 300, lambda k: "u%d@big.test" % k, sessions=8)
    qs = inject(bw, 3, lambda k: "u%d@small.test" % k, sessions=1)
    _wait_down(bw, "big.test")
    _wait_down(bw, "small.test")
    # Let the jobs that were in flight when it went down finish, then count.
    time.sleep(1.0)
    mark = bw.log_mark()
    n_big, n_small = big.n_conns(), small.n_conns()
    t0 = time.monotonic()
    window = 10.0
    time.sleep(window)
    cb = [t for t in big.conn_times() if t >= t0]
    cs = [t for t in small.conn_times() if t >= t0]
    assert n_big <= 10, "big.test: %d connection attempts before it was parked (300 queued)" % n_big
    assert n_small <= 4, "small.test: %d connection attempts before it was parked" % n_small
    # one probe per 2 s interval: 5 in 10 s, 6 at the edges
    for name, c in (("big.test (300 queued)", cb), ("small.test (3 queued)", cs)):
        assert 3 <= len(c) <= 6, "%s: %d connections in %.0fs with retry_schedule=2s (gaps %r)" % (
            name, len(c), window, gaps(c))
        assert all(g >= 1.3 for g in gaps(c)), "%s: probes closer than the 2s interval: gaps %r" % (name, gaps(c))
    assert abs(len(cb) - len(cs)) <= 1, "probe counts differ with the queue size: big %d, small %d" % (len(cb), len(cs))
    probes = bw.log_matches(probe_re("big.test"), mark)
    assert abs(len(probes) - len(cb)) <= 1, "probe log lines %d vs connections %d" % (len(probes), len(cb))
    assert all(p.group("id") in qb.values() for p in probes), probes
    for name, ids, n in (("big.test", qb, 300), ("small.test", qs, 3)):
        d = domain_obj(bw, name)
        assert d["state"] == "down" and d["queued"] == n, d
    # nothing was delivered or bounced meanwhile
    assert not bw.log_matches(r"status=(?:sent|bounced)", 0)


@pytest.mark.parametrize("how", ["refused", "closed", "silent", "554 greeting", "421 greeting"])
def test_unreachable_destination_goes_down(bw_factory, sink_factory, how):
    """Connection refused, closed before the greeting, no greeting within
    smtp_timeout, a 5xx or a 421 greeting: the domain goes down with the
    reason, and its mail is parked (one queued entry each, no bounce)."""
    if how == "refused":
        route = "127.0.0.2:%d" % closed_port("127.0.0.2")
    else:
        s = sink_factory("127.0.0.2", mode={"closed": "close", "silent": "silent"}.get(how, "smtp"))
        if how.endswith("greeting"):
            s.greeting_by_ip = {"127.0.0.1": how[:3] + " 4.3.2 rx not accepting mail now"}
        route = "127.0.0.2:%d" % s.port
    bw = engine(bw_factory, [("dest.test", route)], params={"retry_schedule": "1h", "smtp_timeout": "2s"})
    ids = inject(bw, 3, lambda k: "u%d@dest.test" % k, sessions=1)
    m = _wait_down(bw, "dest.test", timeout=15)
    reason = m.group("reason")
    want = {"refused": "refused", "closed": "lost connection", "silent": "timed out",
            "554 greeting": "554 4.3.2", "421 greeting": "421 4.3.2"}[how]
    assert want in reason.lower() or want in reason, "down reason %r" % reason
    d = domain_obj(bw, "dest.test")
    assert d["state"] == "down" and d["queued"] == 3 and want in d["last_error"].lower() + d["last_error"], d
    assert sorted(queue_ids(bw)) == sorted(ids.values())
    assert not bw.log_matches(r"status=bounced")


def test_other_domains_keep_flowing_while_one_is_down(bw_factory, sink_factory):
    dead, live = sink_factory("127.0.0.2", mode="close"), sink_factory("127.0.0.3")
    bw = engine(bw_factory, _routes(dead_test=dead, live_test=live), params={"retry_schedule": "2s"})
    live.watch(bw)
    inject(bw, 200, lambda k: "u%d@dead.test" % k, sessions=8)
    _wait_down(bw, "dead.test")
    t0 = time.monotonic()
    ids = inject(bw, 60, lambda k: "v%d@live.test" % k, sessions=4)
    live.wait_messages(60, 20)
    took = time.monotonic() - t0
    assert took < 15, "60 messages to live.test took %.1fs while dead.test was down" % took
    assert sorted(sink_qids(live.snapshot())) == sorted(ids.values())
    assert domain_obj(bw, "live.test")["state"] == "up"
    assert domain_obj(bw, "dead.test")["state"] == "down"
    assert not bw.log_matches(down_re("live.test"))


def test_probe_success_releases_everything(bw_factory, sink_factory):
    dest = sink_factory("127.0.0.2", mode="close")
    bw = engine(bw_factory, _routes(dest_test=dest), params={"retry_schedule": "2s"})
    dest.watch(bw)
    ids = inject(bw, 120, lambda k: "u%d@dest.test" % k, sessions=6)
    m = _wait_down(bw, "dest.test")
    assert "lost connection" in m.group("reason") or "127.0.0.2" in m.group("reason"), m.group(0)
    time.sleep(0.5)
    ids.update({1000 + k: q for k, q in inject(bw, 30, lambda k: "w%d@dest.test" % k, sessions=3).items()})
    mark = bw.log_mark()
    dest.mode = "smtp"
    m = bw.wait_for_log(up_re("dest.test"), 10, mark)
    assert int(m.group("n")) >= 140, m.group(0)
    got = dest.wait_messages(150, 40)
    qids = sink_qids(got)
    assert sorted(qids) == sorted(ids.values()), "missing %r, duplicated %r" % (
        sorted(set(ids.values()) - set(qids))[:5], sorted(q for q in set(qids) if qids.count(q) > 1)[:5])
    _spool_gone(bw, list(ids.values()))
    d = domain_obj(bw, "dest.test")
    assert d["state"] == "up" and d["queued"] == 0 and d["delivered"] == 150, d


def test_release_runs_at_full_concurrency_oldest_first(bw_factory, sink_factory):
    """After the outage the parked mail goes out at the domain's normal
    concurrency (good neighbour starts at 2 connections), not through one
    connection held back by the failures while it was down; the oldest
    message goes first."""
    dest = sink_factory("127.0.0.2", mode="close")
    bw = engine(bw_factory, _routes(dest_test=dest), params={"retry_schedule": "2s"})
    dest.watch(bw)
    ids = inject(bw, 40, lambda k: "u%d@dest.test" % k, sessions=1)
    order = [ids[k] for k in range(40)]
    _wait_down(bw, "dest.test")
    time.sleep(1.0)
    dest.dot_delay = 0.2
    dest.mode = "smtp"
    bw.wait_for_log(up_re("dest.test"), 10)
    got = dest.wait_messages(40, 40)
    ranks = [order.index(q) for q in sink_qids(got)]
    problems = []
    if dest.open_max < 2:
        problems.append("the 40 released messages went through %d connection at a time (concurrency %r, reason %r)" % (
            dest.open_max, domain_obj(bw, "dest.test")["concurrency"], domain_obj(bw, "dest.test")["concurrency_reason"]))
    if 0 not in ranks[:3]:
        problems.append("the oldest message was delivered as number %d of 40 (arrival ranks %r)" % (
            ranks.index(0) + 1, ranks))
    assert not problems, "; ".join(problems)


def test_recipient_4xx_does_not_mark_the_domain_down(bw_factory, sink_factory):
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _routes(dest_test=rx), params={"retry_schedule": "1h"})
    rx.watch(bw)
    rx.rcpt_replies = {"full@dest.test": "452 4.2.2 <full@dest.test>: mailbox full",
                       "grey@dest.test": "450 4.7.1 <grey@dest.test>: greylisted, try again later"}
    q1 = send1(bw, ["full@dest.test", "ok1@dest.test"])
    q2 = send1(bw, ["grey@dest.test"])
    wait_delivery(bw, q1, "full@dest.test", "deferred")
    wait_delivery(bw, q1, "ok1@dest.test", "sent")
    wait_delivery(bw, q2, "grey@dest.test", "deferred")
    # Nothing is parked: new mail goes straight out.
    t0 = time.monotonic()
    q3 = send1(bw, ["ok2@dest.test"])
    wait_delivery(bw, q3, "ok2@dest.test", "sent", timeout=10)
    assert time.monotonic() - t0 < 5
    assert not bw.log_matches(down_re("dest.test")), bw.log_matches(down_re("dest.test"))
    d = domain_obj(bw, "dest.test")
    assert d["state"] == "up", d
    assert d["soft_bounces"] >= 2 and d["delivered"] >= 2, d
    assert set(queue_ids(bw, "dest.test")) == {q1, q2}


# ---------------------------------------------------------------- destination_controls

def test_retry_zero_bounces_at_once(bw_factory, sink_factory):
    """retry=0: the first temporary failure (a 4xx recipient reply, or a
    destination that cannot be reached) is final, with a DSN to the sender;
    a domain without it defers as usual."""
    junk, keep, brx = sink_factory("127.0.0.2"), sink_factory("127.0.0.3"), sink_factory("127.0.0.9")
    dead_port = closed_port("127.0.0.4")
    bw = engine(bw_factory, _routes(junk_test=junk, keep_test=keep, client_test_example=brx)
                + [("deadjunk.test", "127.0.0.4:%d" % dead_port)],
                controls=["junk.test retry=0", "deadjunk.test retry=0", "default retry_schedule=1h"])
    brx.watch(bw)
    junk.rcpt_default = "451 4.3.0 <x>: try again later"
    keep.rcpt_default = "451 4.3.0 <x>: try again later"
    q1 = send1(bw, ["a@junk.test"])
    q2 = send1(bw, ["b@keep.test"])
    q3 = send1(bw, ["c@deadjunk.test"])
    l1 = wait_delivery(bw, q1, "a@junk.test", "deferred")
    wait_delivery(bw, q2, "b@keep.test", "deferred")
    wait_delivery(bw, q3, "c@deadjunk.test", "deferred")
    bounces = brx.wait_messages(2, 15)
    dsns = {}
    for m in bounces:
        assert m.mail_from == "" and m.rcpts == [SENDER], m
        dsn = DSN(m.data)
        for r in dsn.recipients:
            dsns[r["final-recipient"].split(";")[1].strip().lower()] = r
    assert set(dsns) == {"a@junk.test", "c@deadjunk.test"}, dsns
    assert dsns["a@junk.test"]["action"] == "failed", dsns["a@junk.test"]
    assert "451 4.3.0" in dsns["a@junk.test"].get("diagnostic-code", ""), dsns["a@junk.test"]
    for q in (q1, q3):
        bw.wait_for_log(r"breakwater/qmgr\[\d+\]: %s: removed$" % q, 10)
    assert len(junk.rcpt_times("a@junk.test")) == 1, "retry=0 domain retried"
    assert queue_ids(bw) == [q2]
    assert l1  # the delivery agent's own line says deferred; qmgr made it final
    time.sleep(1.0)
    assert len(brx.snapshot()) == 2, "a DSN for the domain without retry=0: %r" % brx.snapshot()


def test_per_domain_retry_schedules(bw_factory, sink_factory):
    """destination_controls retry_schedule for one domain (a list whose last
    interval repeats), for sub-domains (.sub.test) and default; the global
    retry_schedule is not used when default is set."""
    rx = sink_factory("127.0.0.2")
    route = "127.0.0.2:%d" % rx.port
    bw = engine(bw_factory, [("fast.test", route), ("a.sub.test", route), ("other.test", route)],
                controls=["fast.test retry_schedule=1s,3s", ".sub.test retry_schedule=4s", "default retry_schedule=30s"],
                params={"retry_schedule": "1s"})
    rx.watch(bw)
    rx.rcpt_default = "450 4.2.0 <x>: not now"
    send1(bw, ["f@fast.test"])
    send1(bw, ["s@a.sub.test"])
    send1(bw, ["o@other.test"])
    time.sleep(9.0)
    tf, ts, to = rx.rcpt_times("f@fast.test"), rx.rcpt_times("s@a.sub.test"), rx.rcpt_times("o@other.test")
    gf, gs = gaps(tf), gaps(ts)
    # fast.test 1s,3s: attempts at ~0, 1, 4, 7
    assert 3 <= len(tf) <= 5, "fast.test (1s,3s): %d attempts in 9s, gaps %r" % (len(tf), gf)
    assert gf[0] <= 1.7 and all(2.4 <= g <= 3.7 for g in gf[1:]), "fast.test (1s,3s): gaps %r" % gf
    # .sub.test 4s: ~0, 4, 8
    assert 2 <= len(ts) <= 3 and all(2.9 <= g <= 4.7 for g in gs), "a.sub.test (.sub.test 4s): gaps %r" % gs
    # default 30s: one attempt only (not the global 1s)
    assert len(to) == 1, "other.test (default 30s): %d attempts, gaps %r" % (len(to), gaps(to))


def test_flush_probes_a_down_domain_now(bw_factory, sink_factory):
    dest = sink_factory("127.0.0.2", mode="close")
    bw = engine(bw_factory, _routes(dest_test=dest), params={"retry_schedule": "1h"})
    dest.watch(bw)
    ids = inject(bw, 20, lambda k: "u%d@dest.test" % k, sessions=2)
    _wait_down(bw, "dest.test")
    time.sleep(1.5)
    n = dest.n_conns()
    d = domain_obj(bw, "dest.test")
    assert d["state"] == "down" and d["next_retry"] > time.time() + 3000, d
    dest.mode = "smtp"
    mark = bw.log_mark()
    r = bw.mailctl("flush", "dest.test")
    assert r.returncode == 0, r.stderr
    bw.wait_for_log(probe_re("dest.test"), 5, mark)
    bw.wait_for_log(up_re("dest.test"), 10, mark)
    got = dest.wait_messages(20, 30)
    assert sorted(sink_qids(got)) == sorted(ids.values())
    assert dest.n_conns() > n


# ---------------------------------------------------------------- mailctl queue

def test_queue_delete_domain_with_hundreds_of_messages(bw_factory, sink_factory):
    dead, other = sink_factory("127.0.0.2", mode="close"), sink_factory("127.0.0.3", mode="close")
    bw = engine(bw_factory, _routes(big_test=dead, other_test=other), params={"retry_schedule": "1h"})
    ids = inject(bw, 400, lambda k: "u%d@big.test" % k, sessions=8)
    keep = inject(bw, 5, lambda k: "k%d@other.test" % k, sessions=1)
    _wait_down(bw, "big.test")
    _wait_down(bw, "other.test")
    listed = queue_ids(bw, "big.test")
    assert sorted(listed) == sorted(ids.values()), "queue list --domain big.test: %d of 400" % len(listed)
    r = bw.mailctl("queue", "list", "--domain", "big.test")
    assert r.returncode == 0 and re.search(r"^-- 400 message\(s\)$", r.stdout, re.M), r.stdout[-300:]
    assert domain_obj(bw, "big.test")["queued"] == 400
    t0 = time.monotonic()
    r = bw.mailctl("queue", "delete", "--domain", "big.test")
    took = time.monotonic() - t0
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.strip() == "deleted 400 recipient(s)", r.stdout
    assert took < 10, "queue delete --domain of 400 messages took %.1fs" % took
    _spool_gone(bw, list(ids.values()))
    for q in list(ids.values())[:20]:
        bw.wait_for_log(r"breakwater/qmgr\[\d+\]: %s: deleted by the operator: 1 recipient\(s\) for big\.test$" % q, 5)
    assert queue_ids(bw, "big.test") == []
    assert sorted(queue_ids(bw)) == sorted(keep.values())
    d = domain_obj(bw, "big.test")
    assert d["queued"] == 0, d
    assert all(os.path.exists(bw.queue_path(q)) for q in keep.values())
    # no DSN for deleted mail
    assert not bw.log_matches(r"sender non-delivery notification")


def test_queue_redirect_domain_with_hundreds_of_messages(bw_factory, sink_factory):
    dead, spare = sink_factory("127.0.0.2", mode="close"), sink_factory("127.0.0.3")
    bw = engine(bw_factory, _routes(big_test=dead), params={"retry_schedule": "1h"})
    spare.watch(bw)
    ids = inject(bw, 300, lambda k: "u%d@big.test" % k, sessions=8)
    _wait_down(bw, "big.test")
    time.sleep(0.5)
    n_dead = dead.n_conns()
    r = bw.mailctl("queue", "redirect", "--domain", "big.test", "127.0.0.3:%d" % spare.port)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.strip() == "redirected 300 recipient(s) to 127.0.0.3:%d" % spare.port, r.stdout
    got = spare.wait_messages(300, 60)
    qids = sink_qids(got)
    assert sorted(qids) == sorted(ids.values()), "missing %d, duplicates %d" % (
        len(set(ids.values()) - set(qids)), len(qids) - len(set(qids)))
    _spool_gone(bw, list(ids.values()), 30)
    assert queue_ids(bw) == []
    assert dead.n_conns() <= n_dead + 1, "the dead host was tried again: %d -> %d" % (n_dead, dead.n_conns())
    assert len(spare.connections()) < 300, "one connection per redirected message"


def test_queue_delete_and_redirect_by_id(bw_factory, sink_factory):
    """Deleting or redirecting single messages touches only those: the rest
    stay parked for the (down) destination, none of them reaches the spare
    host, and the destination is not marked up by the spare host's answer."""
    dead, spare = sink_factory("127.0.0.2", mode="close"), sink_factory("127.0.0.3")
    bw = engine(bw_factory, _routes(dest_test=dead), params={"retry_schedule": "1h"})
    spare.watch(bw)
    ids = inject(bw, 10, lambda k: "u%d@dest.test" % k, sessions=1)
    _wait_down(bw, "dest.test")
    time.sleep(0.5)
    r = bw.mailctl("queue", "delete", ids[0], ids[1])
    assert r.returncode == 0 and r.stdout.strip() == "deleted 2 recipient(s)", (r.stdout, r.stderr)
    _spool_gone(bw, [ids[0], ids[1]])
    r = bw.mailctl("queue", "redirect", ids[5], "127.0.0.3:%d" % spare.port)
    assert r.returncode == 0 and r.stdout.strip() == "redirected 1 recipient(s) to 127.0.0.3:%d" % spare.port, (
        r.stdout, r.stderr)
    spare.wait_messages(1, 15)
    time.sleep(2.0)
    got = sink_qids(spare.snapshot())
    left = sorted(q for k, q in ids.items() if k not in (0, 1, 5))
    problems = []
    if got != [ids[5]]:
        problems.append("the spare host got %d messages (%d not redirected): %r" % (
            len(got), len([q for q in got if q != ids[5]]), got))
    if sorted(queue_ids(bw, "dest.test")) != left:
        problems.append("queued for dest.test: %d, want the 7 not deleted or redirected" % len(queue_ids(bw, "dest.test")))
    st = domain_obj(bw, "dest.test")["state"]
    if st != "down":
        problems.append("dest.test is %s after a redirected message reached the spare host (log: %r)" % (
            st, [m.group(0) for m in bw.log_matches(up_re("dest.test"))]))
    assert not problems, "; ".join(problems)


def test_queue_command_errors(bw_factory, sink_factory):
    dead = sink_factory("127.0.0.2", mode="close")
    bw = engine(bw_factory, _routes(dest_test=dead), params={"retry_schedule": "1h"})
    q = send1(bw, ["a@dest.test"])
    _wait_down(bw, "dest.test")
    unknown = "0123456789ABCDEF01"
    for args, rc, err in [
            (("queue", "delete", unknown), 1, "mailctl: unknown queue id '%s'" % unknown),
            (("queue", "delete", q, unknown), 1, "mailctl: unknown queue id '%s'" % unknown),
            (("queue", "delete", "not-an-id"), 1, "mailctl: unknown queue id 'not-an-id'"),
            (("queue", "redirect", unknown, "127.0.0.3:25"), 1, "mailctl: unknown queue id '%s'" % unknown),
            (("queue", "redirect", q), 2, None),
            (("queue", "delete"), 2, None),
            (("domain", "show", "nosuch.test"), 1, "mailctl: no queue for that domain"),
            (("domain", "show", "nosuch.test", "--json"), 1, "mailctl: no queue for that domain"),
            (("domain", "show"), 2, None),
            (("domain", "bogus"), 2, None),
            # HOST:PORT missing: a usage error, not "unknown queue id '--domain'"
            (("queue", "redirect", "--domain", "dest.test"), 2, "usage")]:
        r = bw.mailctl(*args)
        assert r.returncode == rc, (args, r.returncode, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, (args, r.stderr)
        if err == "usage":
            assert lines[0].startswith("usage: mailctl queue redirect") or lines[0].startswith(
                "mailctl: usage: mailctl queue redirect"), (args, r.stderr)
        elif err:
            assert lines[0] == err, (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)
    # a failed command changed nothing
    assert queue_ids(bw) == [q]
    assert os.path.exists(bw.queue_path(q))
    # an unknown domain is a clear error
    r = bw.mailctl("queue", "delete", "--domain", "nosuch.test")
    assert r.returncode == 1 and r.stderr == "mailctl: no queue for domain 'nosuch.test'\n", (r.stdout, r.stderr)
    assert queue_ids(bw) == [q]


# ---------------------------------------------------------------- mailctl domain

def test_domain_list_and_show_json(bw_factory, sink_factory):
    dead, rx = sink_factory("127.0.0.2", mode="close"), sink_factory("127.0.0.3")
    bw = engine(bw_factory, _routes(dead_test=dead, live_test=rx),
                controls=["live.test max_connections=7"], params={"retry_schedule": "1h"})
    rx.watch(bw)
    rx.rcpt_replies = {"soft@live.test": "450 4.2.0 <soft@live.test>: later",
                       "hard@live.test": "550 5.1.1 <hard@live.test>: no such user"}
    t_first = time.time()
    dq = inject(bw, 5, lambda k: "u%d@dead.test" % k, sessions=1)
    _wait_down(bw, "dead.test")
    q1 = send1(bw, ["ok@live.test", "soft@live.test", "hard@live.test"])
    wait_delivery(bw, q1, "soft@live.test", "deferred")
    wait_delivery(bw, q1, "hard@live.test", "bounced")
    wait_delivery(bw, q1, "ok@live.test", "sent")
    time.sleep(1.2)
    now = time.time()
    objs = domain_objs(bw)
    by = {(o["domain"], o["vg"]): o for o in objs}
    assert ("dead.test", "default") in by and ("live.test", "default") in by, list(by)
    fields = {"domain": str, "vg": str, "state": str, "queued": int, "oldest_age_s": int, "connections": int,
              "delivered": int, "hard_bounces": int, "soft_bounces": int, "last_attempt": int, "next_retry": int,
              "concurrency": int, "max_connections": int, "good_neighbor": str, "concurrency_reason": str,
              "last_error": str}
    for o in objs:
        for f, t in fields.items():
            assert isinstance(o.get(f), t), "field %s of %r" % (f, o)
    d = by[("dead.test", "default")]
    assert d["state"] == "down" and d["queued"] == 5, d
    assert 1 <= d["oldest_age_s"] <= now - t_first + 2, d
    assert t_first - 1 <= d["last_attempt"] <= now + 1, d
    assert now + 3000 <= d["next_retry"] <= now + 4000, d
    assert "127.0.0.2" in d["last_error"], d
    assert d["delivered"] == 0 and d["connections"] == 0, d
    v = by[("live.test", "default")]
    assert v["state"] == "up", v
    assert v["queued"] == 1, v  # soft@ is waiting
    assert v["delivered"] == 1 and v["hard_bounces"] == 1 and v["soft_bounces"] == 1, v
    assert v["max_connections"] == 7 and 1 <= v["concurrency"] <= 7, v
    assert v["last_error"].startswith("450 4.2.0"), v
    assert v["next_retry"] > now, v
    # show: one domain (case-insensitive), the same object
    s = domain_objs(bw, "LIVE.TEST")
    assert [(o["domain"], o["vg"]) for o in s] == [("live.test", "default")], s
    assert s[0]["delivered"] == 1
    # text forms
    r = bw.mailctl("domain", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    # dead.test, live.test and the sender's domain, where the DSN for
    # hard@ waits (it goes out after the round of attempts, while soft@ is
    # still deferred)
    assert sorted(ln.split()[0] for ln in lines) == ["client.test.example", "dead.test", "live.test"], r.stdout
    dl = next(ln for ln in lines if ln.startswith("dead.test"))
    assert re.search(r"\bdown\b", dl) and "queued=5" in dl and "vg=default" in dl, dl
    r = bw.mailctl("domain", "show", "live.test")
    assert r.returncode == 0 and r.stdout.startswith("live.test") and re.search(r"\bup\b", r.stdout), r.stdout
    assert sorted(queue_ids(bw, "dead.test")) == sorted(dq.values())


# ---------------------------------------------------------------- crash

def test_kill_qmgr_while_a_domain_drains_loses_and_duplicates_nothing_beyond_in_flight(bw_factory, sink_factory):
    rx = sink_factory("127.0.0.2")
    bw = engine(bw_factory, _routes(dest_test=rx), controls=["dest.test max_connections=4"],
                params={"retry_schedule": "1h"})
    rx.watch(bw)
    rx.rcpt_default = "450 4.2.0 <x>: not yet"
    ids = inject(bw, 300, lambda k: "u%d@dest.test" % k, sessions=8)
    wait_until(lambda: len(rx.rcpt_log) >= 300, 30, 0.1, "every message tried once")
    rx.rcpt_default = None
    rx.dot_delay = 0.02
    bw.mailctl("flush", "dest.test")
    rx.wait_messages(80, 30)
    qmgr = bw.daemons("qmgr")[0]["pid"]
    bw.allow_daemon_exits = True
    mark = bw.log_mark()
    bw.kill(qmgr)
    bw.wait_for_log(r"breakwater/master\[\d+\]: (?:warning: )?daemon qmgr\[0\] pid %d killed by signal 9" % qmgr, 10, mark)
    bw.wait_for_log(r"breakwater/master\[\d+\]: daemon qmgr\[0\] started, pid \d+", 20, mark)

    def all_there():
        return set(sink_qids(rx.snapshot())) >= set(ids.values())
    try:
        wait_until(all_there, 60, 0.2, "every message delivered after qmgr was killed")
    except AssertionError:
        missing = set(ids.values()) - set(sink_qids(rx.snapshot()))
        raise AssertionError("%d of 300 never delivered after kill -9 of qmgr, e.g. %r; queue %r\nlog tail:\n%s" % (
            len(missing), sorted(missing)[:3], queue_ids(bw)[:5], bw.log()[mark:][-3000:]))
    _spool_gone(bw, list(ids.values()), 30)
    qids = sink_qids(rx.snapshot())
    dups = sorted(q for q in set(qids) if qids.count(q) > 1)
    assert len(qids) - len(set(qids)) <= 8, "%d duplicates (max_connections=4): %r" % (len(qids) - len(set(qids)), dups)
    assert set(qids) == set(ids.values())
    assert queue_ids(bw) == []
