"""The `se_e2_a` input section (alias `se_a`; defaults spec §4.4)."""

from __future__ import annotations

from typing import Literal

from ..config import DescriptorCommon, finish_single_list


class SeE2AConfig(DescriptorCommon):
    """`se_e2_a` (alias `se_a`)."""

    type: Literal["se_e2_a", "se_a"]
    set_davg_zero: bool = False


def finish(desc: dict, ntypes: int) -> None:
    """sel per type; the alias `se_a` stored as `se_e2_a`."""
    finish_single_list(desc, ntypes, per_type=True)
    desc["type"] = "se_e2_a"
