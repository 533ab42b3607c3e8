"""A real Prometheus scraping the 3-node shoal cluster, and the deploy/
alert rules and Grafana dashboard checked against what the nodes export.

- `test_prometheus_counts_the_load`: Prometheus (Debian's /usr/bin/prometheus)
  scrapes every node's `/metrics` each second and loads
  deploy/prometheus/alerts.yml. The test drives known load in three parts
  (single-key sets and gets through pymemcache on Django-shaped keys of
  every key family, round robin over the nodes; multi-key get and gets;
  binary-protocol and meta sets and gets), waits after each part until
  Prometheus has scraped every node, and checks through the HTTP query API that each counter rose by
  exactly what the test did, cluster-wide and where the counting rule says
  (client requests at the node the client talked to, store figures at the
  key's owner, forwards per peer), that every node is up and ready, and
  that the key-family split is the one the keys call for.
- `test_rules_and_dashboard_use_exported_names`: every `shoal_*` name in
  alerts.yml and deploy/grafana/shoal.json is exported by every node, every
  dashboard query runs, and every rule evaluates without error.
- `test_promtool_checks_rules_and_config`: `promtool check rules`,
  `promtool test rules` (alerts_test.yml: every alert fires on its
  scenario) and `promtool check config` pass on deploy/prometheus/.
- `test_dashboard_is_portable`: the dashboard takes its data source from the
  `DS_PROMETHEUS` variable and every query follows `$job` and `$instance`.

Before/after figures are instant queries taken after a successful scrape
that began once everything before it had finished (the last `up` sample of
every target later than the moment the load ended), so they are exact counter values, not `increase()`
estimates. No fixed sleeps: every wait polls, with a deadline.

PROMETHEUS_BIN / PROMTOOL_BIN override /usr/bin/prometheus and
/usr/bin/promtool; a missing one fails the test (`.ci/run` installs
Debian's `prometheus` package), never skips it.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import struct
import subprocess
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import bmemcached
import pytest
from pymemcache.client.base import Client

import servers as srv
from servers import HOST, REPO

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
PROM_CONFIGS = [REPO / "deploy" / "prometheus" / "prometheus.yml"]
DASHBOARD = REPO / "deploy" / "grafana" / "shoal.json"

JOB = "shoal"
SCRAPE_INTERVAL = "1s"
PROMETHEUS_READY_TIMEOUT = 30.0  # /-/ready, then every target up == 1
SCRAPE_TIMEOUT = 20.0  # a scrape of every node after a given moment
MEMORY_LIMIT = int(srv.MEMORY_MB) * 1024 * 1024

DJANGO_FAMILIES = ("django:cache_page", "django:cache_header", "django:template_fragment",
                   "django:session", "django:session_cached_db")
COMMANDS = {"get", "gat", "set", "add", "replace", "append", "prepend", "cas", "delete", "incr",
            "decr", "touch", "flush_all", "stats", "version", "noop", "verbosity", "quit",
            "auth", "debug",
            # a request that did not decode (an unknown command, a bad line)
            "invalid"}
PROTOCOLS = {"text", "meta", "binary"}
OUTCOMES = {"hit", "miss", "stored", "not_stored", "exists", "not_found", "deleted",
            "touched", "ok", "error"}

def tool(env: str, default: str) -> str:
    """The Prometheus tool to use; missing is a failure with what to do."""
    path = os.environ.get(env) or default
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found (set {env} to use another): install Debian's prometheus "
                    "package (`apt-get install --no-install-recommends prometheus`; .ci/run "
                    "installs it). These tests need a real Prometheus and promtool.",
                    pytrace=False)
    return path


# -- Prometheus -------------------------------------------------------------

class Prometheus:
    """A Prometheus server on a free loopback port, scraping `targets` (the
    nodes' HTTP host:port) every second and evaluating alerts.yml."""

    def __init__(self, binary: str, workdir: Path, targets: list[str]):
        self.binary = binary
        self.workdir = workdir
        self.targets = targets
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log = workdir / "prometheus.log"

    def config(self) -> str:
        # JSON is YAML: no YAML library needed.
        return json.dumps({
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                       "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": self.targets}]}],
        }, indent=2)

    def start(self) -> "Prometheus":
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(self.config())
        for attempt in range(3):
            self.port = srv.free_port()
            data = self.workdir / f"data-{attempt}"
            argv = [self.binary, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                    f"--web.listen-address={HOST}:{self.port}",
                    "--storage.tsdb.retention.time=1h", "--log.level=info"]
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=log, preexec_fn=srv._die_with_parent)
            try:
                self._wait_ready()
                return self
            except PrometheusDied:
                if attempt == 2:  # most likely lost the race for the port
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise PrometheusDied(f"prometheus exited with status {self.proc.returncode}\n"
                                 f"--- log ---\n{self.log_tail()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + PROMETHEUS_READY_TIMEOUT
        last = "never asked"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self.get("/-/ready")
                if status == 200:
                    return
                last = f"{status} {body[:100]!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        raise RuntimeError(f"prometheus not ready after {PROMETHEUS_READY_TIMEOUT}s: {last}\n"
                           f"--- log ---\n{self.log_tail()}")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def api(self, path: str, **params) -> dict | list:
        """GET /api/v1/<path>?params; the `data` of a success, else raise."""
        self._check_alive()
        query = urllib.parse.urlencode(params)
        status, body = self.get(f"/api/v1/{path}" + (f"?{query}" if query else ""))
        try:
            doc = json.loads(body)
        except ValueError:
            raise RuntimeError(f"prometheus /api/v1/{path} {params}: {status} {body[:300]!r}")
        if status != 200 or doc.get("status") != "success":
            raise PromQLError(f"prometheus /api/v1/{path} {params}: {status} "
                              f"{doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str) -> list[tuple[dict, float]]:
        """An instant query (now): [(labels, value)]."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise RuntimeError(f"{expr}: a {data['resultType']}, not a vector")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def by(self, expr: str, *labels: str) -> dict[tuple, float]:
        """An instant query as {(label values...): value}."""
        out = {}
        for metric, value in self.query(expr):
            key = tuple(metric.get(name, "") for name in labels)
            if key in out:
                raise AssertionError(f"{expr}: two series for {dict(zip(labels, key))}")
            out[key] = value
        return out

    def wait_targets_up(self) -> None:
        """Until `up` is 1 for every target (through the query API)."""
        deadline = time.monotonic() + PROMETHEUS_READY_TIMEOUT
        seen: dict = {}
        while time.monotonic() < deadline:
            seen = {m.get("instance"): v for m, v in self.query(f'up{{job="{JOB}"}}')}
            if set(seen) == set(self.targets) and all(v == 1 for v in seen.values()):
                return
            time.sleep(0.1)
        targets = self.api("targets")
        health = {t["labels"].get("instance"): (t.get("health"), t.get("lastError"))
                  for t in targets.get("activeTargets", [])}
        raise AssertionError(f"not every node up after {PROMETHEUS_READY_TIMEOUT}s: up = {seen}, "
                             f"targets = {health}\n--- prometheus log ---\n{self.log_tail()}")

    def wait_scraped_after(self, moment: float) -> None:
        """Until every target has a sample from a successful scrape that
        began after `moment` (time.time()), so instant queries show what the
        nodes counted by then."""
        deadline = time.monotonic() + SCRAPE_TIMEOUT
        got: dict = {}
        while time.monotonic() < deadline:
            # The last scrape of each target, when it began and whether it
            # succeeded (a failed one carries no figures): `up` over the
            # last seconds, samples with their timestamps.
            data = self.api("query", query=f'up{{job="{JOB}"}}[10s]')
            got = {r["metric"].get("instance"): (float(r["values"][-1][0]), r["values"][-1][1])
                   for r in data["result"] if r["values"]}
            if set(got) == set(self.targets) and all(
                    ts > moment and up == "1" for ts, up in got.values()):
                return
            time.sleep(0.1)
        raise AssertionError(f"no scrape of every node after {moment:.3f} within "
                             f"{SCRAPE_TIMEOUT}s: last scrapes {got}")


class PrometheusDied(RuntimeError):
    pass


class PromQLError(RuntimeError):
    pass


@pytest.fixture(scope="module")
def prom(pool, tmp_path_factory):
    binary = tool("PROMETHEUS_BIN", "/usr/bin/prometheus")
    group = pool.cluster().shoal
    p = Prometheus(binary, tmp_path_factory.mktemp("prometheus"),
                   [f"{HOST}:{n.http_port}" for n in group.nodes]).start()
    try:
        p.wait_targets_up()
        yield p
    finally:
        p.stop()


# -- which node owns a key (crates/cluster/src/ring.rs, byte for byte) ------

_M64 = (1 << 64) - 1
# rapidhash's default secrets.
_SECRET = (0x2D358DCCAA6C78A5, 0x8BB84B93962EACC9, 0x4B33A62ED433D4A3, 0x4D5A2DA51DE1AA47,
           0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x90ED1765281C388C, 0xAAAAAAAAAAAAAAAA)


def _mum(a: int, b: int) -> tuple[int, int]:
    r = a * b
    return r & _M64, r >> 64


def _mix(a: int, b: int) -> int:
    lo, hi = _mum(a, b)
    return lo ^ hi


def rapidhash(data: bytes, seed: int = 0) -> int:
    """rapidhash V3 (rapidhash.h's `rapidhash_withSeed`, default secrets)."""
    s = _SECRET
    r64 = lambda o: struct.unpack_from("<Q", data, o)[0]  # noqa: E731
    r32 = lambda o: struct.unpack_from("<I", data, o)[0]  # noqa: E731
    n = len(data)
    seed ^= _mix(seed ^ s[2], s[1])
    p, i = 0, n
    if n <= 16:
        if n >= 4:
            seed ^= n
            if n >= 8:
                a, b = r64(0), r64(n - 8)
            else:
                a, b = r32(0), r32(n - 4)
        elif n > 0:
            a, b = (data[0] << 45) | data[-1], data[n >> 1]
        else:
            a = b = 0
    else:
        if i > 112:
            see = [seed] * 7
            while i > 112:
                for k in range(7):
                    see[k] = _mix(r64(p + 16 * k) ^ s[k], r64(p + 16 * k + 8) ^ see[k])
                p += 112
                i -= 112
            seed = see[0] ^ see[1] ^ see[2] ^ see[3] ^ see[4] ^ see[5] ^ see[6]
        for k, sec in enumerate((2, 2, 1, 1, 2, 1)):
            if i <= 16 * (k + 1):
                break
            seed = _mix(r64(p + 16 * k) ^ s[sec], r64(p + 16 * k + 8) ^ seed)
        a, b = r64(p + i - 16) ^ i, r64(p + i - 8)
    a ^= s[1]
    b ^= seed
    a, b = _mum(a, b)
    return _mix(a ^ s[7], b ^ s[1] ^ i)


class Ring:
    """shoal's ring: node `name` sits at h(name#i) for i < vnodes, a key at
    h(key), and belongs to the first node at or after it (wrapping)."""

    VNODES = 160

    def __init__(self, names: list[str]):
        points = sorted((rapidhash(f"{name}#{i}".encode()), name)
                        for name in names for i in range(self.VNODES))
        self.positions = [p for p, _ in points]
        self.names = [n for _, n in points]

    def owner(self, key: bytes) -> str:
        import bisect
        i = bisect.bisect_left(self.positions, rapidhash(key))
        return self.names[i % len(self.names)]


# Values of the C++ reference (rapidhash.h V3, `rapidhash()`), as the ring's
# own tests pin them: one per size class of the algorithm.
_TEST_BYTES = bytes(((i * 37) ^ 0xA5) & 0xFF for i in range(300))
assert rapidhash(b"") == 0x0338DC4BE2CECDAE
assert rapidhash(b"foo") == 0x20C0F952E29156A1
assert rapidhash(b"key:000001") == 0xEAEEA56A9BBBE368
assert rapidhash(_TEST_BYTES[:17]) == 0x178F8EAE643BC8BA
assert rapidhash(_TEST_BYTES[:113]) == 0xD13CBE8F42F97267
assert rapidhash(_TEST_BYTES[:250]) == 0x49E6BB7679656142


# -- clients that count their bytes -----------------------------------------

class CountingSockets:
    """A stand-in for the `socket` module for pymemcache (`socket_module=`):
    its sockets add up every byte sent and received."""

    def __init__(self):
        self.sent = 0
        self.received = 0
        self.opened = 0

    def __getattr__(self, name):
        return getattr(socket, name)

    def socket(self, *args, **kwargs):
        self.opened += 1
        return _CountingSocket(socket.socket(*args, **kwargs), self)


class _CountingSocket:
    def __init__(self, sock: socket.socket, tally: CountingSockets):
        self._sock = sock
        self._tally = tally

    def sendall(self, data, *args):
        self._sock.sendall(data, *args)
        self._tally.sent += len(data)

    def send(self, data, *args):
        n = self._sock.send(data, *args)
        self._tally.sent += n
        return n

    def recv(self, size, *args):
        data = self._sock.recv(size, *args)
        self._tally.received += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self._sock, name)


# -- the keys: Django's own shapes ------------------------------------------

def django_keys(run: int) -> dict[str, list[str]]:
    """Keys as Django's features make them, full (KEY_PREFIX:VERSION:key),
    by the family shoal must put them in. "app" are application keys
    (`:1:user:<id>`): their family is the application's prefix."""
    from django.contrib.sessions.backends.cache import KEY_PREFIX as SESSION_CACHE
    from django.contrib.sessions.backends.cached_db import KEY_PREFIX as SESSION_CACHED_DB
    from django.core.cache.backends.base import default_key_func
    from django.core.cache.utils import make_template_fragment_key
    from django.test import RequestFactory
    from django.utils.cache import _generate_cache_header_key, _generate_cache_key

    rng = random.Random(run)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"

    def session_id():
        return "".join(rng.choice(chars) for _ in range(32))

    def full(key, prefix="", version=1):
        return default_key_func(key, prefix, version)

    factory = RequestFactory()
    pages = [factory.get(f"/articles/{run}/{i}/") for i in range(4)]
    return {
        "django:session": [full(SESSION_CACHE + session_id()) for _ in range(4)]
        # A site with KEY_PREFIX and VERSION of its own.
        + [full(SESSION_CACHE + session_id(), "shop", 2) for _ in range(2)],
        "django:session_cached_db": [full(SESSION_CACHED_DB + session_id()) for _ in range(3)],
        "django:cache_page": [full(_generate_cache_key(r, "GET", [], "")) for r in pages[:3]]
        + [full(_generate_cache_key(pages[3], "GET", ["HTTP_ACCEPT_LANGUAGE"], "mysite"))],
        "django:cache_header": [full(_generate_cache_header_key("", r)) for r in pages[:3]],
        "django:template_fragment": [full(make_template_fragment_key("sidebar", [run, i]))
                                     for i in range(3)],
        "app": [full(f"user:{run * 100 + i}") for i in range(5)],
    }


# -- load, and what it must count ------------------------------------------

class Expect:
    """What the nodes must count for the requests the test sends."""

    def __init__(self, ring: Ring, names: list[str], family_of: dict[str, str]):
        self.ring = ring
        self.names = names  # node index -> node name
        self.family_of = family_of
        self.present: set[str] = set()
        self.requests = Counter()  # (command, protocol, outcome)
        self.latency = Counter()  # command: histogram observations
        self.families = Counter()  # (family, outcome)
        self.family_value_bytes = Counter()  # family: value bytes set or hit
        self.store_hits = Counter()  # owner name
        self.store_misses = Counter()
        self.new_items = Counter()  # owner name
        self.forwarded = Counter()  # (node name, owner name)
        self.peer_ops = Counter()  # owner name
        self.connections = 0

    def owner(self, key: str) -> str:
        return self.ring.owner(key.encode())

    def set(self, node: int, key: str, value: bytes, protocol: str = "text"):
        self.requests["set", protocol, "stored"] += 1
        self.latency["set"] += 1
        self.families[self.family_of[key], "stored"] += 1
        self.family_value_bytes[self.family_of[key]] += len(value)
        owner = self.owner(key)
        if key not in self.present:
            self.new_items[owner] += 1
        self.present.add(key)
        self._forward(node, owner)

    def get(self, node: int, key: str, value_len: int | None, *, single: bool,
            protocol: str = "text"):
        hit = key in self.present
        outcome = "hit" if hit else "miss"
        self.requests["get", protocol, outcome] += 1
        self.families[self.family_of[key], outcome] += 1
        if hit:
            self.family_value_bytes[self.family_of[key]] += value_len
        owner = self.owner(key)
        (self.store_hits if hit else self.store_misses)[owner] += 1
        if single:  # a multi-key get: one histogram sample, forwards per owner
            self.latency["get"] += 1
            self._forward(node, owner)

    def _forward(self, node: int, owner: str):
        if owner != self.names[node]:
            self.forwarded[self.names[node], owner] += 1
            self.peer_ops[owner] += 1


def delta(before: dict, after: dict) -> dict:
    """after - before for every key in either, dropping zeros."""
    out = {}
    for k in set(before) | set(after):
        d = after.get(k, 0.0) - before.get(k, 0.0)
        if d != 0:
            out[k] = d
    return out


def nonzero(counter: Counter) -> dict:
    return {k: float(v) for k, v in counter.items() if v}


def snapshot(prom: Prometheus) -> dict[str, dict]:
    """The figures the load test compares, cluster-wide or per instance."""
    s = f'job="{JOB}"'
    q = {
        "requests": (f"sum by (command, protocol, outcome) (shoal_requests_total{{{s}}})",
                     ("command", "protocol", "outcome")),
        "latency_count": (f"sum by (command) (shoal_request_duration_seconds_count{{{s}}})",
                          ("command",)),
        "latency_inf": (f'sum by (command) (shoal_request_duration_seconds_bucket{{{s}, le="+Inf"}})',
                        ("command",)),
        "latency_sum": (f"sum by (command) (shoal_request_duration_seconds_sum{{{s}}})",
                        ("command",)),
        "bytes_read": (f"sum(shoal_bytes_read_total{{{s}}})", ()),
        "bytes_written": (f"sum(shoal_bytes_written_total{{{s}}})", ()),
        "connections": (f"sum(shoal_connections{{{s}}})", ()),
        "connections_total": (f"sum(shoal_connections_total{{{s}}})", ()),
        "connections_rejected": (f"sum(shoal_connections_rejected_total{{{s}}})", ()),
        "families": (f"sum by (family, outcome) (shoal_key_family_requests_total{{{s}}})",
                     ("family", "outcome")),
        "family_bytes": (f"sum by (family) (shoal_key_family_bytes_total{{{s}}})", ("family",)),
        "store_hits": (f"sum by (instance) (shoal_store_hits_total{{{s}}})", ("instance",)),
        "store_misses": (f"sum by (instance) (shoal_store_misses_total{{{s}}})", ("instance",)),
        "items": (f"sum by (instance) (shoal_items{{{s}}})", ("instance",)),
        "evictions": (f"sum by (instance) (shoal_evictions_total{{{s}}})", ("instance",)),
        "reclaimed": (f"sum by (instance) (shoal_reclaimed_total{{{s}}})", ("instance",)),
        "forwarded": (f"sum by (instance, peer) (shoal_forwarded_total{{{s}}})",
                      ("instance", "peer")),
        "forward_errors": (f"sum by (instance, peer) (shoal_forward_errors_total{{{s}}})",
                           ("instance", "peer")),
        "forward_latency_count": (
            f"sum by (instance, peer) (shoal_forward_duration_seconds_count{{{s}}})",
            ("instance", "peer")),
        "peer_ops": (f"sum by (instance) (shoal_peer_operations_total{{{s}}})", ("instance",)),
        "membership_changes": (f"sum by (instance) (shoal_membership_changes_total{{{s}}})",
                               ("instance",)),
    }
    return {name: prom.by(expr, *labels) for name, (expr, labels) in q.items()}


class Mismatches:
    """Collects every figure that is off, so one run shows them all."""

    def __init__(self):
        self.lines: list[str] = []

    def eq(self, what: str, query: str, want, got):
        if want != got:
            self.lines.append(f"{what}\n    query: {query}\n    expected: {_show(want)}\n"
                              f"    got:      {_show(got)}")

    def check(self, what: str, ok: bool, detail: str):
        if not ok:
            self.lines.append(f"{what}\n    {detail}")

    def raise_if_any(self, context: str):
        if self.lines:
            raise AssertionError(f"{context}: {len(self.lines)} figure(s) wrong\n- "
                                 + "\n- ".join(self.lines))


def _show(v) -> str:
    """A figure for a message: dicts sorted by key, whole numbers as ints."""
    num = lambda x: int(x) if isinstance(x, float) and x.is_integer() else x  # noqa: E731
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {num(x)}" for k, x in sorted(v.items())) + "}"
    return repr(num(v))


