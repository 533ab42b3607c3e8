"""Fixtures: a stock memcached and a shoal, side by side, on ephemeral ports.

Environment:
  SHOAL_BIN       the shoal binary (default <repo>/target/release/shoal). A
                  missing binary stops the run with an error, never a skip.
                  For developing this suite before shoal exists it may point
                  at a stock memcached ("stand-in mode"); CI (CI=true)
                  refuses that.
  MEMCACHED_BIN   the reference memcached (default /usr/bin/memcached).
  SASL_PATH       where pylibmc's libsasl2 finds the PLAIN plugin (set here
                  from Debian's libsasl2-modules if unset).
"""

from __future__ import annotations

import os

import pytest

import servers as srv
from harness import run_parity

# pylibmc's bundled libsasl2 looks for plugins in /usr/lib64/sasl2; Debian
# keeps PLAIN in /usr/lib/<triplet>/sasl2. Must be set before the first login.
if "SASL_PATH" not in os.environ and srv.sasl_plugin_dir():
    os.environ["SASL_PATH"] = srv.sasl_plugin_dir()
# django-bmemcached falls back to these: keep the developer's out of the tests.
for _var in ("MEMCACHE_USERNAME", "MEMCACHE_PASSWORD", "MEMCACHE_SERVERS"):
    os.environ.pop(_var, None)

SHOAL = srv.shoal_bin()
STAND_IN = srv.is_memcached_binary(SHOAL)


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "shoal_only: shoal's own behaviour where it differs from memcached by "
        "design; cannot run when SHOAL_BIN is a memcached stand-in")
    if not os.path.exists(SHOAL):
        raise pytest.UsageError(
            f"shoal binary not found at {SHOAL}: build it with "
            "`cargo build --release -p shoal-server --bin shoal` or set SHOAL_BIN")
    if not os.access(SHOAL, os.X_OK):
        raise pytest.UsageError(f"SHOAL_BIN={SHOAL} is not executable")
    if STAND_IN and _truthy(os.environ.get("CI")):
        raise pytest.UsageError(
            f"SHOAL_BIN={SHOAL} is a stock memcached: CI must test shoal itself")
    if not os.path.exists(srv.memcached_bin()):
        raise pytest.UsageError(
            f"reference memcached not found at {srv.memcached_bin()}: apt-get install memcached")
    import django_setup  # noqa: F401  (settings.configure + django.setup, once)


def pytest_report_header(config):
    mode = " (STAND-IN: stock memcached, not shoal)" if STAND_IN else ""
    return [f"shoal: {SHOAL}{mode}", f"reference: {srv.memcached_bin()}",
            f"SASL_PATH: {os.environ.get('SASL_PATH')}"]


def pytest_collection_modifyitems(config, items):
    if not STAND_IN:
        return
    skip = pytest.mark.skip(reason="shoal-only behaviour; SHOAL_BIN is a memcached stand-in")
    for item in items:
        if "shoal_only" in item.keywords:
            item.add_marker(skip)


class Pair:
    """The reference memcached and shoal, configured alike."""

    def __init__(self, memcached: srv.Server, shoal: srv.Server):
        self.memcached = memcached
        self.shoal = shoal
        self.servers = [memcached, shoal]

    def flush(self):
        for s in self.servers:
            if s.proc.poll() is not None:
                raise srv.ServerDied(s, f"died (status {s.proc.returncode})")
            s.flush()

    def check(self, scenario, what: str = ""):
        """Run `scenario(t, server)` on both; require the same answers."""
        try:
            return run_parity(scenario, self.servers, what)
        finally:
            for s in self.servers:  # a crash is its own, clearer, failure
                if s.proc.poll() is not None:
                    raise srv.ServerDied(s, f"died during the test (status {s.proc.returncode})")


class ClusterPair:
    """3 stock memcacheds (a client's own hashing spreads keys over them) and
    a 3-node shoal cluster: the same LOCATION list shape, answers compared."""

    def __init__(self, memcached: srv.Group, shoal: srv.Group):
        self.memcached = memcached
        self.shoal = shoal
        self.groups = [memcached, shoal]

    def flush(self):
        for g in self.groups:
            g.flush()

    def check(self, scenario, what: str = ""):
        """Run `scenario(t, group)` on both groups; require the same answers."""
        try:
            return run_parity(scenario, self.groups, what)
        finally:
            for g in self.groups:
                g.check_alive()


class Pool:
    """Servers started on first use and kept for the session."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.pairs: dict[str, Pair] = {}
        self.all: list[srv.Server] = []
        self._cluster: ClusterPair | None = None

    def cluster(self) -> ClusterPair:
        if self._cluster is None:
            mc = srv.spawn_reference_group(self.workdir)
            self.all += mc.nodes
            sh = srv.spawn_cluster(SHOAL, self.workdir)
            self.all += sh.nodes
            self._cluster = ClusterPair(mc, sh)
        return self._cluster

    def _spawn(self, role, label, binary, **kw):
        s = srv.spawn(role, label, binary, self.workdir, **kw)
        self.all.append(s)
        return s

    def pair(self, name: str, *, item_size="1m", unix=False, sasl=False) -> Pair:
        if name not in self.pairs:
            mc = self._spawn("memcached", f"memcached-{name}", srv.memcached_bin(),
                             item_size=item_size, unix=unix, sasl=sasl)
            # shoal has no auth configured: it takes any PLAIN credentials.
            # A memcached stand-in only answers SASL clients with -S.
            sh = self._spawn("shoal", f"shoal-{name}", SHOAL, item_size=item_size,
                             unix=unix, sasl=sasl and STAND_IN)
            self.pairs[name] = Pair(mc, sh)
        return self.pairs[name]

    def stop(self):
        srv.stop_all(self.all)


@pytest.fixture(scope="session")
def pool(tmp_path_factory):
    p = Pool(tmp_path_factory.mktemp("srv"))
    yield p
    p.stop()


@pytest.fixture
def pair(pool) -> Pair:
    """memcached and shoal over TCP, -I 1m, flushed."""
    p = pool.pair("tcp")
    p.flush()
    return p


@pytest.fixture
def sasl_pair(pool) -> Pair:
    """memcached -S (PLAIN, sasldb) and shoal (no auth configured), flushed."""
    p = pool.pair("sasl", sasl=True)
    p.flush()
    return p


@pytest.fixture
def unix_pair(pool) -> Pair:
    """memcached and shoal listening on unix sockets (-s), flushed."""
    p = pool.pair("unix", unix=True)
    p.flush()
    return p


@pytest.fixture
def sized_pair(pool):
    """Factory: a pair started with `-I SIZE`."""
    def get(size: str) -> Pair:
        p = pool.pair(f"I{size}", item_size=size)
        p.flush()
        return p
    return get


@pytest.fixture
def shoal_plain(pool) -> srv.Server:
    """The TCP shoal on its own, for shoal-only checks."""
    p = pool.pair("tcp")
    p.flush()
    return p.shoal



@pytest.fixture
def cluster_pair(pool) -> ClusterPair:
    """3 memcacheds and a 3-node shoal cluster (gossip profile fast), flushed."""
    c = pool.cluster()
    c.flush()
    return c


@pytest.fixture
def cluster(pool) -> srv.Group:
    """The 3-node shoal cluster on its own, flushed, for shoal-only checks."""
    c = pool.cluster()
    c.flush()
    return c.shoal
