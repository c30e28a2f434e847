"""Global CLI options shared by every command, and small printing helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import click

__all__ = ["Options", "pass_options"]


@dataclass
class Options:
    """What the global options chose: backend (None: by file suffix) and verbosity (-1, 0, 1)."""

    backend: str | None = None
    verbosity: int = 0
    console: ClassVar[bool] = False  # run as the `dpa` console script (may restart itself)

    @property
    def quiet(self) -> bool:
        """True with -q: print results only, no per-system detail or notes."""
        return self.verbosity < 0

    @property
    def verbose(self) -> bool:
        """True with -v: print more, and full tracebacks on errors."""
        return self.verbosity > 0

    def info(self, message: str) -> None:
        """Print an informational line to stdout unless -q."""
        if not self.quiet:
            click.echo(message)

    def note(self, message: str) -> None:
        """Print a note to stderr unless -q."""
        if not self.quiet:
            click.echo(f"dpa: note: {message}", err=True)


pass_options = click.make_pass_decorator(Options, ensure=True)
