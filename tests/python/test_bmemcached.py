"""python-binary-memcached (bmemcached), what django-bmemcached speaks.

Binary protocol only; with username/password it logs in with SASL PLAIN
(MemCachier's recommended setup). It bends Django's contract in places
(incr on a missing key creates it, no touch, values over 128 bytes are
zlib-compressed): whatever it does against stock memcached is the reference.
"""

import bmemcached
import pytest

from harness import blob, raised, sample_objects
from servers import SASL_PASSWORD, SASL_USER

MB = 1024 * 1024


def client(server, sasl):
    creds = (SASL_USER, SASL_PASSWORD) if sasl else (None, None)
    # bmemcached takes a unix socket as a bare path
    return bmemcached.Client([server.unix or server.addr], *creds, socket_timeout=5)


def scenario_for(sasl):
    def scenario(t, s):
        c = client(s, sasl)
        t.do("get missing", c.get, "k", expect=None)
        t.do("set", c.set, "k", "v1", expect=True)
        t.do("get", c.get, "k", expect="v1")
        t.do("set bytes", c.set, "b", b"\x00\xff", expect=True)
        t.do("get bytes", c.get, "b", expect=b"\x00\xff")
        t.do("add existing", c.add, "k", "x", expect=False)
        t.do("add new", c.add, "a", "added", expect=True)
        t.do("replace missing", c.replace, "nope", "x", expect=False)
        t.do("replace existing", c.replace, "k", "v2", expect=True)
        t.do("get replaced", c.get, "k", expect="v2")
        t.do("delete", c.delete, "a", expect=True)
        t.do("delete missing (bmemcached says True)", c.delete, "a", expect=True)
        t.do("get deleted", c.get, "a", expect=None)

        value, cas = c.gets("k")
        t.rec("gets value", value, expect="v2")
        t.check("gets cas is a positive int", isinstance(cas, int) and cas > 0, repr(cas))
        t.do("cas match", c.cas, "k", "v3", cas, expect=True)
        t.do("cas stale", c.cas, "k", "v4", cas, expect=False)
        t.do("cas on missing key", c.cas, "nope", "v", 12345, expect=False)
        t.do("get after cas", c.get, "k", expect="v3")
        _, cas2 = c.gets("k")
        t.do("delete with stale cas", c.delete, "k", cas, expect=False)
        t.do("still there after stale delete", c.get, "k", expect="v3")
        t.do("delete with current cas", c.delete, "k", cas2, expect=True)
        t.do("gone after delete with cas", c.get, "k", expect=None)
        t.do("set returning cas", lambda: c.set("k", "v5", get_cas=True)[0], expect=True)

        t.do("set_multi (setq batch + noop)", c.set_multi,
             {"m1": "1", "m2": 2, "m3": [3], "m4": {"four": 4}}, expect=[])
        t.do("get_multi", c.get_multi, ["m1", "nope", "m2", "m3", "m4"],
             expect={"m1": "1", "m2": 2, "m3": [3], "m4": {"four": 4}})
        t.do("set_multi with cas=0 (addq) on existing", c.set_multi,
             {("m1", 0): "no", ("new", 0): "yes"}, expect=[("m1", 0)])
        t.do("get after addq batch", c.get_multi, ["m1", "new"], expect={"m1": "1", "new": "yes"})
        res = c.set_multi_cas({"c1": "a", "c2": "b"})
        t.check("set_multi_cas returns a cas per key",
                sorted(res) == ["c1", "c2"] and all(isinstance(v, int) and v > 0
                                                     for v in res.values()), repr(res))
        t.do("delete_multi (one key missing)", c.delete_multi, ["m1", "m2", "nope"],
             expect=False)
        t.do("get after delete_multi", c.get_multi, ["m1", "m2", "m3"], expect={"m3": [3]})

        t.do("incr missing creates it at 0 (bmemcached default)", c.incr, "n", 5, expect=0)
        t.do("incr", c.incr, "n", 5, expect=5)
        t.do("decr", c.decr, "n", 2, expect=3)
        t.do("decr below zero stops at 0", c.decr, "n", 10, expect=0)
        t.do("decr missing creates it at 0", c.decr, "n2", 5, expect=0)
        c.set("n", 100)
        t.do("decr 100 -> 99", c.decr, "n", 1, expect=99)
        t.do("get after decr (memcached pads '99 ')", c.get, "n", expect=99)
        t.do("incr wraps at 2**64", lambda: (c.set("w", 2**64 - 1), c.incr("w", 2))[1],
             expect=1)
        c.set("s", "text")
        t.do("incr non-numeric", c.incr, "s", 1, expect=raised(
            "MemcachedException",
            "Code: 6 Message: b'Non-numeric server-side value for incr or decr' (code 6)"))
        t.do("get after failed incr", c.get, "s", expect="text")

        objs = sample_objects()
        t.do("set pickled objects", c.set_multi, objs, expect=[])
        t.do("get pickled objects", c.get_multi, list(objs), expect=objs)
        text = "compressible " * 1000
        t.do("set compressible value", c.set, "z", text, expect=True)
        t.do("get compressible value", c.get, "z", expect=text)

        k250 = "k" * 250
        t.do("set 250-byte key", c.set, k250, "long", expect=True)
        t.do("get 250-byte key", c.get, k250, expect="long")
        t.do("set 251-byte key", c.set, "k" * 251, "x", expect=raised(
            "MemcachedException", "Code: 4 Message: b'Invalid arguments' (code 4)"))
        t.do("get 251-byte key", c.get, "k" * 251, expect=None)
        c = client(s, sasl)  # a refused key may leave the connection out of step
        t.do("unicode key", c.set, "ключ-🎉", "значение", expect=True)
        t.do("get unicode key", c.get, "ключ-🎉", expect="значение")

        many = {f"key:{i:03d}": i for i in range(100)}
        t.do("set_multi 100 keys", c.set_multi, many, expect=[])
        t.do("get_multi 100 keys + misses", c.get_multi,
             [k for i, k in enumerate(many) for k in ([k, f"miss:{i}"] if i % 4 == 0 else [k])],
             expect=many)

        stats = c.stats()
        t.check("stats answers one server with memcached's fields",
                len(stats) == 1 and {"pid", "uptime", "curr_items", "get_hits", "cmd_get"}
                <= set(next(iter(stats.values()))), repr(stats)[:300])
        t.do("flush_all", c.flush_all, expect=True)
        t.do("get after flush_all", c.get_multi, ["z", "key:001", "m3"], expect={})
        c.disconnect_all()
    return scenario


