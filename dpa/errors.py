"""The exception family of dpa: one root, a subclass per kind of culprit (config, data, model file, backend).

Every message names the culprit (file, key, frame or atom), what was expected, and how to fix it.
"""

from __future__ import annotations


class DPAError(Exception):
    """Root of every error dpa raises on purpose; the CLI prints it as one line and exits 1."""


class ConfigError(DPAError, ValueError):
    """A model or training config is invalid: unknown key, wrong type, unsupported option."""


class DataError(DPAError, ValueError):
    """Input coordinates, types, boxes or a data system are invalid."""


class ModelFileError(DPAError, OSError):
    """A model file is missing, corrupt, or of an unknown format."""


class BackendError(DPAError, RuntimeError):
    """A backend is unknown, not installed, or cannot do what was asked."""


class OutputError(DPAError, OSError):
    """A file or folder cannot be written: permission denied, disk full, a directory in the way,
    or an output folder already in use by another run."""


class ModelWriteError(OutputError, ModelFileError):
    """A model file cannot be written (an OutputError, and a ModelFileError as before)."""


class EvaluationError(DPAError, FloatingPointError):
    """An evaluation produced non-finite results from finite input (a broken model, usually)."""
