"""Real server processes for the client suite: stock memcached and shoal.

Every server listens on 127.0.0.1 on a free ephemeral port (found by binding
port 0), is polled until it answers, and is killed at teardown (and, through
PR_SET_PDEATHSIG, if pytest itself dies). No fixed ports, no fixed sleeps.
"""

from __future__ import annotations

import ctypes
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
MEMORY_MB = "64"
READY_TIMEOUT = 20.0  # seconds; a server not answering by then fails the run
# A 3-node cluster (gossip profile "fast") must have every node ready and
# every ring complete by then, or the run fails with what each node said.
CLUSTER_READY_TIMEOUT = 30.0
CLUSTER_SIZE = 3

# SASL credentials of the reference memcached (-S). shoal runs without auth
# configured and must accept them (it accepts any PLAIN credentials then).
SASL_USER = "shoaltest"
SASL_PASSWORD = "s3cret-pw"


def memcached_bin() -> str:
    return os.environ.get("MEMCACHED_BIN", "/usr/bin/memcached")


def shoal_bin() -> str:
    return os.environ.get("SHOAL_BIN") or str(REPO / "target" / "release" / "shoal")


def is_memcached_binary(path: str) -> bool:
    """True when SHOAL_BIN points at a stock memcached standing in for shoal."""
    return "memcached" in os.path.basename(os.path.realpath(path))


