"""dpa's commands point JAX's persistent compilation cache at dpa's folder unless told not to."""

from __future__ import annotations

from pathlib import Path

from dpa.backends.jax.compile_cache import MAX_BYTES, use_persistent_cache


def test_default_folder_under_xdg_cache_home(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert use_persistent_cache(env) == tmp_path / "dpa" / "jax-compile"
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "dpa" / "jax-compile")
    assert env["JAX_COMPILATION_CACHE_MAX_SIZE"] == str(MAX_BYTES)


def test_chosen_folder_off_switch_and_users_own_jax_cache(tmp_path: Path) -> None:
    env = {"DPA_COMPILE_CACHE": str(tmp_path / "mine")}
    assert use_persistent_cache(env) == tmp_path / "mine"
    for off in ("off", "0", "false", ""):
        env = {"DPA_COMPILE_CACHE": off}
        assert use_persistent_cache(env) is None
        assert "JAX_COMPILATION_CACHE_DIR" not in env
    env = {"JAX_COMPILATION_CACHE_DIR": "/somewhere", "JAX_COMPILATION_CACHE_MAX_SIZE": "5"}
    assert use_persistent_cache(env) is None
    assert env == {"JAX_COMPILATION_CACHE_DIR": "/somewhere", "JAX_COMPILATION_CACHE_MAX_SIZE": "5"}
