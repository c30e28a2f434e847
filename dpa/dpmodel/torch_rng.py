"""The draws of PyTorch's CPU generator, reproduced with NumPy, and the seed mixing of DeePMD-kit:
what `dpa.dpmodel.deepmd_init` needs to start from DeePMD-kit's initial weights, and
`dpa.data.deepmd_order` to walk DeePMD-kit's batch order, without importing torch.

PyTorch's CPU generator is an MT19937 seeded with the low 32 bits of the seed (the reference
initialization `init_genrand`); a uniform double takes two 32-bit outputs (the first as the high
word) and keeps 53 bits; `Tensor.uniform_` uses one per element, in order. `Tensor.normal_` on a
contiguous tensor of 16 or more elements draws all uniforms first and turns each block of 16 into
normals by Box-Muller (u1 = 1 - x[j], u2 = x[j + 8], for j < 8), redrawing 16 fresh uniforms for
a last partial block; smaller tensors draw element by element with a polar pair whose sine half
is cached in the generator. Values agree with torch to an ulp or two (NumPy's log/sin/cos, not
the C library's). An int64 `random_()` is a 64-bit draw modulo 2**63; `randperm(n)` swaps
position i with i + (one 32-bit output mod (n - i)); `multinomial` with replacement takes one
uniform double per sample and the first category whose normalized cumulative weight reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_MASK64 = (1 << 64) - 1
# the hash constants of NumPy's SeedSequence, as DeePMD-kit's `mix_entropy` uses them
_INIT_A = 0x43B0D7E5
_MIX_MULT_L = 0xCA01F9DD
_MIX_MULT_R = 0x4973F715
_XSHIFT = 16


def _hashmix(value: int) -> int:
    value = ((value ^ _INIT_A) * _INIT_A) & _MASK64
    return value ^ (value >> _XSHIFT)


def _mix(x: int, y: int) -> int:
    value = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _MASK64
    return value ^ (value >> _XSHIFT)


def mix_seed(path: Sequence[int]) -> int:
    """DeePMD-kit's integer seed of a child-seed list `[idx, ..., root]` (its `mix_entropy`)."""
    mixed = _hashmix(int(path[0]))
    for value in path[1:]:
        mixed = _mix(mixed, _hashmix(int(value)))
    return mixed


class TorchCpuGenerator:
    """Normal and uniform draws equal (to round-off) to those of
    `torch.Generator().manual_seed(seed)`."""

    def __init__(self, seed: int) -> None:
        self._bits = np.random.MT19937(0)
        self._bits._legacy_seeding(int(seed) & 0xFFFFFFFF)
        self._cached: float | None = None  # the sine half of the last small-tensor pair

    def _random64(self, n: int) -> np.ndarray:
        raw = self._bits.random_raw(2 * n).astype(np.uint64)
        return (raw[0::2] << np.uint64(32)) | raw[1::2]

    def _uniform(self, n: int) -> np.ndarray:
        return (self._random64(n) & np.uint64((1 << 53) - 1)).astype(np.float64) * 2.0**-53

    def random_int64(self) -> int:
        """`torch.empty((), dtype=torch.int64).random_(generator)`: a value in [0, 2**63)."""
        return int(self._random64(1)[0]) % (1 << 63)

    def randperm(self, n: int) -> np.ndarray:
        """`torch.randperm(n, generator)` (CPU): a Fisher-Yates walk from the front."""
        perm = np.arange(n, dtype=np.int64)
        if n > 1:
            words = self._bits.random_raw(n - 1).astype(np.int64)
            for i, z in enumerate(words % np.arange(n, 1, -1, dtype=np.int64)):
                j = i + int(z)
                perm[i], perm[j] = perm[j], perm[i]
        return perm

    def multinomial(self, weights: np.ndarray, n: int) -> np.ndarray:
        """`torch.multinomial(weights, n, replacement=True, generator)` for float64 weights."""
        cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
        cumulative /= cumulative[-1]
        return np.searchsorted(cumulative, self._uniform(n), side="left").astype(np.int64)

    def skip_normal(self, n: int, float32: bool = False) -> None:
        """Advance as `normal_` on a contiguous tensor of n elements would (float64 or float32;
        a float32 tensor of 16 or more draws one 32-bit word per element)."""
        if n >= 16:
            per = 1 if float32 else 2
            self._bits.random_raw(per * (n + (16 if n % 16 else 0)))
        else:
            self.normal((n,))

    @staticmethod
    def _box_muller_16(block: np.ndarray, mean: float, std: float) -> np.ndarray:
        radius = np.sqrt(-2.0 * np.log(1.0 - block[:8]))
        theta = 2.0 * math.pi * block[8:]
        return np.concatenate(
            [radius * np.cos(theta) * std + mean, radius * np.sin(theta) * std + mean]
        )

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        """An array of `shape` filled as `torch.empty(shape).uniform_(low, high, generator)`:
        one 53-bit uniform per element, in order."""
        return (self._uniform(math.prod(shape)) * (high - low) + low).reshape(shape)

    def normal(self, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0) -> np.ndarray:
        """An array of `shape` filled as `torch.empty(shape).normal_(mean, std, generator)`."""
        n = math.prod(shape)
        if n >= 16:
            uniform = self._uniform(n)
            out = np.empty(n)
            for i in range(0, n - 15, 16):
                out[i : i + 16] = self._box_muller_16(uniform[i : i + 16], mean, std)
            if n % 16:
                out[n - 16 :] = self._box_muller_16(self._uniform(16), mean, std)
            return out.reshape(shape)
        out = np.empty(n)
        for i in range(n):
            if self._cached is not None:
                value, self._cached = self._cached, None
            else:
                u1, u2 = self._uniform(2)
                radius = math.sqrt(-2.0 * math.log1p(-u2))
                theta = 2.0 * math.pi * u1
                self._cached = radius * math.sin(theta)
                value = radius * math.cos(theta)
            out[i] = value * std + mean
        return out.reshape(shape)