def cluster_info(group: srv.Group) -> tuple[dict, dict]:
    """instance (Prometheus label) -> node name; node name -> the node's
    own forward counts per peer (/cluster)."""
    instance_of = {f"{HOST}:{n.http_port}": n.name for n in group.nodes}
    forwarded = {}
    for n in group.nodes:
        doc = n.http_json("/cluster")
        forwarded[n.name] = {peer: f["operations"] for peer, f in doc["forwarded"].items()}
    return instance_of, forwarded


@pytest.mark.shoal_only
def test_prometheus_counts_the_load(cluster, prom):
    group = cluster
    names = [n.name for n in group.nodes]
    ring = Ring(names)
    run = random.randrange(1, 10**6)
    keys = django_keys(run)
    family_of = {k: fam for fam, ks in keys.items() for k in ks}
    every_key = [k for ks in keys.values() for k in ks]
    assert len(set(every_key)) == len(every_key)
    rng = random.Random(run)
    values = {k: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
              for k in every_key}

    instance_of, _ = cluster_info(group)
    node_of_instance = instance_of
    instance_of_node = {v: k for k, v in instance_of.items()}

    # --- window 1: single-key sets and gets, round robin over the nodes ---
    expect = Expect(ring, names, family_of)
    sockets = CountingSockets()
    clients = [Client((HOST, n.port), socket_module=sockets, connect_timeout=5, timeout=5)
               for n in group.nodes]
    # Two keys of three are set, each through some node; then every key is
    # read through another node, and the stored ones once more through a
    # third: hits and misses, local and forwarded, in every family.
    to_set = [k for i, k in enumerate(every_key) if i % 3 != 2]
    start = time.time()
    prom.wait_scraped_after(start)
    before = snapshot(prom)
    _, fwd_before = cluster_info(group)
    turn = 0
    try:
        for k in to_set:
            node = turn % 3
            turn += 1
            assert clients[node].set(k, values[k], noreply=False) is True
            expect.set(node, k, values[k])
        for k in every_key:
            node = turn % 3
            turn += 1
            got = clients[node].get(k)
            assert got == (values[k] if k in expect.present else None), k
            expect.get(node, k, len(values[k]), single=True)
        for k in to_set:
            node = turn % 3
            turn += 1
            assert clients[node].get(k) == values[k], k
            expect.get(node, k, len(values[k]), single=True)
    finally:
        for c in clients:
            c.close()
    expect.connections = sockets.opened
    done = time.time()
    prom.wait_scraped_after(done)
    after = snapshot(prom)
    _, fwd_after = cluster_info(group)

    # The ring computed here is shoal's: the nodes' own forward counts
    # (/cluster) agree with it, or the expectations below mean nothing.
    own = {}
    for node, peers in fwd_after.items():
        for peer, n in peers.items():
            d = n - fwd_before.get(node, {}).get(peer, 0)
            if d:
                own[node, peer] = float(d)
    assert own == nonzero(expect.forwarded), (
        "the test's copy of the ring disagrees with the nodes' own forward counts "
        f"(/cluster): nodes say {own}, test computed {nonzero(expect.forwarded)}")

    bad = Mismatches()
    check_window(bad, "single-key window", before, after, expect, sockets,
                 node_of_instance, instance_of_node, every_key, keys, single=True)

    # --- window 2: multi-key gets (get and gets) through two nodes --------
    expect2 = Expect(ring, names, family_of)
    expect2.present = set(expect.present)
    sockets2 = CountingSockets()
    c0 = Client((HOST, group.nodes[0].port), socket_module=sockets2, connect_timeout=5, timeout=5)
    c1 = Client((HOST, group.nodes[1].port), socket_module=sockets2, connect_timeout=5, timeout=5)
    before2 = after
    try:
        got = c0.get_many(every_key)
        assert got == {k: values[k] for k in every_key if k in expect2.present}
        for k in every_key:
            expect2.get(0, k, len(values[k]), single=False)
        got = c1.gets_many(list(reversed(every_key)))
        assert {k: v for k, (v, _cas) in got.items()} == \
            {k: values[k] for k in every_key if k in expect2.present}
        for k in every_key:
            expect2.get(1, k, len(values[k]), single=False)
    finally:
        c0.close()
        c1.close()
    expect2.connections = sockets2.opened
    done2 = time.time()
    prom.wait_scraped_after(done2)
    after2 = snapshot(prom)
    check_window(bad, "multi-key window", before2, after2, expect2, sockets2,
                 node_of_instance, instance_of_node, every_key, keys, single=False)

    # --- window 3: the binary protocol and meta commands --------------------
    # A fresh key of each family: set and read through python-binary-memcached
    # (binary protocol) on node 1, by meta commands (ms, mg) on node 2, and a
    # miss each way.
    keys3 = django_keys(run + 1)
    expect3 = Expect(ring, names, {**family_of, **{k: f for f, ks in keys3.items() for k in ks}})
    expect3.present = set(expect2.present)
    pick = [ks[0] for ks in keys3.values()]
    unset = [ks[1] for ks in keys3.values()]
    before3 = after2
    binary = bmemcached.Client((group.nodes[1].addr,), socket_timeout=5)
    meta = socket.create_connection((HOST, group.nodes[2].port), timeout=5)
    try:
        for k in pick:
            value = b"binary-" + k.encode()
            assert binary.set(k, value) is True
            expect3.set(1, k, value, "binary")
            assert binary.get(k) == value
            expect3.get(1, k, len(value), single=True, protocol="binary")
        for k in unset[:3]:
            assert binary.get(k) is None
            expect3.get(1, k, None, single=True, protocol="binary")
        for k in unset[3:]:
            meta.sendall(f"mg {k} v\r\n".encode())
            assert srv._recv_until(meta, b"\r\n") == b"EN\r\n"
            expect3.get(2, k, None, single=True, protocol="meta")
        for k in pick:
            value = b"meta-" + k.encode()
            meta.sendall(f"ms {k} {len(value)}\r\n".encode() + value + b"\r\n")
            assert srv._recv_until(meta, b"\r\n") == b"HD\r\n"
            expect3.set(2, k, value, "meta")
            meta.sendall(f"mg {k} v\r\n".encode())
            want = f"VA {len(value)}\r\n".encode() + value + b"\r\n"
            assert srv._recv_until(meta, b"\r\n" + value + b"\r\n") == want
            expect3.get(2, k, len(value), single=True, protocol="meta")
        # Commands that touch no key count too: text stats and version, and
        # a binary stat.
        meta.sendall(b"stats\r\n")
        assert srv._recv_until(meta, b"END\r\n").startswith(b"STAT pid ")
        meta.sendall(b"version\r\n")
        assert srv._recv_until(meta, b"\r\n").startswith(b"VERSION ")
        assert "pid" in binary.stats()[group.nodes[1].addr]
        for command, protocol in (("stats", "text"), ("version", "text"), ("stats", "binary")):
            expect3.requests[command, protocol, "ok"] += 1
            expect3.latency[command] += 1
    finally:
        binary.disconnect_all()
        meta.close()
    expect3.connections = 2
    done3 = time.time()
    prom.wait_scraped_after(done3)
    after3 = snapshot(prom)
    check_window(bad, "binary and meta window", before3, after3, expect3, None,
                 node_of_instance, instance_of_node, pick + unset, keys3, single=True)

    # --- the state Prometheus sees now ---------------------------------------
    check_cluster_state(bad, prom, group, node_of_instance)
    bad.raise_if_any(f"cluster {names}, run {run}, load from {start:.3f} to {done3:.3f}")


