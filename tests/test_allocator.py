"""Training keeps freed large buffers in the process: reallocating them costs no page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
