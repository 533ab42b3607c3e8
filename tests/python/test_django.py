"""Django's cache API through each memcached backend a Django team uses.

CACHES is pointed at a server with override_settings, so the backend is
built the way a Django site builds it (settings -> django.core.cache.caches).
Backends, with the configurations from the seed documents:
  pymemcache          PyMemcacheCache (pymemcache, text)
  pymemcache-prod     the "production-shaped" block: TIMEOUT 300,
                      KEY_PREFIX, VERSION 2, no_delay, ignore_exc
  pylibmc             PyLibMCCache, text
  pylibmc-binary      PyLibMCCache, OPTIONS binary
  pylibmc-sasl        PyLibMCCache, binary + username/password + MemCachier's
                      behaviors                      (against memcached -S)
  bmemcached          django_bmemcached BMemcached
  bmemcached-sasl     BMemcached with username/password (against memcached -S)
"""

import datetime
import decimal
import time

import pytest
from django.core.cache import caches
from django.test import RequestFactory, override_settings

from harness import blob, raised, sample_objects
from pylibmc_sasl import login_django
from servers import SASL_PASSWORD, SASL_USER
from test_pylibmc import MEMCACHIER_BEHAVIORS

MB = 1024 * 1024
PYMEMCACHE = "django.core.cache.backends.memcached.PyMemcacheCache"
PYLIBMC = "django.core.cache.backends.memcached.PyLibMCCache"
BMEMCACHED = "django_bmemcached.memcached.BMemcached"

BACKENDS = {
    # kind: (which server pair, settings builder)
    "pymemcache": ("tcp", lambda s: {"BACKEND": PYMEMCACHE, "LOCATION": s.location()}),
    "pymemcache-prod": ("tcp", lambda s: {
        "BACKEND": PYMEMCACHE, "LOCATION": [s.location()], "TIMEOUT": 300,
        "KEY_PREFIX": "myapp", "VERSION": 2,
        "OPTIONS": {"no_delay": True, "ignore_exc": True}}),
    "pylibmc": ("tcp", lambda s: {"BACKEND": PYLIBMC, "LOCATION": s.location()}),
    "pylibmc-binary": ("tcp", lambda s: {"BACKEND": PYLIBMC, "LOCATION": s.location(),
                                         "OPTIONS": {"binary": True}}),
    "pylibmc-sasl": ("sasl", lambda s: {
        "BACKEND": PYLIBMC, "LOCATION": s.location(), "TIMEOUT": None,
        "OPTIONS": {"binary": True, "username": SASL_USER, "password": SASL_PASSWORD,
                    "behaviors": MEMCACHIER_BEHAVIORS}}),
    "bmemcached": ("tcp", lambda s: {"BACKEND": BMEMCACHED, "LOCATION": s.location()}),
    "bmemcached-sasl": ("sasl", lambda s: {
        "BACKEND": BMEMCACHED, "LOCATION": s.location(), "TIMEOUT": None,
        "OPTIONS": {"username": SASL_USER, "password": SASL_PASSWORD}}),
}
ALL = list(BACKENDS)


@pytest.fixture
def pair_for(request):
    def get(kind):
        return request.getfixturevalue({"tcp": "pair", "sasl": "sasl_pair"}[BACKENDS[kind][0]])
    return get


class Article:
    """A model-like object, the kind of thing views cache."""

    def __init__(self, pk, title, published, tags):
        self.pk, self.title, self.published, self.tags = pk, title, published, tags

    def __eq__(self, other):
        return isinstance(other, Article) and vars(self) == vars(other)

    def __repr__(self):
        return f"Article({vars(self)!r})"


def django_cache(kind, server, **overrides):
    """`caches['default']` configured for `kind` against `server`."""
    config = {**BACKENDS[kind][1](server), **overrides}
    ctx = override_settings(CACHES={"default": config})
    ctx.enable()
    return login_django(caches["default"]), ctx


def run(pair, kind, body, **overrides):
    def scenario(t, s):
        cache, ctx = django_cache(kind, s, **overrides)
        try:
            body(t, cache, s)
        finally:
            try:
                cache.close()
            finally:
                ctx.disable()
    pair.check(scenario, kind)


