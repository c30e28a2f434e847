"""What the training host needs of DPA-1: its statistics block and its "auto" sel."""

from __future__ import annotations

from ..protocol import EnvBlock, SelKey, protection, sel_list


def stat_blocks(desc: dict) -> list[EnvBlock]:
    """One block of one distance-sorted list."""
    return [
        EnvBlock(
            ("@variables",),
            float(desc["rcut"]),
            float(desc["rcut_smth"]),
            (sum(sel_list(desc["sel"])),),
            True,
            bool(desc.get("set_davg_zero", True)),
            protection(desc),
        )
    ]


def sel_keys(section: dict) -> list[SelKey]:
    """sel, all neighbor types together."""
    return [SelKey((), "sel", float(section.get("rcut", 6.0)))]
