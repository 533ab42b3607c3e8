"""A 3-node shoal cluster, driven the way Django sites drive memcache.

Two kinds of checks:

- Parity: Django's cache API through each backend, LOCATION listing the 3
  nodes, against 3 stock memcacheds given the same LOCATION shape (the
  client's own hashing spreads the keys; shoal routes each to its owner
  whatever node the client picked). Every answer is compared, step by step,
  as in test_django.py.
- shoal only (memcached cannot do this, so these are expectations, not
  comparisons): a key written through one node is read, changed and deleted
  through the others; a multi-get through any single node returns every
  key; `flush_all` through one node empties the whole cluster; and the
  cluster's own reports (`stats cluster`, /healthz, /readyz, /cluster).

Cluster fixture (conftest.py, servers.py): nodes shoal-0..2 with exactly
`-p P -l 127.0.0.1 -m 64 --node-name shoal-N --gossip-port G --peer-port P
--http-port H --gossip-profile fast [--seeds 127.0.0.1:G0]`, waited on until
every /readyz answers 200 and every `stats cluster` shows `ring_members 3`.
"""

from __future__ import annotations

import datetime

import pytest
from django.core.cache import caches
from django.test import override_settings
from django.utils.module_loading import import_string
from pymemcache.client.base import Client as PyMemcacheClient

from harness import blob, raised, run_parity, sample_objects
from servers import HOST
from test_django import BMEMCACHED, PYLIBMC, PYMEMCACHE, Article, by_kind

MB = 1024 * 1024

# Django backends a team points at a cluster: LOCATION is the node list.
KINDS = {
    "pymemcache": lambda loc: {"BACKEND": PYMEMCACHE, "LOCATION": loc},
    "pylibmc": lambda loc: {"BACKEND": PYLIBMC, "LOCATION": loc},
    "pylibmc-binary": lambda loc: {"BACKEND": PYLIBMC, "LOCATION": loc,
                                   "OPTIONS": {"binary": True}},
    "bmemcached": lambda loc: {"BACKEND": BMEMCACHED, "LOCATION": loc},
}
ALL = list(KINDS)
BINARY = ("pylibmc-binary", "bmemcached")


class DjangoCache:
    """`caches['default']` for `kind` over `location` (a list of host:port),
    built from settings the way a site builds it; a context manager."""

    def __init__(self, kind, location, **overrides):
        self.config = {**KINDS[kind](location), **overrides}

    def __enter__(self):
        self.ctx = override_settings(CACHES={"default": self.config})
        self.ctx.enable()
        self.cache = caches["default"]
        return self.cache

    def __exit__(self, *exc):
        try:
            self.cache.close()
        finally:
            self.ctx.disable()


def make_cache(kind, location):
    """A standalone backend object for `kind` over `location`, built as
    Django's cache handler builds one from a CACHES entry."""
    config = dict(KINDS[kind](location))
    backend = import_string(config.pop("BACKEND"))
    return backend(config.pop("LOCATION"), config)


def many(cache, keys, **kw):
    """get_many with the answer sorted by key: a client that spreads keys
    over servers merges the answers in an order that depends on which
    server got which key (and so on the servers' port numbers)."""
    return dict(sorted(cache.get_many(keys, **kw).items()))


def by_key(d):
    return dict(sorted(d.items()))


def run(cluster_pair, kind, body):
    """body(t, cache, group) against the 3 memcacheds, then the cluster."""
    def scenario(t, group):
        with DjangoCache(kind, group.locations()) as cache:
            body(t, cache, group)
    cluster_pair.check(scenario, f"{kind} over 3 nodes")


def shoal_only(group, scenario, what):
    """A scenario with expected values only: memcached has no equivalent."""
    try:
        run_parity(scenario, [group], what)
    finally:
        group.check_alive()


def node_client(node) -> PyMemcacheClient:
    """A plain pymemcache client of one node (bytes in, bytes out)."""
    return PyMemcacheClient((HOST, node.port), connect_timeout=5, timeout=5,
                            default_noreply=False)