def by_kind(kind, default, **per_kind):
    """Expected value for this backend (keys use _ for -)."""
    return per_kind.get(kind.replace("-", "_"), default)


@pytest.mark.parametrize("kind", ALL)
def test_cache_api(pair_for, kind):
    binary = kind.startswith("bmemcached") or kind in ("pylibmc-binary", "pylibmc-sasl")

    def body(t, cache, s):
        t.do("get missing", cache.get, "k", expect=None)
        t.do("get missing with default", cache.get, "k", "dflt", expect="dflt")
        t.do("set", cache.set, "k", "v", expect=None)
        t.do("get", cache.get, "k", expect="v")
        t.do("add existing", cache.add, "k", "x", expect=False)
        t.do("add new", cache.add, "a", "added", expect=True)
        t.do("get added", cache.get, "a", expect="added")
        t.do("get_or_set missing", cache.get_or_set, "gos", lambda: "computed", expect="computed")
        t.do("get_or_set existing", cache.get_or_set, "gos", lambda: "again", expect="computed")
        t.do("set_many", cache.set_many, {"m1": 1, "m2": "two", "m3": [3]}, expect=[])
        t.do("get_many", cache.get_many, ["m1", "nope", "m2", "m3"],
             expect={"m1": 1, "m2": "two", "m3": [3]})
        t.do("has_key", cache.has_key, "m1", expect=True)
        t.do("has_key missing", cache.has_key, "nope", expect=False)
        t.do("incr", cache.incr, "m1", expect=2)
        t.do("incr by 10", cache.incr, "m1", 10, expect=12)
        t.do("decr", cache.decr, "m1", 2, expect=10)
        t.do("decr below zero stops at 0", cache.decr, "m1", 100, expect=0)
        t.do("incr missing", cache.incr, "nope",
             expect=by_kind(kind, raised("ValueError"), bmemcached=0, bmemcached_sasl=0))
        t.do("incr non-numeric", cache.incr, "m2", expect=by_kind(
            kind, raised("MemcacheClientError",
                         "b'cannot increment or decrement non-numeric value'"),
            pylibmc=raised("ClientError", "1 keys failed"),
            pylibmc_binary=raised("UnknownReadFailure", "1 keys failed"),
            pylibmc_sasl=raised("UnknownReadFailure", "1 keys failed"),
            pymemcache_prod=False,  # ignore_exc turns the error into False
            bmemcached=raised("MemcachedException"), bmemcached_sasl=raised("MemcachedException")))
        # a fresh client: libmemcached may have given up on the old connection
        cache.close()
        fresh, ctx = django_cache(kind, s)
        try:
            t.do("get after failed incr", fresh.get, "m2", expect="two")
            t.do("touch", fresh.touch, "k", 100, expect=by_kind(
                kind, True, bmemcached=raised("AttributeError"),
                bmemcached_sasl=raised("AttributeError")))
            t.do("touch missing", fresh.touch, "nope", 100, expect=by_kind(
                kind, False, bmemcached=raised("AttributeError"),
                bmemcached_sasl=raised("AttributeError")))
            t.do("delete", fresh.delete, "a", expect=True)
            t.do("delete missing", fresh.delete, "a", expect=by_kind(
                kind, False, bmemcached=True, bmemcached_sasl=True))
            t.do("get deleted", fresh.get, "a", expect=None)
            t.do("delete_many", fresh.delete_many, ["m1", "m2", "nope"], expect=None)
            t.do("get_many after delete_many", fresh.get_many, ["m1", "m2", "m3"],
                 expect={"m3": [3]})
            t.do("set timeout=None (forever)", fresh.set, "forever", 1, timeout=None)
            t.do("get timeout=None", fresh.get, "forever", expect=1)
            # Django sends timeout 0 as -1: expired at once on the text
            # protocol; the binary clients send it as an unsigned 32-bit
            # exptime, which memcached reads as a unix time far ahead.
            t.do("set timeout=0", fresh.set, "zero", 1, timeout=0)
            t.do("get timeout=0", fresh.get, "zero", expect=1 if binary else None)
            t.do("set negative timeout", fresh.set, "neg", 1, timeout=-5)
            t.do("get negative timeout", fresh.get, "neg", expect=1 if binary else None)
            t.do("add with timeout=0", fresh.add, "zero-add", 1, timeout=0)
            t.do("set timeout > 30 days (absolute)", fresh.set, "month", 1, timeout=40 * 86400)
            t.do("get timeout > 30 days", fresh.get, "month", expect=1)
            t.do("clear", fresh.clear, expect=None)
            t.do("get after clear", fresh.get_many, ["k", "forever", "month", "m3"], expect={})
            t.do("set after clear", fresh.set, "k", "again")
            t.do("get after clear and set", fresh.get, "k", expect="again")
        finally:
            fresh.close()
            ctx.disable()
    run(pair_for(kind), kind, body)


