"""The model's input for a batch of frames: one type that evaluation (every backend), training
(both trainers) and the export build and read, instead of positional arguments and dicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .array_api import Array
from .descriptor.common import Edges

#: Host-side hints of a trimmed neighbor list (see `Edges.slot_counts`).
SlotCounts = tuple[tuple[Any, Any], ...]


@dataclass(frozen=True)
class Batch:
    """Frames of one composition with their neighbor list, in any array namespace.

    coord (nf, nat, 3) positions; atype (nat,) type indices into the model's type_map;
    nlist (nf, nat, nnei) neighbor indices, -1 on empty slots; shift (nf, nat, nnei, 3) integer
    periodic images of the neighbors; box (nf, 3, 3) cell rows, None without periodicity;
    fparam (nf, numb_fparam) and aparam (nf, nat, numb_aparam), None where the model takes none
    (or falls back on its default_fparam); slot_counts: optional hints that the list was
    trimmed, which let descriptors skip padded work (see `Edges.slot_counts`).

    Under JAX it is a pytree (arrays as leaves, slot_counts as static data: a new hint is a new
    compilation); `dpa.backends.jax` registers it.
    """

    coord: Array
    atype: Array
    nlist: Array
    shift: Array
    box: Array | None = None
    fparam: Array | None = None
    aparam: Array | None = None
    slot_counts: SlotCounts = ()

    @staticmethod
    def array_fields() -> tuple[str, ...]:
        """The names of the array fields (all but slot_counts), in declaration order."""
        return tuple(f.name for f in fields(Batch) if f.name != "slot_counts")

    def arrays(self) -> dict[str, Array]:
        """The array fields that are set (None ones left out)."""
        values = {name: getattr(self, name) for name in self.array_fields()}
        return {name: value for name, value in values.items() if value is not None}

    def map(self, fn: Callable[[str, Array], Array]) -> Batch:
        """A batch with `fn(name, array)` in place of every array that is set (conversion to a
        framework's tensors, a device, frames of a slice)."""
        return replace(self, **{name: fn(name, value) for name, value in self.arrays().items()})

    def frames(self, index: slice) -> Batch:
        """The frames `index` (atype, shared by all frames, and the hints kept)."""
        return self.map(lambda name, a: a if name == "atype" else a[index])

    @property
    def nframes(self) -> int:
        return int(self.coord.shape[0])

    @property
    def natoms(self) -> int:
        return int(self.coord.shape[1])

    def edges(self, rij: Array, atype_host: np.ndarray | None = None) -> Edges:
        """The descriptor's view of this batch given its edge vectors `rij`; `atype_host` is
        the NumPy copy of atype for static dispatch (atype itself when that is NumPy)."""
        host = np.asarray(self.atype) if atype_host is None else atype_host
        return Edges(rij, self.nlist, self.atype, host, self.slot_counts)
