"""Relay through smtp_routes: what arrives at the receiving server (envelope,
exact content with our Received: header, dot lines, 8BITMIME, SIZE), the `*`
default route, sub-domain keys, host lists with their own ports, EHLO/HELO,
PIPELINING or not, and one transaction per message per domain."""

import re

from conftest import HOSTNAME, queued_id
from relaylib import (BOUNCE_DOMAIN, DEST, SENDER, closed_port, delivery_lines, relay,  # noqa: F401
                      relay_instance, rx_factory, wait_delivery, wait_removed)

RECEIVED_RE = (r"^Received: from client\.test\.example \(unknown \[127\.0\.0\.1\]\)\r\n"
               r"\tby " + re.escape(HOSTNAME) + r" \(Breakwater\) with ESMTP id %s(?:\r\n\tfor <[^>]+>)?;\r\n"
               r"\t[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n")

TRICKY_BODY = (b"First line.\r\n"
               b".starts with a dot\r\n"
               b"..two dots\r\n"
               b".\r\n"
               b" .space then dot\r\n"
               b"\r\n"
               b"after an empty line\r\n"
               + b"x" * 900 + b"\r\n"
               b"last line.\r\n")


def _content(subject, body=TRICKY_BODY, to="a@dest.test"):
    return (b"From: Sender <" + SENDER.encode() + b">\r\nTo: <" + to.encode() + b">\r\nSubject: " + subject.encode()
            + b"\r\nMessage-ID: <" + subject.replace(" ", "-").encode() + b"@client.test.example>\r\n"
            b"X-Custom: kept as is\r\n\r\n" + body)


def _split_received(content, qid):
    m = re.match(RECEIVED_RE % qid, content.decode("latin-1"))
    assert m, "first header is not our Received: for %s:\n%r" % (qid, content[:400])
    return content[m.end():]


def test_route_delivers_exact_content(relay):
    r = relay()
    content = _content("exact content")
    qid = r.bw.send_message(sender=SENDER, rcpts=["a@dest.test"], content=content)
    (m,) = r.rx.wait_messages(1)
    assert m.mail_from == SENDER
    assert m.rcpt_tos == ["a@dest.test"]
    assert m.peer[0] == "127.0.0.1"
    assert m.helo == HOSTNAME, "EHLO name %r, want myhostname" % m.helo
    assert _split_received(m.content, qid) == content, "content changed in transit"
    line = wait_delivery(r.bw, qid, "a@dest.test", "sent")[0]
    assert line["relay"] == "127.0.0.2[127.0.0.2]:%d" % r.rx.port
    assert line["dsn"] == "2.0.0"
    assert "Ok: accepted by test receiver" in line["reply"]
    wait_removed(r.bw, qid)
    assert r.bw.queue_files() == []
    # Exactly once.
    assert r.rx.quiet(0.5) == []
    assert len(r.rx.snapshot()) == 1


def test_size_and_8bitmime_parameters(relay):
    r = relay(size=100000)
    body = "Grüße aus Köln\r\n".encode("utf-8")
    content = _content("eight bit", body)
    with r.bw.session() as c:
        c.ehlo()
        qid = queued_id(c.mail(SENDER, ["a@dest.test"], content, mail_params="BODY=8BITMIME"))
    (m,) = r.rx.wait_messages(1)
    assert "BODY=8BITMIME" in [o.upper() for o in m.mail_options], m.mail_options
    sizes = [o for o in m.mail_options if o.upper().startswith("SIZE=")]
    assert len(sizes) == 1 and int(sizes[0][5:]) >= len(content), (m.mail_options, len(content))
    assert _split_received(m.content, qid) == content, "8-bit content changed in transit"


def test_seven_bit_message_has_no_body_parameter(relay):
    r = relay()
    r.send(["a@dest.test"])
    (m,) = r.rx.wait_messages(1)
    assert not any(o.upper().startswith("BODY=") for o in m.mail_options), m.mail_options
    # SIZE only when the receiver advertises it (this one does not).
    assert not any(o.upper().startswith("SIZE=") for o in m.mail_options), m.mail_options