@pytest.mark.parametrize("kind", ALL)
def test_keys_versions_prefix(pair_for, kind):
    def body(t, cache, s):
        for key in ("ключ", "日本語", "emoji-🎉", "Grüße", "a:b:c", "x" * 200):
            t.do(f"set {key[:10]!r}", cache.set, key, f"value of {key[:10]}")
            t.do(f"get {key[:10]!r}", cache.get, key, expect=f"value of {key[:10]}")
        t.do("get_many unicode", cache.get_many, ["ключ", "日本語", "nope"],
             expect={"ключ": "value of ключ", "日本語": "value of 日本語"})
        t.do("key with a space (Django refuses)", cache.set, "has space", 1,
             expect=raised("InvalidCacheKey"))
        t.do("key of 251 chars (Django refuses)", cache.set, "k" * 251, 1,
             expect=raised("InvalidCacheKey"))
        # Django counts characters; the server counts UTF-8 bytes
        t.do("120 Cyrillic chars = 240 bytes + prefix", cache.set, "ж" * 120, 1, expect=None)
        t.do("get 240-byte key", cache.get, "ж" * 120, expect=1)
        t.do("124 Cyrillic chars: Django's 250 passes, 251+ bytes", cache.set, "ж" * 124, 1)
        t.do("get 124 Cyrillic chars", cache.get, "ж" * 124)
        t.do("set version=2", cache.set, "v", "two", version=2)
        t.do("get default version misses", cache.get, "v", version=1, expect=None)
        t.do("get version=2", cache.get, "v", version=2, expect="two")
        t.do("incr_version", cache.incr_version, "v", version=2, expect=3)
        t.do("old version gone", cache.get, "v", version=2, expect=None)
        t.do("get version=3", cache.get, "v", version=3, expect="two")
        t.do("decr_version", cache.decr_version, "v", version=3, expect=2)
        t.do("get_many version=2", cache.get_many, ["v"], version=2, expect={"v": "two"})
        t.do("delete version=2", cache.delete, "v", version=2, expect=True)
        t.do("incr_version of a missing key", cache.incr_version, "nope",
             expect=raised("ValueError"))

        # two sites sharing one server, told apart by KEY_PREFIX
        a, actx = django_cache(kind, s, KEY_PREFIX="site-a")
        b, bctx = django_cache(kind, s, KEY_PREFIX="site-b")
        try:
            t.do("site a set", a.set, "shared", "a")
            t.do("site b set", b.set, "shared", "b")
            t.do("site a get", a.get, "shared", expect="a")
            t.do("site b get", b.get, "shared", expect="b")
            t.do("site b delete", b.delete, "shared", expect=True)
            t.do("site a unaffected", a.get, "shared", expect="a")
        finally:
            a.close(), b.close()
            bctx.disable(), actx.disable()
    run(pair_for(kind), kind, body)


