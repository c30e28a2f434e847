"""Energy fitting net (spec §8.1-8.2): per-atom energy from descriptor, fparam, aparam, case embedding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .array_api import Array, dtype_of, like, to_dtype, xp_of
from .descriptor.common import apply_per_center_type
from .network import fitting_net, make_fitting_net, network_collection


@dataclass(frozen=True)
class FittingSettings:
    """What the fitting's forward pass reads besides arrays, parsed once from the stored tree
    (defaults of optional stored keys live here)."""

    ntypes: int
    precision: str
    numb_fparam: int
    numb_aparam: int
    use_aparam_as_mask: bool
    dim_case_embd: int
    default_fparam: tuple[float, ...] | None
    mixed_types: bool  # one network for all types (else one per center type)
    vacuum: tuple[bool, ...] | None  # per type: remove the vacuum contribution (from atom_ener)
    exclude_types: tuple[int, ...]

    @classmethod
    def from_tree(cls, fit: dict) -> FittingSettings:
        atom_ener = fit.get("atom_ener")
        vacuum = None
        if atom_ener and not all(e is None for e in atom_ener):
            vacuum = tuple(e is not None for e in atom_ener)
        default = fit.get("default_fparam")
        return cls(
            ntypes=int(fit["ntypes"]),
            precision=str(fit.get("precision", "float64")),
            numb_fparam=int(fit.get("numb_fparam", 0)),
            numb_aparam=int(fit.get("numb_aparam", 0)),
            use_aparam_as_mask=bool(fit.get("use_aparam_as_mask", False)),
            dim_case_embd=int(fit.get("dim_case_embd", 0)),
            default_fparam=None if default is None else tuple(float(v) for v in default),
            mixed_types=bool(fit.get("mixed_types", True)),
            vacuum=vacuum,
            exclude_types=tuple(int(t) for t in fit.get("exclude_types") or ()),
        )


def _fitting_input(
    cfg: FittingSettings, fit: dict, descriptor: Array, fparam: Array | None, aparam: Array | None
) -> list[Array]:
    """x = [D, normalized fparam, normalized aparam, case_embd] in the fitting precision."""
    xp = xp_of(descriptor)
    var = fit["@variables"]
    nf, nat = descriptor.shape[0], descriptor.shape[1]
    parts = [descriptor]
    if cfg.numb_fparam > 0:
        fp = to_dtype(fparam, descriptor.dtype)
        fp = (fp - var["fparam_avg"]) * var["fparam_inv_std"]
        parts.append(xp.broadcast_to(fp[:, None, :], (nf, nat, fp.shape[-1])))
    if cfg.numb_aparam > 0 and not cfg.use_aparam_as_mask:
        ap = to_dtype(aparam, descriptor.dtype)
        parts.append((ap - var["aparam_avg"]) * var["aparam_inv_std"])
    if cfg.dim_case_embd > 0:
        case = var["case_embd"]
        parts.append(xp.broadcast_to(case[None, None, :], (nf, nat, case.shape[-1])))
    return parts


def forward(
    cfg: FittingSettings,
    fit: dict,
    descriptor: Array,
    atype: Array,
    atype_host: np.ndarray,
    fparam: Array | None = None,
    aparam: Array | None = None,
) -> Array:
    """Atomic energies (nf, nat) in float64 (before the model's out_bias)."""
    xp = xp_of(descriptor)
    dtype = dtype_of(xp, cfg.precision)
    parts = _fitting_input(cfg, fit, to_dtype(descriptor, dtype), fparam, aparam)
    x = xp.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
    vacuum = cfg.vacuum
    x_vacuum = None
    if vacuum is not None:
        zeros = xp.zeros_like(parts[0])
        x_vacuum = xp.concat([zeros, *parts[1:]], axis=-1) if len(parts) > 1 else zeros
    networks = fit["nets"]["networks"]

    if cfg.mixed_types:
        out = fitting_net(networks[0], x)
        if x_vacuum is not None:
            out = out - fitting_net(networks[0], x_vacuum)
    else:
        both = x if x_vacuum is None else xp.concat([x, x_vacuum], axis=-1)
        width = x.shape[-1]

        def per_type(t: int, xt: Array) -> Array:
            res = fitting_net(networks[t], xt[..., :width])
            if vacuum is not None and (t >= len(vacuum) or vacuum[t]):  # then x_vacuum is set too
                res = res - fitting_net(networks[t], xt[..., width:])
            return res

        out = apply_per_center_type(both, atype_host, cfg.ntypes, per_type)
    bias = to_dtype(fit["@variables"]["bias_atom_e"], dtype)
    out = out[..., 0] + xp.take(bias[:, 0], atype, axis=0)[None, :]
    if cfg.exclude_types:
        keep = like(atype, ~np.isin(atype_host, cfg.exclude_types))
        out = xp.where(keep[None, :], out, xp.zeros_like(out))
    return to_dtype(out, xp.float64)


def build(
    config: dict, type_map: list[str], dim_descrpt: int, mixed_types: bool, rng: np.random.Generator
) -> dict:
    """A serialized energy fitting (`"type": "ener"`) with fresh weights and zero biases."""
    ntypes = len(type_map)
    precision = config["precision"]
    nfp, nap, ncase = config["numb_fparam"], config["numb_aparam"], config["dim_case_embd"]
    in_dim = dim_descrpt + nfp + (0 if config["use_aparam_as_mask"] else nap) + ncase
    nets = [
        make_fitting_net(
            rng,
            in_dim,
            config["neuron"],
            activation_function=config["activation_function"],
            resnet_dt=config["resnet_dt"],
            precision=precision,
        )
        for _ in range(1 if mixed_types else ntypes)
    ]
    dtype = np.float32 if precision == "float32" else np.float64

    def stat(n: int, value: float) -> np.ndarray | None:
        return np.full(n, value, dtype) if n > 0 else None

    return {
        "@class": "Fitting",
        "@version": 4,
        "var_name": "energy",
        "ntypes": ntypes,
        "dim_descrpt": dim_descrpt,
        "neuron": list(config["neuron"]),
        "resnet_dt": config["resnet_dt"],
        "numb_fparam": nfp,
        "numb_aparam": nap,
        "dim_case_embd": ncase,
        "default_fparam": config["default_fparam"],
        "activation_function": config["activation_function"],
        "precision": precision,
        "mixed_types": mixed_types,
        "nets": network_collection(nets, 0 if mixed_types else 1, ntypes, "fitting_network"),
        "rcond": config["rcond"],
        "exclude_types": list(config["exclude_types"]),
        "@variables": {
            "bias_atom_e": np.zeros((ntypes, 1), np.float64),
            "case_embd": np.zeros(ncase, dtype) if ncase > 0 else None,
            "fparam_avg": stat(nfp, 0.0),
            "fparam_inv_std": stat(nfp, 1.0),
            "aparam_avg": stat(nap, 0.0),
            "aparam_inv_std": stat(nap, 1.0),
        },
        "type_map": list(type_map),
        "tot_ener_zero": False,
        "trainable": _layer_flags(config.get("trainable", True), len(config["neuron"]) + 1),
        "layer_name": None,
        "use_aparam_as_mask": config["use_aparam_as_mask"],
        "spin": None,
        "type": "ener",
        "dim_out": 1,
        "atom_ener": config["atom_ener"] or None,
    }


def _layer_flags(trainable: bool | list[bool], nlayers: int) -> list[bool]:
    """One `trainable` flag per layer (hidden layers and output) from a bool or a list."""
    if isinstance(trainable, bool):
        return [trainable] * nlayers
    flags = [bool(t) for t in trainable]
    if len(flags) != nlayers:
        raise ConfigError(
            f"model.fitting_net.trainable has {len(flags)} flags for {nlayers} layers "
            "(one per neuron entry, plus the output layer)"
        )
    return flags