def test_operations(pair):
    pair.check(scenario_for(sasl=False), "no auth")


def test_operations_sasl(sasl_pair):
    sasl_pair.check(scenario_for(sasl=True), "SASL PLAIN")


def too_big(sasl):
    def scenario(t, s):
        c = client(s, sasl)
        t.do("set old", c.set, "big", "old", expect=True)
        t.do("set 1 MiB (incompressible)", c.set, "big", blob(MB, 7),
             expect=raised("MemcachedException", "Code: 3 Message: b'Too large.' (code 3)"))
        t.do("old value gone", c.get, "big", expect=None)
        t.do("set_multi with one too large", c.set_multi,
             {"s1": "1", "s2": blob(MB + 100, 8), "s3": "3"}, expect=["s2"])
        t.do("after set_multi", c.get_multi, ["s1", "s2", "s3"], expect={"s1": "1", "s3": "3"})
        fits = blob(MB - 1024, 9)
        t.do("set 1 MiB - 1 KiB", c.set, "fits", fits, expect=True)
        t.do("get 1 MiB - 1 KiB", c.get, "fits", expect=fits)
    return scenario


def test_too_big(pair):
    pair.check(too_big(False))


def test_too_big_sasl(sasl_pair):
    sasl_pair.check(too_big(True))


def test_unix_socket(unix_pair):
    def scenario(t, s):
        c = client(s, False)
        t.do("set over unix socket", c.set, "k", "v", expect=True)
        t.do("get_multi over unix socket", c.get_multi, ["k", "x"], expect={"k": "v"})
    unix_pair.check(scenario)


def test_sasl_reference_rejects_bad_password(sasl_pair):
    """Proof that the memcached reference checks credentials."""
    bad = bmemcached.Client([sasl_pair.memcached.addr], SASL_USER, "wrong", socket_timeout=5)
    with pytest.raises(bmemcached.exceptions.MemcachedException, match="Auth failure"):
        bad.set("k", "v")


@pytest.mark.shoal_only
def test_shoal_without_auth_accepts_any_plain_credentials(shoal_plain):
    for user, password in ((SASL_USER, SASL_PASSWORD), ("anyone", "whatever")):
        c = bmemcached.Client([shoal_plain.addr], user, password, socket_timeout=5)
        assert c.set("k", user) is True
        assert c.get("k") == user
