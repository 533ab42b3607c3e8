"""Real server processes for the client suite: stock memcached and shoal.

Every server listens on 127.0.0.1 on a free ephemeral port (found by binding
port 0), is polled until it answers, and is killed at teardown (and, through
PR_SET_PDEATHSIG, if pytest itself dies). No fixed ports, no fixed sleeps.
"""

from __future__ import annotations

import ctypes
import glob
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
