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
    """An evaluation produced non-finite results from finite input (a broken model, usually).

    Made by `non_finite`, it carries `key`, `frame`, `atom` (None for per-frame outputs) and
    `model` (its description), so a caller evaluating in chunks can renumber the frame."""

    key: str | None = None
    frame: int | None = None
    atom: int | None = None
    model: str | None = None

    @classmethod
    def non_finite(
        cls, key: str, frame: int, atom: int | None, model: str, where: str = ""
    ) -> EvaluationError:
        """The error for a non-finite `key` at `frame` (and `atom`); `where` prefixes the
        message (e.g. the data system)."""
        place = f"frame {frame}" + ("" if atom is None else f", atom {atom}")
        error = cls(
            f"{where}{model} gave a non-finite {key} for {place} from finite input; the model is "
            "the likely cause (weights that overflow or are corrupt): re-export it from its "
            "source or retrain it, and if it runs in float32, try float64"
        )
        error.key, error.frame, error.atom, error.model = key, frame, atom, model
        return error
