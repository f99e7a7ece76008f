"""dnsserver.py - a small authoritative DNS server for the integration tests.

Serves zones from a Python dict on one free loopback port, UDP and TCP, from
a background thread with a bounded select loop (libevent's
regress_testutils idea: a canned DNS table on loopback).

    zones = {
        "example.test": {                        # zone apex
            "soa": {"ttl": 300, "minimum": 60},  # optional (these defaults)
            "records": {                         # owner -> type -> (ttl, [rdata])
                "example.test": {"MX": (300, ["10 mx1.example.test."])},
                "mx1.example.test": {"A": (300, ["192.0.2.10"])},
            },
        },
    }
    with DNSServer(zones) as dns:
        ... dns_servers = "127.0.0.1:%d" % dns.port ...
        dns.count("example.test", "MX")          # queries seen

Answers: records of the asked type (following a CNAME at the name, inside
our zones); the name exists without that type: NOERROR with no answer
(NODATA) and the SOA in the authority section; a name under a zone that is
not in its records: NXDOMAIN with the SOA; anything else: REFUSED.

Switches (attributes, change them at any time): truncate_udp (UDP answers
carry TC and no records, so the client must ask over TCP), delay (seconds
before each reply), drop (never reply), servfail (reply SERVFAIL).
Every query is recorded as (name, type, transport) in `queries`.
"""

import heapq
import select
import socket
import struct
import threading
import time

from dnslib import CLASS, QTYPE, RCODE, RR, SOA, DNSRecord

MAX_TCP_CONNS = 64
MAX_TCP_BUFFER = 70000


def _norm(name):
    return str(name).rstrip(".").lower()


def free_udp_tcp_port():
    """A loopback port free for both UDP and TCP (never 2024)."""
    for _ in range(200):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            if port == 2024:
                continue
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free UDP+TCP port")


