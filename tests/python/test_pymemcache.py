"""pymemcache (text protocol), what Django's PyMemcacheCache speaks.

Every scenario runs against stock memcached and shoal and must get the same
answers; the `expect=` values pin memcached 1.6's behaviour directly.
"""

import os
import re
import socket
import time

import pytest
from pymemcache.client.base import Client

from harness import blob, raised

MB = 1024 * 1024
TOO_LARGE = raised("MemcacheServerError", "b'object too large for cache'")


def client(server, **kw):
    kw.setdefault("connect_timeout", 5)
    kw.setdefault("timeout", 5)
    kw.setdefault("default_noreply", False)
    where = server.unix if server.unix else (server.addr.split(":")[0], server.port)
    return Client(where, **kw)


class FlagsSerde:
    """Hands the raw value and its 32-bit flags back, so flags are compared."""

    def serialize(self, key, value):
        return value

    def deserialize(self, key, value, flags):
        return (value, flags)


class ExplicitFlags:
    def __init__(self, flags):
        self.flags = flags

    def serialize(self, key, value):
        return value, self.flags

    def deserialize(self, key, value, flags):
        return (value, flags)


def test_storage_commands(pair):
    def scenario(t, s):
        c = client(s)
        t.do("get missing", c.get, "k", expect=None)
        t.do("set", c.set, "k", b"v1", expect=True)
        t.do("get", c.get, "k", expect=b"v1")
        t.do("set overwrites", c.set, "k", b"v2", expect=True)
        t.do("get overwritten", c.get, "k", expect=b"v2")
        t.do("set empty value", c.set, "empty", b"", expect=True)
        t.do("get empty value", c.get, "empty", expect=b"")
        t.do("set binary value", c.set, "bin", bytes(range(256)) + b"\r\nEND\r\n", expect=True)
        t.do("get binary value", c.get, "bin", expect=bytes(range(256)) + b"\r\nEND\r\n")
        t.do("add existing", c.add, "k", b"x", expect=False)
        t.do("add new", c.add, "a", b"added", expect=True)
        t.do("get added", c.get, "a", expect=b"added")
        t.do("replace missing", c.replace, "nope", b"x", expect=False)
        t.do("get after failed replace", c.get, "nope", expect=None)
        t.do("replace existing", c.replace, "k", b"v3", expect=True)
        t.do("get replaced", c.get, "k", expect=b"v3")
        t.do("append", c.append, "k", b"-tail", expect=True)
        t.do("prepend", c.prepend, "k", b"head-", expect=True)
        t.do("get after append/prepend", c.get, "k", expect=b"head-v3-tail")
        t.do("append missing", c.append, "nope", b"x", expect=False)
        t.do("prepend missing", c.prepend, "nope", b"x", expect=False)
        t.do("get after failed append", c.get, "nope", expect=None)
        t.do("delete existing", c.delete, "k", expect=True)
        t.do("delete again", c.delete, "k", expect=False)
        t.do("get deleted", c.get, "k", expect=None)
        t.do("delete_many", c.delete_many, ["a", "bin", "missing"], expect=True)
        t.do("get_many after delete_many", c.get_many, ["a", "bin", "empty"],
             expect={"empty": b""})
        t.do("touch existing", c.touch, "empty", 100, expect=True)
        t.do("touch missing", c.touch, "nope", 100, expect=False)
        t.do("set_many", c.set_many, {"m1": b"1", "m2": b"2", "m3": b"3"}, expect=[])
        t.do("get_many order", c.get_many, ["m3", "nope", "m1", "m2"],
             expect={"m3": b"3", "m1": b"1", "m2": b"2"})
        t.do("flush_all", c.flush_all, expect=True)
        t.do("get after flush_all", c.get_many, ["m1", "m2", "m3", "empty"], expect={})
        t.do("set after flush_all", c.set, "k", b"again", expect=True)
        t.do("get after flush_all and set", c.get, "k", expect=b"again")
        c.close()
    pair.check(scenario)


def test_flags_round_trip(pair):
    def scenario(t, s):
        for flags in (0, 1, 0x7FFFFFFF, 0xDEADBEEF, 0xFFFFFFFF):
            c = client(s, serde=ExplicitFlags(flags))
            t.do(f"set flags={flags:#x}", c.set, f"f{flags}", b"v", expect=True)
            t.do(f"get flags={flags:#x}", c.get, f"f{flags}", expect=(b"v", flags))
            c.close()
        c = client(s, serde=ExplicitFlags(7))
        t.do("append keeps flags", c.append, "f1", b"w", expect=True)
        t.do("get after append", c.get, "f1", expect=(b"vw", 1))
        c.close()
    pair.check(scenario)


