"""The binary exchanges the Python clients build, sent as bytes.

pylibmc (binary get_multi, `_noreply`) and bmemcached (set_multi, get_multi)
batch quiet opcodes and end the batch with a noop; what the server answers
inside such a batch (only misses-with-key, only failures) decides what those
clients see. libmemcached 1.0.16 does not cope with some of these answers,
so they are pinned here at the byte level instead of through the client.
Each answer is compared as (opcode, status, opaque, extras, key, value,
cas set?), the status texts included (bmemcached puts them in exceptions).
"""

import socket
import struct

from harness import blob
from servers import SASL_PASSWORD, SASL_USER, bin_request

MB = 1024 * 1024

GET, SET, ADD, REPLACE, DELETE, INCR = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
NOOP, VERSION, GETK, GETKQ, APPEND, STAT = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x10
SETQ, ADDQ, REPLACEQ, DELETEQ, INCRQ, APPENDQ = 0x11, 0x12, 0x13, 0x14, 0x15, 0x19
TOUCH, GAT, GATQ, GATK = 0x1C, 0x1D, 0x1E, 0x23
SASL_LIST, SASL_AUTH = 0x20, 0x21
END = 0xE0F0  # the opaque of the noop that ends every exchange


def store(op, key, value, flags=0, exptime=0, opaque=0, cas=0):
    return bin_request(op, key=key, value=value, extras=struct.pack(">II", flags, exptime),
                       opaque=opaque, cas=cas)


def arith(op, key, delta, initial=0, exptime=0xFFFFFFFF, opaque=0):
    return bin_request(op, key=key, extras=struct.pack(">QQI", delta, initial, exptime),
                       opaque=opaque)


def read_packet(sock):
    def exact(n):
        got = b""
        while len(got) < n:
            chunk = sock.recv(n - len(got))
            if not chunk:
                raise ConnectionError(f"closed after {len(got)} of {n} bytes")
            got += chunk
        return got
    header = exact(24)
    magic, op, klen, elen, _dt, status, blen, opaque, cas = struct.unpack(">BBHBBHIIQ", header)
    body = exact(blen)
    return dict(magic=magic, op=op, status=status, opaque=opaque, extras=body[:elen],
                key=body[elen:elen + klen], value=body[elen + klen:], cas=cas)


class Conn:
    def __init__(self, server, login=False):
        self.sock = server.connect()
        if login:
            self.exchange(bin_request(SASL_AUTH, key=b"PLAIN", value=b"\0" + SASL_USER.encode()
                                      + b"\0" + SASL_PASSWORD.encode(), opaque=1))

    def exchange(self, *packets):
        """Send the packets and a noop; every answer up to the noop's."""
        self.sock.sendall(b"".join(packets) + bin_request(NOOP, opaque=END))
        answers = []
        while True:
            p = read_packet(self.sock)
            if p["op"] == NOOP and p["opaque"] == END:
                return answers
            answers.append((p["op"], p["status"], p["opaque"], p["extras"], p["key"],
                            p["value"], p["cas"] != 0))

    def one(self, packet):
        """Send one packet, read one answer (no noop: memcached -S refuses
        any command but SASL ones before login, and closes the connection)."""
        self.sock.sendall(packet)
        p = read_packet(self.sock)
        return [(p["op"], p["status"], p["opaque"], p["extras"], p["key"], p["value"],
                 p["cas"] != 0)]

    def until_closed(self, *packets):
        """Send the packets and a noop; the answers, and whether the server
        then closed the connection instead of answering the noop."""
        self.sock.sendall(b"".join(packets) + bin_request(NOOP, opaque=END))
        answers = []
        while True:
            try:
                p = read_packet(self.sock)
            except ConnectionError:
                return answers, "closed"
            if p["op"] == NOOP and p["opaque"] == END:
                return answers, "open"
            answers.append((p["op"], p["status"], p["opaque"], p["extras"], p["key"],
                            p["value"], p["cas"] != 0))

    def close(self):
        self.sock.close()


