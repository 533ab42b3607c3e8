"""Record what a client sees, scenario by scenario, and compare servers.

A scenario is a function `scenario(t, server)` that drives a client against
one server and records every answer with `t.do(...)` / `t.rec(...)`. The same
scenario runs against stock memcached and against shoal; the test fails when

- any step's answer differs between the two (the whole sequence is compared,
  exceptions included: class and message), or
- any step with an `expect=` value got something else, on either server, so
  the two cannot agree by both being wrong (a failure on memcached means the
  test's expectation is wrong, not shoal).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import os
import random
import time
import re
import traceback

MISSING = object()
_LONG = 80


class Raised:
    """An exception a client raised, compared by class and message."""

    def __init__(self, exc: BaseException):
        self.cls = type(exc).__name__
        self.msg = _scrub(str(exc))

    def __eq__(self, other):
        return isinstance(other, Raised) and (self.cls, self.msg) == (other.cls, other.msg)

    def __hash__(self):
        return hash((self.cls, self.msg))

    def __repr__(self):
        return f"raised {self.cls}({self.msg!r})"


def raised(cls: str, msg: str | None = None):
    """An expectation matching an exception of class name `cls` (and message)."""
    return _RaisedExpectation(cls, msg)


class _RaisedExpectation:
    def __init__(self, cls, msg):
        self.cls, self.msg = cls, msg

    def __eq__(self, other):
        return (isinstance(other, Raised) and other.cls == self.cls
                and (self.msg is None or other.msg == self.msg))

    def __repr__(self):
        return f"raised {self.cls}({self.msg!r})" if self.msg is not None else f"raised {self.cls}"


def _scrub(msg: str) -> str:
    # Addresses and socket paths differ between the two servers.
    msg = re.sub(r"127\.0\.0\.1:\d+", "<addr>", msg)
    msg = re.sub(r"\('127\.0\.0\.1', \d+\)", "<addr>", msg)
    msg = re.sub(r"/\S+\.sock", "<sock>", msg)
    return msg


def norm(v):
    """A comparable, printable form of a client's answer."""
    if isinstance(v, (bytes, bytearray, str)) and len(v) > _LONG:
        data = v if isinstance(v, (bytes, bytearray)) else v.encode("utf-8", "surrogatepass")
        return f"<{type(v).__name__} len={len(v)} sha1={hashlib.sha1(data).hexdigest()[:12]}>"
    if isinstance(v, dict):
        return {norm(k): norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(norm(x) for x in v)
    if isinstance(v, BaseException):
        return Raised(v)
    return v


class Trace:
    def __init__(self, server):
        self.server = server
        self.steps: list[tuple[str, object]] = []
        self.failures: list[str] = []

    def rec(self, label: str, value, expect=MISSING):
        """Record `value`; check it against `expect` if given. Returns value."""
        got = norm(value)
        self.steps.append((label, got))
        if os.environ.get("SHOAL_TEST_TRACE"):  # developer aid: live trace
            print(f"[{self.server.label}] {label}: {got!r}"[:300], flush=True)
        if expect is not MISSING:
            want = norm(expect) if not isinstance(expect, _RaisedExpectation) else expect
            if not _same(want, got):
                self.failures.append(f"[{self.server.label}] {label}: got {got!r}, expected {want!r}")
        return value

    def do(self, label: str, fn, *args, expect=MISSING, **kwargs):
        """Call fn(*args, **kwargs), record its result or the exception it raised."""
        start = time.monotonic()
        try:
            value = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - what the client raises is the answer
            value = e
        took = time.monotonic() - start
        if took > 1.0 and os.environ.get("SHOAL_TEST_TRACE"):
            print(f"[{self.server.label}] slow step {label!r}: {took:.2f}s")
        self.rec(label, value, expect)
        return value

    def check(self, label: str, ok: bool, detail: str = ""):
        """Record a yes/no property (for answers that legitimately differ,
        like CAS tokens or pids, only the property is compared)."""
        self.rec(label, bool(ok), expect=True)
        if not ok and detail:
            self.failures.append(f"[{self.server.label}] {label}: {detail}")


def _same(want, got) -> bool:
    if isinstance(want, _RaisedExpectation):
        return want == got
    # Strict: True is not 1, and dicts must come back in the same order.
    return type(want) is type(got) and repr(want) == repr(got)


def run_parity(scenario, servers, what: str = ""):
    """Run `scenario` against each server (memcached first) and compare."""
    traces = []
    for server in servers:
        t = Trace(server)
        try:
            scenario(t, server)
        except Exception as e:  # noqa: BLE001
            t.steps.append(("scenario aborted", Raised(e)))
            t.failures.append(f"[{server.label}] scenario aborted: {e!r}\n"
                              + "".join(traceback.format_exception(e))[-3000:])
        traces.append(t)

    problems = []
    for t in traces:
        problems += t.failures
    ref = traces[0]
    for other in traces[1:]:
        diff = _diff(ref, other)
        if diff:
            problems.append(diff)
    if problems:
        raise AssertionError((what + ": " if what else "") + "\n".join(problems))
    return traces


def _diff(a: Trace, b: Trace) -> str | None:
    # repr: strict about types (True vs 1) and order (multi-get answers).
    if repr(a.steps) == repr(b.steps):
        return None
    lines = [f"answers differ between {a.server.label} and {b.server.label}:"]
    n = max(len(a.steps), len(b.steps))
    shown = 0
    for i in range(n):
        sa = a.steps[i] if i < len(a.steps) else ("<missing>", None)
        sb = b.steps[i] if i < len(b.steps) else ("<missing>", None)
        if repr(sa) != repr(sb):
            lines.append(f"  step {i} {sa[0]!r}:")
            lines.append(f"    {a.server.label:>16}: {sa[1]!r}")
            lines.append(f"    {b.server.label:>16}: {sb[1]!r}" + (
                f"   (step {sb[0]!r})" if sb[0] != sa[0] else ""))
            shown += 1
            if shown >= 12:
                lines.append("  ...")
                break
    return "\n".join(lines)


def blob(n: int, seed: int = 0) -> bytes:
    """n incompressible bytes, the same on every run and for every server
    (so answers compare equal, and clients that compress cannot shrink them)."""
    return random.Random(seed).randbytes(n)


# Values that must round-trip through Django's pickling, the kind of thing
# Django sites cache.
def sample_objects():
    return {
        "dict": {"a": 1, "b": [1, 2, 3], "c": {"nested": (4, 5)}, "d": None},
        "datetime": datetime.datetime(2024, 2, 29, 13, 37, 42, 123456,
                                      tzinfo=datetime.timezone.utc),
        "date": datetime.date(1999, 12, 31),
        "decimal": decimal.Decimal("12345.6789"),
        "set": {1, 2, 3},
        "bytes": b"\x00\x01\xff binary",
        "unicode": "Grüße, 世界 🎉",
        "int": 2**62,
        "float": 3.25,
        "bool": True,
    }
