"""The "ener" training loss of DeePMD-kit 3.2 (`EnergyStdLoss`, mse form) and its lcurve.out layout.

Written against the Python array API, so one function serves NumPy, PyTorch (autograd) and JAX.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from array_api_compat import array_namespace, device

from dpa.dpmodel.array_api import stop_gradient
from dpa.errors import ConfigError

Array = Any

__all__ = [
    "EnerLossConfig",
    "display_metrics",
    "ener_loss",
    "lcurve_header",
    "lcurve_line",
    "weighted_average",
]

# Keys of DeePMD's "ener" loss section that this implementation does not support; they must stay
# at their defaults (zero / false / None), otherwise `EnerLossConfig.from_params` refuses them.
_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "start_pref_pf": 0.0,
    "limit_pref_pf": 0.0,
    "start_pref_gf": 0.0,
    "limit_pref_gf": 0.0,
    "start_pref_h": 0.0,
    "limit_pref_h": 0.0,
    "relative_f": None,
    "enable_atom_ener_coeff": False,
    "use_huber": False,
    "f_use_norm": False,
    "use_default_pf": False,
    "loss_func": "mse",
}
_IGNORED_KEYS = {"type", "numb_generalized_coord", "huber_delta", "inference"}


@dataclass(frozen=True)
class EnerLossConfig:
    """Prefactors of the "ener" loss with DeePMD-kit's argcheck defaults; start_lr sets lr/start_lr."""

    start_pref_e: float = 0.02
    limit_pref_e: float = 1.0
    start_pref_f: float = 1000.0
    limit_pref_f: float = 1.0
    start_pref_v: float = 0.0
    limit_pref_v: float = 0.0
    start_pref_ae: float = 0.0
    limit_pref_ae: float = 0.0
    intensive_ener_virial: bool = False
    start_lr: float = 1.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any], start_lr: float) -> EnerLossConfig:
        """Build from a DeePMD "loss" input section (type "ener") and the schedule's start_lr."""
        kind = params.get("type", "ener")
        if kind != "ener":
            raise ConfigError(f"loss.type {kind!r} is not supported; only 'ener' is")
        known = {f.name for f in fields(cls)} - {"start_lr"}
        kwargs: dict[str, Any] = {}
        for key, val in params.items():
            if key in known:
                kwargs[key] = val
            elif key in _UNSUPPORTED_DEFAULTS:
                if val != _UNSUPPORTED_DEFAULTS[key]:
                    raise ConfigError(
                        f"loss.{key} = {val!r} is not supported; remove it or set it to "
                        f"{_UNSUPPORTED_DEFAULTS[key]!r}"
                    )
            elif key not in _IGNORED_KEYS:
                raise ConfigError(f"unknown key loss.{key}; expected one of {sorted(known)}")
        return cls(start_lr=float(start_lr), **kwargs)

    def active(self, term: str) -> bool:
        """Whether term 'e', 'f', 'v' or 'ae' is used: DeePMD needs both start and limit non-zero."""
        return (
            getattr(self, f"start_pref_{term}") != 0.0
            and getattr(self, f"limit_pref_{term}") != 0.0
        )

    def prefactor(self, term: str, lr: float) -> float:
        """Prefactor of `term` at learning rate lr: linear in lr/start_lr from limit to start."""
        start = getattr(self, f"start_pref_{term}")
        limit = getattr(self, f"limit_pref_{term}")
        return limit + (start - limit) * (lr / self.start_lr)


def _find(label: Mapping[str, Any], key: str) -> Any:
    """The presence flag find_<key> as a python float when concrete (1.0 if the label has no flag)."""
    flag = label.get(f"find_{key}", 1.0)
    try:
        return float(flag)
    except Exception:  # a traced array (jax.jit): keep it symbolic
        return flag