@pytest.mark.parametrize("kind", ALL)
def test_pickled_objects_and_big_values(pair_for, kind):
    from django.contrib.auth.models import User

    def body(t, cache, s):
        objs = sample_objects()
        t.do("set_many objects", cache.set_many, objs, expect=[])
        t.do("get_many objects", cache.get_many, list(objs),
             expect=by_kind(kind, objs, pylibmc={**objs, "bool": 1},
                            pylibmc_binary={**objs, "bool": 1}, pylibmc_sasl={**objs, "bool": 1}))
        article = Article(7, "Cache me", datetime.datetime(2024, 5, 1, 12, 0,
                                                           tzinfo=datetime.timezone.utc),
                          ["django", "memcache"])
        t.do("set model-like object", cache.set, "article:7", article)
        t.do("get model-like object", cache.get, "article:7", expect=article)
        user = User(id=42, username="ada", email="ada@example.com",
                    date_joined=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
        t.do("set unsaved auth.User", cache.set, "user:42", user)
        got = cache.get("user:42")
        t.rec("get auth.User", got and (type(got).__name__, got.pk, got.username, got.email,
                                        got.date_joined),
              expect=("User", 42, "ada", "ada@example.com",
                      datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)))
        t.do("set queryset-like list of dicts", cache.set, "top",
             [{"id": i, "price": decimal.Decimal(i) / 4} for i in range(500)])
        t.do("get list of 500 dicts", cache.get, "top",
             expect=[{"id": i, "price": decimal.Decimal(i) / 4} for i in range(500)])
        t.do("set 100 keys", cache.set_many, {f"key{i}": i for i in range(100)}, expect=[])
        t.do("get 100 keys", cache.get_many, [f"key{i}" for i in range(100)],
             expect={f"key{i}": i for i in range(100)})

        value = blob(MB - 4096, 11)
        t.do("set a value just under 1 MB", cache.set, "fits", value)
        t.do("get a value just under 1 MB", cache.get, "fits", expect=value)
        t.do("set old value", cache.set, "big", "old")
        # what each client does with memcached's refusal (1 MB item limit)
        t.do("set a value over 1 MB", cache.set, "big", blob(MB + 1, 12), expect=by_kind(
            kind, raised("MemcacheServerError", "b'object too large for cache'"),
            pymemcache_prod=None,  # ignore_exc: swallowed, then Django deletes the key
            pylibmc=raised("TooBig"), pylibmc_binary=raised("TooBig"),
            pylibmc_sasl=raised("TooBig"),
            bmemcached=raised("MemcachedException", "Code: 3 Message: b'Too large.' (code 3)"),
            bmemcached_sasl=raised("MemcachedException",
                                   "Code: 3 Message: b'Too large.' (code 3)")))
        cache.close()
        fresh, ctx = django_cache(kind, s)
        try:
            t.do("old value gone after the refused set", fresh.get, "big", expect=None)
            t.do("add a value over 1 MB", fresh.add, "big2", blob(2 * MB, 13), expect=by_kind(
                kind, raised("MemcacheServerError", "b'object too large for cache'"),
                pymemcache_prod=False, pylibmc=raised("TooBig"),
                pylibmc_binary=raised("TooBig"), pylibmc_sasl=raised("TooBig"),
                bmemcached=raised("MemcachedException", "Code: 3 Message: b'Too large.' (code 3)"),
                bmemcached_sasl=raised("MemcachedException",
                                       "Code: 3 Message: b'Too large.' (code 3)")))
            t.do("nothing stored by the refused add", fresh.get, "big2", expect=None)
            t.do("set_many with one over 1 MB", fresh.set_many,
                 {"s1": 1, "s2": blob(MB + 10, 14), "s3": 3}, expect=by_kind(
                     kind, raised("MemcacheServerError", "b'object too large for cache'"),
                     pymemcache_prod=[],  # ignore_exc hides the failure
                     pylibmc=raised("TooBig"), pylibmc_binary=raised("TooBig"),
                     pylibmc_sasl=raised("TooBig"), bmemcached=["s2"], bmemcached_sasl=["s2"]))
        finally:
            fresh.close()
            ctx.disable()
        fresh, ctx = django_cache(kind, s)
        try:
            # pymemcache pipelines every set and bmemcached batches setq, so
            # the set after the refused one lands; libmemcached stops there
            t.do("after set_many", fresh.get_many, ["s1", "s2", "s3"], expect=by_kind(
                kind, {"s1": 1, "s3": 3}, pylibmc={"s1": 1}, pylibmc_binary={"s1": 1},
                pylibmc_sasl={"s1": 1}))
            t.do("cache still usable", fresh.get, "fits", expect=value)
        finally:
            fresh.close()
            ctx.disable()
    run(pair_for(kind), kind, body)


