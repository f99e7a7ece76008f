"""DATA: exact dot-unstuffing, 8-bit and binary-ish content, large messages,
a terminator split across packets, bare LF / bare CR rejected (550 5.5.2,
nothing queued, logged), and SMTP smuggling payloads that must never yield
a second message."""

import re
import time

import pytest

from conftest import HOSTNAME, SMTPClosed, dot_stuff, queued_id, simple_message

SENDER = "a@client.test.example"
RCPT = "b@dest.test.example"
BARE_LF = "550 5.5.2 Error: bare <LF> received"
BARE_CR = "550 5.5.2 Error: bare <CR> received"


def _open_data(bw, params=""):
    c = bw.session()
    c.ehlo()
    assert c.cmd("MAIL FROM:<%s>%s" % (SENDER, params)).code == 250
    assert c.cmd("RCPT TO:<%s>" % RCPT).code == 250
    assert c.cmd("DATA").code == 354
    return c


def _send_raw(bw, stream, params=""):
    """Send a raw DATA stream (must include the final dot); returns (reply, queue file or None)."""
    with _open_data(bw, params) as c:
        c.send(stream)
        r = c.reply()
        q = bw.read_queued(queued_id(r)) if r.code == 250 else None
    return r, q


def test_dot_unstuffing_is_exact(module_bw):
    stream = (b"Subject: dots\r\n\r\n"
              b"..leading dot\r\n"
              b"...\r\n"
              b"..\r\n"
              b".x\r\n"
              b". space\r\n"
              b" .not at start\r\n"
              b"trailing dot.\r\n"
              b"\r\n"
              b"..\r\n"
              b".\r\n")
    want = (b"Subject: dots\r\n\r\n"
            b".leading dot\r\n"
            b"..\r\n"
            b".\r\n"
            b"x\r\n"
            b" space\r\n"
            b" .not at start\r\n"
            b"trailing dot.\r\n"
            b"\r\n"
            b".\r\n")
    r, q = _send_raw(module_bw, stream)
    assert r.code == 250, r
    assert q.split_received()[1] == want


def test_stuffing_round_trip_8bit(module_bw):
    lines = [b"Subject: 8bit", b"Content-Type: text/plain; charset=latin1", b"",
             bytes(range(0x20, 0x7f)), bytes(range(0x80, 0x100)), b"\tTab\tseparated\t",
             b".starts with dot", b"..two dots", b".", b"trailing spaces   ", "Grüße, ½ €".encode("utf-8"),
             b"", b"last line"]
    content = b"\r\n".join(lines) + b"\r\n"
    r, q = _send_raw(module_bw, dot_stuff(content), " BODY=8BITMIME")
    assert r.code == 250, r
    assert q.envelope["B"] == "8BITMIME"
    assert q.split_received()[1] == content


def test_empty_message(module_bw):
    r, q = _send_raw(module_bw, b".\r\n")
    assert r.code == 250, r
    received, rest = q.split_received()
    assert rest == b""
    assert q.content == received


def test_headers_only_message(module_bw):
    r, q = _send_raw(module_bw, b"Subject: only headers\r\n.\r\n")
    assert r.code == 250
    assert q.split_received()[1] == b"Subject: only headers\r\n"


def test_one_megabyte_message(module_bw):
    line = bytes(range(0x21, 0x7f)) * 10 + b"\r\n"       # 942 octets
    content = simple_message("1 MB", line * 1100)
    r, q = _send_raw(module_bw, dot_stuff(content))
    assert r.code == 250, r
    assert q.split_received()[1] == content


@pytest.mark.parametrize("pieces", [
    [b"Subject: split\r\n\r\nbody\r\n", b".\r\n"],
    [b"Subject: split\r\n\r\nbody\r", b"\n.\r\n"],
    [b"Subject: split\r\n\r\nbody\r\n.", b"\r\n"],
    [b"Subject: split\r\n\r\nbody\r\n.\r", b"\n"],
    [b"Subject: split\r\n\r\nbo", b"dy\r", b"\n", b".", b"\r", b"\n"],
], ids=["before-dot", "inside-crlf", "after-dot", "inside-final-crlf", "tiny-pieces"])
def test_terminator_split_across_packets(module_bw, pieces):
    bw = module_bw
    with _open_data(bw) as c:
        for p in pieces:
            c.send(p)
            time.sleep(0.15)
        q = bw.read_queued(queued_id(c.reply()))
    assert q.split_received()[1] == b"Subject: split\r\n\r\nbody\r\n"