def test_cas(pair):
    def scenario(t, s):
        c = client(s)
        t.do("gets missing", c.gets, "k", expect=(None, None))
        t.do("cas missing", c.cas, "k", b"x", b"12345", expect=None)
        c.set("k", b"v1")
        value, cas1 = c.gets("k")  # (the token itself differs between servers)
        t.rec("gets value", value, expect=b"v1")
        t.check("cas token is a positive integer", cas1 is not None and cas1.isdigit()
                and int(cas1) > 0, f"cas={cas1!r}")
        t.do("cas match", c.cas, "k", b"v2", cas1, expect=True)
        t.do("get after cas", c.get, "k", expect=b"v2")
        t.do("cas mismatch (stale token)", c.cas, "k", b"v3", cas1, expect=False)
        t.do("get after failed cas", c.get, "k", expect=b"v2")
        _, cas2 = c.gets("k")
        t.check("cas token changes on cas", cas2 != cas1)
        c.touch("k", 1000)
        _, cas3 = c.gets("k")
        t.check("cas token unchanged by touch", cas3 == cas2, f"{cas2!r} -> {cas3!r}")
        c.append("k", b"+")
        _, cas4 = c.gets("k")
        t.check("cas token changes on append", cas4 != cas3)
        c.set("n", b"1")
        _, ncas = c.gets("n")
        c.incr("n", 1)
        _, ncas2 = c.gets("n")
        t.check("cas token changes on incr", ncas2 != ncas)
        c.set("k", b"v9")
        t.do("cas after set (stale)", c.cas, "k", b"x", cas4, expect=False)
        many = c.gets_many(["k", "n", "missing"])
        t.rec("gets_many keys", sorted(many), expect=["k", "n"])
        t.rec("gets_many values", {k: v for k, (v, _) in many.items()},
              expect={"k": b"v9", "n": b"2"})
        t.check("gets_many cas tokens distinct", many["k"][1] != many["n"][1])
        t.do("cas with gets_many token", c.cas, "n", b"10", many["n"][1], expect=True)
        t.do("cas noreply", c.cas, "n", b"11", many["n"][1], noreply=True, expect=True)
        t.do("get after noreply cas (stale token: unchanged)", c.get, "n", expect=b"10")
        c.close()
    pair.check(scenario)


def test_incr_decr(pair):
    def scenario(t, s):
        c = client(s)
        t.do("incr missing", c.incr, "n", 1, expect=None)
        t.do("decr missing", c.decr, "n", 1, expect=None)
        c.set("n", b"5")
        t.do("incr", c.incr, "n", 3, expect=8)
        t.do("decr", c.decr, "n", 2, expect=6)
        t.do("decr below zero stops at 0", c.decr, "n", 100, expect=0)
        t.do("get after decr to 0", c.get, "n", expect=b"0")
        c.set("n", b"100")
        t.do("decr 100 -> 99", c.decr, "n", 1, expect=99)
        # memcached decrements in place and pads the shorter number with spaces
        t.do("get after decr keeps length (space padded)", c.get, "n", expect=b"99 ")
        t.do("incr padded value", c.incr, "n", 1, expect=100)
        t.do("get after incr back to 3 digits", c.get, "n", expect=b"100")
        c.set("n", b"007")
        t.do("incr leading zeros", c.incr, "n", 1, expect=8)
        t.do("get after incr of 007", c.get, "n", expect=b"8  ")
        c.set("n", b"99")
        t.do("incr grows the value", c.incr, "n", 1, expect=100)
        t.do("get grown value", c.get, "n", expect=b"100")
        c.set("n", b"18446744073709551615")
        t.do("incr wraps at 2**64", c.incr, "n", 2, expect=1)
        c.set("n", b"0")
        t.do("incr by 2**64-1", c.incr, "n", 2**64 - 1, expect=2**64 - 1)
        t.do("incr delta 2**64 refused", c.incr, "n", 2**64,
             expect=raised("MemcacheClientError", "b'invalid numeric delta argument'"))
        for bad in (b"abc", b"-1", b"1.5", b"", b"12abc"):
            c.set("bad", bad)
            t.do(f"incr non-numeric {bad!r}", c.incr, "bad", 1, expect=raised(
                "MemcacheClientError", "b'cannot increment or decrement non-numeric value'"))
            t.do(f"decr non-numeric {bad!r}", c.decr, "bad", 1, expect=raised(
                "MemcacheClientError", "b'cannot increment or decrement non-numeric value'"))
            t.do(f"value untouched {bad!r}", c.get, "bad", expect=bad)
        c.set("n", b"10")
        t.do("incr noreply", c.incr, "n", 5, noreply=True, expect=None)
        t.do("decr noreply", c.decr, "n", 1, noreply=True, expect=None)
        t.do("get after noreply incr/decr", c.get, "n", expect=b"14")
        t.do("incr noreply non-numeric is silent", c.incr, "bad", 1, noreply=True, expect=None)
        t.do("connection still in step", c.get, "n", expect=b"14")
        c.close()
    pair.check(scenario)


