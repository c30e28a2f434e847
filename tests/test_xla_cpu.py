"""XLA CPU flags: 512-bit vectors are asked for on AVX-512 CPUs only, and a width the user set in
XLA_FLAGS is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpa.backends.jax.xla_cpu import cpu_has_avx512, jaxlib_knows_the_flag, prefer_wide_vectors

AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512dq avx512bw\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_wide_vectors_added_on_avx512_and_kept_flags(tmp_path):
    pytest.importorskip("jaxlib")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert prefer_wide_vectors(env, cpuinfo(tmp_path, AVX512))
    assert env["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        "--xla_cpu_prefer_vector_width=512",
    ]
    assert not prefer_wide_vectors(env, cpuinfo(tmp_path, AVX512))  # once only
    assert env["XLA_FLAGS"].count("prefer_vector_width") == 1


def test_no_change_without_avx512_or_with_a_user_width(tmp_path):
    env: dict[str, str] = {}
    assert not prefer_wide_vectors(env, cpuinfo(tmp_path, AVX2))
    assert env == {}
    env = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    assert not prefer_wide_vectors(env, cpuinfo(tmp_path, AVX512))
    assert env["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=256"


def test_unreadable_cpuinfo_means_no_avx512(tmp_path):
    assert not cpu_has_avx512(tmp_path / "missing")
    assert cpu_has_avx512(cpuinfo(tmp_path, AVX512))
    assert not cpu_has_avx512(cpuinfo(tmp_path, "flags\t\t: avx512fake avx2\n"))


def test_only_jaxlib_versions_that_know_the_flag():
    assert jaxlib_knows_the_flag("0.10.2")
    assert jaxlib_knows_the_flag("1.0.0")
    assert not jaxlib_knows_the_flag("0.4.33")
    assert not jaxlib_knows_the_flag("0.9.1")
    assert not jaxlib_knows_the_flag("dev")
