"""Command timeout (smtpd_timeout) and data timeout (smtpd_data_timeout):
421 4.4.2 and close, nothing queued; activity keeps a session alive."""

import time

from conftest import HOSTNAME

BW_PARAMS = {"smtpd_timeout": "2s", "smtpd_data_timeout": "4s"}

TIMEOUT_REPLY = "421 4.4.2 %s Error: timeout exceeded" % HOSTNAME


def _wait_421(c, limit):
    t0 = time.monotonic()
    r = c.reply(timeout=limit)
    return r, time.monotonic() - t0


def test_command_timeout_after_greeting(module_bw):
    with module_bw.connect() as c:
        c.greeting()
        r, elapsed = _wait_421(c, 10)
        assert r.lines == [TIMEOUT_REPLY]
        assert 1.5 <= elapsed <= 5, "command timeout after %.1fs with smtpd_timeout=2s" % elapsed
        assert c.wait_closed(2)


def test_command_timeout_in_transaction(module_bw):
    bw = module_bw
    before = bw.queue_files()
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<b@dest.test.example>").code == 250
        r, elapsed = _wait_421(c, 10)
        assert r.lines == [TIMEOUT_REPLY]
        assert 1.5 <= elapsed <= 5
        assert c.wait_closed(2)
    assert bw.queue_files() == before


def test_activity_keeps_session_alive(module_bw):
    with module_bw.session() as c:
        c.ehlo()
        for _ in range(4):
            time.sleep(1.0)
            assert c.cmd("NOOP").code == 250
        assert c.cmd("QUIT").code == 221


def test_partial_command_line_times_out(module_bw):
    with module_bw.session() as c:
        c.send(b"EHLO without-end-of-line")
        r, elapsed = _wait_421(c, 10)
        assert r.lines == [TIMEOUT_REPLY]
        assert elapsed <= 5


def test_data_timeout(module_bw):
    bw = module_bw
    before = bw.queue_files()
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<b@dest.test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: stalls\r\n\r\nsome data but no end")
        r, elapsed = _wait_421(c, 15)
        assert r.lines == [TIMEOUT_REPLY]
        # the data timeout (4s) applies, not the command timeout (2s)
        assert 3.5 <= elapsed <= 8, "data timeout after %.1fs with smtpd_data_timeout=4s" % elapsed
        assert c.wait_closed(2)
    assert bw.queue_files() == before
    time.sleep(0.2)
    assert bw.incoming_files() == [], "the timed-out message left %r" % bw.incoming_files()


def test_slow_but_steady_data_is_accepted(module_bw):
    bw = module_bw
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<b@dest.test.example>").code == 250
        assert c.cmd("DATA").code == 354
        for i in range(2):
            c.send(b"line %d\r\n" % i)
            time.sleep(2.5)       # longer than smtpd_timeout, shorter than smtpd_data_timeout
        c.send(b".\r\n")
        r = c.reply()
        assert r.code == 250, r
