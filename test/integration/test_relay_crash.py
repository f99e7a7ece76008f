"""kill -9 of each daemon (smtpd, qmgr, delivery, dnscache), and of the
master with all its daemons followed by `mailctl start`, twice during a
bounded flow of 2,000 messages from 20 client sessions, relayed by MX (so
dnscache is on the path) to Postfix's smtp-sink, which dumps every
transaction. Every message Breakwater accepted (a 250 with its queue id, or
a `(queued)` log line) must arrive at least once, the spool must be empty
again, and repeats are bounded by what can have been in flight at the
kills (MAX_DUPLICATES)."""

import collections
import re
import time

import pytest

from conftest import wait_until
from relaylib import LoadClient, SmtpSink, dns_factory, free_port_on, relay_instance  # noqa: F401

N_MESSAGES = 2000
SESSIONS = 20
MAX_DUPLICATES = 50
KILL_AT = (0.25, 0.6)   # fractions of the flow accepted when a kill happens


def _running_pid(bw, name):
    for d in bw.daemons(name):
        if d.get("state") == "running" and d.get("pid", 0) > 0:
            return d["pid"]
    return None


def _logged_queued_ids(bw):
    return set(re.findall(r"breakwater/smtpd\[\d+\]: ([0-9A-F]{18}): from=<[^>]*>, size=\d+, nrcpt=\d+ \(queued\)$",
                          bw.log(), re.M))


def _kill_everything(bw):
    """kill -9 of the master and every daemon it lists, then mailctl start."""
    st = bw.status_json()
    pids = [st["pid"]] + [d["pid"] for d in st["daemons"] if d.get("pid", 0) > 0]
    for pid in pids:
        bw.kill(pid)
    wait_until(lambda: bw.mailctl("status").returncode != 0, 10, 0.05, "the instance to be gone")
    bw.start()
    return pids[0]


@pytest.mark.parametrize("daemon", ["smtpd", "qmgr", "delivery", "dnscache", "all"])
def test_kill9_during_flow(bw_factory, dns_factory, daemon):
    port = free_port_on(["127.0.0.3"])
    dns = dns_factory({"sink.test": {"records": {
        "sink.test": {"MX": (300, ["10 mx.sink.test."])},
        "mx.sink.test": {"A": (300, ["127.0.0.3"])},
    }}})
    with SmtpSink("127.0.0.3", port) as sink:
        bw = relay_instance(bw_factory, None, dns, {"smtp_remote_port": str(port), "retry_schedule": "1s",
                                                     "smtp_timeout": "10s", "smtp_connect_timeout": "3s"})
        bw.allow_daemon_exits = True
        t0 = time.monotonic()
        load = LoadClient(bw, N_MESSAGES, sessions=SESSIONS, rcpt="load@sink.test", deadline_s=150).start()
        kills = []
        for frac in KILL_AT:
            want = int(N_MESSAGES * frac)
            wait_until(lambda: len(load.accepted) >= want or load.done(), 120, 0.02,
                       "%d messages accepted before killing %s" % (want, daemon))
            if daemon == "all":
                kills.append((_kill_everything(bw), len(load.accepted), sink.count()))
                continue
            pid = _running_pid(bw, daemon)
            assert pid, "no running %s in %r" % (daemon, bw.status_json()["daemons"])
            bw.kill(pid)
            kills.append((pid, len(load.accepted), sink.count()))
            new = wait_until(lambda: (_running_pid(bw, daemon) or 0) not in (0, pid) and _running_pid(bw, daemon),
                             20, 0.1, "%s to be restarted after kill -9 of %d" % (daemon, pid))
            assert new != pid
        load.join(160)
        accept_s = time.monotonic() - t0
        accepted = set(load.accepted) | _logged_queued_ids(bw)
        assert len(load.accepted) + len(load.failed) >= N_MESSAGES - SESSIONS, (len(load.accepted), len(load.failed))
        assert not load.failed, "%d messages never accepted (client errors %d)" % (len(load.failed), load.errors)

        def all_arrived():
            got = set(sink.queue_ids())
            return accepted <= got and not bw.queue_files()
        try:
            wait_until(all_arrived, 60, 0.5, "all %d accepted messages at the sink" % len(accepted))
        except AssertionError:
            got = set(sink.queue_ids())
            missing = sorted(accepted - got)
            log = bw.log().splitlines()
            left = []
            for f in bw.queue_files()[:5]:
                q = f.rsplit("/", 1)[1]
                left.append("%s%s:\n    %s" % (q, " (ACCEPTED)" if q in accepted else "",
                                                "\n    ".join(ln for ln in log if q in ln)))
            raise AssertionError("%d of %d accepted messages never arrived (e.g. %r); %d queue files left "
                                 "after %.0fs, kills %r; first leftovers and their log lines:\n%s" % (
                                     len(missing), len(accepted), missing[:5], len(bw.queue_files()),
                                     time.monotonic() - t0, kills, "\n".join(left)))
        total_s = time.monotonic() - t0
        ids = sink.queue_ids()
        assert None not in ids, "a message at the sink has no Breakwater Received: header"
        counts = collections.Counter(ids)
        dups = {q: c for q, c in counts.items() if c > 1}
        extra = sum(c - 1 for c in dups.values())
        assert extra <= MAX_DUPLICATES, "%d repeated deliveries (%d messages) after kill -9 of %s, allowed %d; kills %r" % (
            extra, len(dups), daemon, MAX_DUPLICATES, kills)
        # The spool is empty again: nothing stuck, nothing half-written left.
        assert bw.queue_files() == []
        wait_until(lambda: not bw.incoming_files(), 10, 0.1, "incoming/ to be cleaned")
        print("kill -9 %s: %d accepted in %.1fs, all delivered after %.1fs, %d repeats, kills %r" % (
            daemon, len(accepted), accept_s, total_s, extra, kills))