def check_window(bad: Mismatches, window: str, before: dict, after: dict, expect: Expect,
                 sockets: CountingSockets | None, node_of_instance: dict,
                 instance_of_node: dict, every_key: list[str], keys: dict, *, single: bool):
    d = {name: delta(before[name], after[name]) for name in before}
    w = f"[{window}]"

    # Client requests: exactly these, nothing else, each counted once.
    bad.eq(f"{w} requests rose by command/protocol/outcome (cluster-wide sum)",
           f"sum by (command, protocol, outcome) (shoal_requests_total{{job=\"{JOB}\"}})",
           nonzero(expect.requests), d["requests"])
    for outcome in ("hit", "miss"):
        want = sum(v for (c, _p, o), v in expect.requests.items() if (c, o) == ("get", outcome))
        got = sum(v for (c, _p, o), v in d["requests"].items() if (c, o) == ("get", outcome))
        bad.eq(f"{w} get {outcome} count",
               f'sum(shoal_requests_total{{command="get",outcome="{outcome}"}})',
               float(want), got)

    # Latency histogram: one sample per request (a multi-key get is one
    # request; how many samples it takes is not pinned here).
    if single:
        bad.eq(f"{w} latency samples by command",
               "sum by (command) (shoal_request_duration_seconds_count)",
               {(c,): float(n) for c, n in expect.latency.items()}, d["latency_count"])
    bad.eq(f"{w} latency +Inf bucket == _count",
           'sum by (command) (shoal_request_duration_seconds_bucket{le="+Inf"})',
           d["latency_count"], d["latency_inf"])
    for (cmd,) in d["latency_count"]:
        bad.check(f"{w} latency _sum rose for {cmd}",
                  d["latency_sum"].get((cmd,), 0.0) > 0,
                  f"sum by (command) (shoal_request_duration_seconds_sum): {d['latency_sum']}")

    # Bytes on the memcache port, exactly what the clients sent and got.
    if sockets is not None:
        bad.eq(f"{w} bytes read from clients", "sum(shoal_bytes_read_total)",
               {(): float(sockets.sent)}, d["bytes_read"])
        bad.eq(f"{w} bytes written to clients", "sum(shoal_bytes_written_total)",
               {(): float(sockets.received)}, d["bytes_written"])

    # Connections: one per client, all closed again, none refused.
    bad.eq(f"{w} connections accepted", "sum(shoal_connections_total)",
           {(): float(expect.connections)}, d["connections_total"])
    bad.eq(f"{w} open connections back to where they were", "sum(shoal_connections)",
           {}, d["connections"])
    bad.eq(f"{w} connections rejected", "sum(shoal_connections_rejected_total)",
           {}, d["connections_rejected"])

    # Store figures at the owner.
    by_instance = lambda counter: {(instance_of_node[n],): float(v)  # noqa: E731
                                   for n, v in counter.items() if v}
    bad.eq(f"{w} store hits at each key's owner", "sum by (instance) (shoal_store_hits_total)",
           by_instance(expect.store_hits), d["store_hits"])
    bad.eq(f"{w} store misses at each key's owner",
           "sum by (instance) (shoal_store_misses_total)",
           by_instance(expect.store_misses), d["store_misses"])
    bad.eq(f"{w} evictions (64 MB each, a few KB stored)", "shoal_evictions_total",
           {}, d["evictions"])
    # New items land at their owner; flushed items unlinked meanwhile
    # (reclaimed) leave the count.
    want_items = Counter({(instance_of_node[n],): v for n, v in expect.new_items.items()})
    for k, v in d["reclaimed"].items():
        want_items[k] -= v
    bad.eq(f"{w} items at each owner: new keys less reclaimed",
           "sum by (instance) (shoal_items) [and shoal_reclaimed_total]",
           {k: float(v) for k, v in want_items.items() if v}, d["items"])

    # Forwarding: per node and peer; work for peers at the owner.
    # The peer label is the owner's node name (--node-name).
    fwd = {(node_of_instance.get(i, i), peer): v for (i, peer), v in d["forwarded"].items()}
    fwd_latency = {(node_of_instance.get(i, i), peer): v
                   for (i, peer), v in d["forward_latency_count"].items()}
    if single:
        bad.eq(f"{w} forwarded per node and peer (node names)",
               "sum by (instance, peer) (shoal_forwarded_total)",
               nonzero(expect.forwarded), fwd)
        bad.eq(f"{w} work done for peers, at the owner",
               "sum by (instance) (shoal_peer_operations_total)",
               by_instance(expect.peer_ops), d["peer_ops"])
        bad.eq(f"{w} forward latency samples, one per forward",
               "sum by (instance, peer) (shoal_forward_duration_seconds_count)",
               nonzero(expect.forwarded), fwd_latency)
    else:
        # A multi-key get sends one operation per remote owner.
        remote = {(expect.names[n], o) for (n, o) in
                  {(0, expect.owner(k)) for k in every_key} | {(1, expect.owner(k)) for k in every_key}
                  if o != expect.names[n]}
        bad.check(f"{w} forwarded to every remote owner of a multi-key get",
                  set(fwd) == remote and all(v >= 1 for v in fwd.values()),
                  f"sum by (instance, peer) (shoal_forwarded_total) rose by {fwd}; "
                  f"owners reached remotely: {sorted(remote)}")
        bad.eq(f"{w} work for peers equals operations forwarded",
               "sum(shoal_peer_operations_total) vs sum(shoal_forwarded_total)",
               sum(fwd.values()), sum(d["peer_ops"].values()))
    bad.eq(f"{w} forward errors", "shoal_forward_errors_total", {}, d["forward_errors"])
    bad.eq(f"{w} membership changes", "shoal_membership_changes_total", {},
           d["membership_changes"])

    # Key families: Django's by name, the application keys in one family of
    # their own (named for their prefix) or in `other`.
    fam = d["families"]
    for family in DJANGO_FAMILIES:
        for outcome in ("hit", "miss", "stored"):
            bad.eq(f"{w} key family {family} {outcome}",
                   f'sum(shoal_key_family_requests_total{{family="{family}",outcome="{outcome}"}})',
                   float(expect.families[family, outcome]), fam.get((family, outcome), 0.0))
    app = {(f, o): v for (f, o), v in fam.items() if f not in DJANGO_FAMILIES}
    app_families = {f for f, _ in app}
    # `app:user` by the documented rule; `other` if earlier tests used up
    # the cap on application families.
    bad.check(f"{w} application keys (:1:user:<id>) all in app:user (or other, past the cap)",
              len(app_families) == 1 and app_families <= {"app:user", "other"},
              f"non-Django families that rose: {app}")
    for outcome in ("hit", "miss", "stored"):
        bad.eq(f"{w} application keys {outcome}",
               f'sum(shoal_key_family_requests_total{{family!~"django:.*",outcome="{outcome}"}})',
               float(expect.families["app", outcome]),
               sum(v for (f, o), v in app.items() if o == outcome))
    extra = {k: v for k, v in fam.items() if k[1] not in ("hit", "miss", "stored")}
    bad.eq(f"{w} family outcomes other than hit/miss/stored", "shoal_key_family_requests_total",
           {}, extra)
    # Bytes: every family the load touched rose, no other did.
    touched = {f for (f, _o), v in expect.families.items() if v}
    fb = d["family_bytes"]
    for family in touched - {"app"}:
        bad.check(f"{w} key family bytes rose for {family}", fb.get((family,), 0) > 0,
                  f'sum by (family) (shoal_key_family_bytes_total) rose by {fb}; value bytes '
                  f'set or hit per family: {dict(expect.family_value_bytes)}')
    stray = {f for (f,) in fb} - touched - app_families
    bad.check(f"{w} no untouched family's bytes rose", not stray,
              f"shoal_key_family_bytes_total rose for {sorted(stray)}: {fb}")