def raw(node, request: bytes) -> bytes:
    """Send a text request to one node; the reply up to END/STORED/...\\r\\n."""
    with node.connect() as s:
        s.sendall(request)
        got = b""
        while not got.endswith(b"\r\n") or (got.startswith(b"VALUE") and
                                             not got.endswith(b"END\r\n")):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


# -- parity: Django through each backend, 3 nodes ----------------------------

@pytest.mark.parametrize("kind", ALL)
def test_cluster_cache_api(cluster_pair, kind):
    binary = kind in BINARY

    def body(t, cache, g):
        t.do("get missing", cache.get, "k", expect=None)
        t.do("get missing with default", cache.get, "k", "dflt", expect="dflt")
        t.do("set", cache.set, "k", "v", expect=None)
        t.do("get", cache.get, "k", expect="v")
        t.do("add existing", cache.add, "k", "x", expect=False)
        t.do("add new", cache.add, "a", "added", expect=True)
        t.do("get added", cache.get, "a", expect="added")
        t.do("get_or_set missing", cache.get_or_set, "gos", lambda: "computed", expect="computed")
        t.do("get_or_set existing", cache.get_or_set, "gos", lambda: "again", expect="computed")
        values = {f"m{i}": i for i in range(30)} | {"s": "two", "l": [3]}
        t.do("set_many 32 keys", cache.set_many, values, expect=[])
        t.do("get_many 32 keys and misses", many, cache, ["nope1", *values, "nope2"],
             expect=by_key(values))
        t.do("has_key", cache.has_key, "m1", expect=True)
        t.do("has_key missing", cache.has_key, "nope", expect=False)
        if kind == "bmemcached":
            # django-bmemcached sends every write to every server in
            # LOCATION (python-binary-memcached's ReplicatingClient): over 3
            # shoal nodes, which are one cache, an incr lands 3 times.
            # test_bmemcached_replicates_over_a_cluster pins that; here the
            # counters are left alone.
            for key in ("m1", "m7", "m13"):
                t.do(f"set {key} as incr would", cache.set, key,
                     {"m1": 0, "m7": 16, "m13": 22}[key])
        else:
            for key in ("m1", "m7", "m13", "m22"):  # spread over the nodes
                t.do(f"incr {key}", cache.incr, key, expect=int(key[1:]) + 1)
                t.do(f"incr {key} by 10", cache.incr, key, 10, expect=int(key[1:]) + 11)
                t.do(f"decr {key}", cache.decr, key, 2, expect=int(key[1:]) + 9)
            t.do("decr below zero stops at 0", cache.decr, "m1", 100, expect=0)
            t.do("incr missing", cache.incr, "nope", expect=raised("ValueError"))
            t.do("incr non-numeric", cache.incr, "s", expect=by_kind(
                kind, raised("MemcacheClientError",
                             "b'cannot increment or decrement non-numeric value'"),
                pylibmc=raised("ClientError", "1 keys failed"),
                pylibmc_binary=raised("UnknownReadFailure", "1 keys failed")))
        cache.close()
        # a fresh client: libmemcached may have given up on the old connection
        with DjangoCache(kind, g.locations()) as fresh:
            t.do("get after failed incr", fresh.get, "s", expect="two")
            t.do("touch", fresh.touch, "k", 100, expect=by_kind(
                kind, True, bmemcached=raised("AttributeError")))
            t.do("touch missing", fresh.touch, "nope", 100, expect=by_kind(
                kind, False, bmemcached=raised("AttributeError")))
            t.do("get touched", fresh.get, "k", expect="v")
            t.do("delete", fresh.delete, "a", expect=True)
            t.do("delete missing", fresh.delete, "a", expect=by_kind(kind, False,
                                                                      bmemcached=True))
            t.do("get deleted", fresh.get, "a", expect=None)
            gone = [f"m{i}" for i in range(0, 30, 2)]
            t.do("delete_many 15 keys and a miss", fresh.delete_many, [*gone, "nope"],
                 expect=None)
            left = {k: v for k, v in values.items() if k not in gone} | {
                "m1": 0, "m7": 16, "m13": 22}
            t.do("get_many after delete_many", many, fresh, list(values), expect=by_key(left))
            t.do("set timeout=None (forever)", fresh.set, "forever", 1, timeout=None)
            t.do("get timeout=None", fresh.get, "forever", expect=1)
            # Django sends timeout 0 as -1: expired at once on the text
            # protocol; binary clients send it as a far-future unix time.
            t.do("set timeout=0", fresh.set, "zero", 1, timeout=0)
            t.do("get timeout=0", fresh.get, "zero", expect=1 if binary else None)
            t.do("set timeout > 30 days (absolute)", fresh.set, "month", 1, timeout=40 * 86400)
            t.do("get timeout > 30 days", fresh.get, "month", expect=1)
            t.do("clear", fresh.clear, expect=None)
            t.do("get_many after clear", many, fresh, ["k", "forever", "month", *values],
                 expect={})
            t.do("set after clear", fresh.set, "k", "again")
            t.do("set_many after clear", fresh.set_many, values, expect=[])
            t.do("get after clear and set", many, fresh, ["k", *values],
                 expect=by_key({"k": "again", **values}))
    run(cluster_pair, kind, body)


