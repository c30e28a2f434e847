"""The small training input now lives in builders.py; kept for files that import it from here."""

from __future__ import annotations

from builders import write_small_input

__all__ = ["write_small_input"]