def check_cluster_state(bad: Mismatches, prom: Prometheus, group: srv.Group,
                        node_of_instance: dict):
    instances = set(node_of_instance)
    up = prom.by(f'up{{job="{JOB}"}}', "instance")
    bad.eq("every node up", f'up{{job="{JOB}"}}', {(i,): 1.0 for i in instances}, up)
    bad.eq("every node ready", "shoal_ready", {(i,): 1.0 for i in instances},
           prom.by(f'shoal_ready{{job="{JOB}"}}', "instance"))
    bad.eq("every node's ring has 3 members", "shoal_ring_members",
           {(i,): 3.0 for i in instances}, prom.by(f'shoal_ring_members{{job="{JOB}"}}', "instance"))
    members = prom.by(f'shoal_cluster_members{{job="{JOB}"}}', "instance", "state")
    want = {(i, "ready"): 3.0 for i in instances}
    want.update({(i, s): 0.0 for (i, s) in members if s != "ready"})
    bad.eq("every node sees 3 members, all ready", "shoal_cluster_members{state}", want, members)
    bad.check("member states are joining, ready, leaving", {s for _, s in members}
              <= {"joining", "ready", "leaving"}, f"shoal_cluster_members: {members}")
    bad.eq("memory limit (-m 64) on every node", "shoal_memory_limit_bytes",
           {(i,): float(MEMORY_LIMIT) for i in instances},
           prom.by(f'shoal_memory_limit_bytes{{job="{JOB}"}}', "instance"))
    used = prom.by(f'shoal_memory_used_bytes{{job="{JOB}"}}', "instance")
    # A node may own none of the keys a run stored (the keys are random per
    # run): it uses no memory, and every node that holds items uses some.
    items = prom.by(f'sum by (instance) (shoal_items{{job="{JOB}"}})', "instance")
    bad.check("memory used within the limit on every node, and some where items are",
              set(used) == {(i,) for i in instances}
              and all(0 <= v <= MEMORY_LIMIT for v in used.values())
              and all(used.get(i, 0) > 0 for i, n in items.items() if n > 0),
              f"shoal_memory_used_bytes: {used}; shoal_items: {items}")
    uptime = prom.by(f'shoal_uptime_seconds{{job="{JOB}"}}', "instance")
    bad.check("uptime on every node", set(uptime) == {(i,) for i in instances}
              and all(v > 0 for v in uptime.values()), f"shoal_uptime_seconds: {uptime}")
    version = subprocess.run([group.nodes[0].argv[0], "--version"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    build = prom.query(f'shoal_build_info{{job="{JOB}"}}')
    bad.check("build info on every node: 1, with the version `shoal --version` prints",
              {m.get("instance") for m, _ in build} == instances
              and all(v == 1 and m.get("version") and m["version"] in version
                      for m, v in build),
              f"shoal_build_info: {build}; shoal --version: {version!r}")
    # Built in a git checkout (as here), the binary knows its commit.
    if (REPO / ".git").exists():
        shas = {m.get("git_sha", "") for m, _ in build}
        known = all(re.fullmatch(r"[0-9a-f]{7,40}", sha) and subprocess.run(
            ["git", "-C", str(REPO), "cat-file", "-e", f"{sha}^{{commit}}"],
            capture_output=True).returncode == 0 for sha in shas)
        bad.check("build info git_sha is a commit of this repository (built from a checkout)",
                  known, f"shoal_build_info git_sha values: {sorted(shas)}")
    # Every label value of the request counter is one of the documented.
    for m, _ in prom.query(f'shoal_requests_total{{job="{JOB}"}}'):
        bad.check("shoal_requests_total labels are documented values",
                  m.get("command") in COMMANDS and m.get("protocol") in PROTOCOLS
                  and m.get("outcome") in OUTCOMES, f"series {m}")


# -- names used by the rules and the dashboard --------------------------------

NAME = re.compile(r"(?<![\w:.])(shoal_[A-Za-z0-9_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every query in the dashboard: panel targets and
    query variables."""
    doc = json.loads(DASHBOARD.read_text())
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(doc.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    for v in doc.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            out.append((f"variable {v['name']}", q))
    return out


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would get it from Grafana."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", expr, re.S)
    if m:  # Grafana's own function: the series selector is the query
        expr = m.group(1)
    for var, value in (("$__rate_interval", "1m"), ("$__range", "5m"),
                       ("$__interval", "15s"), ("$job", JOB), ("$instance", ".*")):
        expr = expr.replace(var, value)
    return expr


def exported_types(node: srv.Server) -> dict[str, str]:
    """name -> type, from the `# TYPE` lines of the node's /metrics."""
    status, body = node.http("/metrics")
    assert status == 200, f"{node.label}: GET /metrics answered {status}: {body[:200]}"
    types = {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) == 4:
                types[parts[2]] = parts[3]
    return types


@pytest.mark.shoal_only
def test_rules_and_dashboard_use_exported_names(cluster, prom):
    # Traffic first, so that lazily created series exist.
    c = Client((HOST, cluster.nodes[0].port), connect_timeout=5, timeout=5)
    try:
        c.set(":1:user:1", b"x", noreply=False)
        c.get_many([":1:user:1", ":1:user:2", ":1:template.cache.x.y"])
    finally:
        c.close()

    # The rules as Prometheus loaded them (and it evaluates them each second).
    groups = prom.api("rules")["groups"]
    rules = [(g["name"], r) for g in groups for r in g["rules"]]
    assert {g["file"] for g in groups} == {str(ALERTS)}, groups
    assert rules, "Prometheus loaded no rules from alerts.yml"
    used: dict[str, set[str]] = {}
    for group, r in rules:
        for name in NAME.findall(r["query"]):
            used.setdefault(name, set()).add(f"alerts.yml {group}/{r.get('name')}")
    exprs = dashboard_exprs()
    assert len(exprs) > 10, exprs
    for where, expr in exprs:
        for name in NAME.findall(expr):
            used.setdefault(name, set()).add(f"shoal.json {where}")
    assert used, "no shoal_* names found in alerts.yml and shoal.json"

    problems = []
    exported = {}
    for node in cluster.nodes:
        types = exported_types(node)
        exported[node.label] = sorted(types)
        for name, places in sorted(used.items()):
            if name in types:
                if name.endswith(HISTOGRAM_SUFFIXES) and types[name] == "histogram":
                    problems.append(f"{node.label}: {name} is a histogram's own name")
                continue
            base = next((name[:-len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
            if base is not None and types.get(base) == "histogram":
                continue
            if base is not None and base in types:
                problems.append(f"{node.label}: {name}: {base} is a {types[base]}, not a "
                                f"histogram (used in {sorted(places)})")
            else:
                problems.append(f"{node.label}: {name} not exported (used in {sorted(places)})")
    assert not problems, "names the rules and dashboard use that the nodes do not export:\n" \
        + "\n".join(problems) + "\nexported (# TYPE lines):\n" \
        + "\n".join(f"  {label}: {names}" for label, names in exported.items())

    # Every dashboard query is valid PromQL and runs.
    failed = []
    for where, expr in exprs:
        try:
            prom.query(grafana_to_promql(expr))
        except PromQLError as e:
            failed.append(f"{where}: {e}")
    assert not failed, "dashboard queries Prometheus rejects:\n" + "\n".join(failed)

    # Every rule evaluates without error (wait for an evaluation after now).
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    since = time.time()
    while True:
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        evaluated = all(_rfc3339(r.get("lastEvaluation")) > since for r in rules)
        if evaluated or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert evaluated, f"rules not evaluated within {SCRAPE_TIMEOUT}s: " \
        f"{[(r['name'], r.get('lastEvaluation')) for r in rules]}"
    unhealthy = [(r["name"], r.get("health"), r.get("lastError")) for r in rules
                 if r.get("health") != "ok"]
    assert not unhealthy, f"rules that fail to evaluate: {unhealthy}"
    # A healthy cluster raises none of the availability alerts.
    active = [(r["name"], r.get("state")) for r in rules
              if r.get("type") == "alerting" and r.get("state") != "inactive"
              and r["name"] in ("ShoalNodeDown", "ShoalNodeNotReady", "ShoalRingDisagreement",
                                "ShoalForwardErrors")]
    assert not active, f"alerts pending or firing on a healthy cluster: {active}"


def _rfc3339(stamp: str | None) -> float:
    """Prometheus's RFC 3339 timestamps (nanoseconds, Z or offset) as epoch
    seconds; 0 for none."""
    if not stamp or stamp.startswith("0001-"):
        return 0.0
    import datetime
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if not m:
        raise ValueError(stamp)
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    base = datetime.datetime.fromisoformat(m.group(1) + tz).timestamp()
    return base + float("0." + (m.group(2) or "0"))


def test_promtool_checks_rules_and_config():
    promtool = tool("PROMTOOL_BIN", "/usr/bin/promtool")
    out = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, f"promtool check rules {ALERTS}:\n{out.stdout}{out.stderr}"
    # Each alert fires on a synthetic scenario, and not before its `for:`.
    out = subprocess.run([promtool, "test", "rules", ALERTS_TEST.name], capture_output=True,
                         text=True, timeout=120, cwd=ALERTS_TEST.parent)
    assert out.returncode == 0, f"promtool test rules {ALERTS_TEST}:\n{out.stdout}{out.stderr}"
    for cfg in PROM_CONFIGS:
        out = subprocess.run([promtool, "check", "config", cfg.name], capture_output=True,
                             text=True, timeout=60, cwd=cfg.parent)
        assert out.returncode == 0, f"promtool check config {cfg}:\n{out.stdout}{out.stderr}"


def test_dashboard_is_portable():
    """The dashboard picks its data source through ${DS_PROMETHEUS}, and
    every panel follows the job and instance variables."""
    doc = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables.get("DS_PROMETHEUS", {}).get("type") == "datasource", variables.keys()
    assert variables["DS_PROMETHEUS"].get("query") == "prometheus"
    for name in ("job", "instance"):
        assert variables.get(name, {}).get("type") == "query", f"no `{name}` variable"
    wrong = []
    for p in doc["panels"]:
        if p.get("type") == "row":
            continue
        sources = [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]
        if any(s != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for s in sources):
            wrong.append(f"{p['title']!r}: data source {sources}")
        for t in p.get("targets", []):
            if 'instance=~"$instance"' not in t["expr"] or 'job=~"$job"' not in t["expr"]:
                wrong.append(f"{p['title']!r} {t['refId']}: ignores $job or $instance: {t['expr']}")
    assert not wrong, "\n".join(wrong)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
