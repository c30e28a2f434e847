"""What the training host needs of se_e2_a: its statistics block and its "auto" sel."""

from __future__ import annotations

from ..protocol import EnvBlock, SelKey, single_block


def stat_blocks(desc: dict) -> list[EnvBlock]:
    """One block of per-type slots."""
    return single_block(desc, mixed_types=False, davg_zero_default=False)


def sel_keys(section: dict) -> list[SelKey]:
    """sel, counted per neighbor type."""
    return [SelKey((), "sel", float(section.get("rcut", 6.0)), per_type=True)]