def _masked_atom_mean(xp: Any, elem: Array, mask: Array, ncomp: int) -> Array:
    """sum(elem * mask) / (ncomp * sum(mask)) over the batch; 0 for a batch of only padding."""
    node_elem = xp.reshape(elem, (-1, ncomp))
    node_mask = xp.reshape(mask, (-1, 1))
    total = xp.sum(node_elem * node_mask)
    dof = xp.sum(node_mask) * ncomp
    has = dof > 0
    safe = xp.where(has, dof, xp.ones_like(dof))
    return xp.where(has, total / safe, xp.zeros_like(total))


def ener_loss(
    pred: Mapping[str, Array],
    label: Mapping[str, Array],
    natoms: int,
    lr: float,
    cfg: EnerLossConfig,
) -> tuple[Array, dict[str, Array]]:
    """The "ener" loss and the metrics DeePMD reports (rmse_e/f/v/ae, rmse, l2_*), any array library.

    pred: energy (nf,), force (nf,nat,3), virial (nf,9|3,3), atom_energy (nf,nat) and an optional
    mask (nf,nat) of real atoms; label: the same names (atom energy as atom_ener) plus optional
    find_<name> flags (default 1). A term needs non-zero prefactors, the prediction and the label;
    a flag of 0 removes it from the loss and turns its metric into NaN, as in DeePMD-kit.
    """
    present = [pred[k] for k in ("energy", "force", "virial", "atom_energy") if k in pred]
    if not present:
        raise ValueError("ener_loss: pred holds none of energy, force, virial, atom_energy")
    xp = array_namespace(*present)
    ref = present[0]
    dtype = ref.dtype
    dev = device(ref)
    nan = xp.asarray(math.nan, dtype=dtype, device=dev)
    loss = xp.zeros((), dtype=dtype, device=dev)
    metrics: dict[str, Array] = {}
    atom_norm = 1.0 / natoms
    norm_exp = 2 if cfg.intensive_ener_virial else 1

    def shown(value: Array, find: Any) -> Array:
        value = stop_gradient(value)
        if isinstance(find, float):
            return value if find != 0.0 else nan
        return xp.where(xp.asarray(find) != 0, value, nan)

    def add(term: Array, pref: float, find: Any, scale: float | None = None) -> None:
        # (pref * find) * term [* scale in front], in DeePMD's order of operations
        nonlocal loss
        if isinstance(find, float):
            if find == 0.0:
                return
            value = (pref * find) * term
        else:
            value = (pref * xp.astype(xp.asarray(find), dtype)) * term
        loss = loss + (value if scale is None else scale * value)

    mask = pred.get("mask")
    if mask is not None:
        mask = xp.astype(mask, dtype)
        nf = mask.shape[0]
        inv = xp.reshape(1.0 / xp.sum(mask, axis=-1), (-1,))

    if cfg.active("e") and "energy" in pred and "energy" in label:
        find = _find(label, "energy")
        pref = cfg.prefactor("e", lr)
        sq = xp.square(xp.reshape(pred["energy"], (-1,)) - xp.reshape(label["energy"], (-1,)))
        l2 = xp.mean(sq)
        metrics["l2_ener_loss"] = shown(l2, find)
        if mask is not None:
            add(xp.mean(sq * inv**norm_exp), pref, find)
            rmse_e = xp.sqrt(xp.mean(sq * inv**2))
        else:
            add(l2, pref, find, atom_norm**norm_exp)
            rmse_e = xp.sqrt(l2) * atom_norm
        metrics["rmse_e"] = shown(rmse_e, find)

    if cfg.active("f") and "force" in pred and "force" in label:
        find = _find(label, "force")
        pref = cfg.prefactor("f", lr)
        diff = xp.reshape(label["force"] - pred["force"], (-1,))
        l2 = xp.mean(xp.square(diff))
        metrics["l2_force_loss"] = shown(l2, find)
        if mask is not None:
            l2 = _masked_atom_mean(xp, xp.square(diff), mask, 3)
        add(l2, pref, find)
        metrics["rmse_f"] = shown(xp.sqrt(l2), find)

    if cfg.active("v") and "virial" in pred and "virial" in label:
        find = _find(label, "virial")
        pref = cfg.prefactor("v", lr)
        diff = xp.reshape(label["virial"], (-1, 9)) - xp.reshape(pred["virial"], (-1, 9))
        sq = xp.square(diff)
        l2 = xp.mean(sq)
        metrics["l2_virial_loss"] = shown(l2, find)
        if mask is not None:
            per_frame = xp.mean(xp.reshape(sq, (nf, -1)), axis=-1)
            add(xp.mean(per_frame * inv**norm_exp), pref, find)
            rmse_v = xp.sqrt(xp.mean(per_frame * inv**2))
        else:
            add(l2, pref, find, atom_norm**norm_exp)
            rmse_v = xp.sqrt(l2) * atom_norm
        metrics["rmse_v"] = shown(rmse_v, find)

    ae_key = "atom_ener" if "atom_ener" in label else "atom_energy"
    if cfg.active("ae") and "atom_energy" in pred and ae_key in label:
        find = _find(label, ae_key)
        pref = cfg.prefactor("ae", lr)
        diff = xp.reshape(label[ae_key], (-1,)) - xp.reshape(pred["atom_energy"], (-1,))
        l2 = xp.mean(xp.square(diff))
        metrics["l2_atom_ener_loss"] = shown(l2, find)
        if mask is not None:
            l2 = _masked_atom_mean(xp, xp.square(diff), mask, 1)
        add(l2, pref, find)
        metrics["rmse_ae"] = shown(xp.sqrt(l2), find)

    metrics["rmse"] = xp.sqrt(stop_gradient(loss))
    return loss, metrics


