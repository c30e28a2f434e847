"""The hyperparameters of a stored DPA-2 tree, parsed once (spec §6); the arrays stay in the tree."""

from __future__ import annotations

from dataclasses import dataclass

from ...type_embed import TypeEmbeddingSettings
from ..dpa1.settings import PairEmbeddingSettings


@dataclass(frozen=True)
class RepinitSettings:
    """The repinit (se_atten without attention) block: `repinit_args` as its forward reads it."""

    rcut: float
    rcut_smth: float
    nsel: int
    axis_neuron: int
    tebd_dim: int
    tebd_input_mode: str  # "concat" or "strip"; the three-body block follows it too
    type_one_side: bool

    @classmethod
    def from_tree(cls, args: dict) -> RepinitSettings:
        return cls(
            rcut=float(args["rcut"]),
            rcut_smth=float(args["rcut_smth"]),
            nsel=int(args["nsel"]),
            axis_neuron=int(args["axis_neuron"]),
            tebd_dim=int(args["tebd_dim"]),
            tebd_input_mode=str(args["tebd_input_mode"]),
            type_one_side=bool(args["type_one_side"]),
        )


@dataclass(frozen=True)
class ThreeBodySettings:
    """The optional three-body (se_t_tebd) block: its own cutoffs and list width."""

    rcut: float
    rcut_smth: float
    nsel: int

    @classmethod
    def from_tree(cls, args: dict) -> ThreeBodySettings | None:
        """The block's settings from `repinit_args`; None when `use_three_body` is off."""
        if not args.get("use_three_body", False):
            return None
        return cls(
            rcut=float(args["three_body_rcut"]),
            rcut_smth=float(args["three_body_rcut_smth"]),
            nsel=int(args["three_body_sel"]),
        )


@dataclass(frozen=True)
class AttentionSettings:
    """Widths of a stored attention module (`loc_attn` or `attn2g_map`) besides its weights."""

    hidden_dim: int
    head_num: int
    has_gate: bool  # logits times h_j·h_k (only the g2 attention stores it)

    @classmethod
    def from_tree(cls, node: dict) -> AttentionSettings:
        return cls(
            hidden_dim=int(node["hidden_dim"]),
            head_num=int(node["head_num"]),
            has_gate=bool(node.get("has_gate", False)),
        )


@dataclass(frozen=True)
class RepformerLayerSettings:
    """One stored `RepformerLayer`: its own flags (the last layer has no channel-2 update)."""

    activation_function: str
    update_style: str  # "res_avg", "res_incr" or "res_residual"
    axis_neuron: int
    use_sqrt_nnei: bool
    update_chnnl_2: bool
    update_g1_has_conv: bool
    update_g1_has_drrd: bool
    update_g1_has_grrg: bool
    update_g1_has_attn: bool
    update_g2_has_g1g1: bool
    update_g2_has_attn: bool
    update_h2: bool
    g1_out_conv: bool
    g1_out_mlp: bool
    local_attention: AttentionSettings | None  # `loc_attn`, present iff update_g1_has_attn
    pair_attention: AttentionSettings | None  # `attn2g_map`, when channel 2 uses attention

    @classmethod
    def from_tree(cls, layer: dict) -> RepformerLayerSettings:
        chnnl_2 = bool(layer["update_chnnl_2"])
        g1_attn = bool(layer["update_g1_has_attn"])
        g2_attn = bool(layer["update_g2_has_attn"])
        h2 = bool(layer["update_h2"])
        return cls(
            activation_function=str(layer["activation_function"]),
            update_style=str(layer["update_style"]),
            axis_neuron=int(layer["axis_neuron"]),
            use_sqrt_nnei=bool(layer["use_sqrt_nnei"]),
            update_chnnl_2=chnnl_2,
            update_g1_has_conv=bool(layer["update_g1_has_conv"]),
            update_g1_has_drrd=bool(layer["update_g1_has_drrd"]),
            update_g1_has_grrg=bool(layer["update_g1_has_grrg"]),
            update_g1_has_attn=g1_attn,
            update_g2_has_g1g1=bool(layer["update_g2_has_g1g1"]),
            update_g2_has_attn=g2_attn,
            update_h2=h2,
            g1_out_conv=bool(layer["g1_out_conv"]),
            g1_out_mlp=bool(layer["g1_out_mlp"]),
            local_attention=AttentionSettings.from_tree(layer["loc_attn"]) if g1_attn else None,
            pair_attention=(
                AttentionSettings.from_tree(layer["attn2g_map"])
                if chnnl_2 and (g2_attn or h2)
                else None
            ),
        )


