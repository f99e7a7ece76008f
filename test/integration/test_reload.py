"""mailctl reload: a new main.cf takes effect (EHLO SIZE) without dropping an
open connection; a bad main.cf is refused with FILE:LINE and the running
configuration stays."""

import re
import time

from conftest import queued_id, simple_message, wait_until


def _ehlo_size(bw):
    with bw.session() as c:
        r = c.ehlo()
        c.cmd("QUIT")
    sizes = [t.split()[1] for t in r.texts if t.upper().startswith("SIZE ")]
    assert len(sizes) == 1, "EHLO has no single SIZE line: %s" % r
    return int(sizes[0])


def test_reload_applies_new_config_without_dropping_connections(bw_factory):
    bw = bw_factory({"message_size_limit": "10240"})
    master = bw.master_pid()
    assert _ehlo_size(bw) == 10240

    old = bw.session()
    try:
        old.ehlo()
        assert old.cmd("MAIL FROM:<a@client.test.example>").code == 250
        bw.set_params(message_size_limit="20480")
        r = bw.reload()
        assert r.returncode == 0 and r.stderr == "", r

        wait_until(lambda: _ehlo_size(bw) == 20480, 5, 0.2, "EHLO SIZE 20480 after reload")
        assert bw.master_pid() == master, "reload restarted the master"

        # the connection opened before the reload is still served
        time.sleep(0.5)
        assert old.cmd("RCPT TO:<b@dest.test.example>").code == 250
        assert old.cmd("DATA").code == 354
        old.send(b"Subject: across reload\r\n\r\nstill here\r\n.\r\n")
        qid = queued_id(old.reply())
        assert old.cmd("QUIT").code == 221
    finally:
        old.close()
    q = bw.read_queued(qid)
    assert q.split_received()[1] == b"Subject: across reload\r\n\r\nstill here\r\n"

    # the new limit is enforced too: 15000 bytes now fits
    qid2 = bw.send_message(content=simple_message("big", (b"x" * 70 + b"\r\n") * 200))
    assert bw.read_queued(qid2)


def test_reload_bad_config_is_refused(bw_factory):
    bw = bw_factory({"message_size_limit": "10240"})
    st = bw.status_json()
    good = open(bw.main_cf).read()
    bad = good + "message_size_limit = 20480\nsmtpd_timeout = soon\n"
    bw.write_config(bad)
    lineno = bad.count("\n")

    with bw.session() as c:
        c.ehlo()
        r = bw.reload(check=False)
        assert r.returncode == 1, r
        assert re.search(r"%s:%d: smtpd_timeout: \S" % (re.escape(bw.main_cf), lineno), r.stderr), r.stderr
        assert r.stderr.count("\n") == 1, "more than one line on stderr: %r" % r.stderr
        assert c.cmd("NOOP").code == 250, "connection dropped by a refused reload"

    bw.write_config(good)   # mailctl itself needs a valid main.cf to find the instance
    st2 = bw.status_json()
    assert st2["pid"] == st["pid"]
    time.sleep(0.5)
    assert _ehlo_size(bw) == 10240, "a refused reload changed the running configuration"

    bw.write_config(good.replace("message_size_limit = 10240", "message_size_limit = 30720"))
    bw.reload()
    wait_until(lambda: _ehlo_size(bw) == 30720, 5, 0.2, "EHLO SIZE 30720 after a good reload")
