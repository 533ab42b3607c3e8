#!/usr/bin/env python3
"""Check src/text/wire_cases.txt against a real memcached.

Usage: check_text_wire.py [--memcached /usr/bin/memcached]

Starts memcached (-I 1m, the default) on 127.0.0.1 and a random high port,
sends each case's request on a fresh connection after a `flush_all` on
another, and compares every byte memcached answers (and whether it closed
the connection) with the file. Exits non-zero on any difference.
"""

import argparse
import pathlib
import random
import re
import socket
import subprocess
import sys
import time

CASES = pathlib.Path(__file__).resolve().parent.parent / "src" / "text" / "wire_cases.txt"


def unescape(text):
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            n = text[i + 1]
            if n == "x":
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}[n]
            i += 2
            continue
        m = re.match(r"<([kx])(\d+)>", text[i:])
        if m:
            out += m.group(1).encode() * int(m.group(2))
            i += len(m.group(0))
            continue
        out += c.encode("latin1")
        i += 1
    return bytes(out)


def parse(path):
    cases = []
    for line in path.read_text(encoding="latin1").splitlines():
        if line.startswith("> "):
            cases.append([unescape(line[2:]), None, False])
        elif line.startswith("<"):
            cases[-1][1] = unescape(line[2:])
        elif line.startswith("= closed"):
            cases[-1][2] = True
    return cases


def talk(port, data, wait):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    s.settimeout(wait)
    out, closed = b"", False
    try:
        while True:
            d = s.recv(1 << 20)
            if not d:
                closed = True
                break
            out += d
    except socket.timeout:
        pass
    s.close()
    return out, closed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--memcached", default="memcached")
    args = ap.parse_args()
    port = random.randint(20000, 60000)
    proc = subprocess.Popen(
        [args.memcached, "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-u", "nobody"]
    )
    try:
        time.sleep(0.5)
        failures = 0
        cases = parse(CASES)
        for request, want, want_closed in cases:
            talk(port, b"flush_all\r\n", 0.2)
            got, closed = talk(port, request, 1.0 if len(request) > 100000 else 0.3)
            if got != want or closed != want_closed:
                failures += 1
                print(f"MISMATCH {request[:120]!r}\n  want {want!r} closed={want_closed}"
                      f"\n  got  {got!r} closed={closed}")
        print(f"{len(cases) - failures}/{len(cases)} cases match memcached")
        sys.exit(1 if failures else 0)
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
