"""Limits: message_size_limit on the declared SIZE and on the real data,
smtpd_recipient_limit, smtpd_command_length_limit, smtpd_hard_error_limit."""

import time

from conftest import HOSTNAME, dot_stuff, queued_id, simple_message

BW_PARAMS = {
    "message_size_limit": "10240",
    "smtpd_recipient_limit": "5",
    "smtpd_command_length_limit": "1024",
    "smtpd_hard_error_limit": "5",
}

SENDER = "a@client.test.example"


def _session(bw):
    c = bw.session()
    c.ehlo()
    return c


def test_ehlo_advertises_limit(module_bw):
    with module_bw.session() as c:
        r = c.ehlo()
        assert "SIZE 10240" in r.texts, r


def test_declared_size_too_big(module_bw):
    with _session(module_bw) as c:
        assert c.cmd("MAIL FROM:<%s> SIZE=10241" % SENDER).lines == ["552 5.3.4 Message size exceeds fixed limit"]
        assert c.cmd("MAIL FROM:<%s> SIZE=99999999999999" % SENDER).lines == [
            "552 5.3.4 Message size exceeds fixed limit"]
        assert c.cmd("MAIL FROM:<%s> SIZE=5000" % SENDER).last == "250 2.1.0 Ok"


def test_real_data_too_big(module_bw):
    bw = module_bw
    before = bw.queue_files()
    big = simple_message("too big", (b"y" * 78 + b"\r\n") * 250)  # ~20 KB
    with _session(bw) as c:
        r = c.mail(SENDER, ["b@dest.test.example"], big)
        assert r.lines == ["552 5.3.4 Error: message file too big"], r
        # the session goes on and the next message is fine
        r = c.mail(SENDER, ["b@dest.test.example"], simple_message("small"))
        qid = queued_id(r)
    after = bw.queue_files()
    assert after == sorted(before + [bw.queue_path(qid)]), "the oversized message left a file"
    assert bw.incoming_files() == []


def test_real_data_much_too_big(module_bw):
    bw = module_bw
    before = bw.queue_files()
    with _session(bw) as c:
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<b@dest.test.example>").code == 250
        assert c.cmd("DATA").code == 354
        line = b"z" * 998 + b"\r\n"
        for _ in range(2000):        # 2 MB
            c.send(line)
        c.send(b".\r\n")
        assert c.reply(timeout=30).lines == ["552 5.3.4 Error: message file too big"]
        assert c.cmd("NOOP").code == 250
    assert bw.queue_files() == before
    assert bw.incoming_files() == []


def test_data_under_limit_accepted(module_bw):
    bw = module_bw
    content = simple_message("fits", (b"w" * 78 + b"\r\n") * 100)   # ~8 KB
    with _session(bw) as c:
        q = bw.read_queued(queued_id(c.mail(SENDER, ["b@dest.test.example"], content)))
    assert q.split_received()[1] == content


def test_recipient_limit(module_bw):
    bw = module_bw
    with _session(bw) as c:
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        for i in range(5):
            assert c.cmd("RCPT TO:<r%d@dest.test.example>" % i).last == "250 2.1.5 Ok"
        assert c.cmd("RCPT TO:<r5@dest.test.example>").lines == ["452 4.5.3 Error: too many recipients"]
        assert c.cmd("RCPT TO:<r6@dest.test.example>").lines == ["452 4.5.3 Error: too many recipients"]
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(simple_message("five")))
        q = bw.read_queued(queued_id(c.reply()))
    assert q.rcpt_addresses == ["r%d@dest.test.example" % i for i in range(5)]


def test_command_line_limit_boundary(module_bw):
    with _session(module_bw) as c:
        ok = "NOOP " + "x" * (1024 - 2 - 5)            # 1024 octets with CRLF
        assert len(ok) + 2 == 1024
        assert c.cmd(ok).code == 250, "a line of exactly smtpd_command_length_limit octets was refused"
        assert c.cmd(ok + "x").lines == ["500 5.5.2 Error: command line too long"]
        assert c.cmd("NOOP").code == 250


def test_huge_command_line_then_pipelined_command(module_bw):
    with _session(module_bw) as c:
        c.send(b"NOOP " + b"x" * 200000 + b"\r\nNOOP\r\n")
        r1, r2 = c.replies(2, timeout=20)
        assert r1.lines == ["500 5.5.2 Error: command line too long"]
        assert r2.lines == ["250 2.0.0 Ok"]


def test_long_address_line_in_mail(module_bw):
    with _session(module_bw) as c:
        r = c.cmd("MAIL FROM:<%s@example.com>" % ("a" * 1100))
        assert r.lines == ["500 5.5.2 Error: command line too long"], r


def test_hard_error_limit_disconnects(module_bw):
    with _session(module_bw) as c:
        got = []
        for i in range(7):
            try:
                c.send(b"BOGUS%d\r\n" % i)
            except OSError:
                break
            try:
                r = c.reply(timeout=5)
            except Exception as e:   # closed without a reply
                got.append("closed: %s" % e)
                break
            got.append(r.last)
            if r.code == 421:
                break
            extra = c.pending(0.2)   # a 421 right after the 5th error reply
            if extra:
                c.buf = extra + c.buf
                r = c.reply(timeout=1)
                got.append(r.last)
                break
        assert got[-1] == "421 4.7.0 %s Error: too many errors" % HOSTNAME, got
        errors = got[:-1]
        assert all(g == "502 5.5.2 Error: command not recognized" for g in errors), got
        assert len(errors) in (4, 5), "421 after %d errors with smtpd_hard_error_limit=5: %r" % (len(errors), got)
        assert c.wait_closed(3), "not disconnected after 421"


def test_error_limit_counts_other_errors(module_bw):
    with _session(module_bw) as c:
        codes = []
        for line in ("RCPT TO:<a@b.example>", "DATA", "MAIL FROM:<bad", "FOO", "MAIL FROM:<x@>", "NOOP", "NOOP"):
            try:
                c.send(line + "\r\n")
                r = c.reply(timeout=5)
            except Exception:
                break
            codes.append(r.code)
            extra = c.pending(0.2)
            if extra:
                c.buf = extra + c.buf
                codes.append(c.reply(timeout=1).code)
            if codes[-1] == 421:
                break
        assert codes[-1] == 421, codes
        assert c.wait_closed(3)


def test_good_commands_do_not_count(module_bw):
    with _session(module_bw) as c:
        for _ in range(30):
            assert c.cmd("NOOP").code == 250
        for _ in range(3):
            assert c.cmd("BOGUS").code == 502
        assert c.cmd("RSET").code == 250
        time.sleep(0.1)
        assert c.cmd("NOOP").code == 250