def test_default_route(bw_factory, rx_factory):
    exact = rx_factory("127.0.0.2")
    default = rx_factory("127.0.0.3")
    bw = relay_instance(bw_factory, [("exact.test", "127.0.0.2:%d" % exact.port),
                                     ("*", "127.0.0.3:%d" % default.port)])
    q1 = bw.send_message(sender=SENDER, rcpts=["x@exact.test"], content=_content("exact"))
    q2 = bw.send_message(sender=SENDER, rcpts=["y@anything.example"], content=_content("default one"))
    q3 = bw.send_message(sender=SENDER, rcpts=["z@sub.exact.test"], content=_content("default two"))
    exact.wait_messages(1)
    got = default.wait_messages(2)
    assert [m.rcpt_tos for m in exact.snapshot()] == [["x@exact.test"]]
    assert sorted(m.rcpt_tos[0] for m in got) == ["y@anything.example", "z@sub.exact.test"]
    for qid in (q1, q2, q3):
        wait_removed(bw, qid)
    line = delivery_lines(bw, q2, "y@anything.example", "sent")[0]
    assert line["relay"] == "127.0.0.3[127.0.0.3]:%d" % default.port


def test_subdomain_key(bw_factory, rx_factory):
    sub = rx_factory("127.0.0.2")
    default = rx_factory("127.0.0.3")
    bw = relay_instance(bw_factory, [(".corp.test", "127.0.0.2:%d" % sub.port),
                                     ("*", "127.0.0.3:%d" % default.port)])
    bw.send_message(sender=SENDER, rcpts=["a@mail.corp.test"], content=_content("sub one"))
    bw.send_message(sender=SENDER, rcpts=["b@deep.mail.corp.test"], content=_content("sub two"))
    bw.send_message(sender=SENDER, rcpts=["c@notcorp.test"], content=_content("not sub"))
    got = sub.wait_messages(2)
    assert sorted(m.rcpt_tos[0] for m in got) == ["a@mail.corp.test", "b@deep.mail.corp.test"]
    assert [m.rcpt_tos for m in default.wait_messages(1)] == [["c@notcorp.test"]]


def test_route_domain_case_insensitive(relay):
    r = relay()
    qid = r.send(["Mixed.Case@DEST.Test"])
    (m,) = r.rx.wait_messages(1)
    assert m.rcpt_tos == ["Mixed.Case@DEST.Test"], "recipient address must be passed on unchanged"
    wait_removed(r.bw, qid)


def test_route_host_list_first_host_used(bw_factory, rx_factory):
    """`host:port host:port`: each host is reached at its own port."""
    first = rx_factory("127.0.0.2")
    second = rx_factory("127.0.0.3")
    bw = relay_instance(bw_factory, [("list.test", "127.0.0.2:%d 127.0.0.3:%d" % (first.port, second.port))])
    qid = bw.send_message(sender=SENDER, rcpts=["a@list.test"], content=_content("list first"))
    line = wait_delivery(bw, qid, "a@list.test", "sent")[0]
    assert line["relay"] == "127.0.0.2[127.0.0.2]:%d" % first.port, (
        "the first host of the route list was not used at its own port: %r\nlog:\n%s" % (line, bw.log()[-2000:]))
    assert len(first.snapshot()) == 1 and second.snapshot() == []


