"""What the training host needs of DPA-1: its statistics block and its "auto" sel."""

from __future__ import annotations

from ..protocol import EnvBlock, SelKey, single_block


def stat_blocks(desc: dict) -> list[EnvBlock]:
    """One block of one distance-sorted list."""
    return single_block(desc, mixed_types=True, davg_zero_default=True)


def sel_keys(section: dict) -> list[SelKey]:
    """sel, all neighbor types together."""
    return [SelKey((), "sel", float(section.get("rcut", 6.0)))]