def test_noreply(pair):
    """noreply on every command that allows it: no answers, same effects."""
    def scenario(t, s):
        c = client(s, default_noreply=True)
        t.do("set noreply", c.set, "k", b"v", expect=True)
        t.do("add existing noreply", c.add, "k", b"x", expect=True)
        t.do("add new noreply", c.add, "a", b"added", expect=True)
        t.do("replace missing noreply", c.replace, "nope", b"x", expect=True)
        t.do("append noreply", c.append, "k", b"+", expect=True)
        t.do("prepend noreply", c.prepend, "k", b"-", expect=True)
        t.do("append missing noreply", c.append, "nope", b"x", expect=True)
        t.do("touch noreply", c.touch, "k", 100, expect=True)
        t.do("touch missing noreply", c.touch, "nope", 100, expect=True)
        t.do("set_many noreply", c.set_many, {"m1": b"1", "m2": b"2"}, expect=[])
        t.do("delete noreply", c.delete, "m1", expect=True)
        t.do("delete missing noreply", c.delete, "nope", expect=True)
        t.do("too large noreply: no answer, stream stays in step", c.set, "k2",
             blob(MB + 1), expect=True)
        t.do("get_many sees the effects", c.get_many, ["k", "a", "nope", "m1", "m2", "k2"],
             expect={"k": b"-v+", "a": b"added", "m2": b"2"})
        t.do("flush_all noreply", c.flush_all, expect=True)
        t.do("get after flush_all noreply", c.get_many, ["k", "a", "m2"], expect={})
        t.check("version after noreply burst", re.match(rb"^\d+\.\d+", c.version() or b""))
        # the same connection, replies switched back on
        t.do("set with reply", c.set, "k", b"v", noreply=False, expect=True)
        t.do("add existing with reply", c.add, "k", b"v", noreply=False, expect=False)
        c.close()
    pair.check(scenario)


def test_key_lengths_and_unicode(pair):
    def scenario(t, s):
        c = client(s, allow_unicode_keys=True)
        k250 = "k" * 250
        t.do("set 250-byte key", c.set, k250, b"long", expect=True)
        t.do("get 250-byte key", c.get, k250, expect=b"long")
        t.do("get_many with 250-byte key", c.get_many, [k250, "x"], expect={k250: b"long"})
        t.do("251-byte key refused by the client", c.set, "k" * 251, b"x",
             expect=raised("MemcacheIllegalInputError"))
        for key in ("ключ", "日本語のキー", "emoji-🎉", "Grüße", "ß" * 125):
            t.do(f"set unicode key {key[:12]!r}", c.set, key, "значение ✓".encode(), expect=True)
            t.do(f"get unicode key {key[:12]!r}", c.get, key, expect="значение ✓".encode())
        t.do("get_many unicode keys", c.get_many, ["ключ", "emoji-🎉", "nope"],
             expect={"ключ": "значение ✓".encode(), "emoji-🎉": "значение ✓".encode()})
        t.do("251 UTF-8 bytes refused by the client", c.set, "ß" * 125 + "x", b"x",
             expect=raised("MemcacheIllegalInputError"))
        t.do("unicode keys are their UTF-8 bytes", client(s).get,
             "ключ".encode("utf-8"), expect="значение ✓".encode())
        c.close()
    pair.check(scenario)


