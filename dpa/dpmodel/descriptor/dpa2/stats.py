"""What the training host needs of DPA-2: its statistics blocks and its "auto" sels."""

from __future__ import annotations

from ..protocol import EnvBlock, SelKey, protection
from .settings import DPA2Settings


def stat_blocks(desc: dict) -> list[EnvBlock]:
    """The repinit, repformer and (if on) three-body blocks, each with its own list, as
    DeePMD-kit builds them for statistics."""
    cfg = DPA2Settings.from_tree(desc)
    rep, frm = cfg.repinit, cfg.repformer
    rep_zero = bool(desc["repinit_args"].get("set_davg_zero", True))
    prot = protection(desc)
    blocks = [
        EnvBlock(
            ("repinit_variable", "@variables"),
            rep.rcut,
            rep.rcut_smth,
            (rep.nsel,),
            True,
            rep_zero,
            prot,
        ),
        EnvBlock(
            ("repformers_variable", "@variables"),
            frm.rcut,
            frm.rcut_smth,
            (frm.nsel,),
            True,
            bool(desc["repformer_args"].get("set_davg_zero", True)),
            prot,
        ),
    ]
    if cfg.three_body is not None:
        three = cfg.three_body
        blocks.append(
            EnvBlock(
                ("repinit_three_body_variable", "@variables"),
                three.rcut,
                three.rcut_smth,
                (three.nsel,),
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
