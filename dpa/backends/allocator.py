"""CPU memory tuning of glibc's malloc for loops that reallocate large buffers every step.

glibc hands blocks above its mmap threshold straight back to the OS when freed, so a step that
frees and reallocates the same activations pays page faults (kernel zeroing) for all of them
again. Three tools, each a no-op outside glibc:

- `keep_large_buffers`: raise the mmap and trim thresholds (in process) so blocks up to 32 MB
  are reused; eager torch training calls it.
- `reexec_with_huge_pages`: restart once with `glibc.malloc.hugetlb=1`, so larger blocks (XLA's
  per-step temporaries) fault in 2 MB pages; the CLI and the MD scripts call it at start-up.
  With `retain_heap=True` (`dpa train` with jax) freed blocks of any size also stay in the
  process (`RETAINED_HEAP_TUNABLES`).
- `release_free_memory`: malloc_trim, after a jax compilation left its scratch in the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from pathlib import Path

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_TRIM_THRESHOLD = 1 << 30

_done = False


def keep_large_buffers() -> bool:
    """Tune glibc's malloc once per process; False where the C library is not glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: leave the allocator alone
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    _done = ok
    return ok


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc malloc_trim); False elsewhere.

    Compiling a jax step leaves GBs of freed compiler memory in glibc's heap, resident for the
    whole run unless trimmed once after the compilation."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
# Every thread allocates from the main heap, never from fresh mappings, and the heap is not
# trimmed: a block freed by one compiled call is reused by the next without page faults.
# (malloc_trim still returns free pages, as after compiling.)
RETAINED_HEAP_TUNABLES = (
    "glibc.malloc.arena_max=1",
    "glibc.malloc.mmap_max=0",
    "glibc.malloc.trim_threshold=1099511627776",
)
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_environment(
    env: dict[str, str] | None = None, retain_heap: bool = False
) -> dict[str, str]:
    """`env` (default os.environ) with glibc told to back its mmap-ed blocks by huge pages.

    XLA allocates a step's temporaries (GBs for DPA-3) as one block per execution and torch its
    largest activations above glibc's 32 MB mmap limit: both fault in every 4 KB page again each
    step (about 1e6 faults, a third of a DPA-3 jax step). With transparent huge pages in
    `madvise` mode, `glibc.malloc.hugetlb=1` makes that 512 times fewer faults. retain_heap:
    also `RETAINED_HEAP_TUNABLES`, for training loops whose compiled calls free and allocate the
    same blocks every step (the checkpointed DPA-3 step: 1.5 s of kernel time per step
    otherwise; the DPA-1 water step of issue 16: 10% of its time). Tunables
    the user set are kept."""
    env = dict(os.environ if env is None else env)
    tunables = env.get("GLIBC_TUNABLES", "")
    given = {item.split("=")[0] for item in tunables.split(":") if item}
    wanted = (HUGE_PAGES_TUNABLE, *(RETAINED_HEAP_TUNABLES if retain_heap else ()))
    added = [t for t in wanted if t.split("=")[0] not in given]
    if added:
        env["GLIBC_TUNABLES"] = ":".join([*([tunables] if tunables else []), *added])
    return env


def _huge_pages_useful() -> bool:
    """Linux with glibc and transparent huge pages not switched off."""
    if not sys.platform.startswith("linux") or os.environ.get("DPA_HUGE_PAGES", "1") == "0":
        return False
    try:
        mode = _THP_MODE.read_text()
    except OSError:
        return False
    return platform.libc_ver()[0] == "glibc" and "[never]" not in mode


def reexec_with_huge_pages(retain_heap: bool = False) -> None:
    """Restart this process (same command line) with huge-page backed malloc, once (see
    `huge_pages_environment`; a second call with retain_heap restarts once more).

    glibc reads its tunables only at start-up, so the setting needs a fresh process; the CLI
    calls this before it imports any framework. DPA_HUGE_PAGES=0 turns it off."""
    if not _huge_pages_useful():
        return
    env = huge_pages_environment(retain_heap=retain_heap)
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return  # already set: this is the restarted process (or the user set it)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
