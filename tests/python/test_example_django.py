"""examples/django's own test suite (`manage.py test`), run against the
3-node shoal cluster through each Django memcache backend.

The example reads its cache from DJANGO_CACHE_LOCATION and
DJANGO_CACHE_BACKEND; here they point at the cluster fixture's nodes. A
failing example test fails this test, with the example's output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from servers import REPO

EXAMPLE = REPO / "examples" / "django"
BACKENDS = ["pymemcache", "pylibmc", "pylibmc-binary", "bmemcached"]
# The example's test count: a run that found fewer tests ran the wrong thing.
MIN_TESTS = 10


def _requests(group) -> int:
    """Commands the nodes answered, from memcached's standard `stats`."""
    total = 0
    for n in group.nodes:
        st = dict(n.stats())
        total += int(st["cmd_get"]) + int(st["cmd_set"])
    return total


@pytest.mark.parametrize("backend", BACKENDS)
def test_example_project_against_the_cluster(cluster, backend):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE="tasklist.settings",
               DJANGO_CACHE_LOCATION=",".join(cluster.locations()),
               DJANGO_CACHE_BACKEND=backend,
               PYTHONDONTWRITEBYTECODE="1")
    before = _requests(cluster)
    proc = subprocess.run([sys.executable, "manage.py", "test", "--noinput", "-v", "2"],
                          cwd=EXAMPLE, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"examples/django tests failed with {backend} over {cluster.locations()} "
        f"(exit {proc.returncode}):\n{output[-6000:]}")
    ran = re.search(r"^Ran (\d+) tests?", output, re.M)
    assert ran and int(ran.group(1)) >= MIN_TESTS, f"expected >= {MIN_TESTS} tests:\n{output}"
    # the example talked to these nodes, not to some other server
    assert _requests(cluster) > before, f"the cluster saw no requests:\n{output[-3000:]}"