@pytest.mark.parametrize("kind", ALL)
def test_cluster_unicode_keys_and_versions(cluster_pair, kind):
    keys = ["ключ", "日本語", "emoji-🎉", "Grüße", "a:b:c", "x" * 200, "ж" * 120]
    values = {k: f"value of {k[:10]}" for k in keys}

    def body(t, cache, g):
        for key in keys:
            t.do(f"set {key[:10]!r}", cache.set, key, values[key], expect=None)
        for key in keys:
            t.do(f"get {key[:10]!r}", cache.get, key, expect=values[key])
        t.do("get_many unicode", many, cache, [*keys, "nope"], expect=by_key(values))
        t.do("key with a space (Django refuses)", cache.set, "has space", 1,
             expect=raised("InvalidCacheKey"))
        t.do("set version=2", cache.set, "v", "two", version=2)
        t.do("get default version misses", cache.get, "v", expect=None)
        t.do("incr_version", cache.incr_version, "v", version=2, expect=3)
        t.do("old version gone", cache.get, "v", version=2, expect=None)
        t.do("get version=3", cache.get, "v", version=3, expect="two")
        t.do("delete_many unicode", cache.delete_many, keys[:4], expect=None)
        t.do("get_many after delete_many", many, cache, keys,
             expect=by_key({k: values[k] for k in keys[4:]}))
    run(cluster_pair, kind, body)


