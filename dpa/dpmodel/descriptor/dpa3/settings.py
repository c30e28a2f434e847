"""The hyperparameters of a stored DPA-3 tree, parsed once (spec §7)."""

from __future__ import annotations

from dataclasses import dataclass

from ...type_embed import TypeEmbeddingSettings


@dataclass(frozen=True)
class RepflowSettings:
    """The repflow block's `repflow_args`, read by every layer; defaults of optional keys here."""

    # the stored layers repeat these keys; the forward pass reads the block's copy only
    a_dim: int
    nlayers: int  # the stored layers (the stack runs over these, not over repflow_args.nlayers)
    e_rcut: float
    e_rcut_smth: float
    e_sel: int
    a_rcut: float
    a_rcut_smth: float
    a_sel: int
    a_compress_rate: int
    a_compress_e_rate: int
    a_compress_use_split: bool
    n_multi_edge_message: int
    axis_neuron: int
    update_angle: bool
    update_style: str
    smooth_edge_update: bool
    sequential_update: bool
    edge_init_use_dist: bool
    use_exp_switch: bool
    sel_reduce_factor: float | None  # set with use_dynamic_sel only (then required)

    @property
    def normalizers(self) -> tuple[float, float]:
        """N' and A': e_sel and a_sel, divided by sel_reduce_factor with use_dynamic_sel."""
        if self.sel_reduce_factor is not None:
            return self.e_sel / self.sel_reduce_factor, self.a_sel / self.sel_reduce_factor
        return float(self.e_sel), float(self.a_sel)

    @classmethod
    def from_tree(cls, args: dict, nlayers: int) -> RepflowSettings:
        """From a stored `repflow_args` and the number of stored repflow layers."""
        dynamic = bool(args.get("use_dynamic_sel", False))
        return cls(
            a_dim=int(args["a_dim"]),
            nlayers=nlayers,
            e_rcut=float(args["e_rcut"]),
            e_rcut_smth=float(args["e_rcut_smth"]),
            e_sel=int(args["e_sel"]),
            a_rcut=float(args["a_rcut"]),
            a_rcut_smth=float(args["a_rcut_smth"]),
            a_sel=int(args["a_sel"]),
            a_compress_rate=int(args.get("a_compress_rate", 0)),
            a_compress_e_rate=int(args.get("a_compress_e_rate", 1)),
            a_compress_use_split=bool(args.get("a_compress_use_split", False)),
            n_multi_edge_message=int(args["n_multi_edge_message"]),
            axis_neuron=int(args["axis_neuron"]),
            update_angle=bool(args["update_angle"]),
            update_style=str(args["update_style"]),
            smooth_edge_update=bool(args.get("smooth_edge_update", False)),
            sequential_update=bool(args.get("sequential_update", False)),
            edge_init_use_dist=bool(args.get("edge_init_use_dist", False)),
            use_exp_switch=bool(args.get("use_exp_switch", False)),
            sel_reduce_factor=float(args["sel_reduce_factor"]) if dynamic else None,
        )


@dataclass(frozen=True)
class DPA3Settings:
    """What the DPA-3 forward pass reads besides arrays; defaults of optional stored keys here."""

    ntypes: int
    precision: str
    activation_function: str
    concat_output_tebd: bool
    protection: float  # env_protection
    exclude_types: tuple[tuple[int, int], ...]
    repflow: RepflowSettings
    type_embedding: TypeEmbeddingSettings

    @classmethod
    def from_tree(cls, desc: dict) -> DPA3Settings:
        """From a stored DPA-3 descriptor (its arrays stay in `desc`)."""
        layers = desc["repflow_variable"]["repflow_layers"]
        return cls(
            ntypes=int(desc["ntypes"]),
            precision=str(desc.get("precision", "float64")),
            activation_function=str(desc.get("activation_function", "silu")),
            concat_output_tebd=bool(desc.get("concat_output_tebd", False)),
            protection=float(desc.get("env_protection", 0.0)),
            exclude_types=tuple((int(a), int(b)) for a, b in desc.get("exclude_types") or ()),
            repflow=RepflowSettings.from_tree(desc["repflow_args"], len(layers)),
            type_embedding=TypeEmbeddingSettings.from_tree(desc["type_embedding"]),
        )
