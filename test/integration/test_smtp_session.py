"""SMTP basics against one shared instance: greeting, EHLO keywords, HELO,
the MAIL/RCPT/DATA happy path checked in the spool file, the queue id in the
250 reply, RSET, NOOP, QUIT, HELP, VRFY, command order (503), unknown and
malformed commands, MAIL parameters, the log lines of a session."""

import re
import smtplib
import time

import pytest

from conftest import CLIENT_HELO, HOSTNAME, LOG_PREFIX, queued_id, simple_message

BW_PARAMS = {"message_size_limit": "1048576"}

SENDER = "alice@client.test.example"


def test_greeting(module_bw):
    with module_bw.connect() as c:
        r = c.reply()
        assert r.lines == ["220 %s ESMTP Breakwater" % HOSTNAME]


def test_ehlo_keywords(module_bw):
    with module_bw.session() as c:
        r = c.cmd("EHLO " + CLIENT_HELO)
        assert r.code == 250
        assert all(ln.startswith("250-") for ln in r.lines[:-1]) and r.last.startswith("250 ")
        assert r.texts[0].split()[0] == HOSTNAME, "hostname must come first: %s" % r
        kw = [t.upper() for t in r.texts[1:]]
        for want in ("PIPELINING", "SIZE 1048576", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            assert want in kw, "EHLO lacks %s: %s" % (want, r)
        assert "STARTTLS" not in kw


def test_helo(module_bw):
    with module_bw.session() as c:
        r = c.cmd("HELO " + CLIENT_HELO)
        assert r.lines == ["250 %s" % HOSTNAME]


def test_commands_are_case_insensitive(module_bw):
    with module_bw.session() as c:
        assert c.cmd("ehlo " + CLIENT_HELO).code == 250
        assert c.cmd("mail from:<%s>" % SENDER).last == "250 2.1.0 Ok"
        assert c.cmd("rcpt to:<bob@dest.test.example>").last == "250 2.1.5 Ok"
        assert c.cmd("rset").last == "250 2.0.0 Ok"


def test_happy_path_spool_file(module_bw):
    bw = module_bw
    content = simple_message("happy path", b"Line one.\r\n\r\nLine three.\r\n")
    t_before = time.time()
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).last == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<bob@dest.test.example>").last == "250 2.1.5 Ok"
        assert c.cmd("RCPT TO:<carol@other.test.example>").last == "250 2.1.5 Ok"
        assert c.cmd("DATA").last == "354 End data with <CR><LF>.<CR><LF>"
        c.send(content + b".\r\n")
        r = c.reply()
        qid = queued_id(r)
        assert c.cmd("QUIT").last == "221 2.0.0 Bye"
        assert c.wait_closed(3)
    assert re.fullmatch(r"[0-9A-F]{18}", qid)
    path = bw.queue_path(qid)
    assert path in bw.queue_files(), "queue file for %s not at %s: %r" % (qid, path, bw.queue_files())
    q = bw.read_queue_file(path)
    assert q.id == qid
    assert q.sender == SENDER
    assert q.recipients == [("-", "bob@dest.test.example"), ("-", "carol@other.test.example")]
    assert q.envelope["C"] == "127.0.0.1"
    assert q.envelope["H"] == CLIENT_HELO
    assert q.envelope["P"] == "ESMTP"
    assert q.envelope["B"] == "7BIT"
    assert q.envelope["U"] == "0"
    assert str(bw.port) in q.envelope["L"]
    arrival = int(q.envelope["T"]) / 1e6
    assert t_before - 5 <= arrival <= time.time() + 5, "arrival time %r" % q.envelope["T"]
    received, rest = q.split_received()
    assert rest == content, "content differs: %r" % q.content
    assert qid.encode() in received, "Received: header does not name the queue id: %r" % received
    assert HOSTNAME.encode() in received
    assert bw.incoming_files() == []

    # the log lines of this session
    log = bw.log()
    pid = bw.smtpd_pids()[0]
    pre = LOG_PREFIX + r"breakwater/smtpd\[%d\]: " % pid
    assert re.search(r"^" + pre + r"connect from unknown\[127\.0\.0\.1\]$", log, re.M), log[-2000:]
    assert re.search(r"^" + pre + qid + r": client=unknown\[127\.0\.0\.1\]$", log, re.M), log[-2000:]
    m = re.search(r"^" + pre + qid + r": from=<%s>, size=(\d+), nrcpt=2 \(queued\)$" % re.escape(SENDER), log, re.M)
    assert m, log[-2000:]
    assert len(content) <= int(m.group(1)) <= len(q.content) + 10
    bw.wait_for_log(r"^" + pre + r"disconnect from unknown\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6$", 3)


def test_helo_session_is_smtp_protocol(module_bw):
    bw = module_bw
    qid = bw.send_message(ehlo=False)
    q = bw.read_queued(qid)
    assert q.envelope["P"] == "SMTP"
    assert q.envelope["H"] == CLIENT_HELO


def test_queue_ids_increase(module_bw):
    a = module_bw.send_message()
    b = module_bw.send_message()
    assert a != b and b > a, (a, b)


def test_smtplib_sendmail(module_bw):
    bw = module_bw
    before = set(bw.queue_files())
    s = smtplib.SMTP("127.0.0.1", bw.port, timeout=10)
    try:
        code, _ = s.ehlo(CLIENT_HELO)
        assert code == 250
        assert s.has_extn("pipelining") and s.has_extn("8bitmime")
        assert s.esmtp_features.get("size") == "1048576"
        msg = "Subject: via smtplib\r\n\r\nHello from smtplib.\r\n.leading dot\r\n"
        refused = s.sendmail(SENDER, ["x@dest.test.example", "y@dest.test.example"], msg)
        assert refused == {}
    finally:
        s.quit()
    new = sorted(set(bw.queue_files()) - before)
    assert len(new) == 1, new
    q = bw.read_queue_file(new[0])
    assert q.rcpt_addresses == ["x@dest.test.example", "y@dest.test.example"]
    assert q.split_received()[1] == msg.encode()