@pytest.mark.parametrize("kind", ALL)
def test_cluster_pickled_objects_and_big_values(cluster_pair, kind):
    from django.contrib.auth.models import User

    def body(t, cache, g):
        objs = sample_objects()
        t.do("set_many objects", cache.set_many, objs, expect=[])
        t.do("get_many objects", many, cache, list(objs), expect=by_key(by_kind(
            kind, objs, pylibmc={**objs, "bool": 1}, pylibmc_binary={**objs, "bool": 1})))
        article = Article(7, "Cache me", datetime.datetime(2024, 5, 1, 12, 0,
                                                           tzinfo=datetime.timezone.utc),
                          ["django", "memcache"])
        t.do("set model-like object", cache.set, "article:7", article)
        t.do("get model-like object", cache.get, "article:7", expect=article)
        user = User(id=42, username="ada", email="ada@example.com",
                    date_joined=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
        t.do("set unsaved auth.User", cache.set, "user:42", user)
        got = cache.get("user:42")
        t.rec("get auth.User", got and (type(got).__name__, got.pk, got.username, got.email),
              expect=("User", 42, "ada", "ada@example.com"))
        value = blob(MB - 4096, 11)
        t.do("set a value just under 1 MB", cache.set, "fits", value)
        t.do("get a value just under 1 MB", cache.get, "fits", expect=value)
        t.do("set old value", cache.set, "big", "old")
        t.do("set a value over 1 MB", cache.set, "big", blob(MB + 1, 12), expect=by_kind(
            kind, raised("MemcacheServerError", "b'object too large for cache'"),
            pylibmc=raised("TooBig"), pylibmc_binary=raised("TooBig"),
            bmemcached=raised("MemcachedException", "Code: 3 Message: b'Too large.' (code 3)")))
        cache.close()
        with DjangoCache(kind, g.locations()) as fresh:
            if kind == "bmemcached" and not g.shared:
                # bmemcached writes every value to every server in LOCATION
                # (ReplicatingClient) and stops at the first refusal: the
                # other memcacheds keep the old value, and a get reads the
                # first server that has it. Over shoal's nodes, one cache,
                # the refusal drops the old value, as on one memcached.
                t.check("old value after the refused set", fresh.get("big") == "old")
            else:
                t.check("old value after the refused set", fresh.get("big") is None)
            t.do("add a value over 1 MB", fresh.add, "big2", blob(2 * MB, 13), expect=by_kind(
                kind, raised("MemcacheServerError", "b'object too large for cache'"),
                pylibmc=raised("TooBig"), pylibmc_binary=raised("TooBig"),
                bmemcached=raised("MemcachedException",
                                  "Code: 3 Message: b'Too large.' (code 3)")))
            t.do("nothing stored by the refused add", fresh.get, "big2", expect=None)
            t.do("cache still usable", many, fresh, ["fits", "article:7"],
                 expect={"article:7": article, "fits": value})
    run(cluster_pair, kind, body)


# -- shoal only: any node serves any key --------------------------------------

@pytest.mark.shoal_only
def test_any_node_serves_any_key(cluster):
    def scenario(t, g):
        clients = [node_client(n) for n in g.nodes]
        names = [n.name for n in g.nodes]
        try:
            written = {}
            for w, c in enumerate(clients):
                keys = {f"via-{names[w]}:{j}": f"value {w}/{j}".encode() for j in range(20)}
                for k, v in keys.items():
                    t.do(f"set {k} through {names[w]}", c.set, k, v, expect=True)
                written[w] = keys
            for w, keys in written.items():
                for r, c in enumerate(clients):
                    t.do(f"get_many of {names[w]}'s keys through {names[r]}", c.get_many,
                         list(keys), expect=keys)
                    first = next(iter(keys))
                    t.do(f"get {first} through {names[r]}", c.get, first, expect=keys[first])

            a, b, c = clients
            t.do("set n through shoal-0", a.set, "n", b"10", expect=True)
            t.do("add n through shoal-1 (exists)", b.add, "n", b"x", expect=False)
            t.do("incr n through shoal-1", b.incr, "n", 5, expect=15)
            t.do("decr n through shoal-2", c.decr, "n", 3, expect=12)
            t.do("get n through shoal-0", a.get, "n", expect=b"12")
            t.do("incr missing through shoal-2", c.incr, "no-such", 1, expect=None)
            t.do("replace n through shoal-2", c.replace, "n", b"r", expect=True)
            t.do("append through shoal-0", a.append, "n", b"-app", expect=True)
            t.do("prepend through shoal-1", b.prepend, "n", b"pre-", expect=True)
            t.do("get n through shoal-2", c.get, "n", expect=b"pre-r-app")
            t.do("touch n through shoal-1", b.touch, "n", 300, expect=True)
            t.do("touch missing through shoal-0", a.touch, "no-such", 300, expect=False)
            value, token = a.gets("n")
            t.rec("gets n through shoal-0", (value, isinstance(token, bytes) and token.isdigit()),
                  expect=(b"pre-r-app", True))
            t.do("gets n through shoal-2: same token", lambda: c.gets("n")[1], expect=token)
            t.do("cas n through shoal-1 with shoal-0's token", b.cas, "n", b"swapped", token,
                 expect=True)
            t.do("cas n through shoal-2 with the used token", c.cas, "n", b"again", token,
                 expect=False)
            t.do("get n through shoal-0 after cas", a.get, "n", expect=b"swapped")
            t.do("cas missing through shoal-0", a.cas, "no-such", b"x", b"1", expect=None)
            t.do("delete n through shoal-2", c.delete, "n", expect=True)
            t.do("get deleted n through shoal-0", a.get, "n", expect=None)
            t.do("get deleted n through shoal-1", b.get, "n", expect=None)
            t.do("delete n again through shoal-1", b.delete, "n", expect=False)
        finally:
            for cl in clients:
                cl.close()

        # flags travel with the value (Django's serializers depend on them)
        nodes = g.nodes
        for w, r in ((0, 1), (1, 2), (2, 0)):
            key = f"flagged-{w}"
            t.do(f"raw set {key} flags 12345 through {names[w]}", raw, nodes[w],
                 f"set {key} 12345 0 3\r\nabc\r\n".encode(), expect=b"STORED\r\n")
            t.do(f"raw get {key} through {names[r]}", raw, nodes[r], f"get {key}\r\n".encode(),
                 expect=f"VALUE {key} 12345 3\r\nabc\r\nEND\r\n".encode())
    shoal_only(cluster, scenario, "any node serves any key")


@pytest.mark.shoal_only
def test_multi_get_of_100_keys_through_each_node(cluster):
    keys = [f"multi:{i}" for i in range(100)]
    values = {k: f"value-{i}-".encode() * (1 + i % 7) for i, k in enumerate(keys)}
    # misses interleaved: the answer keeps the request's order, hits only
    asked = []
    for i, k in enumerate(keys):
        asked.append(k)
        if i % 20 == 0:
            asked.append(f"missing:{i}")

    def scenario(t, g):
        clients = [node_client(n) for n in g.nodes]
        try:
            t.do("set_many 100 keys through shoal-1", clients[1].set_many, values, expect=[])
            tokens = None
            for n, c in zip(g.nodes, clients):
                t.do(f"get_many 100 keys (+5 misses) through {n.name}", c.get_many, asked,
                     expect=values)
                got = c.gets_many(keys)
                t.rec(f"gets_many values through {n.name}",
                      {k: v for k, (v, _) in got.items()}, expect=values)
                these = {k: cas for k, (_, cas) in got.items()}
                if tokens is None:
                    tokens = these
                t.rec(f"gets_many tokens through {n.name} match shoal-0's", these == tokens,
                      expect=True)
            want = b"".join(f"VALUE {k} 0 {len(values[k])}\r\n".encode() + values[k] + b"\r\n"
                            for k in keys) + b"END\r\n"
            for n in g.nodes:
                t.do(f"raw `get` of 100 keys (+5 misses) through {n.name}", raw, n,
                     ("get " + " ".join(asked) + "\r\n").encode(), expect=want)
        finally:
            for c in clients:
                c.close()
    shoal_only(cluster, scenario, "multi-get through each node")


@pytest.mark.shoal_only
def test_flush_all_through_one_node_empties_the_cluster(cluster):
    def scenario(t, g):
        clients = [node_client(n) for n in g.nodes]
        names = [n.name for n in g.nodes]
        try:
            everything = {}
            for w, c in enumerate(clients):
                keys = {f"flush-{w}:{j}": b"x" for j in range(30)}
                t.do(f"set_many 30 keys through {names[w]}", c.set_many, keys, expect=[])
                everything |= keys
            t.do("flush_all through shoal-1", clients[1].flush_all, expect=True)
            for r, c in enumerate(clients):
                t.do(f"get_many of all 90 keys through {names[r]}", c.get_many,
                     list(everything), expect={})
            after = {f"after-flush:{j}": f"{j}".encode() for j in range(30)}
            t.do("set_many right after flush_all through shoal-2", clients[2].set_many, after,
                 expect=[])
            for r, c in enumerate(clients):
                t.do(f"the new keys through {names[r]}", c.get_many, list(after),
                     expect=after)
        finally:
            for c in clients:
                c.close()
    shoal_only(cluster, scenario, "flush_all through one node")


@pytest.mark.shoal_only
@pytest.mark.parametrize("kind", ALL)
def test_django_through_single_nodes(cluster, kind):
    """Django sites each configured with one node (LOCATION a single
    host:port) share one cache: objects written through one node are read,
    changed and deleted through the others, and `cache.clear()` through one
    node empties every node."""
    objs = sample_objects()
    if kind.startswith("pylibmc"):
        objs = {**objs, "bool": 1}  # pylibmc stores a bool as an int
    article = Article(9, "Everywhere", datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc),
                      ["cluster"])

    def scenario(t, g):
        names = [n.name for n in g.nodes]
        built = [make_cache(kind, [n.addr]) for n in g.nodes]
        a, b, c = built
        try:
            t.do("set_many objects through shoal-0", a.set_many, objs, expect=[])
            t.do("set object through shoal-0", a.set, "article", article)
            for r, cache in enumerate(built):
                t.do(f"get_many objects through {names[r]}", cache.get_many, list(objs),
                     expect=objs)
                t.do(f"get object through {names[r]}", cache.get, "article", expect=article)
            t.do("set counter through shoal-1", b.set, "counter", 1)
            t.do("incr counter through shoal-2", c.incr, "counter", 41, expect=42)
            t.do("get counter through shoal-0", a.get, "counter", expect=42)
            t.do("delete object through shoal-2", c.delete, "article", expect=True)
            t.do("object gone through shoal-1", b.get, "article", expect=None)
            t.do("clear through shoal-1", b.clear, expect=None)
            for r, cache in enumerate(built):
                t.do(f"get_many after clear through {names[r]}", cache.get_many,
                     [*objs, "counter"], expect={})
            t.do("set right after clear through shoal-2", c.set, "after-clear", "kept")
            for r, cache in enumerate(built):
                t.do(f"set after clear, read through {names[r]}", cache.get, "after-clear",
                     expect="kept")
        finally:
            for cache in built:
                cache.close()
    shoal_only(cluster, scenario, f"{kind}, one node each")


