"""Training keeps freed large buffers in the process: reallocating them costs no page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dpa.backends.allocator import (
    HUGE_PAGES_TUNABLE,
    RETAINED_HEAP_TUNABLES,
    _huge_pages_useful,
    huge_pages_environment,
)

SCRIPT = """
import resource, sys
import numpy as np
from dpa.backends.allocator import keep_large_buffers
if sys.argv[1] == "tuned":
    assert keep_large_buffers()
rng = np.random.default_rng(0)
def step():  # a few 4-24 MB activations, freed at the end, as in a training step
    bufs = [np.ones(int(n)) for n in rng.integers(500_000, 3_000_000, size=6)]
    del bufs
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning only")
def test_reallocated_buffers_do_not_fault_again():
    default, tuned = _faults("default"), _faults("tuned")
    assert tuned * 20 < default, (tuned, default)  # ~25000 page faults become ~200


HUGE_SCRIPT = """
import ctypes, os, resource, sys
from dpa.backends.allocator import reexec_with_huge_pages
if sys.argv[1] == "restart":
    reexec_with_huge_pages()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def block():  # 100 MB through malloc (as XLA's temporaries): a fresh mapping every time
    size = 100 << 20
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    block()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, os.environ.get("GLIBC_TUNABLES"))
"""


def _huge_run(mode: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "DPA_HUGE_PAGES")}
    out = subprocess.run(
        [sys.executable, "-c", HUGE_SCRIPT, mode], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    faults, tunables = out.stdout.split()
    return int(faults), tunables


@pytest.mark.skipif(not _huge_pages_useful(), reason="needs glibc and transparent huge pages")
def test_restart_with_huge_pages_faults_far_less():
    default, tunables_before = _huge_run("plain")
    restarted, tunables_after = _huge_run("restart")
    assert tunables_before == "None"
    assert tunables_after == HUGE_PAGES_TUNABLE
    assert restarted * 20 < default, (restarted, default)  # ~128000 faults become a few hundred


def test_huge_pages_environment_keeps_other_tunables():
    env = huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert env == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{HUGE_PAGES_TUNABLE}", "X": "1"}
    assert huge_pages_environment({})["GLIBC_TUNABLES"] == HUGE_PAGES_TUNABLE
    kept = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert huge_pages_environment(kept) == kept  # the user's own choice wins


def test_retained_heap_environment_adds_only_what_the_user_did_not_set():
    env = huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, retain_heap=True)
    tunables = env["GLIBC_TUNABLES"].split(":")
    assert tunables[0] == "glibc.malloc.arena_max=4"
    assert "glibc.malloc.arena_max=1" not in tunables
    assert set(tunables[1:]) == {HUGE_PAGES_TUNABLE, *RETAINED_HEAP_TUNABLES[1:]}
    again = huge_pages_environment(env, retain_heap=True)
    assert again == env  # the restarted process does not restart again


@pytest.mark.skipif(not _huge_pages_useful(), reason="needs glibc")
def test_retained_heap_reuses_freed_blocks_of_any_size():
    """A 100 MB block freed and allocated again (one compiled call's temporaries after another's)
    faults in once; by default it is a fresh mapping each time."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "DPA_HUGE_PAGES")}
    counts = []
    for retain in (False, True):
        tuned = huge_pages_environment(env, retain_heap=True) if retain else env
        out = subprocess.run(
            [sys.executable, "-c", HUGE_SCRIPT, "plain"], capture_output=True, text=True, env=tuned
        )
        assert out.returncode == 0, out.stderr
        counts.append(int(out.stdout.split()[0]))
    default, retained = counts
    assert retained * 50 < default, (retained, default)