def _raw(server, payload: bytes, until: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(payload)
        got = b""
        while not got.endswith(until):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_key_too_long_on_the_wire(pair):
    """pymemcache never sends a 251-byte key; the server must refuse it too."""
    k251 = b"k" * 251

    def scenario(t, s):
        t.rec("get 251-byte key", _raw(s, b"get " + k251 + b"\r\n", b"\r\n"),
              expect=b"CLIENT_ERROR bad command line format\r\n")
        t.rec("gets 250 + 251-byte keys",
              _raw(s, b"gets " + k251[:250] + b" " + k251 + b"\r\n", b"\r\n"),
              expect=b"CLIENT_ERROR bad command line format\r\n")
        got = _raw(s, b"set " + k251 + b" 0 0 1\r\nx\r\nset ok 0 0 1\r\ny\r\nget ok\r\n",
                   b"END\r\n")
        # memcached then reads the data line "x" as a command ("ERROR"); only
        # the refusal and that the connection carries on are required.
        t.rec("set 251-byte key: first answer", got.split(b"\r\n")[0],
              expect=b"CLIENT_ERROR bad command line format")
        t.rec("set 251-byte key: connection carries on",
              got.endswith(b"STORED\r\nVALUE ok 0 1\r\ny\r\nEND\r\n"), expect=True)
        t.do("251-byte key was not stored", client(s).get, "k" * 250, expect=None)
    pair.check(scenario)


def test_value_over_item_size_refused(pair):
    def scenario(t, s):
        c = client(s)
        t.do("set old value", c.set, "big", b"old", expect=True)
        t.do("set 1 MiB value", c.set, "big", blob(MB), expect=TOO_LARGE)
        # memcached drops the old value when a set is refused as too large
        t.do("old value gone after refused set", c.get, "big", expect=None)
        c.set("big", b"old")
        t.do("set 2 MiB value", c.set, "big", blob(2 * MB), expect=TOO_LARGE)
        t.do("old value gone after refused 2 MiB set", c.get, "big", expect=None)
        t.do("add too large", c.add, "big2", blob(MB + 10), expect=TOO_LARGE)
        c.set("big3", b"x" * 1000)
        t.do("append beyond the limit", c.append, "big3", blob(MB),
             expect=TOO_LARGE)
        # unlike a refused set, a refused append leaves the old value alone
        t.do("value after refused append", c.get, "big3", expect=b"x" * 1000)
        t.do("connection still usable", c.set, "k", b"v", expect=True)
        value = blob(MB - 1024)
        t.do("set 1 MiB - 1 KiB", c.set, "fits", value, expect=True)
        t.do("get 1 MiB - 1 KiB", c.get, "fits", expect=value)
        t.do("set_many with one too large", c.set_many,
             {"s1": b"1", "s2": blob(MB), "s3": b"3"}, expect=TOO_LARGE)
        c.close()
        c = client(s)
        # the pipelined sets after the refused one were still carried out
        t.do("after set_many", c.get_many, ["s1", "s2", "s3"], expect={"s1": b"1", "s3": b"3"})
        c.close()
    pair.check(scenario)


# memcached counts an item as: 48-byte header + 8-byte CAS + key + 1
# + value + 2 ("\r\n") + 4 more bytes when the flags are not 0.
def max_value(item_size: int, key_len: int, flags: int) -> int:
    return item_size - 59 - key_len - (4 if flags else 0)


@pytest.mark.parametrize("spec,size", [("1m", MB), ("2m", 2 * MB), ("1048576", MB)])
def test_item_size_boundary(sized_pair, spec, size):
    """-I bounds the whole item as memcached counts it, to the byte."""
    p = sized_pair(spec)

    def scenario(t, s):
        for key_len in (1, 250):
            for flags in (0, 1):
                c = client(s, serde=ExplicitFlags(flags))
                key = "k" * key_len
                n = max_value(size, key_len, flags)
                t.do(f"key {key_len} flags {flags}: largest value {n} stored",
                     c.set, key, b"x" * n, expect=True)
                t.do(f"key {key_len} flags {flags}: get largest", c.get, key,
                     expect=(b"x" * n, flags))
                t.do(f"key {key_len} flags {flags}: one byte more refused",
                     c.set, key, b"x" * (n + 1), expect=TOO_LARGE)
                t.do(f"key {key_len} flags {flags}: gone after refusal", c.get, key,
                     expect=None)
                c.close()
    p.check(scenario, f"-I {spec}")


def test_many_keys_and_pipelining(pair):
    def scenario(t, s):
        c = client(s)
        values = {f"key:{i:03d}": (f"value-{i}-" * (i % 7 + 1)).encode() for i in range(100)}
        t.do("set_many 100 keys (pipelined sets)", c.set_many, values, expect=[])
        keys = list(values)
        asked = []
        for i, k in enumerate(keys):
            asked.append(k)
            if i % 5 == 0:
                asked.append(f"missing:{i}")
        t.do("get_many 100 keys + 20 misses in one request", c.get_many, asked, expect=values)
        t.do("gets_many 100 keys", lambda: {k: v for k, (v, _) in c.gets_many(keys).items()},
             expect=values)
        bigs = {f"big:{i}": blob(20000 + i) for i in range(60)}
        t.do("set_many 60 x 20 KB", c.set_many, bigs, expect=[])
        t.do("get_many answering 1.2 MB", c.get_many, list(bigs), expect=bigs)
        t.do("delete_many 100 (pipelined)", c.delete_many, keys, expect=True)
        t.do("get_many after delete_many", c.get_many, keys, expect={})
        c.close()
    pair.check(scenario)


def test_gat_and_raw_commands(pair):
    """Commands pymemcache only reaches through raw_command."""
    def scenario(t, s):
        c = client(s)
        c.set("k", b"v")
        # raw_command reads up to the end token and leaves it out
        t.do("gat hit", c.raw_command, b"gat 100 k missing", b"END\r\n",
             expect=b"VALUE k 0 1\r\nv\r\n")
        t.do("gat miss", c.raw_command, b"gat 100 missing", b"END\r\n", expect=b"")
        got = c.raw_command(b"gats 100 k", b"END\r\n")
        t.check("gats answers VALUE k 0 1 <cas>",
                re.fullmatch(rb"VALUE k 0 1 \d+\r\nv\r\n", got or b""), repr(got))
        t.do("gat with negative exptime expires", c.raw_command, b"gat -1 k", b"END\r\n",
             expect=b"VALUE k 0 1\r\nv\r\n")
        t.do("get after gat -1", c.get, "k", expect=None)
        t.do("verbosity", c.raw_command, b"verbosity 1", b"\r\n", expect=b"OK")
        t.do("unknown command", c.raw_command, b"bogus", b"\r\n",
             expect=raised("MemcacheUnknownCommandError", "b'bogus'"))
        c.close()
    pair.check(scenario)


STANDARD_STATS = (
    "pid uptime time version pointer_size rusage_user rusage_system curr_connections "
    "total_connections cmd_get cmd_set cmd_flush cmd_touch get_hits get_misses "
    "get_expired get_flushed delete_misses delete_hits incr_misses incr_hits "
    "decr_misses decr_hits cas_misses cas_hits cas_badval touch_hits touch_misses "
    "bytes_read bytes_written limit_maxbytes threads curr_items total_items bytes "
    "evictions").split()

COUNTERS = ("cmd_get cmd_set cmd_touch get_hits get_misses delete_hits delete_misses "
            "incr_hits incr_misses decr_hits decr_misses cas_hits cas_misses cas_badval "
            "touch_hits touch_misses").split()


def test_stats_and_version(pair):
    def scenario(t, s):
        c = client(s)
        t.check("version looks like a version",
                re.match(rb"^\d+\.\d+\.\d+", c.version() or b""), repr(c.version()))
        before = {k.decode(): v for k, v in c.stats().items()}
        missing = [k for k in STANDARD_STATS if k not in before]
        t.rec("standard stats fields missing", missing, expect=[])
        t.check("stats pid is the server's pid", before.get("pid") == s.proc.pid,
                f"pid={before.get('pid')} process={s.proc.pid}")
        t.check("stats time is now", abs(int(before.get("time", 0)) - time.time()) < 5,
                f"time={before.get('time')}")
        t.rec("limit_maxbytes is -m", before.get("limit_maxbytes"), expect=64 * MB)
        t.check("curr_connections counts us", int(before.get("curr_connections", 0)) >= 1)
        # a known mix of commands, then the counters must have moved as
        # memcached moves them (multi-key get counts per key)
        c.set("a", b"1"), c.set("b", b"2"), c.set("n", b"5")
        c.get("a"), c.get("zz"), c.get_many(["a", "b", "zz", "yy"])
        c.delete("a"), c.delete("zz")
        c.incr("n", 1), c.incr("zz", 1), c.decr("n", 1), c.decr("zz", 1)
        c.touch("b", 100), c.touch("zz", 100)
        _, cas = c.gets("b")
        c.cas("b", b"x", cas), c.cas("b", b"y", cas), c.cas("zz", b"z", b"1")
        c.add("b", b"no"), c.replace("zz", b"no")
        after = {k.decode(): v for k, v in c.stats().items()}
        t.rec("counter deltas", {k: int(after.get(k, -1)) - int(before.get(k, -1))
                                 for k in COUNTERS},
              expect={"cmd_get": 7, "cmd_set": 8, "cmd_touch": 2, "get_hits": 4,
                      "get_misses": 3, "delete_hits": 1, "delete_misses": 1,
                      "incr_hits": 1, "incr_misses": 1, "decr_hits": 1, "decr_misses": 1,
                      "cas_hits": 1, "cas_misses": 1, "cas_badval": 1,
                      "touch_hits": 1, "touch_misses": 1})
        settings = {k.decode(): v for k, v in c.stats("settings").items()}
        t.rec("stats settings item_size_max", settings.get("item_size_max"), expect=MB)
        t.rec("stats settings maxbytes", settings.get("maxbytes"), expect=64 * MB)
        c.close()
    pair.check(scenario)


def test_expiry(pair):
    """exptime: relative, negative (already expired), absolute unix time, touch."""
    def scenario(t, s):
        c = client(s)
        now = int(time.time())
        c.set("rel", b"1", expire=2)
        c.set("neg", b"1", expire=-1)
        c.set("forever", b"1")
        c.set("abs", b"1", expire=now + 3)
        c.set("abs_past", b"1", expire=now - 100)
        c.set("touched", b"1", expire=1000)
        c.touch("touched", 2)  # (1 could already be gone at the next clock tick)
        c.set("kept", b"1", expire=2)
        c.touch("kept", 1000)
        # memcached reads a text exptime as a signed 32-bit number: 2**32-1 is
        # -1 (libmemcached sends Django's "timeout=0" that way)
        c.set("u32max", b"1", expire=2**32 - 1)
        keys = ["rel", "neg", "forever", "abs", "abs_past", "touched", "kept", "u32max"]
        t.do("right after setting", lambda: sorted(c.get_many(keys)),
             expect=["abs", "forever", "kept", "rel", "touched"])
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            left = sorted(c.get_many(keys))
            if left == ["forever", "kept"]:
                break
            time.sleep(0.1)
        t.rec("after the expiry times passed (<= 6 s)", left, expect=["forever", "kept"])
        t.do("touch of expired key", c.touch, "rel", 100, expect=False)
        t.do("add over expired key", c.add, "rel", b"new", expect=True)
        c.close()
    pair.check(scenario)


def test_delayed_flush_all(pair):
    def scenario(t, s):
        c = client(s)
        c.set("before", b"1")
        # memcached's clock has 1 s steps and a delayed flush takes effect
        # one step early: with a delay of 3 the item lives at least 1 s more.
        t.do("flush_all 3", c.flush_all, delay=3, expect=True)
        t.do("still there right after a delayed flush", c.get, "before", expect=b"1")
        deadline = time.monotonic() + 6
        gone = False
        while time.monotonic() < deadline:
            if c.get("before") is None:
                gone = True
                break
            time.sleep(0.1)
        t.rec("gone once the delay passed (<= 6 s)", gone, expect=True)
        # memcached's clock has 1 s steps: an item written in the very second
        # the flush takes effect is flushed too. Step past it.
        time.sleep(1.1)
        t.do("set after the flush took effect", c.set, "after", b"2", expect=True)
        t.do("get after the flush took effect", c.get, "after", expect=b"2")
        t.do("flush_all now", c.flush_all, expect=True)
        t.do("gone after flush_all", c.get, "after", expect=None)
        c.close()
    pair.check(scenario)


def test_unix_socket(unix_pair):
    def scenario(t, s):
        c = client(s)
        t.do("set over unix socket", c.set, "k", b"v", expect=True)
        t.do("get over unix socket", c.get, "k", expect=b"v")
        t.do("incr over unix socket", lambda: (c.set("n", b"1"), c.incr("n", 41))[1],
             expect=42)
        t.do("get_many over unix socket", c.get_many, ["k", "n", "x"],
             expect={"k": b"v", "n": b"42"})
        c.close()
    unix_pair.check(scenario)