def quiet_scenario(login):
    def scenario(t, s):
        c = Conn(s, login)
        t.rec("setq x3 (silent on success)", c.exchange(
            store(SETQ, b"a", b"1", flags=5, opaque=10),
            store(SETQ, b"b", b"2", opaque=11),
            store(SETQ, b"n", b"10", opaque=12)), expect=[])
        t.rec("getkq batch: only hits answer, with their keys", c.exchange(
            bin_request(GETKQ, key=b"a", opaque=20),
            bin_request(GETKQ, key=b"missing", opaque=21),
            bin_request(GETKQ, key=b"b", opaque=22)),
            expect=[(GETKQ, 0, 20, struct.pack(">I", 5), b"a", b"1", True),
                    (GETKQ, 0, 22, struct.pack(">I", 0), b"b", b"2", True)])
        t.rec("getk miss answers status 1 with the key and no text", c.exchange(
            bin_request(GETK, key=b"missing", opaque=23)),
            expect=[(GETK, 1, 23, b"", b"missing", b"", False)])
        t.rec("get miss answers Not found", c.exchange(bin_request(GET, key=b"missing", opaque=24)),
              expect=[(GET, 1, 24, b"", b"", b"Not found", False)])
        t.rec("quiet failures answer, quiet successes do not", c.exchange(
            store(ADDQ, b"a", b"x", opaque=30),          # exists
            store(REPLACEQ, b"missing", b"x", opaque=31),  # not found
            bin_request(DELETEQ, key=b"missing", opaque=32),
            bin_request(APPENDQ, key=b"a", value=b"+", opaque=33),  # ok
            store(ADDQ, b"c", b"3", opaque=34),          # ok
            bin_request(APPENDQ, key=b"missing", value=b"+", opaque=35),  # not stored
            bin_request(DELETEQ, key=b"b", opaque=36)),  # ok
            expect=[(ADDQ, 2, 30, b"", b"", b"Data exists for key.", False),
                    (REPLACEQ, 1, 31, b"", b"", b"Not found", False),
                    (DELETEQ, 1, 32, b"", b"", b"Not found", False),
                    (APPENDQ, 5, 35, b"", b"", b"Not stored.", False)])
        t.rec("after the quiet batch", c.exchange(
            bin_request(GETKQ, key=b"a", opaque=40), bin_request(GETKQ, key=b"b", opaque=41),
            bin_request(GETKQ, key=b"c", opaque=42)),
            expect=[(GETKQ, 0, 40, struct.pack(">I", 5), b"a", b"1+", True),
                    (GETKQ, 0, 42, struct.pack(">I", 0), b"c", b"3", True)])
        t.rec("incr / incrq", c.exchange(
            arith(INCR, b"n", 5, opaque=50), arith(INCRQ, b"n", 5, opaque=51),
            arith(INCR, b"n", 0, opaque=52)),
            expect=[(INCR, 0, 50, b"", b"", struct.pack(">Q", 15), True),
                    (INCR, 0, 52, b"", b"", struct.pack(">Q", 20), True)])
        t.rec("incr missing without initial (exptime 0xffffffff)", c.exchange(
            arith(INCR, b"nope", 1, opaque=53)),
            expect=[(INCR, 1, 53, b"", b"", b"Not found", False)])
        t.rec("incr missing with initial creates it", c.exchange(
            arith(INCR, b"new", 1, initial=42, exptime=0, opaque=54)),
            expect=[(INCR, 0, 54, b"", b"", struct.pack(">Q", 42), True)])
        t.rec("incrq on a non-number", c.exchange(arith(INCRQ, b"a", 1, opaque=55)),
              expect=[(INCRQ, 6, 55, b"", b"", b"Non-numeric server-side value for incr or decr",
                       False)])
        t.rec("touch answers the flags as extras", c.exchange(
            bin_request(TOUCH, key=b"a", extras=struct.pack(">I", 100), opaque=60),
            bin_request(TOUCH, key=b"missing", extras=struct.pack(">I", 100), opaque=61)),
            expect=[(TOUCH, 0, 60, struct.pack(">I", 5), b"", b"", True),
                    (TOUCH, 1, 61, b"", b"", b"Not found", False)])
        t.rec("gat / gatq / gatk", c.exchange(
            bin_request(GAT, key=b"a", extras=struct.pack(">I", 100), opaque=62),
            bin_request(GATQ, key=b"missing", extras=struct.pack(">I", 100), opaque=63),
            bin_request(GATK, key=b"a", extras=struct.pack(">I", 100), opaque=64)),
            expect=[(GAT, 0, 62, struct.pack(">I", 5), b"", b"1+", True),
                    (GATK, 0, 64, struct.pack(">I", 5), b"a", b"1+", True)])
        t.rec("setq too large answers Too large. and drops the old value", c.exchange(
            store(SETQ, b"a", blob(MB, 1), opaque=70),
            bin_request(GETKQ, key=b"a", opaque=71)),
            expect=[(SETQ, 3, 70, b"", b"", b"Too large.", False)])
        t.rec("set with a stale cas", c.exchange(
            store(SET, b"c", b"x", cas=1, opaque=80)),
            expect=[(SET, 2, 80, b"", b"", b"Data exists for key.", False)])
        t.rec("unknown opcode", c.exchange(bin_request(0x7F, opaque=82)),
              expect=[(0x7F, 0x81, 82, b"", b"", b"Unknown command", False)])
        version = c.exchange(bin_request(VERSION, opaque=90))
        t.check("version answers a version string",
                len(version) == 1 and version[0][1] == 0 and version[0][5][:1].isdigit(),
                repr(version))
        stats = c.exchange(bin_request(STAT, opaque=91))
        t.check("stat answers key/value packets ended by an empty one",
                stats and stats[-1][4] == b"" and {b"pid", b"curr_items"} <= {p[4] for p in stats}
                and all(p[0] == STAT and p[2] == 91 for p in stats), repr(stats[:3]))
        c.close()
        c = Conn(s, login)
        t.rec("251-byte key: Invalid arguments, then the connection is closed",
              c.until_closed(store(SET, b"k" * 251, b"x", opaque=81)),
              expect=([(SET, 4, 81, b"", b"", b"Invalid arguments", False)], "closed"))
        c.close()
    return scenario


def test_quiet_batches(pair):
    pair.check(quiet_scenario(False))


def test_quiet_batches_after_sasl(sasl_pair):
    sasl_pair.check(quiet_scenario(True))


def test_sasl_exchange(sasl_pair):
    def scenario(t, s):
        c = Conn(s)
        t.rec("list mechanisms", c.one(bin_request(SASL_LIST, opaque=1)),
              expect=[(SASL_LIST, 0, 1, b"", b"", b"PLAIN", False)])
        t.rec("PLAIN auth", c.one(bin_request(
            SASL_AUTH, key=b"PLAIN", value=b"\0" + SASL_USER.encode() + b"\0"
            + SASL_PASSWORD.encode(), opaque=2)),
            expect=[(SASL_AUTH, 0, 2, b"", b"", b"Authenticated", False)])
        t.rec("set after auth", c.exchange(store(SET, b"k", b"v", opaque=3))[0][:3],
              expect=(SET, 0, 3))
        c.close()
    sasl_pair.check(scenario)
