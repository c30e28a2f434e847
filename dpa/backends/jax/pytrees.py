"""dpa's dataclasses as JAX pytrees, so jitted functions take them whole (registered once)."""

from __future__ import annotations

import jax

from dpa.dpmodel.batch import Batch

jax.tree_util.register_dataclass(
    Batch, data_fields=list(Batch.array_fields()), meta_fields=["slot_counts"]
)
