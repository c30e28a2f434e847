"""The hyperparameters of a stored DPA-1 / se_atten / se_atten_v2 tree, parsed once (spec §5)."""

from __future__ import annotations

from dataclasses import dataclass

from ...type_embed import TypeEmbeddingSettings
from ..protocol import sel_list


@dataclass(frozen=True)
class PairEmbeddingSettings:
    """How G_ij joins the radial input and the type embeddings (spec §5.2); DPA-2's repinit too."""

    strip: bool  # the types through their own network (else concatenated to the radial input)
    one_side: bool  # the neighbor's type only (else the neighbor's and the center's)
    smooth: bool  # strip mode: the type part scaled by the switch s(r)

    @classmethod
    def from_tree(cls, desc: dict) -> PairEmbeddingSettings:
        """se_atten_v2 is strip and smooth whatever its tree says (it may omit both keys)."""
        v2 = desc["type"] == "se_atten_v2"
        return cls(
            strip=v2 or desc.get("tebd_input_mode", "concat") == "strip",
            one_side=bool(desc.get("type_one_side", False)),
            smooth=v2 or bool(desc.get("smooth_type_embedding", False)),
        )


@dataclass(frozen=True)
class AttentionLayerSettings:
    """One gated self-attention layer (spec §5.3), from its stored `attention_layer` dict."""

    hidden_dim: int  # width d of each of q, k, v
    scale: float  # logit scale λ: the temperature, else (d · scaling_factor)^(-1/2)
    normalize: bool  # q, k, v rows scaled to unit length
    smooth: bool  # logits shifted and gated by the switch (else empty keys masked out)
    dotr: bool  # attention weights times the cosines r̂_j · r̂_k

    @classmethod
    def from_tree(cls, attn: dict) -> AttentionLayerSettings:
        hidden = int(attn["hidden_dim"])
        temperature = attn.get("temperature")
        if temperature is None:
            scale = (hidden * float(attn["scaling_factor"])) ** -0.5
        else:
            scale = float(temperature)
        return cls(
            hidden_dim=hidden,
            scale=scale,
            normalize=bool(attn.get("normalize", True)),
            smooth=bool(attn.get("smooth", True)),
            dotr=bool(attn.get("dotr", True)),
        )


@dataclass(frozen=True)
class DPA1Settings:
    """What the forward pass reads besides arrays; defaults of optional stored keys live here."""

    rcut: float
    rcut_smth: float
    protection: float
    nsel: int  # sum(sel): the width of the one distance-sorted list, the contraction's 1/N
    ntypes: int
    axis_neuron: int
    precision: str
    exclude_types: tuple[tuple[int, int], ...]
    concat_output_tebd: bool  # the center's type embedding appended to the output
    pair: PairEmbeddingSettings
    attention: tuple[AttentionLayerSettings, ...]  # one per stored layer, in order
    type_embedding: TypeEmbeddingSettings

    @classmethod
    def from_tree(cls, desc: dict) -> DPA1Settings:
        return cls(
            rcut=float(desc["rcut"]),
            rcut_smth=float(desc["rcut_smth"]),
            protection=float(desc["env_mat"].get("protection", 0.0)),
            nsel=sum(sel_list(desc["sel"])),
            ntypes=int(desc["ntypes"]),
            axis_neuron=int(desc["axis_neuron"]),
            precision=str(desc.get("precision", "float64")),
            exclude_types=tuple((int(a), int(b)) for a, b in desc.get("exclude_types") or ()),
            concat_output_tebd=bool(desc.get("concat_output_tebd", True)),
            pair=PairEmbeddingSettings.from_tree(desc),
            attention=tuple(
                AttentionLayerSettings.from_tree(layer["attention_layer"])
                for layer in desc["attention_layers"]["attention_layers"]
            ),
            type_embedding=TypeEmbeddingSettings.from_tree(desc["type_embedding"]),
        )