@dataclass(frozen=True)
class RepformerSettings:
    """The repformer block: `repformer_args` and one settings object per stored layer."""

    rcut: float
    rcut_smth: float
    nsel: int
    g1_dim: int
    activation_function: str  # of the g2 embedding and the input f = φ(g1)
    direct_dist: bool  # g, h from the raw r_ij (not the normalized env-mat)
    use_sqrt_nnei: bool  # of the rotation matrix after the last layer
    layers: tuple[RepformerLayerSettings, ...]

    @classmethod
    def from_tree(cls, args: dict, block: dict) -> RepformerSettings:
        """From `repformer_args` and the stored block `repformers_variable`."""
        return cls(
            rcut=float(args["rcut"]),
            rcut_smth=float(args["rcut_smth"]),
            nsel=int(args["nsel"]),
            g1_dim=int(args["g1_dim"]),
            activation_function=str(args["activation_function"]),
            direct_dist=bool(args["direct_dist"]),
            use_sqrt_nnei=bool(args["use_sqrt_nnei"]),
            layers=tuple(RepformerLayerSettings.from_tree(x) for x in block["repformer_layers"]),
        )


@dataclass(frozen=True)
class DPA2Settings:
    """What the DPA-2 forward pass reads besides arrays; defaults of optional stored keys live here."""

    ntypes: int
    precision: str
    smooth: bool
    protection: float  # env_protection
    exclude_types: tuple[tuple[int, int], ...]
    concat_output_tebd: bool
    add_tebd_to_repinit_out: bool
    g1_shape_transform: bool  # False: `g1_shape_tranform` is stored as Identity
    type_embedding: TypeEmbeddingSettings
    repinit: RepinitSettings
    three_body: ThreeBodySettings | None
    repformer: RepformerSettings

    @property
    def repinit_pairs(self) -> PairEmbeddingSettings:
        """How repinit's (and the three-body block's) G_ij joins radial input and types: DPA-1's
        pair embedding with the repinit mode and the descriptor's `smooth`."""
        rep = self.repinit
        return PairEmbeddingSettings(rep.tebd_input_mode == "strip", rep.type_one_side, self.smooth)

    @property
    def dim_out(self) -> int:
        """Width: g1_dim (+ tebd_dim when concat_output_tebd)."""
        width = self.repformer.g1_dim
        return width + (self.repinit.tebd_dim if self.concat_output_tebd else 0)

    @classmethod
    def from_tree(cls, desc: dict) -> DPA2Settings:
        return cls(
            ntypes=int(desc["ntypes"]),
            precision=str(desc.get("precision", "float64")),
            smooth=bool(desc.get("smooth", True)),
            protection=float(desc.get("env_protection", 0.0)),
            exclude_types=tuple((int(a), int(b)) for a, b in desc.get("exclude_types") or ()),
            concat_output_tebd=bool(desc.get("concat_output_tebd", True)),
            add_tebd_to_repinit_out=bool(desc.get("add_tebd_to_repinit_out", False)),
            g1_shape_transform=desc["g1_shape_tranform"].get("@class") != "Identity",
            type_embedding=TypeEmbeddingSettings.from_tree(desc["type_embedding"]),
            repinit=RepinitSettings.from_tree(desc["repinit_args"]),
            three_body=ThreeBodySettings.from_tree(desc["repinit_args"]),
            repformer=RepformerSettings.from_tree(
                desc["repformer_args"], desc["repformers_variable"]
            ),
        )