def test_route_host_list_fallback_when_first_refuses(bw_factory, rx_factory):
    second = rx_factory("127.0.0.3")
    dead = closed_port("127.0.0.2")
    bw = relay_instance(bw_factory, [("list.test", "127.0.0.2:%d 127.0.0.3:%d" % (dead, second.port))])
    mark = bw.log_mark()
    qid = bw.send_message(sender=SENDER, rcpts=["a@list.test"], content=_content("list fallback"))
    (m,) = second.wait_messages(1)
    assert m.rcpt_tos == ["a@list.test"]
    line = wait_delivery(bw, qid, "a@list.test", "sent", start=mark)[0]
    assert line["relay"] == "127.0.0.3[127.0.0.3]:%d" % second.port
    # (the port is checked by test_route_host_list_first_host_used)
    bw.wait_for_log(r"%s: connect to 127\.0\.0\.2\[127\.0\.0\.2\]:\d+: Connection refused" % qid, 2, mark)
    wait_removed(bw, qid)


def test_one_transaction_per_domain(bw_factory, rx_factory):
    rx = rx_factory("127.0.0.2")
    bw = relay_instance(bw_factory, [("one.test", "127.0.0.2:%d" % rx.port), ("two.test", "127.0.0.2:%d" % rx.port)])
    rcpts = ["a@one.test", "x@two.test", "b@one.test", "y@two.test", "c@ONE.test"]
    qid = bw.send_message(sender=SENDER, rcpts=rcpts, content=_content("two domains"))
    got = rx.wait_messages(2)
    assert rx.quiet(0.5) == [], "more than one transaction per domain"
    by_domain = sorted((sorted(m.rcpt_tos) for m in got), key=len)
    assert by_domain == [["x@two.test", "y@two.test"], ["a@one.test", "b@one.test", "c@ONE.test"]], by_domain
    # Both copies carry the same content.
    assert got[0].content == got[1].content
    wait_removed(bw, qid)
    assert len(delivery_lines(bw, qid, status="sent")) == 5


def test_many_messages_same_domain(relay):
    r = relay()
    qids = [r.send(["n%d@dest.test" % i], subject="msg %d" % i) for i in range(8)]
    got = r.rx.wait_messages(8)
    assert sorted(m.rcpt_tos[0] for m in got) == sorted("n%d@dest.test" % i for i in range(8))
    for qid in qids:
        wait_removed(r.bw, qid)
    assert r.rx.quiet(0.5) == []


def test_receiver_without_pipelining(relay):
    r = relay(pipelining=False)
    r.rx.rcpt_replies = {"bad@dest.test": "550 5.1.1 <bad@dest.test>: no such user"}
    qid = r.send(["a@dest.test", "bad@dest.test", "b@dest.test"])
    (m,) = r.rx.wait_messages(1)
    assert m.rcpt_tos == ["a@dest.test", "b@dest.test"]
    wait_delivery(r.bw, qid, "bad@dest.test", "bounced")
    wait_delivery(r.bw, qid, "b@dest.test", "sent")
    (dsn,) = r.dsns(1)
    assert dsn.recipient("bad@dest.test")["status"] == "5.1.1"
    wait_removed(r.bw, qid)


def test_helo_fallback_when_ehlo_refused(relay):
    r = relay()
    r.rx.ehlo_reply = "502 5.5.1 EHLO not implemented here"
    qid = r.send(["a@dest.test"])
    (m,) = r.rx.wait_messages(1)
    cmds = r.rx.sessions[-1]["commands"]
    assert cmds[:2] == ["EHLO " + HOSTNAME, "HELO " + HOSTNAME], cmds
    assert m.mail_options == [], "ESMTP parameters sent after HELO: %r" % m.mail_options
    wait_removed(r.bw, qid)


def test_recipient_and_sender_domains_routed_independently(bw_factory, rx_factory):
    """The envelope sender's domain has no influence on the route."""
    rx = rx_factory("127.0.0.2")
    bw = relay_instance(bw_factory, [("dest.test", "127.0.0.2:%d" % rx.port)])
    qid = bw.send_message(sender="someone@" + BOUNCE_DOMAIN, rcpts=["a@dest.test"], content=_content("indep"))
    rx.wait_messages(1)
    wait_removed(bw, qid)
    assert DEST in delivery_lines(bw, qid)[0]["to"]
