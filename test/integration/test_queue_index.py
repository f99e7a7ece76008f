"""The per-(gateway, domain) Berkeley DB index (issue 4): parked mail waits
in the index, not in qmgr's memory (qmgr_domain_active_limit entries per
queue at most), and comes back oldest first when the domain is up; a
restart reads the index instead of the spool; a missing or corrupt index is
rebuilt from the spool with progress in the log; `mailctl queue reindex`;
paginated `queue list`; delete and redirect of a domain whose mail is
mostly in the index; new mail found through the spool's new/ links after
qmgr was killed.

Destinations are enginelib.Sink servers on 127.0.0.x ("close" mode: down;
"smtp": up)."""

import json
import os
import re
import time

from conftest import wait_until
from enginelib import domain_obj, engine, inject, sink_factory, sink_qids, up_re  # noqa: F401

WINDOW = 20


def _routes(**sinks):
    return [(d.replace("_", "."), "%s:%d" % (s.host, s.port)) for d, s in sinks.items()]


def _down_engine(bw_factory, sink_factory, n, window=WINDOW, **params):
    """An engine whose dest.test is down (retry 2 s) with n messages parked
    (other.test: down too, a sink that closes every connection)."""
    dest = sink_factory("127.0.0.2", mode="close")
    other = sink_factory("127.0.0.4", mode="close")
    p = {"retry_schedule": "2s", "qmgr_domain_active_limit": str(window)}
    p.update(params)
    bw = engine(bw_factory, _routes(dest_test=dest, other_test=other), params=p)
    dest.watch(bw)
    first = inject(bw, 1, lambda k: "first@dest.test", sessions=1)
    bw.wait_for_log(r"domain dest\.test \(vg default\) is down", 20)
    ids = inject(bw, n, lambda k: "u%d@dest.test" % k, sessions=4)
    ids[-1] = first[0]
    return bw, dest, ids


def _qmgr_pid(bw):
    pids = [d["pid"] for d in bw.daemons("qmgr") if d.get("pid", 0) > 0]
    assert len(pids) == 1, bw.daemons("qmgr")
    return pids[0]


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _all_delivered_once(dest, ids, timeout=60):
    """Every message of ids at the sink (waiting for the set, not a count:
    a repeated delivery must not end the wait early); returns the sink's
    queue ids, repeats included."""
    want = set(ids.values())
    dest.wait_messages(len(want), timeout)
    try:
        wait_until(lambda: want <= set(sink_qids(dest.messages)), timeout, 0.2, "every message at the sink")
    except AssertionError:
        pass
    qids = sink_qids(dest.messages)
    assert sorted(set(qids)) == sorted(want), "missing %r" % sorted(want - set(qids))[:5]
    return qids


