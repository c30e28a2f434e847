"""What the training host needs of DPA-3: its statistics block and its "auto" sels."""

from __future__ import annotations

from ..protocol import EnvBlock, SelKey, protection


def stat_blocks(desc: dict) -> list[EnvBlock]:
    """The edge block; davg stays 0 and dstd is fix_stat_std when that is set."""
    flow = desc["repflow_args"]
    return [
        EnvBlock(
            ("repflow_variable", "@variables"),
            float(flow["e_rcut"]),
            float(flow["e_rcut_smth"]),
            (int(flow["e_sel"]),),
            True,
            True,  # DPA-3 always keeps davg = 0
            protection(desc),
            float(flow.get("fix_stat_std", 0.3)),
        )
    ]


def sel_keys(section: dict) -> list[SelKey]:
    """e_sel within e_rcut, a_sel within a_rcut."""
    flow = section.get("repflow", {})
    return [
        SelKey(("repflow",), "e_sel", float(flow.get("e_rcut", 6.0))),
        SelKey(("repflow",), "a_sel", float(flow.get("a_rcut", 4.0))),
    ]
