"""JAX's persistent compilation cache for dpa's commands: a second run with the same model and
batch shapes loads its compiled training step and evaluation instead of compiling them again
(DPA-1 water: ~3 s per step shape and ~1 s per validation shape on one thread).

The cache lives in `$DPA_COMPILE_CACHE`, else `$XDG_CACHE_HOME/dpa/jax-compile` (~/.cache), is
kept under 2 GB by JAX (least recently used entries go first) and only holds compilations that
took a second or more. `DPA_COMPILE_CACHE=off` turns it off; a cache the user set up for JAX
(`JAX_COMPILATION_CACHE_DIR`) is left as it is. JAX keys every entry by the program, the
compiler options, the JAX version and the device, so a stale entry is never used.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

MAX_BYTES = 2 * 1024**3
_OFF = {"", "0", "off", "false", "no"}


def default_dir(env: MutableMapping[str, str] = os.environ) -> Path:
    """`$XDG_CACHE_HOME/dpa/jax-compile`, with ~/.cache when XDG_CACHE_HOME is unset."""
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dpa" / "jax-compile"


def use_persistent_cache(env: MutableMapping[str, str] = os.environ) -> Path | None:
    """Point JAX (through its environment variables, before it is imported) at dpa's cache;
    the folder used, or None when the user turned it off or configured JAX's own."""
    if "JAX_COMPILATION_CACHE_DIR" in env:
        return None
    chosen = env.get("DPA_COMPILE_CACHE")
    if chosen is not None and chosen.strip().lower() in _OFF:
        return None
    folder = Path(chosen) if chosen else default_dir(env)
    env["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    env.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(MAX_BYTES))
    return folder
