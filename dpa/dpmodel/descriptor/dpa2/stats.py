"""What the training host needs of DPA-2: its statistics blocks and its "auto" sels."""

from __future__ import annotations

from ..protocol import EnvBlock, SelKey, protection


def stat_blocks(desc: dict) -> list[EnvBlock]:
    """The repinit, repformer and (if on) three-body blocks, each with its own list, as
    DeePMD-kit builds them for statistics."""
    rep, frm = desc["repinit_args"], desc["repformer_args"]
    rep_zero = bool(rep.get("set_davg_zero", True))
    prot = protection(desc)
    blocks = [
        EnvBlock(
            ("repinit_variable", "@variables"),
            float(rep["rcut"]),
            float(rep["rcut_smth"]),
            (int(rep["nsel"]),),
            True,
            rep_zero,
            prot,
        ),
        EnvBlock(
            ("repformers_variable", "@variables"),
            float(frm["rcut"]),
            float(frm["rcut_smth"]),
            (int(frm["nsel"]),),
            True,
            bool(frm.get("set_davg_zero", True)),
            prot,
        ),
    ]
    if rep.get("use_three_body", False):
        blocks.append(
            EnvBlock(
                ("repinit_three_body_variable", "@variables"),
                float(rep["three_body_rcut"]),
                float(rep["three_body_rcut_smth"]),
                (int(rep["three_body_sel"]),),
                True,
                rep_zero,
                prot,
            )
        )
    return blocks


def sel_keys(section: dict) -> list[SelKey]:
    """repinit nsel and three_body_sel, repformer nsel."""
    rep, former = section.get("repinit", {}), section.get("repformer", {})
    return [
        SelKey(("repinit",), "nsel", float(rep.get("rcut", 6.0))),
        SelKey(("repinit",), "three_body_sel", float(rep.get("three_body_rcut", 4.0))),
        SelKey(("repformer",), "nsel", float(former.get("rcut", 4.0))),
    ]
