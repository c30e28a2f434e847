"""Atomic systems for testing and training: deepmd/npy and deepmd/npy/mixed natively, every other
format via dpdata."""

from dpa.data.system import System, find_systems, load_path, load_system, load_systems

__all__ = ["System", "find_systems", "load_path", "load_system", "load_systems"]