@pytest.mark.parametrize("kind", ALL)
def test_expiry(pair_for, kind):
    def body(t, cache, s):
        # 2 s, not 1: memcached's clock moves in whole seconds, so an item
        # with exptime 1 may be gone a moment after it was set.
        t.do("set timeout=2", cache.set, "short", 1, timeout=2)
        t.do("set timeout=None", cache.set, "long", 1, timeout=None)
        t.do("add timeout=2", cache.add, "short-add", 1, timeout=2)
        t.do("set_many timeout=2", cache.set_many, {"sm1": 1, "sm2": 2}, timeout=2, expect=[])
        keys = ["short", "long", "short-add", "sm1", "sm2"]
        t.do("all there", lambda: sorted(cache.get_many(keys)), expect=sorted(keys))
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            left = sorted(cache.get_many(keys))
            if left == ["long"]:
                break
            time.sleep(0.1)
        t.rec("expired within 6 s, except timeout=None", left, expect=["long"])
    run(pair_for(kind), kind, body)


@pytest.mark.parametrize("kind", ["pymemcache", "pylibmc-sasl", "bmemcached-sasl"])
def test_sessions_views_and_fragments(pair_for, kind):
    from django.contrib.sessions.backends.cache import SessionStore
    from django.http import HttpResponse
    from django.template import Context, Engine
    from django.views.decorators.cache import cache_page

    def body(t, cache, s):
        with override_settings(SESSION_CACHE_ALIAS="default"):
            store = SessionStore()
            store["cart"] = [1, 2, 3]
            store["user_id"] = 42
            store.save()
            key = store.session_key
            loaded = SessionStore(session_key=key)
            t.rec("session loads", dict(loaded.items()), expect={"cart": [1, 2, 3], "user_id": 42})
            loaded["cart"].append(4)
            loaded.modified = True
            loaded.save()
            t.rec("session update", dict(SessionStore(session_key=key).items()),
                  expect={"cart": [1, 2, 3, 4], "user_id": 42})
            t.rec("session exists", loaded.exists(key), expect=True)
            loaded.delete()
            t.rec("session deleted", SessionStore().exists(key), expect=False)

        hits = []

        def view(request):
            hits.append(1)
            return HttpResponse(f"rendered {len(hits)}")

        cached_view = cache_page(60)(view)
        rf = RequestFactory()
        first = cached_view(rf.get("/articles/"))
        second = cached_view(rf.get("/articles/"))
        other = cached_view(rf.get("/other/"))
        t.rec("cache_page serves the second request from the cache",
              (first.content, second.content, other.content, len(hits)),
              expect=(b"rendered 1", b"rendered 1", b"rendered 2", 2))

        engine = Engine(libraries={"cache": "django.templatetags.cache"})
        tpl = engine.from_string("{% load cache %}{% cache 500 sidebar user %}[{{ n }}]{% endcache %}")
        def render(**ctx):
            return "".join(tpl.render(Context(ctx)))  # a plain str, not SafeString
        t.rec("fragment rendered", render(n=1, user="ada"), expect="[1]")
        t.rec("fragment from cache", render(n=2, user="ada"), expect="[1]")
        t.rec("fragment varies on", render(n=3, user="bob"), expect="[3]")
    run(pair_for(kind), kind, body)


@pytest.mark.parametrize("kind", ["pymemcache", "pylibmc", "bmemcached"])
def test_unix_socket_location(unix_pair, kind):
    def body(t, cache, s):
        t.do("set over the unix socket", cache.set, "k", {"v": 1})
        t.do("get over the unix socket", cache.get, "k", expect={"v": 1})
        t.do("incr over the unix socket", lambda: (cache.set("n", 1), cache.incr("n", 41))[1],
             expect=42)
        t.do("get_many over the unix socket", cache.get_many, ["k", "n", "x"],
             expect={"k": {"v": 1}, "n": 42})

    def location(s):
        # Django: "unix:/path" for pymemcache and pylibmc; bmemcached takes the path
        return s.unix if kind == "bmemcached" else f"unix:{s.unix}"
    backend = {"pymemcache": PYMEMCACHE, "pylibmc": PYLIBMC, "bmemcached": BMEMCACHED}[kind]

    def scenario(t, s):
        ctx = override_settings(CACHES={"default": {"BACKEND": backend, "LOCATION": location(s)}})
        ctx.enable()
        try:
            cache = caches["default"]
            body(t, cache, s)
            cache.close()
        finally:
            ctx.disable()
    unix_pair.check(scenario, kind)