BARE_CASES = [
    ("lf-in-body", b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n", [BARE_LF]),
    ("lf-first", b"\nSubject: x\r\n\r\nbody\r\n.\r\n", [BARE_LF]),
    ("lf-in-header", b"Subject: x\nX-Evil: y\r\n\r\nbody\r\n.\r\n", [BARE_LF]),
    ("cr-in-body", b"Subject: x\r\n\r\nline\rmore\r\n.\r\n", [BARE_CR]),
    ("cr-before-crlf", b"Subject: x\r\n\r\nline\r\r\n.\r\n", [BARE_CR]),
    ("cr-at-end-of-data", b"Subject: x\r\n\r\nline\r\n\r.\r\n.\r\n", [BARE_CR]),
    ("lfcr", b"Subject: x\r\n\r\nline\n\rmore\r\n.\r\n", [BARE_LF, BARE_CR]),
]


@pytest.mark.parametrize("stream,want", [(c[1], c[2]) for c in BARE_CASES], ids=[c[0] for c in BARE_CASES])
def test_bare_lf_cr_rejected(module_bw, stream, want):
    bw = module_bw
    before = bw.queue_files()
    mark = bw.log_mark()
    with _open_data(bw) as c:
        c.send(stream)
        r = c.reply()
        assert r.lines[-1] in want, r
        assert len(r.lines) == 1
        assert c.pending(0.3) == b"", "more replies after the rejection"
    assert bw.queue_files() == before, "a message with a bare LF/CR was queued"
    assert bw.incoming_files() == []
    bw.wait_for_log(r"breakwater/smtpd\[\d+\]: [0-9A-F]{18}: reject: DATA from unknown\[127\.0\.0\.1\]: (%s)"
                    % "|".join(re.escape(w) for w in want), 3, mark)


SMUGGLED = (b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@dest.test.example>\r\nDATA\r\n"
            b"From: ceo@dest.test.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n")

SMUGGLE_SEPARATORS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "lf-dot-cr": b"\n.\r",
    "cr-dot-cr": b"\r.\r",
}


@pytest.mark.parametrize("sep", list(SMUGGLE_SEPARATORS.values()), ids=list(SMUGGLE_SEPARATORS))
def test_smuggling_never_yields_two_messages(module_bw, sep):
    bw = module_bw
    before = bw.queue_files()
    stream = (b"MAIL FROM:<" + SENDER.encode() + b">\r\nRCPT TO:<" + RCPT.encode() + b">\r\nDATA\r\n"
              + b"From: a@client.test.example\r\nSubject: innocent\r\n\r\nhello" + sep + SMUGGLED + b".\r\n")
    assert b"\r\n.\r\n" not in stream[:-3], "test payload has an early real terminator"
    with bw.session() as c:
        c.ehlo()
        c.send(stream)
        mail, rcpt, data, end = c.replies(4)
        assert (mail.code, rcpt.code, data.code) == (250, 250, 354), (mail, rcpt, data)
        assert end.last in (BARE_LF, BARE_CR), "smuggling payload answered with %s" % end
        # nothing else: no reply to a smuggled MAIL/RCPT/DATA
        try:
            c.send(b"QUIT\r\n")
            rest = c.pending(1.0)
        except OSError:
            rest = b""
        assert rest in (b"", b"221 2.0.0 Bye\r\n"), "extra replies: %r" % rest
    assert bw.queue_files() == before, "smuggling payload produced messages"
    assert bw.incoming_files() == []


def test_smuggling_payload_in_separate_packets(module_bw):
    bw = module_bw
    before = bw.queue_files()
    with _open_data(bw) as c:
        c.send(b"Subject: innocent\r\n\r\nhello\n")
        time.sleep(0.15)
        c.send(b".\n")
        time.sleep(0.15)
        c.send(SMUGGLED)
        time.sleep(0.15)
        c.send(b".\r\n")
        r = c.reply()
        assert r.last in (BARE_LF, BARE_CR), r
        assert c.pending(0.5) == b""
    assert bw.queue_files() == before


def test_clean_message_after_rejection(module_bw):
    bw = module_bw
    with _open_data(bw) as c:
        c.send(b"Subject: x\r\n\r\nbad\nline\r\n.\r\n")
        assert c.reply().last == BARE_LF
        # the session may go on (RSET answered) or be closed; nothing else
        try:
            r = c.cmd("RSET", timeout=3)
        except (OSError, SMTPClosed):
            r = None
        assert r is None or r.code == 250, r
    # the same client can send a clean message afterwards
    with bw.session() as c:
        c.ehlo()
        qid = queued_id(c.mail(SENDER, [RCPT], simple_message("clean")))
    assert bw.read_queued(qid)


def test_received_header_shape(module_bw):
    r, q = _send_raw(module_bw, dot_stuff(simple_message("received")))
    received, _ = q.split_received()
    text = received.decode()
    assert text.startswith("Received: from ")
    assert "client.test.example" in text and "127.0.0.1" in text
    assert "by %s" % HOSTNAME in text
    assert "id %s" % q.id in text
    assert text.endswith("\r\n")
    for line in text.split("\r\n")[:-1]:
        assert len(line) <= 998
