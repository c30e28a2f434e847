"""What the training host needs of se_e2_a: its statistics block and its "auto" sel."""

from __future__ import annotations

from ..protocol import EnvBlock, SelKey, protection, sel_list


def stat_blocks(desc: dict) -> list[EnvBlock]:
    """One block of per-type slots."""
    return [
        EnvBlock(
            ("@variables",),
            float(desc["rcut"]),
            float(desc["rcut_smth"]),
            tuple(sel_list(desc["sel"])),
            False,
            bool(desc.get("set_davg_zero", False)),
            protection(desc),
        )
    ]


def sel_keys(section: dict) -> list[SelKey]:
    """sel, counted per neighbor type."""
    return [SelKey((), "sel", float(section.get("rcut", 6.0)), per_type=True)]
