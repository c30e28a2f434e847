"""Error statistics (MAE, RMSE) that merge exactly across chunks and systems, as `dp test` does."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ErrorStat", "error_stat", "merge_stats", "merge_errors"]


@dataclass(frozen=True)
class ErrorStat:
    """MAE and RMSE of a set of errors, with the number of elements they were taken over."""

    mae: float
    rmse: float
    weight: float


def error_stat(pred: np.ndarray, ref: np.ndarray, scale: float = 1.0) -> ErrorStat:
    """MAE and RMSE of `pred - ref` (times `scale`), weighted by the number of elements."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    if diff.size == 0:
        return ErrorStat(0.0, 0.0, 0.0)
    return ErrorStat(
        mae=float(np.mean(np.abs(diff))) * scale,
        rmse=float(np.sqrt(np.mean(diff * diff))) * scale,
        weight=float(diff.size),
    )


def merge_stats(stats: Iterable[ErrorStat]) -> ErrorStat:
    """Combine partial statistics: MAE weighted mean, RMSE root of the weighted mean square."""
    stats = [s for s in stats if s.weight > 0]
    total = sum(s.weight for s in stats)
    if total == 0:
        return ErrorStat(0.0, 0.0, 0.0)
    mae = sum(s.mae * s.weight for s in stats) / total
    rmse = math.sqrt(sum(s.rmse * s.rmse * s.weight for s in stats) / total)
    return ErrorStat(mae, rmse, total)


def merge_errors(errors: Iterable[Mapping[str, ErrorStat]]) -> dict[str, ErrorStat]:
    """Merge per-system error dicts key by key (a key missing from a system is skipped there)."""
    grouped: dict[str, list[ErrorStat]] = {}
    for err in errors:
        for key, stat in err.items():
            grouped.setdefault(key, []).append(stat)
    return {key: merge_stats(stats) for key, stats in grouped.items()}
