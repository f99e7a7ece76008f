"""Relay control: a client outside mynetworks may only send to relay_domains;
".domain" entries match sub-domains; others get 554 5.7.1 and a log line."""

import re

import pytest

from conftest import CLIENT_HELO, queued_id, simple_message

BW_PARAMS = {"mynetworks": "10.0.0.0/8", "relay_domains": "example.org"}

SENDER = "a@client.test.example"
DENIED = "554 5.7.1 <%s>: Relay access denied"


def _rcpt(bw, rcpt):
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        return c.cmd("RCPT TO:<%s>" % rcpt)


@pytest.mark.parametrize("rcpt", ["x@example.org", "X.Y@EXAMPLE.ORG", "x@Example.Org"])
def test_relay_domain_accepted(module_bw, rcpt):
    assert _rcpt(module_bw, rcpt).last == "250 2.1.5 Ok"


@pytest.mark.parametrize("rcpt", ["x@other.net", "x@sub.example.org", "x@notexample.org", "x@example.org.evil.net",
                                  "x@[127.0.0.1]"])
def test_other_domains_denied(module_bw, rcpt):
    assert _rcpt(module_bw, rcpt).last == DENIED % rcpt


def test_denial_is_logged(module_bw):
    bw = module_bw
    mark = bw.log_mark()
    assert _rcpt(bw, "victim@other.net").last == DENIED % "victim@other.net"
    bw.wait_for_log(
        r"breakwater/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: "
        + re.escape(DENIED % "victim@other.net")
        + re.escape("; from=<%s> to=<victim@other.net> proto=ESMTP helo=<%s>" % (SENDER, CLIENT_HELO)) + "$",
        3, mark)


def test_mixed_recipients_only_allowed_queued(module_bw):
    bw = module_bw
    with bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<one@example.org>").code == 250
        assert c.cmd("RCPT TO:<two@other.net>").last == DENIED % "two@other.net"
        assert c.cmd("RCPT TO:<three@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(simple_message("mixed") + b".\r\n")
        q = bw.read_queued(queued_id(c.reply()))
    assert q.rcpt_addresses == ["one@example.org", "three@example.org"]


def test_only_denied_recipients_no_data(module_bw):
    with module_bw.session() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<two@other.net>").code == 554
        assert c.cmd("DATA").last == "503 5.5.1 Error: need RCPT command"


def test_dot_domain_matches_subdomains(bw_factory):
    bw = bw_factory({"mynetworks": "10.0.0.0/8", "relay_domains": "example.org, .example.org"})
    for rcpt in ("x@example.org", "x@sub.example.org", "x@deep.sub.example.org"):
        assert _rcpt(bw, rcpt).last == "250 2.1.5 Ok", rcpt
    for rcpt in ("x@other.net", "x@badexample.org"):
        assert _rcpt(bw, rcpt).last == DENIED % rcpt, rcpt


def test_dot_domain_only_matches_subdomains(bw_factory):
    bw = bw_factory({"mynetworks": "10.0.0.0/8", "relay_domains": ".example.org"})
    assert _rcpt(bw, "x@sub.example.org").last == "250 2.1.5 Ok"


def test_mynetworks_client_relays_anywhere(bw_factory):
    bw = bw_factory({"mynetworks": "10.0.0.0/8, 127.0.0.0/24", "relay_domains": "example.org"})
    assert _rcpt(bw, "x@other.net").last == "250 2.1.5 Ok"
