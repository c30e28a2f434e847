"""Learning-rate schedules, reproducing DeePMD-kit 3.2 (`dp --pt train`) so that lcurves line up.

The "exp" schedule (stepped or smooth) with DeePMD-kit's optional linear warmup; values are plain
floats.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np

from dpa.errors import ConfigError

__all__ = ["ExpDecay"]

# DeePMD-kit clamps stop_lr at this value before taking its log, so stop_lr = 0 stays finite.
_LOG_FLOOR = 1e-10


class ExpDecay:
    """lr(t) = start_lr * decay_rate ** (t // decay_steps), floored at stop_lr (DeePMD "exp").

    With `decay_rate` None the rate is chosen so that lr reaches stop_lr at `numb_steps`; if
    `decay_steps >= numb_steps` it is first reset to min(100, numb_steps // 100 + 1) as DeePMD does.
    With `warmup_steps` the first steps rise linearly from warmup_start_factor * start_lr to
    start_lr, and the decay above runs over the remaining numb_steps - warmup_steps steps.
    """

    def __init__(
        self,
        start_lr: float,
        stop_lr: float = 5e-8,
        decay_steps: int = 5000,
        numb_steps: int = 0,
        decay_rate: float | None = None,
        smooth: bool = False,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.0,
    ) -> None:
        if not (start_lr > 0 and math.isfinite(start_lr)):
            raise ConfigError(
                f"learning_rate.start_lr must be positive and finite, got {start_lr!r}"
            )
        if stop_lr < 0:
            raise ConfigError(f"learning_rate.stop_lr must be non-negative, got {stop_lr!r}")
        if int(decay_steps) <= 0:
            raise ConfigError(f"learning_rate.decay_steps must be positive, got {decay_steps!r}")
        if int(numb_steps) < 0:
            raise ConfigError(f"training.numb_steps must be non-negative, got {numb_steps!r}")
        if int(warmup_steps) < 0 or (int(warmup_steps) and int(warmup_steps) >= int(numb_steps)):
            raise ConfigError(
                f"learning_rate.warmup_steps ({warmup_steps}) must be smaller than "
                f"training.numb_steps ({numb_steps})"
            )
        self.start_lr = float(start_lr)
        self.stop_lr = float(stop_lr)
        self.numb_steps = int(numb_steps)
        self.smooth = bool(smooth)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_lr = float(warmup_start_factor) * self.start_lr
        decay_total = self.numb_steps - self.warmup_steps
        steps = int(decay_steps)
        if decay_rate is None and steps >= decay_total:
            steps = 100 if decay_total // 10 > 100 else decay_total // 100 + 1
        self.decay_steps = steps
        if decay_rate is not None:
            self.decay_rate = float(decay_rate)
        elif decay_total == 0:
            self.decay_rate = 1.0
        else:
            ratio = max(self.stop_lr, _LOG_FLOOR) / self.start_lr
            self.decay_rate = float(np.exp(np.log(ratio) / (decay_total / self.decay_steps)))
        self.min_lr = self.stop_lr

    @overload
    def value(self, step: int) -> float: ...

    @overload
    def value(self, step: np.ndarray) -> np.ndarray: ...

    def value(self, step: int | np.ndarray) -> float | np.ndarray:
        """The learning rate at 0-based `step` (a float, or float64 array for an array of steps)."""
        scalar = np.ndim(step) == 0 and not isinstance(step, np.ndarray)
        s = np.asarray(step)
        if self.warmup_steps:
            rise = self.warmup_start_lr + (self.start_lr - self.warmup_start_lr) * (
                s.astype(np.float64) / self.warmup_steps
            )
            decayed = self._decayed(np.maximum(s - self.warmup_steps, 0))
            lr = np.where(s < self.warmup_steps, rise, decayed)
        else:
            lr = self._decayed(s)
        return float(lr) if scalar else lr

    def _decayed(self, s: np.ndarray) -> np.ndarray:
        """The exponential decay at `s` steps after the warmup."""
        if self.smooth:
            exponent = s.astype(np.float64) / self.decay_steps
        else:
            exponent = (s // self.decay_steps).astype(np.float64)
        lr = self.start_lr * np.power(np.float64(self.decay_rate), exponent)
        return np.maximum(lr, self.min_lr)

    def __call__(self, step: int) -> float:
        """Same as `value(step)` for a single integer step."""
        return self.value(int(step))

    def __repr__(self) -> str:
        return (
            f"ExpDecay(start_lr={self.start_lr}, stop_lr={self.stop_lr}, "
            f"decay_steps={self.decay_steps}, numb_steps={self.numb_steps}, "
            f"decay_rate={self.decay_rate})"
        )
