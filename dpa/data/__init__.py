"""Atomic systems for testing and training: deepmd/npy and deepmd/npy/mixed natively, every other
format via dpdata."""

from dpa.data.load import find_systems, load_path, load_system, load_systems
from dpa.data.system import System

__all__ = ["System", "find_systems", "load_path", "load_system", "load_systems"]