@pytest.mark.shoal_only
def test_bmemcached_replicates_over_a_cluster(cluster):
    """What a django-bmemcached site gets with LOCATION listing 3 shoal
    nodes: python-binary-memcached's ReplicatingClient sends each write to
    every server and reads from the first that answers. shoal's nodes are one
    cache, so sets, adds and deletes are merely repeated, but an incr or decr
    is applied once per node (here, 3 times). With bmemcached, list one node,
    or don't count with incr."""
    def scenario(t, g):
        cache = make_cache("bmemcached", g.locations())
        single = make_cache("bmemcached", [g.nodes[2].addr])
        try:
            t.do("set", cache.set, "n", 1, expect=None)
            t.do("add existing", cache.add, "n", 5, expect=False)
            t.do("incr answers the first node's result", cache.incr, "n", expect=2)
            t.do("but the value went up once per node", single.get, "n", expect=4)
            t.do("decr likewise", cache.decr, "n", 1, expect=3)
            t.do("value after decr", single.get, "n", expect=1)
            t.do("set_many", cache.set_many, {"a": "x", "b": "y"}, expect=[])
            t.do("get_many through one node", many, single, ["a", "b"],
                 expect={"a": "x", "b": "y"})
            t.do("delete", cache.delete, "a", expect=True)
            t.do("deleted through one node", single.get, "a", expect=None)
        finally:
            cache.close(), single.close()
    shoal_only(cluster, scenario, "bmemcached over 3 nodes")


