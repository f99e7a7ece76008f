"""RFC 5321 path syntax in MAIL FROM and RCPT TO: quoted local parts, length
limits, the null sender, address literals, source routes, 8-bit addresses
and SMTPUTF8."""

import pytest

from conftest import queued_id, simple_message

L64 = "a" * 64
L65 = "a" * 65
LONG_DOMAIN = ".".join(["d" * 60] * 5) + ".example"   # 312 octets > 255
PATH_DOMAIN = ".".join(["d" * 60] * 3) + ".example.com"  # 194: local 64 + 194 + "@<>" = 261 > 256

GOOD = [
    "user@example.com",
    "first.last+tag@example.com",
    '"john doe"@example.com',
    '"quoted\\"quote"@example.com',
    '"odd@char"@example.com',
    L64 + "@example.com",
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    "user@sub-domain.example-host.com",
]

BAD = [
    "user@",
    "@example.com",
    "user",
    "us er@example.com",
    "user@exa mple.com",
    "user@-bad.example.com",
    "user@example..com",
    "user..dots@example.com",
    ".user@example.com",
    L65 + "@example.com",
    "user@" + LONG_DOMAIN,
    L64 + "@" + PATH_DOMAIN,
    '"unterminated@example.com',
    "user@[300.1.1.1]",
]


def _session(bw):
    c = bw.session()
    c.ehlo()
    return c


@pytest.mark.parametrize("addr", GOOD)
def test_good_sender(module_bw, addr):
    with _session(module_bw) as c:
        assert c.cmd("MAIL FROM:<%s>" % addr).last == "250 2.1.0 Ok", addr


@pytest.mark.parametrize("addr", GOOD)
def test_good_recipient(module_bw, addr):
    with _session(module_bw) as c:
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<%s>" % addr).last == "250 2.1.5 Ok", addr


@pytest.mark.parametrize("addr", BAD)
def test_bad_sender(module_bw, addr):
    with _session(module_bw) as c:
        r = c.cmd("MAIL FROM:<%s>" % addr)
        assert r.last.startswith("501 5.1.7 Bad sender address syntax"), "%s -> %s" % (addr, r)
        # no transaction was started
        assert c.cmd("RCPT TO:<b@dest.test.example>").last == "503 5.5.1 Error: need MAIL command"


@pytest.mark.parametrize("addr", BAD)
def test_bad_recipient(module_bw, addr):
    with _session(module_bw) as c:
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        r = c.cmd("RCPT TO:<%s>" % addr)
        assert r.last.startswith("501 5.1.3 Bad recipient address syntax"), "%s -> %s" % (addr, r)


def test_missing_brackets_or_junk_after_path(module_bw):
    with _session(module_bw) as c:
        r = c.cmd("MAIL FROM:<a@example.com")
        assert r.code == 501, r
        r = c.cmd("MAIL FROM:<a@example.com>junk")
        assert r.code in (501, 555), r


def test_null_sender_accepted_and_queued(module_bw):
    bw = module_bw
    with _session(bw) as c:
        assert c.cmd("MAIL FROM:<>").last == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<bob@dest.test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(simple_message("bounce") + b".\r\n")
        q = bw.read_queued(queued_id(c.reply()))
    assert q.sender == ""
    assert "S" in q.envelope


def test_null_recipient_refused(module_bw):
    with _session(module_bw) as c:
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        r = c.cmd("RCPT TO:<>")
        assert r.last.startswith("501 5.1.3 Bad recipient address syntax"), r


def test_postmaster_without_domain_accepted(module_bw):
    with _session(module_bw) as c:
        assert c.cmd("MAIL FROM:<a@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<postmaster>").last == "250 2.1.5 Ok"
        assert c.cmd("RCPT TO:<Postmaster>").last == "250 2.1.5 Ok"


def test_quoted_local_part_kept_in_envelope(module_bw):
    bw = module_bw
    with _session(bw) as c:
        r = c.mail('"john doe"@client.test.example', ['"mary smith"@dest.test.example'], simple_message("quoted"))
        q = bw.read_queued(queued_id(r))
    assert "john doe" in q.sender and q.sender.endswith("@client.test.example"), q.sender
    assert len(q.recipients) == 1 and "mary smith" in q.recipients[0][1], q.recipients


def test_source_route_is_dropped(module_bw):
    bw = module_bw
    with _session(bw) as c:
        r = c.mail("@relay.example.net:user@client.test.example", ["@a.example,@b.example:bob@dest.test.example"],
                   simple_message("route"))
        q = bw.read_queued(queued_id(r))
    assert q.sender == "user@client.test.example"
    assert q.rcpt_addresses == ["bob@dest.test.example"]


def test_8bit_address_needs_smtputf8(module_bw):
    bw = module_bw
    with _session(bw) as c:
        c.send("MAIL FROM:<jörg@client.test.example>\r\n".encode("utf-8"))
        assert c.reply().last == "553 5.6.7 Error: 8-bit address needs SMTPUTF8"
        c.send("MAIL FROM:<jörg@client.test.example> SMTPUTF8\r\n".encode("utf-8"))
        assert c.reply().last == "250 2.1.0 Ok"
        c.send("RCPT TO:<zoë@bücher.example>\r\n".encode("utf-8"))
        assert c.reply().last == "250 2.1.5 Ok"
        assert c.cmd("DATA").code == 354
        c.send(simple_message("utf8") + b".\r\n")
        q = bw.read_queued(queued_id(c.reply()))
    assert q.sender == "jörg@client.test.example"
    assert q.rcpt_addresses == ["zoë@bücher.example"]
    assert q.envelope["U"] == "1"