def sasl_plugin_dir() -> str | None:
    """Where Debian's libsasl2-modules put the PLAIN plugin."""
    for pattern in ("/usr/lib/*/sasl2/libplain.so*", "/usr/lib/sasl2/libplain.so*",
                    "/usr/lib64/sasl2/libplain.so*"):
        hits = glob.glob(pattern)
        if hits:
            return os.path.dirname(hits[0])
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent():  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Server:
    """One running server process."""

    role: str  # "memcached" or "shoal": which side of the comparison
    label: str  # human name for messages, e.g. "memcached-sasl"
    argv: list[str]
    log: Path
    port: int | None = None
    unix: str | None = None  # unix socket path, if the server was given -s
    sasl: tuple[str, str] | None = None  # credentials the server requires
    text: bool = True  # answers the text protocol
    name: str | None = None  # a cluster node's --node-name
    http_port: int | None = None  # a cluster node's --http-port
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    def location(self) -> str:
        """Where a client should connect: the unix socket if any, else TCP."""
        return f"unix:{self.unix}" if self.unix else self.addr

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:]) or "(empty log)"

    def connect(self, timeout: float = 5.0) -> socket.socket:
        if self.unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.unix)
        else:
            s = socket.create_connection((HOST, self.port), timeout=timeout)
        return s

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "Server":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.sasl is not None:
            env["SASL_CONF_PATH"] = str(self.log.parent / f"{self.label}-sasl")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=env, preexec_fn=_die_with_parent,
            )
        return self

    def wait_ready(self) -> None:
        """Poll until the server answers a request (not just accepts)."""
        deadline = time.monotonic() + READY_TIMEOUT
        last = "never connected"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerDied(self, f"exited with status {self.proc.returncode}")
            try:
                with self.connect(timeout=1.0) as s:
                    if self._probe(s):
                        return
                    last = "answered, but not ready yet"
            except OSError as e:
                last = str(e)
            time.sleep(0.01)
        raise RuntimeError(
            f"{self.label} ({' '.join(self.argv)}) not ready after {READY_TIMEOUT}s: "
            f"{last}\n--- log ---\n{self.log_tail()}")

    def _probe(self, s: socket.socket) -> bool:
        if self.text:
            # A miss on a key nobody sets: a node that is not ready yet
            # answers SERVER_ERROR, a ready one END.
            s.sendall(b"get __shoal_readiness_probe__\r\n")
            return _recv_until(s, b"\r\n") == b"END\r\n"
        # Binary only (memcached -S): SASL list mechanisms needs no auth.
        s.sendall(bin_request(0x20, opaque=7))
        status, _ = bin_read(s)
        return status == 0

    def stop(self) -> None:
        stop_all([self])

    # -- housekeeping used between tests ------------------------------------

    def flush(self) -> None:
        """flush_all, so each test starts from an empty cache."""
        with self.connect() as s:
            if self.text:
                s.sendall(b"flush_all\r\n")
                got = _recv_until(s, b"\r\n")
                if got != b"OK\r\n":
                    raise RuntimeError(f"{self.label}: flush_all answered {got!r}")
                return
            if self.sasl:
                user, password = self.sasl
                s.sendall(bin_request(0x21, key=b"PLAIN",
                                      value=b"\0" + user.encode() + b"\0" + password.encode()))
                status, body = bin_read(s)
                if status != 0:
                    raise RuntimeError(f"{self.label}: SASL auth failed: {status:#x} {body!r}")
            s.sendall(bin_request(0x08, extras=struct.pack(">I", 0)))
            status, body = bin_read(s)
            if status != 0:
                raise RuntimeError(f"{self.label}: binary flush failed: {status:#x} {body!r}")


    # -- cluster introspection (shoal nodes) -------------------------------

    def stats(self, group: str = "") -> list[tuple[str, str]]:
        """`stats [group]` as (name, value) pairs, in the order sent."""
        with self.connect() as s:
            s.sendall(f"stats {group}".strip().encode() + b"\r\n")
            raw = b""
            while not (raw.endswith(b"END\r\n") or raw.endswith(b"ERROR\r\n")):
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
        lines = raw.decode("utf-8", "replace").split("\r\n")
        if lines[-2:] != ["END", ""]:
            raise RuntimeError(f"{self.label}: `stats {group}` answered {raw[-200:]!r}")
        out = []
        for line in lines[:-2]:
            parts = line.split(" ", 2)
            if len(parts) != 3 or parts[0] != "STAT":
                raise RuntimeError(f"{self.label}: `stats {group}` sent {line!r}")
            out.append((parts[1], parts[2]))
        return out

    def http(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """GET http://127.0.0.1:<http port><path> -> (status, body)."""
        conn = http.client.HTTPConnection(HOST, self.http_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def http_json(self, path: str):
        status, body = self.http(path)
        if status != 200:
            raise RuntimeError(f"{self.label}: GET {path} answered {status}: {body[:300]}")
        return json.loads(body)


@dataclass
class Group:
    """Several servers a client is given together (Django's LOCATION list):
    3 stock memcacheds, each on its own, or a 3-node shoal cluster."""

    role: str  # "memcached" or "shoal"
    label: str
    nodes: list[Server]
    shared: bool = False  # True: the nodes are one cache (a shoal cluster)

    def locations(self) -> list[str]:
        return [n.addr for n in self.nodes]

    def check_alive(self) -> None:
        for n in self.nodes:
            if n.proc.poll() is not None:
                raise ServerDied(n, f"died (status {n.proc.returncode})")

    def flush(self) -> None:
        self.check_alive()
        for n in self.nodes:
            n.flush()

    def stop(self) -> None:
        stop_all(self.nodes)


def stop_all(servers: list[Server], grace: float = 5.0) -> None:
    """SIGTERM every server at once, wait for them together, then SIGKILL
    whatever is still running."""
    running = [s for s in servers if s.proc is not None and s.proc.poll() is None]
    for s in running:
        s.proc.terminate()
    deadline = time.monotonic() + grace
    for s in running:
        try:
            s.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(timeout=5)


class ServerDied(RuntimeError):
    def __init__(self, server: Server, why: str):
        self.server = server
        super().__init__(f"{server.label} ({' '.join(server.argv)}) {why}\n"
                         f"--- log ---\n{server.log_tail()}")


def _recv_until(s: socket.socket, terminator: bytes) -> bytes:
    got = b""
    while not got.endswith(terminator):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def bin_request(opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"",
                opaque: int = 0, cas: int = 0) -> bytes:
    body = len(extras) + len(key) + len(value)
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, body,
                       opaque, cas) + extras + key + value


def bin_read(s: socket.socket) -> tuple[int, bytes]:
    header = _recv_exact(s, 24)
    magic, _op, _klen, _elen, _dt, status, body, _opaque, _cas = struct.unpack(
        ">BBHBBHIIQ", header)
    if magic != 0x81:
        raise RuntimeError(f"not a binary response: {header!r}")
    return status, _recv_exact(s, body)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise ConnectionError(f"closed after {len(got)} of {n} bytes")
        got += chunk
    return got


# -- building the servers the suite needs -----------------------------------

def _root_args(binary: str) -> list[str]:
    # memcached refuses to run as root without -u; shoal has no such flag.
    if is_memcached_binary(binary) and os.geteuid() == 0:
        return ["-u", "root"]
    return []


def prepare_sasl(dir_: Path, user: str = SASL_USER, password: str = SASL_PASSWORD) -> Path:
    """A Cyrus SASL config for memcached -S: PLAIN against a private sasldb.

    memcached 1.6.18 (Debian) reads `memcached.conf` from the directory named
    by SASL_CONF_PATH; the sasldb is written with saslpasswd2 (sasl2-bin) in
    the realm memcached uses, the host name.
    """
    saslpasswd2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
    if not os.path.exists(saslpasswd2):
        raise RuntimeError("saslpasswd2 not found: install Debian's sasl2-bin "
                           "(the SASL reference memcached needs a sasldb)")
    dir_.mkdir(parents=True, exist_ok=True)
    db = dir_ / "sasldb2"
    subprocess.run([saslpasswd2, "-f", str(db), "-a", "memcached", "-u", socket.gethostname(),
                    "-c", "-p", user], input=password.encode(), check=True)
    (dir_ / "memcached.conf").write_text(f"mech_list: plain\nsasldb_path: {db}\n")
    return dir_


def spawn(role: str, label: str, binary: str, workdir: Path, *, item_size: str = "1m",
          unix: bool = False, sasl: bool = False) -> Server:
    """Start one server and wait until it answers.

    role "shoal" gets exactly the documented command line
    (`-p PORT -l 127.0.0.1 -m MB -I SIZE [-s SOCK]`); the memcached reference
    gets the same flags plus what stock memcached needs (-u root, -S).
    """
    if not os.path.exists(binary):
        raise FileNotFoundError(binary)
    attempts = 3
    for attempt in range(attempts):
        port = free_port()
        argv = [binary, "-p", str(port), "-l", HOST, "-m", MEMORY_MB, "-I", item_size]
        argv += _root_args(binary)
        if not is_memcached_binary(binary):
            # shoal's other listeners default to fixed ports (7946/7947/9150):
            # several nodes run at once here, each a cluster of one.
            argv += ["--gossip-port", str(free_port()), "--peer-port", str(free_port()),
                     "--http-port", str(free_port()), "--node-name", f"test-{label}"]
        sock = None
        if unix:
            # memcached's -s turns TCP off; shoal keeps both. Short path:
            # sun_path holds 108 bytes.
            sock = str(workdir / f"{label}.sock")
            if os.path.exists(sock):
                os.unlink(sock)
            argv += ["-s", sock]
        creds = None
        if sasl:
            prepare_sasl(workdir / f"{label}-sasl")
            argv += ["-S"]
            creds = (SASL_USER, SASL_PASSWORD)
        server = Server(role=role, label=label, argv=argv, log=workdir / f"{label}.log",
                        port=port, unix=sock, sasl=creds, text=not sasl)
        server.start()
        try:
            server.wait_ready()
            return server
        except ServerDied:
            server.stop()
            # Most likely lost the race for the port: try another one.
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


# -- a 3-node shoal cluster and its reference -------------------------------

def cluster_argv(binary: str, i: int, mc_port: int, gossip: int, peer: int, http_port: int,
                 seed_gossip: int | None) -> list[str]:
    """Exactly the documented command line of cluster node i."""
    argv = [binary, "-p", str(mc_port), "-l", HOST, "-m", MEMORY_MB,
            "--node-name", f"shoal-{i}", "--gossip-port", str(gossip),
            "--peer-port", str(peer), "--http-port", str(http_port),
            "--gossip-profile", "fast"]
    if seed_gossip is not None:
        argv += ["--seeds", f"{HOST}:{seed_gossip}"]
    return argv


def cluster_state(node: Server) -> str | None:
    """None when `node` is ready with a full ring, else what it says instead."""
    try:
        status, body = node.http("/readyz", timeout=1.0)
    except OSError as e:
        return f"/readyz: {e}"
    if status != 200:
        return f"/readyz answered {status} {body.strip()[:80]!r}"
    try:
        stats = dict(node.stats("cluster"))
    except (OSError, RuntimeError) as e:
        return f"stats cluster: {e}"
    if stats.get("ring_members") != str(CLUSTER_SIZE):
        return (f"stats cluster: ring_members {stats.get('ring_members')!r}, "
                f"members {stats.get('members')!r}, node_state {stats.get('node_state')!r}")
    return None


def wait_cluster_ready(nodes: list[Server], timeout: float = CLUSTER_READY_TIMEOUT) -> None:
    """Poll until every node's /readyz answers 200 and its `stats cluster`
    shows the whole ring (`ring_members 3`)."""
    deadline = time.monotonic() + timeout
    pending = {n.label: "not asked yet" for n in nodes}
    while True:
        for n in nodes:
            if n.proc.poll() is not None:
                raise ServerDied(n, f"exited with status {n.proc.returncode}")
        for n in nodes:
            if n.label in pending:
                why = cluster_state(n)
                if why is None:
                    del pending[n.label]
                else:
                    pending[n.label] = why
        if not pending:
            # Readiness seen once per node is not enough when a node saw the
            # full ring before another finished joining: ask them all again.
            again = {n.label: why for n in nodes if (why := cluster_state(n)) is not None}
            if not again:
                return
            pending = again
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    details = "\n".join(f"--- {n.label} ({' '.join(n.argv)}): {pending.get(n.label, 'ready')}\n"
                        f"{n.log_tail(20)}" for n in nodes)
    raise RuntimeError(f"cluster not ready after {timeout}s:\n{details}")


def spawn_cluster(binary: str, workdir: Path, label: str = "cluster",
                  size: int = CLUSTER_SIZE) -> Group:
    """Start `size` shoal nodes as one cluster (node 0 alone, the others
    seeded from node 0's gossip port) and wait until it is whole.

    When SHOAL_BIN is a memcached stand-in, `size` independent memcacheds
    stand in for the cluster (the tests that need a real cluster are
    shoal_only and skipped then).
    """
    if is_memcached_binary(binary):
        return Group("shoal", f"{label}(stand-in)",
                     [spawn("shoal", f"{label}-{i}", binary, workdir) for i in range(size)])
    attempts = 3
    for attempt in range(attempts):
        gossip = [free_udp_port() for _ in range(size)]
        nodes = []
        for i in range(size):
            port, peer, http_port = free_port(), free_port(), free_port()
            argv = cluster_argv(binary, i, port, gossip[i], peer, http_port,
                                None if i == 0 else gossip[0])
            nodes.append(Server(role="shoal", label=f"{label}-shoal-{i}", argv=argv,
                                log=workdir / f"{label}-shoal-{i}.log", port=port,
                                name=f"shoal-{i}", http_port=http_port))
        for n in nodes:
            n.start()
        try:
            wait_cluster_ready(nodes)
            return Group("shoal", f"shoal-{label}", nodes, shared=True)
        except ServerDied:
            stop_all(nodes)
            # Most likely lost the race for a port: try other ones.
            if attempt == attempts - 1:
                raise
        except BaseException:
            stop_all(nodes)
            raise
    raise AssertionError("unreachable")


def spawn_reference_group(workdir: Path, label: str = "cluster",
                          size: int = CLUSTER_SIZE) -> Group:
    """`size` stock memcacheds, each alone: what a client's own key hashing
    over a LOCATION list spreads keys over."""
    nodes = [spawn("memcached", f"{label}-memcached-{i}", memcached_bin(), workdir)
             for i in range(size)]
    return Group("memcached", f"memcached-{label}", nodes)