def display_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics DeePMD shows (every key without "l2_"), as python floats, sorted by key."""
    return {k: float(metrics[k]) for k in sorted(metrics) if "l2_" not in k}


def weighted_average(results: Sequence[tuple[Mapping[str, Any], int]]) -> dict[str, float]:
    """Average of displayed metrics over validation batches, each weighted by its real atom count.

    `results` holds (metrics, nframes * natoms) per batch, as DeePMD averages numb_btch batches.
    """
    sums: dict[str, float] = {}
    total = 0
    for metrics, n in results:
        total += int(n)
        for k, v in display_metrics(metrics).items():
            sums[k] = sums.get(k, 0.0) + v * int(n)
    return {k: v / total for k, v in sums.items()} if total else {}


def lcurve_header(keys: Iterable[str], with_validation: bool = True) -> str:
    """The two header lines DeePMD writes to lcurve.out for one task (keys sorted, "l2_" dropped)."""
    names = sorted(k for k in keys if "l2_" not in k)
    text = "# {:5s}".format("step")
    for k in names:
        if with_validation:
            text += f"   {k + '_val':>11s} {k + '_trn':>11s}"
        else:
            text += f"   {k + '_trn':>11s}"
    text += "   {:8s}\n".format("lr")
    text += "# If there is no available reference data, rmse_*_{val,trn} will print nan\n"
    return text


def lcurve_line(
    step: int,
    val_metrics: Mapping[str, Any] | None,
    trn_metrics: Mapping[str, Any],
    lr: float,
) -> str:
    """One lcurve.out row: step (1-based display step), val/trn pairs by sorted key, then lr.

    With `val_metrics` None or empty only the training columns are written, as DeePMD does.
    """
    names = sorted(k for k in trn_metrics if "l2_" not in k)
    text = f"{int(step):7d}"
    for k in names:
        if val_metrics:
            text += f"   {float(val_metrics[k]):11.2e} {float(trn_metrics[k]):11.2e}"
        else:
            text += f"   {float(trn_metrics[k]):11.2e}"
    text += f"   {float(lr):8.1e}\n"
    return text
