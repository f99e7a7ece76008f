"""PIPELINING (RFC 2920): commands that arrive in one packet are all answered,
in order; several whole messages in one write; errors inside a pipeline;
a client that sends one byte at a time."""

import socket
import time

from conftest import CLIENT_HELO, HOSTNAME, QID_RE, dot_stuff, queued_id, simple_message


def _check_ehlo(r):
    assert r.code == 250 and r.texts[0].split()[0] == HOSTNAME, r


def test_envelope_pipelined_in_one_write(module_bw):
    bw = module_bw
    with bw.session() as c:
        c.send("EHLO %s\r\nMAIL FROM:<a@client.test.example>\r\nRCPT TO:<b@dest.test.example>\r\n"
               "RCPT TO:<c@dest.test.example>\r\nDATA\r\n" % CLIENT_HELO)
        ehlo, mail, rcpt1, rcpt2, data = c.replies(5)
        _check_ehlo(ehlo)
        assert mail.last == "250 2.1.0 Ok"
        assert rcpt1.last == "250 2.1.5 Ok"
        assert rcpt2.last == "250 2.1.5 Ok"
        assert data.last.startswith("354 ")
        content = simple_message("pipelined")
        c.send(dot_stuff(content) + b"QUIT\r\n")
        done, bye = c.replies(2)
        qid = queued_id(done)
        assert bye.last == "221 2.0.0 Bye"
    q = bw.read_queued(qid)
    assert q.rcpt_addresses == ["b@dest.test.example", "c@dest.test.example"]
    assert q.split_received()[1] == content


def test_several_messages_in_one_write(module_bw):
    bw = module_bw
    contents = [simple_message("pipelined %d" % i, b"body %d\r\n.dot line\r\n" % i) for i in range(3)]
    stream = b"EHLO " + CLIENT_HELO.encode() + b"\r\n"
    for i, content in enumerate(contents):
        stream += b"MAIL FROM:<s%d@client.test.example>\r\nRCPT TO:<r%d@dest.test.example>\r\nDATA\r\n" % (i, i)
        stream += dot_stuff(content)
    stream += b"QUIT\r\n"
    with bw.session() as c:
        c.send(stream)
        replies = c.replies(1 + 4 * 3 + 1)
    _check_ehlo(replies[0])
    ids = []
    for i in range(3):
        mail, rcpt, data, done = replies[1 + 4 * i:5 + 4 * i]
        assert (mail.code, rcpt.code, data.code) == (250, 250, 354), (mail, rcpt, data)
        ids.append(queued_id(done))
    assert replies[-1].last == "221 2.0.0 Bye"
    assert len(set(ids)) == 3
    for i, qid in enumerate(ids):
        q = bw.read_queued(qid)
        assert q.sender == "s%d@client.test.example" % i
        assert q.rcpt_addresses == ["r%d@dest.test.example" % i]
        assert q.split_received()[1] == contents[i]


def test_errors_inside_a_pipeline_keep_order(module_bw):
    bw = module_bw
    with bw.session() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@client.test.example>\r\nRCPT TO:<bad@>\r\nRCPT TO:<good@dest.test.example>\r\n"
               b"VRFY x\r\nBOGUS\r\nNOOP\r\nRCPT TO:<>\r\nHELP\r\nDATA\r\n")
        rs = c.replies(9)
        assert [r.code for r in rs] == [250, 501, 250, 252, 502, 250, 501, 214, 354], [str(r) for r in rs]
        c.send(b"Subject: x\r\n\r\ny\r\n.\r\n")
        q = bw.read_queued(queued_id(c.reply()))
    assert q.rcpt_addresses == ["good@dest.test.example"]


def test_many_pipelined_commands(module_bw):
    with module_bw.session() as c:
        c.ehlo()
        c.send(b"NOOP\r\n" * 500 + b"RSET\r\n" * 100)
        rs = c.replies(600, timeout=30)
        assert all(r.lines == ["250 2.0.0 Ok"] for r in rs)
        assert c.pending(0.2) == b"", "more replies than commands"


def test_rset_pipelined_between_transactions(module_bw):
    bw = module_bw
    with bw.session() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@client.test.example>\r\nRCPT TO:<x@dest.test.example>\r\nRSET\r\n"
               b"MAIL FROM:<b@client.test.example>\r\nRCPT TO:<y@dest.test.example>\r\nDATA\r\n")
        rs = c.replies(6)
        assert [r.code for r in rs] == [250, 250, 250, 250, 250, 354]
        c.send(b"Subject: after rset\r\n\r\n.\r\n")
        q = bw.read_queued(queued_id(c.reply()))
    assert q.sender == "b@client.test.example"
    assert q.rcpt_addresses == ["y@dest.test.example"]


def test_one_byte_at_a_time(module_bw):
    bw = module_bw
    content = simple_message("trickle", b".dot\r\nend\r\n")
    stream = (b"EHLO %s\r\nMAIL FROM:<a@client.test.example>\r\nRCPT TO:<b@dest.test.example>\r\nDATA\r\n"
              % CLIENT_HELO.encode())
    with bw.session() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(stream)):
            c.send(stream[i:i + 1])
            if i % 8 == 0:
                time.sleep(0.001)
        rs = c.replies(4)
        assert [r.code for r in rs] == [250, 250, 250, 354]
        body = dot_stuff(content)
        for i in range(len(body)):
            c.send(body[i:i + 1])
            if i % 8 == 0:
                time.sleep(0.001)
        qid = queued_id(c.reply())
    assert bw.read_queued(qid).split_received()[1] == content


def test_queued_reply_format(module_bw):
    with module_bw.session() as c:
        c.ehlo()
        r = c.mail("a@client.test.example", ["b@dest.test.example"], simple_message())
        assert QID_RE.match(r.last) and r.lines == [r.last]