# -- shoal only: the cluster's own reports ---------------------------------------

def _addresses(node):
    argv = node.argv
    peer = argv[argv.index("--peer-port") + 1]
    return f"{HOST}:{node.port}", f"{HOST}:{peer}", f"{HOST}:{node.http_port}"


@pytest.mark.shoal_only
def test_stats_cluster_and_http_endpoints(cluster):
    def scenario(t, g):
        names = [n.name for n in g.nodes]
        ring_versions, json_ring_versions = [], []
        for n in g.nodes:
            pairs = n.stats("cluster")
            st = dict(pairs)
            t.rec(f"{n.name}: stats cluster names are unique", len(st) == len(pairs),
                  expect=True)
            t.rec(f"{n.name}: node_name, node_state, ready",
                  (st.get("node_name"), st.get("node_state"), st.get("ready")),
                  expect=(n.name, "ready", "1"))
            t.rec(f"{n.name}: ring_members, members", (st.get("ring_members"), st.get("members")),
                  expect=("3", "3"))
            t.rec(f"{n.name}: generation, epoch are numbers",
                  [st.get(f, "").isdigit() for f in ("generation", "epoch")],
                  expect=[True, True])
            ring_versions.append(st.get("ring_version"))
            for m in g.nodes:
                mc, peer, http = _addresses(m)
                t.rec(f"{n.name}: member:{m.name}", st.get(f"member:{m.name}"),
                      expect=f"ready,{mc},{peer},{http}")
            t.rec(f"{n.name}: no other members",
                  sorted(k for k in st if k.startswith("member:")),
                  expect=[f"member:{x}" for x in sorted(names)])
            for peer_name in names:
                if peer_name == n.name:
                    continue
                t.rec(f"{n.name}: forwarded:{peer_name} and forward_errors:{peer_name} counted",
                      [st.get(f"forwarded:{peer_name}", "").isdigit(),
                       st.get(f"forward_errors:{peer_name}", "").isdigit()],
                      expect=[True, True])

            t.do(f"{n.name}: GET /healthz status", lambda: n.http("/healthz")[0], expect=200)
            t.do(f"{n.name}: GET /readyz", lambda: (lambda s, b: (s, b.strip()))(
                *n.http("/readyz")), expect=(200, "ready"))
            info = n.http_json("/cluster")
            t.rec(f"{n.name}: /cluster node, ready",
                  (info.get("node"), info.get("ready")), expect=(n.name, True))
            # ring_version is a 64-bit hash: a 16-digit hex string, as in
            # `stats cluster` (a JSON number would lose bits in JavaScript).
            t.rec(f"{n.name}: /cluster generation and epoch are integers, ring_version hex",
                  ({f: type(info.get(f)).__name__ for f in ("generation", "epoch")},
                   info.get("ring_version") == st.get("ring_version")
                   and len(str(info.get("ring_version"))) == 16),
                  expect=({"generation": "int", "epoch": "int"}, True))
            json_ring_versions.append(info.get("ring_version"))
            members = sorted(info.get("members", []), key=lambda m: m.get("name", ""))
            t.rec(f"{n.name}: /cluster members",
                  [(m.get("name"), m.get("state"), m.get("memcache"), m.get("peer"),
                    m.get("http"), type(m.get("generation")) is int) for m in members],
                  expect=[(m.name, "ready", *_addresses(m), True) for m in g.nodes])

        # One ring (the same 3 ready members) everywhere: one ring version.
        t.rec("every node reports the same ring_version (stats cluster)",
              len(set(ring_versions)) == 1 and None not in ring_versions, expect=True)
        t.rec("every node reports the same ring_version (/cluster)",
              len({repr(v) for v in json_ring_versions}) == 1, expect=True)

        # Traffic through one node for keys all over the ring: the node
        # counts what it forwarded to each peer, and no errors.
        def counters(node):
            st = dict(node.stats("cluster"))
            return ({p: int(st[f"forwarded:{p}"]) for p in names if p != node.name},
                    {p: int(st[f"forward_errors:{p}"]) for p in names if p != node.name})
        entry = g.nodes[0]
        fwd0, err0 = counters(entry)
        client = node_client(entry)
        try:
            keys = {f"fwd:{i}": b"v" for i in range(60)}
            t.do("set_many 60 keys through shoal-0", client.set_many, keys, expect=[])
            t.do("get_many 60 keys through shoal-0", client.get_many, list(keys), expect=keys)
        finally:
            client.close()
        fwd1, err1 = counters(entry)
        t.rec("shoal-0 forwarded to every peer", {p: fwd1[p] > fwd0[p] for p in fwd0},
              expect={p: True for p in fwd0})
        t.rec("shoal-0 forward errors unchanged", err1, expect=err0)
    shoal_only(cluster, scenario, "stats cluster and HTTP")