def test_rset_clears_transaction(module_bw):
    with module_bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<bob@dest.test.example>").code == 250
        assert c.cmd("RSET").last == "250 2.0.0 Ok"
        r = c.cmd("DATA")
        assert r.last in ("503 5.5.1 Error: need MAIL command", "503 5.5.1 Error: need RCPT command"), r
        assert c.cmd("RCPT TO:<bob@dest.test.example>").last == "503 5.5.1 Error: need MAIL command"
        assert c.cmd("MAIL FROM:<%s>" % SENDER).last == "250 2.1.0 Ok"


def test_ehlo_resets_transaction(module_bw):
    with module_bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).last == "250 2.1.0 Ok"


def test_noop_help_vrfy_quit(module_bw):
    with module_bw.session() as c:
        assert c.cmd("NOOP").lines == ["250 2.0.0 Ok"]
        assert c.cmd("HELP").lines == ["214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY"]
        assert c.cmd("VRFY bob").lines == ["252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"]
        assert c.cmd("QUIT").lines == ["221 2.0.0 Bye"]
        assert c.wait_closed(3)


def test_command_order_errors(module_bw):
    with module_bw.session() as c:
        assert c.cmd("MAIL FROM:<%s>" % SENDER).last == "503 5.5.1 Error: send HELO/EHLO first"
        c.ehlo()
        assert c.cmd("RCPT TO:<bob@dest.test.example>").last == "503 5.5.1 Error: need MAIL command"
        r = c.cmd("DATA")
        assert r.last in ("503 5.5.1 Error: need MAIL command", "503 5.5.1 Error: need RCPT command"), r
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("MAIL FROM:<%s>" % SENDER).last == "503 5.5.1 Error: nested MAIL command"
        assert c.cmd("DATA").last == "503 5.5.1 Error: need RCPT command"
        # the transaction is intact after those errors
        assert c.cmd("RCPT TO:<bob@dest.test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: after errors\r\n\r\nok\r\n.\r\n")
        queued_id(c.reply())


def test_unknown_command(module_bw):
    with module_bw.session() as c:
        assert c.cmd("FOOBAR baz").lines == ["502 5.5.2 Error: command not recognized"]
        assert c.cmd("STARTTLS").code in (502, 454), "no TLS in this build"
        assert c.cmd("").code in (500, 502)
        assert c.cmd("NOOP").code == 250


@pytest.mark.parametrize("line", ["EHLO", "HELO", "MAIL", "MAIL FROM", "MAIL TO:<a@b.example>"])
def test_syntax_errors(module_bw, line):
    with module_bw.session() as c:
        if not line.endswith("LO"):
            c.ehlo()
        r = c.cmd(line)
        assert r.code == 501 and r.last.startswith("501 5.5.4 Syntax: "), "%s -> %s" % (line, r)


def test_rcpt_syntax_error(module_bw):
    with module_bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        r = c.cmd("RCPT FROM:<bob@dest.test.example>")
        assert r.last.startswith("501 5.5.4 Syntax: "), r


def test_nul_in_command(module_bw):
    with module_bw.session() as c:
        c.send(b"NOOP \x00 hidden\r\n")
        assert c.reply().lines == ["500 5.5.2 Error: NUL character in command"]
        assert c.cmd("NOOP").code == 250


def test_long_command_line_default_limit(module_bw):
    with module_bw.session() as c:
        c.ehlo()
        assert c.cmd("NOOP " + "x" * 3000).lines == ["500 5.5.2 Error: command line too long"]
        assert c.cmd("NOOP").code == 250


@pytest.mark.parametrize("params,env_b,env_u", [
    ("BODY=8BITMIME", "8BITMIME", "0"),
    ("BODY=7BIT", "7BIT", "0"),
    ("SIZE=100", "7BIT", "0"),
    ("SIZE=100 BODY=8BITMIME SMTPUTF8", "8BITMIME", "1"),
])
def test_mail_parameters(module_bw, params, env_b, env_u):
    bw = module_bw
    with bw.session() as c:
        c.ehlo()
        r = c.mail(SENDER, ["bob@dest.test.example"], simple_message("params"), mail_params=params)
        q = bw.read_queued(queued_id(r))
    assert q.envelope["B"] == env_b
    assert q.envelope["U"] == env_u


@pytest.mark.parametrize("params", ["FOO=bar", "BODY=BINARYMIME", "SIZE=abc"])
def test_bad_mail_parameters(module_bw, params):
    with module_bw.session() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s> %s" % (SENDER, params))
        if params != "FOO=bar":   # a bad value of a known parameter
            assert r.code in (501, 555) and r.last[4:10] == "5.5.4 ", r
        else:
            assert r.last == "555 5.5.4 Unsupported option: %s" % params, r


def test_any_destination_from_mynetworks(module_bw):
    # 127.0.0.1 is in the default mynetworks: relaying anywhere is allowed
    with module_bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        for rcpt in ("a@example.com", "b@example.org", "c@some.where.example.net"):
            assert c.cmd("RCPT TO:<%s>" % rcpt).last == "250 2.1.5 Ok"


def test_custom_banner(bw_factory):
    bw = bw_factory({"smtpd_banner": "$myhostname ready, ${myhostname?expanded}"})
    with bw.connect() as c:
        assert c.reply().lines == ["220 %s ready, expanded" % HOSTNAME]