def test_parked_mail_waits_in_the_index_and_comes_back_oldest_first(bw_factory, sink_factory):
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 300)
    time.sleep(1.5)  # mail younger than the last index flush (1 s) is listed after the indexed mail
    d = domain_obj(bw, "dest.test")
    assert d["state"] == "down" and d["queued"] == 301, d
    assert d["in_index"] >= 301 - 2, d  # at most the probe's message is in memory
    # the listing comes from the index, oldest first, paginated
    r = bw.mailctl("queue", "list", "--domain", "dest.test", "--json", "--limit", "50", "--offset", "10")
    assert r.returncode == 0, r.stderr
    page = [m["id"] for m in json.loads(r.stdout)]
    assert len(page) == 50, len(page)
    full = [m["id"] for m in json.loads(bw.mailctl("queue", "list", "--domain", "dest.test", "--json").stdout)]
    assert len(full) == 301 and page == full[10:60]
    r = bw.mailctl("queue", "list", "--domain", "dest.test", "--limit", "5")
    assert "-- 5 message(s) of 301 shown" in r.stdout, r.stdout[-300:]
    assert bw.mailctl("queue", "list", "--limit", "x").returncode == 2
    # `queue show` of a message that is only in the index
    r = bw.mailctl("queue", "show", full[-1], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == full[-1], r.stdout
    # flush says what waits in the index (it follows once the domain is up)
    r = bw.mailctl("flush", "dest.test")
    m = re.search(r"; (\d+) more recipient\(s\) waiting in the index", r.stdout)
    assert r.returncode == 0 and m and int(m.group(1)) >= 299, r.stdout
    # up: everything flows, exactly once, the oldest first
    mark = bw.log_mark()
    dest.mode = "smtp"
    bw.wait_for_log(up_re("dest.test"), 15, mark)
    qids = _all_delivered_once(dest, ids)
    assert len(qids) == 301
    order = sorted(ids.values(), key=lambda q: full.index(q))
    ranks = [order.index(q) for q in qids]
    assert ranks[0] <= 2 and max(ranks[:50]) < 80, "delivered in this order of arrival: %r" % ranks[:50]
    wait_until(lambda: domain_obj(bw, "dest.test")["queued"] == 0, 10, 0.2, "queued to reach 0")


def _sanitized(pid):
    """qmgr runs under AddressSanitizer (its quarantine makes RSS meaningless)."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def test_parked_mail_costs_qmgr_little_memory(bw_factory, sink_factory):
    """Parked mail is not in qmgr's memory: the domain's queue says so
    (in_index), and, once warm (the index's cache and regions touched by a
    first batch), qmgr's RSS grows by far less than 200 bytes per parked
    message (the index's pages in its cache, itself capped at 8 MB). The RSS
    part is skipped under AddressSanitizer, whose quarantine keeps freed
    memory."""
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 2000, window=50)
    pid = _qmgr_pid(bw)
    time.sleep(1.5)
    before = _rss_kb(pid)
    more = inject(bw, 6000, lambda k: "m%d@dest.test" % k, sessions=8)
    time.sleep(1.5)
    after = _rss_kb(pid)
    d = domain_obj(bw, "dest.test")
    assert d["queued"] == 8001 and d["in_index"] >= 8000, d
    if _sanitized(pid):
        return
    per_msg = (after - before) * 1024.0 / len(more)
    assert per_msg < 200, "qmgr grew %d kB for %d parked messages (%.0f bytes each)" % (
        after - before, len(more), per_msg)


def test_restart_reads_the_index_not_the_spool(bw_factory, sink_factory):
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 100)
    time.sleep(1.5)  # the index is flushed every second; the new/ links then go
    assert os.listdir(os.path.join(bw.queue_dir, "new")) == []
    bw.stop()
    mark = bw.log_mark()
    bw.start()
    bw.wait_for_log(r"qmgr\[\d+\]: queue loaded: 101 messages", 20, mark)
    assert not bw.log_matches(r"index: rebuilding", mark), bw.log()[mark:][-2000:]
    assert domain_obj(bw, "dest.test")["queued"] == 101
    dest.mode = "smtp"
    bw.mailctl("flush", "dest.test")
    _all_delivered_once(dest, ids)


def _rebuilt_after(bw, dest, ids, damage, why_re):
    bw.stop()
    damage(os.path.join(bw.queue_dir, "index"))
    mark = bw.log_mark()
    bw.start()
    bw.wait_for_log(why_re, 20, mark)
    bw.wait_for_log(r"index: rebuilding: 50% of the spool read", 20, mark)
    m = bw.wait_for_log(r"index: rebuilt: (\d+) messages", 30, mark)
    assert int(m.group(1)) == len(ids), m.group(0)
    assert domain_obj(bw, "dest.test")["queued"] == len(ids)
    dest.mode = "smtp"
    bw.mailctl("flush", "dest.test")
    _all_delivered_once(dest, ids)


def test_missing_index_is_rebuilt_with_progress(bw_factory, sink_factory):
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 60)

    def remove(d):
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    _rebuilt_after(bw, dest, ids, remove, r"index: rebuilding from the spool \(missing")


def test_corrupt_index_is_rebuilt(bw_factory, sink_factory):
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 60)

    def corrupt(d):
        with open(os.path.join(d, "domains.db"), "r+b") as f:
            f.write(b"\xff" * 4096)
    _rebuilt_after(bw, dest, ids, corrupt, r"index unusable .*domains\.db")


def test_mailctl_queue_reindex(bw_factory, sink_factory):
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 80)
    r = bw.mailctl("queue", "reindex", timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"index rebuilt from the spool: 81 message\(s\)", r.stdout), r.stdout
    assert bw.log_matches(r"index: rebuilding from the spool \(mailctl queue reindex\)")
    assert bw.mailctl("queue", "reindex", "x").returncode == 2
    d = domain_obj(bw, "dest.test")
    assert d["queued"] == 81, d
    dest.mode = "smtp"
    bw.mailctl("flush", "dest.test")
    qids = _all_delivered_once(dest, ids)
    assert len(qids) == len(set(qids)), "duplicates after a reindex"


def test_delete_and_redirect_a_domain_mostly_in_the_index(bw_factory, sink_factory):
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 1500)
    spare = sink_factory("127.0.0.3")
    spare.watch(bw)
    other = inject(bw, 700, lambda k: "o%d@other.test" % k, sessions=4)
    bw.wait_for_log(r"domain other\.test \(vg default\) is down", 20)
    r = bw.mailctl("queue", "delete", "--domain", "other.test", timeout=60)
    assert r.returncode == 0 and "deleted 700 recipient(s)" in r.stdout, (r.stdout, r.stderr)
    wait_until(lambda: not any(os.path.exists(bw.queue_path(q)) for q in other.values()), 30, 0.2,
               "the deleted messages' files to go")
    r = bw.mailctl("queue", "redirect", "--domain", "dest.test", "%s:%d" % (spare.host, spare.port), timeout=60)
    assert r.returncode == 0 and "redirected 1501 recipient(s)" in r.stdout, (r.stdout, r.stderr)
    got = spare.wait_messages(1501, 90)
    assert sorted(set(sink_qids(got))) == sorted(ids.values())
    assert dest.messages == []


def test_new_mail_is_found_after_qmgr_is_killed(bw_factory, sink_factory):
    """Mail accepted while qmgr is dead (its notices lost) and mail whose
    index record was not yet flushed when qmgr died: both are found through
    the new/ links when qmgr is back."""
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 20)
    bw.allow_daemon_exits = True
    pid = _qmgr_pid(bw)
    late = inject(bw, 30, lambda k: "late%d@dest.test" % k, sessions=2)
    bw.kill(pid)
    during = inject(bw, 30, lambda k: "during%d@dest.test" % k, sessions=2)
    wait_until(lambda: any(d.get("pid", 0) > 0 and d["pid"] != pid for d in bw.daemons("qmgr")), 20, 0.2,
               "qmgr to be restarted")
    allids = dict(ids)
    allids.update({1000 + k: q for k, q in late.items()})
    allids.update({2000 + k: q for k, q in during.items()})
    wait_until(lambda: domain_obj(bw, "dest.test")["queued"] == len(allids), 20, 0.3,
               "qmgr to know all %d messages" % len(allids))
    dest.mode = "smtp"
    bw.mailctl("flush", "dest.test")
    qids = _all_delivered_once(dest, allids)
    assert len(qids) - len(set(qids)) <= 2, "duplicates beyond what was in flight"


def test_bad_destination_controls_are_refused_with_file_and_line(bw_factory):
    """A typo in destination_controls is an error naming file and line at
    `config check` and `start`, and a running instance refuses a reload
    with it and keeps its table."""
    from enginelib import write_table
    bw = bw_factory(start=False)
    good = write_table(bw, "destination_controls", ["default retry_schedule=1m,5m", "slow.test max_connections=2"])
    bw.set_params(destination_controls=good)
    assert bw.mailctl("config", "check").returncode == 0
    bad = write_table(bw, "destination_controls", ["default retry_schedule=1m,5x"])
    bw.set_params(destination_controls=bad)
    for args in (("config", "check"), ("start",)):
        r = bw.mailctl(*args, timeout=60)
        assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
        assert "%s:2: retry_schedule=1m,5x: '5x' is not a duration" % bad in r.stderr, (args, r.stderr)
    good = write_table(bw, "destination_controls", ["default retry_schedule=1m", "slow.test max_connections=2"])
    bw.set_params(destination_controls=good)
    bw.start()
    write_table(bw, "destination_controls", ["slow.test good_neighbour=no"])
    r = bw.mailctl("reload", timeout=30)
    assert r.returncode != 0 and "'good_neighbour=no' is not a destination control" in (r.stdout + r.stderr), (
        r.returncode, r.stdout, r.stderr)
    # the master checks too (a SIGHUP from elsewhere)
    import signal
    mark = bw.log_mark()
    bw.kill(bw.master_pid(), signal.SIGHUP)
    bw.wait_for_log(r"reload refused, keeping the running configuration: destination_controls: .*:2: "
                    r"'good_neighbour=no' is not a destination control", 10, mark)


def test_kill9_of_qmgr_while_a_domain_drains_from_the_index(bw_factory, sink_factory):
    """600 parked messages (20 in memory at a time); the destination comes
    back and, while the parked mail is being read in and delivered, qmgr is
    killed: its successor takes up from the index; every message arrives,
    and no more than the jobs in flight at the kill arrive twice."""
    bw, dest, ids = _down_engine(bw_factory, sink_factory, 600)
    bw.allow_daemon_exits = True
    time.sleep(1.5)
    dest.dot_delay = 0.01
    dest.mode = "smtp"
    bw.mailctl("flush", "dest.test")
    dest.wait_messages(150, 60)
    pid = _qmgr_pid(bw)
    bw.kill(pid)
    wait_until(lambda: any(d.get("pid", 0) > 0 and d["pid"] != pid for d in bw.daemons("qmgr")), 20, 0.2,
               "qmgr to be restarted")
    bw.mailctl("flush", "dest.test")
    qids = _all_delivered_once(dest, ids, timeout=90)
    extra = len(qids) - len(set(qids))
    assert extra <= 20, "%d messages delivered twice after kill -9 of qmgr (at most the 20 in memory)" % extra
    wait_until(lambda: not any(os.path.exists(bw.queue_path(q)) for q in ids.values()), 30, 0.2,
               "every delivered message's file to go")
    assert os.listdir(os.path.join(bw.queue_dir, "new")) == [] or wait_until(
        lambda: os.listdir(os.path.join(bw.queue_dir, "new")) == [], 10, 0.2, "new/ to be empty")


def test_parked_mail_expires_after_max_queue_lifetime(bw_factory, sink_factory):
    """Mail parked for a down domain is never attempted on its own, yet it
    bounces after max_queue_lifetime like any other (one DSN per message,
    status 4.4.7, the domain's last error in it), found in the index in
    arrival order."""
    dest = sink_factory("127.0.0.2", mode="close")
    bounces = sink_factory("127.0.0.3")
    p = {"retry_schedule": "3s", "max_queue_lifetime": "8s", "qmgr_domain_active_limit": str(WINDOW)}
    bw = engine(bw_factory, _routes(dest_test=dest, client_test_example=bounces), params=p)
    dest.watch(bw)
    bounces.watch(bw)
    first = inject(bw, 1, lambda k: "first@dest.test", sessions=1)
    bw.wait_for_log(r"domain dest\.test \(vg default\) is down", 20)
    ids = inject(bw, 60, lambda k: "u%d@dest.test" % k, sessions=4)
    ids[-1] = first[0]
    assert domain_obj(bw, "dest.test")["in_index"] >= 59
    got = bounces.wait_messages(61, 40)
    assert len(got) == 61, len(got)
    bodies = [m.data.decode("utf-8", "replace") for m in got]
    assert all("expired after" in b for b in bodies), [b for b in bodies if "expired after" not in b][0][:2000]
    assert sum("Status: 4.4.7" in b for b in bodies) >= 59
    lines = bw.log_matches(r": to=<u\d+@dest\.test>, relay=none, .*dsn=4\.4\.7, status=bounced \(message expired")
    assert len(lines) >= 59, len(lines)
    wait_until(lambda: not any(os.path.exists(bw.queue_path(q)) for q in ids.values()), 20, 0.2,
               "the expired messages' files to go")
    d = domain_obj(bw, "dest.test")
    assert d["queued"] == 0 and d["in_index"] == 0, d
    assert bw.log_matches(r"domain dest\.test \(vg default\): \d+ waiting recipient\(s\) expired after max_queue_lifetime")