class DNSServer:
    def __init__(self, zones, host="127.0.0.1", port=None):
        self.zones = {}
        self.lock = threading.Lock()
        for apex, zone in zones.items():
            self.set_zone(apex, zone)
        self.host = host
        self.truncate_udp = False
        self.delay = 0.0
        self.drop = False
        self.servfail = False
        self.queries = []
        self._stop = False
        self._timers = []  # heap of (when, seq, action)
        self._seq = 0
        for _ in range(20):
            self.port = port or free_udp_tcp_port()
            try:
                self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.udp.bind((host, self.port))
                self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.tcp.bind((host, self.port))
                self.tcp.listen(16)
                break
            except OSError:
                for s in (getattr(self, "udp", None), getattr(self, "tcp", None)):
                    if s:
                        s.close()
                if port:
                    raise
        self.udp.setblocking(False)
        self.tcp.setblocking(False)
        self.conns = {}  # socket -> bytearray
        self.thread = threading.Thread(target=self._run, name="dnsserver", daemon=True)
        self.thread.start()

    # -- zone data
    def set_zone(self, apex, zone):
        soa = zone.get("soa", {})
        records = {}
        for owner, types in zone.get("records", {}).items():
            records[_norm(owner)] = {t.upper(): (ttl, list(rdata)) for t, (ttl, rdata) in types.items()}
        with self.lock:
            self.zones[_norm(apex)] = {"soa": {"ttl": soa.get("ttl", 300), "minimum": soa.get("minimum", 60)},
                                       "records": records}

    def set_records(self, owner, rtype, ttl, rdata):
        """Add or replace (owner, type) in the zone that holds owner."""
        with self.lock:
            zone = self._zone_of(_norm(owner))
            assert zone is not None, "%s is in no zone" % owner
            zone["records"].setdefault(_norm(owner), {})[rtype.upper()] = (ttl, list(rdata))

    def _zone_of(self, name):
        best = None
        for apex in self.zones:
            if name == apex or name.endswith("." + apex):
                if best is None or len(apex) > len(best):
                    best = apex
        return self.zones.get(best) if best is not None else None

    def _apex_of(self, name):
        for apex in sorted(self.zones, key=len, reverse=True):
            if name == apex or name.endswith("." + apex):
                return apex
        return None

    # -- counters
    def count(self, name, rtype=None, transport=None):
        name = _norm(name)
        with self.lock:
            return sum(1 for n, t, tr in self.queries
                       if n == name and (rtype is None or t == rtype.upper()) and (transport is None or tr == transport))

    def reset_counts(self):
        with self.lock:
            self.queries = []

    # -- answering
    def _soa_rr(self, apex, zone):
        soa = zone["soa"]
        return RR(apex + ".", QTYPE.SOA, CLASS.IN, soa["ttl"],
                  SOA("ns." + apex + ".", "hostmaster." + apex + ".", (1, 3600, 600, 86400, soa["minimum"])))

    def _answer(self, request, transport):
        q = request.q
        name, qtype = _norm(q.qname), QTYPE.get(q.qtype)
        reply = request.reply()
        with self.lock:
            self.queries.append((name, str(qtype), transport))
            if self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            apex = self._apex_of(name)
            if apex is None:
                reply.header.rcode = RCODE.REFUSED
                return reply
            reply.header.aa = 1
            zone = self.zones[apex]
            seen = set()
            cur = name
            while True:
                z = self._zone_of(cur)
                owner = z["records"].get(cur) if z else None
                if owner is None:
                    if cur == name:
                        reply.header.rcode = RCODE.NXDOMAIN
                    reply.add_auth(self._soa_rr(apex, zone))
                    return reply
                if str(qtype) in owner:
                    ttl, rdata = owner[str(qtype)]
                    for rd in rdata:
                        reply.add_answer(*RR.fromZone("%s. %d IN %s %s" % (cur, ttl, qtype, rd)))
                    return reply
                if "CNAME" in owner and cur not in seen and len(seen) < 8:
                    seen.add(cur)
                    ttl, (target,) = owner["CNAME"]
                    reply.add_answer(*RR.fromZone("%s. %d IN CNAME %s" % (cur, ttl, target)))
                    cur = _norm(target)
                    continue
                reply.add_auth(self._soa_rr(apex, zone))
                return reply

    def _reply_bytes(self, data, transport):
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        if not request.questions:
            return None
        reply = self._answer(request, transport)
        if self.drop:
            return None
        if transport == "udp" and self.truncate_udp:
            reply.rr, reply.auth, reply.ar = [], [], []
            reply.header.tc = 1
        return reply.pack()

    def _later(self, action):
        if self.delay > 0:
            self._seq += 1
            heapq.heappush(self._timers, (time.monotonic() + self.delay, self._seq, action))
        else:
            action()

    def _on_udp(self):
        for _ in range(64):
            try:
                data, peer = self.udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            out = self._reply_bytes(data, "udp")
            if out is not None:
                self._later(lambda out=out, peer=peer: self._udp_send(out, peer))

    def _udp_send(self, out, peer):
        try:
            self.udp.sendto(out, peer)
        except OSError:
            pass

    def _on_accept(self):
        try:
            c, _ = self.tcp.accept()
        except OSError:
            return
        if len(self.conns) >= MAX_TCP_CONNS:
            c.close()
            return
        c.setblocking(False)
        self.conns[c] = bytearray()

    def _close(self, c):
        self.conns.pop(c, None)
        try:
            c.close()
        except OSError:
            pass

    def _on_conn(self, c):
        try:
            data = c.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        buf = self.conns[c]
        buf += data
        if len(buf) > MAX_TCP_BUFFER:
            self._close(c)
            return
        while len(buf) >= 2:
            n = struct.unpack("!H", bytes(buf[:2]))[0]
            if len(buf) < 2 + n:
                break
            msg = bytes(buf[2:2 + n])
            del buf[:2 + n]
            out = self._reply_bytes(msg, "tcp")
            if out is not None:
                self._later(lambda out=out, c=c: self._tcp_send(c, out))

    def _tcp_send(self, c, out):
        if c not in self.conns:
            return
        try:
            c.setblocking(True)
            c.settimeout(5)
            c.sendall(struct.pack("!H", len(out)) + out)
            c.setblocking(False)
        except OSError:
            self._close(c)

    def _run(self):
        while not self._stop:
            timeout = 0.1
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            socks = [self.udp, self.tcp] + list(self.conns)
            try:
                readable, _, _ = select.select(socks, [], [], timeout)
            except (OSError, ValueError):
                readable = []
            for s in readable:
                if s is self.udp:
                    self._on_udp()
                elif s is self.tcp:
                    self._on_accept()
                elif s in self.conns:
                    self._on_conn(s)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, action = heapq.heappop(self._timers)
                action()

    def close(self):
        self._stop = True
        self.thread.join(5)
        for c in list(self.conns):
            self._close(c)
        self.udp.close()
        self.tcp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
