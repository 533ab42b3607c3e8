"""Work around a pylibmc (libmemcached 1.0.16) SASL bug, so it cannot make
the suite flaky.

libmemcached reads the server's SASL mechanism list ("PLAIN", as memcached
answers it: 5 bytes, no terminator) into an uninitialised stack buffer and
hands it to sasl_client_start() without terminating it. Whatever stale
bytes follow "PLAIN" become part of the mechanism name, and when they are
not a 0 byte (with ASLR, often the 0x7f of a stale pointer) the login fails
with "FAILED TO SEND AUTHENTICATION TO SERVER" (MEMCACHED_AUTH_PROBLEM)
before a byte of credentials is sent. It depends on the client process's
stack, not on the server: it fails the same way against stock memcached.

So a client that logs in is first connected here, outside the recorded
answers: a fresh client per attempt (libmemcached marks a server that
failed as dead), each attempt from a different C stack depth.
"""

import pylibmc

AUTH_BUG = "FAILED TO SEND AUTHENTICATION TO SERVER"
ATTEMPTS = 12


def _at_depth(depth, fn):
    # Each map() level puts the call a C frame deeper.
    if depth == 0:
        return fn()
    return list(map(lambda _: _at_depth(depth - 1, fn), [0]))[0]


def login(make_client):
    """make_client() -> a new pylibmc client; returns one that is logged in."""
    last = None
    for attempt in range(ATTEMPTS):
        client = make_client()
        try:
            _at_depth(attempt * 3, lambda: client.get("__shoal_login_probe__"))
            return client
        except pylibmc.Error as e:
            if AUTH_BUG not in str(e):
                raise
            last = e
    raise RuntimeError(f"pylibmc SASL login kept failing ({ATTEMPTS} tries): {last}")


def login_django(cache):
    """Log a Django PyLibMCCache's client in before the scenario uses it."""
    options = getattr(cache, "_options", {}) or {}
    if type(cache).__name__ != "PyLibMCCache" or not options.get("username"):
        return cache

    def make():
        cache.__dict__.pop("_cache", None)  # a cached_property: build a new client
        return cache._cache
    login(make)
    return cache
