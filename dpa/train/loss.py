"""The "ener" training loss of DeePMD-kit 3.2 (`EnergyStdLoss`: mse, mae and Huber) and its
lcurve.out layout.

Written against the Python array API, so one function serves NumPy, PyTorch (autograd) and JAX.
Every term follows deepmd/pt/loss/ener.py (`EnergyStdLoss.forward`), order of operations included.
The options DeePMD-kit has and dpa lacks are refused by the schema (dpa.train.config.LossConfig),
which is also the one place of the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from array_api_compat import array_namespace, device
from pydantic import ValidationError

from dpa.dpmodel.array_api import stop_gradient
from dpa.errors import ConfigError
from dpa.schema import format_error, strip_comments

from .config import LossConfig

Array = Any

__all__ = [
    "EnerLossConfig",
    "display_metrics",
    "ener_loss",
    "lcurve_header",
    "lcurve_line",
    "weighted_average",
]

TERMS = ("e", "f", "v", "ae")


def _default(key: str) -> Any:
    """The schema's default of loss key `key` (DeePMD-kit's argcheck default)."""
    return LossConfig.model_fields[key].default


@dataclass(frozen=True)
class EnerLossConfig:
    """The "ener" loss as `ener_loss` reads it: a validated LossConfig plus start_lr (lr/start_lr
    moves each prefactor). Build it with `from_config` or `from_params`; defaults are LossConfig's.
    """

    start_pref_e: float = _default("start_pref_e")
    limit_pref_e: float = _default("limit_pref_e")
    start_pref_f: float = _default("start_pref_f")
    limit_pref_f: float = _default("limit_pref_f")
    start_pref_v: float = _default("start_pref_v")
    limit_pref_v: float = _default("limit_pref_v")
    start_pref_ae: float = _default("start_pref_ae")
    limit_pref_ae: float = _default("limit_pref_ae")
    intensive_ener_virial: bool = _default("intensive_ener_virial")
    loss_func: str = _default("loss_func")
    use_huber: bool = _default("use_huber")
    huber_delta: float | tuple[float, ...] = _default("huber_delta")
    f_use_norm: bool = _default("f_use_norm")
    relative_f: float | None = _default("relative_f")
    start_lr: float = 1.0

    @classmethod
    def from_config(cls, loss: LossConfig, start_lr: float) -> EnerLossConfig:
        """From the validated `loss` section and the schedule's start_lr."""
        values = {f.name: getattr(loss, f.name) for f in fields(cls) if f.name != "start_lr"}
        if isinstance(values["huber_delta"], list):
            values["huber_delta"] = tuple(float(d) for d in values["huber_delta"])
        return cls(start_lr=float(start_lr), **values)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], start_lr: float) -> EnerLossConfig:
        """From a raw "loss" input section, validated by LossConfig (ConfigError names the key)."""
        try:
            loss = LossConfig.model_validate(strip_comments(dict(params)))
        except ValidationError as err:
            raise ConfigError(format_error(err, "loss", LossConfig)) from None
        return cls.from_config(loss, start_lr)

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

    @property
    def huber(self) -> bool:
        """Whether the Huber form is used: DeePMD-kit applies it only with loss_func 'mse'."""
        return self.use_huber and self.loss_func == "mse"

    def deltas(self) -> tuple[float, float, float]:
        """Huber thresholds (energy and atomic energy, force, virial) from one value or three."""
        if isinstance(self.huber_delta, (tuple, list)):
            energy, force, virial = self.huber_delta
            return float(energy), float(force), float(virial)
        return (float(self.huber_delta),) * 3

    def metric_keys(self) -> list[str]:
        """The displayed metrics (lcurve columns): rmse, then rmse_<term> or mae_<term> per term."""
        kind = "mae" if self.loss_func == "mae" else "rmse"
        return ["rmse"] + [f"{kind}_{term}" for term in TERMS if self.active(term)]


def _find(label: Mapping[str, Any], key: str) -> Any:
    """The presence flag find_<key> as a python float when concrete (1.0 if the label has no flag)."""
    flag = label.get(f"find_{key}", 1.0)
    try:
        return float(flag)
    except Exception:  # a traced array (jax.jit): keep it symbolic
        return flag


def _abs(xp: Any, x: Array) -> Array:
    """|x| with derivative sign(x), so 0 at x = 0 as torch.abs (jax's abs has 1 there)."""
    return x * xp.sign(x)


def _norm(xp: Any, x: Array) -> Array:
    """Euclidean norm over the last axis, with gradient 0 at a zero vector (as torch's norm)."""
    sq = xp.sum(xp.square(x), axis=-1)
    has = sq > 0
    return xp.where(has, xp.sqrt(xp.where(has, sq, xp.ones_like(sq))), xp.zeros_like(sq))


def _huber(xp: Any, residual: Array, delta: float) -> Array:
    """Elementwise Huber: r^2/2 up to |r| = delta (inclusive), delta (|r| - delta/2) beyond."""
    size = _abs(xp, residual)
    quadratic = 0.5 * xp.square(residual)
    linear = delta * (size - 0.5 * delta)
    return xp.where(size <= delta, quadratic, linear)


def _masked_atom_mean(xp: Any, elem: Array, mask: Array, ncomp: int) -> Array:
    """sum(elem * mask) / (ncomp * sum(mask)) over the batch; 0 for a batch of only padding."""
    node_elem = xp.reshape(elem, (-1, ncomp))
    node_mask = xp.reshape(mask, (-1, 1))
    total = xp.sum(node_elem * node_mask)
    dof = xp.sum(node_mask) * ncomp
    has = dof > 0
    safe = xp.where(has, dof, xp.ones_like(dof))
    return xp.where(has, total / safe, xp.zeros_like(total))


@dataclass(frozen=True)
class _Frames:
    """What every term needs: the namespace, config, 1/natoms and, with a mask, per-frame 1/N."""

    xp: Any
    cfg: EnerLossConfig
    atom_norm: float
    mask: Array | None = None  # (nf, nat) of real atoms, in the loss's dtype
    inv: Array | None = None  # (nf,) 1 / real atoms of each frame

    def atom_mean(self, elem: Array, ncomp: int) -> Array:
        """Mean of a per-atom quantity (rows of ncomp), over real atoms only when masked."""
        if self.mask is None:
            return self.xp.mean(elem)
        return _masked_atom_mean(self.xp, elem, self.mask, ncomp)


@dataclass(frozen=True)
class _Term:
    """One loss term: `value` enters as scale * ((pref * find) * value); `metrics` are shown."""

    value: Array
    metrics: dict[str, Array]
    scale: float | None = None


def _extensive_term(
    fr: _Frames, pred: Array, label: Array, ncomp: int, delta: float, names: tuple[str, str, str]
) -> _Term:
    """Energy (ncomp 1) or virial (ncomp 9): a per-frame total, weighed per atom (1/N)."""
    xp, cfg = fr.xp, fr.cfg
    pred, label = xp.reshape(pred, (-1, ncomp)), xp.reshape(label, (-1, ncomp))
    l2_name, rmse_name, mae_name = names
    if cfg.loss_func == "mae":
        err = _abs(xp, label - pred)
        if fr.inv is None:
            l1 = xp.mean(err)
            return _Term(l1, {mae_name: l1 * fr.atom_norm}, fr.atom_norm)
        value = xp.mean(xp.mean(err, axis=-1) * fr.inv)
        return _Term(value, {mae_name: value})
    sq = xp.square(label - pred)
    l2 = xp.mean(sq)
    exp = 2 if cfg.intensive_ener_virial else 1
    if fr.inv is None:
        metrics = {l2_name: l2, rmse_name: xp.sqrt(l2) * fr.atom_norm}
        if cfg.huber:
            residual = fr.atom_norm * label - fr.atom_norm * pred
            return _Term(xp.mean(_huber(xp, residual, delta)), metrics)
        return _Term(l2, metrics, fr.atom_norm**exp)
    per_frame = xp.mean(sq, axis=-1)
    metrics = {l2_name: l2, rmse_name: xp.sqrt(xp.mean(per_frame * fr.inv**2))}
    if cfg.huber:
        inv = xp.reshape(fr.inv, (-1, 1))
        return _Term(xp.mean(_huber(xp, inv * label - inv * pred, delta)), metrics)
    return _Term(xp.mean(per_frame * fr.inv**exp), metrics)


def _energy_term(fr: _Frames, pred: Array, label: Array) -> _Term:
    """The energy term: squared, Huber (on E/N) or absolute error of the frame energy."""
    names = ("l2_ener_loss", "rmse_e", "mae_e")
    return _extensive_term(fr, pred, label, 1, fr.cfg.deltas()[0], names)


def _virial_term(fr: _Frames, pred: Array, label: Array) -> _Term:
    """The virial term: squared, Huber (on V/N) or absolute error of the 9 components."""
    names = ("l2_virial_loss", "rmse_v", "mae_v")
    return _extensive_term(fr, pred, label, 9, fr.cfg.deltas()[2], names)


def _force_term(fr: _Frames, pred: Array, label: Array) -> _Term:
    """The force term: per component, or per atom as |dF| with f_use_norm (mae and Huber only);
    relative_f divides each atom's error by |F_label| + relative_f first."""
    xp, cfg = fr.xp, fr.cfg
    label3 = xp.reshape(label, (-1, 3))
    diff = label3 - xp.reshape(pred, (-1, 3))
    if cfg.relative_f is not None:
        diff = diff / (xp.reshape(_norm(xp, label3), (-1, 1)) + cfg.relative_f)
    if cfg.f_use_norm and (cfg.huber or cfg.loss_func == "mae"):
        per_atom = xp.reshape(_norm(xp, diff), (-1, 1))  # one error per atom
    else:
        per_atom = diff  # three errors per atom
    if cfg.loss_func == "mae":
        err = per_atom if per_atom.shape[-1] == 1 else _abs(xp, per_atom)  # a norm is >= 0
        value = fr.atom_mean(err, err.shape[-1])
        return _Term(value, {"mae_f": value})
    sq = xp.square(diff)
    l2_all = xp.mean(sq)  # over padding atoms too, as DeePMD-kit's l2_force_loss
    l2 = l2_all if fr.mask is None else fr.atom_mean(sq, 3)
    metrics = {"l2_force_loss": l2_all, "rmse_f": xp.sqrt(l2)}
    if cfg.huber:
        elem = _huber(xp, per_atom, cfg.deltas()[1])
        return _Term(fr.atom_mean(elem, elem.shape[-1]), metrics)
    return _Term(l2, metrics)


def _atom_energy_term(fr: _Frames, pred: Array, label: Array) -> _Term:
    """The atomic-energy term: squared, Huber (energy threshold) or absolute error per atom."""
    xp, cfg = fr.xp, fr.cfg
    diff = xp.reshape(label, (-1, 1)) - xp.reshape(pred, (-1, 1))
    if cfg.loss_func == "mae":
        value = fr.atom_mean(_abs(xp, diff), 1)
        return _Term(value, {"mae_ae": value})
    sq = xp.square(diff)
    l2_all = xp.mean(sq)
    l2 = l2_all if fr.mask is None else fr.atom_mean(sq, 1)
    metrics = {"l2_atom_ener_loss": l2_all, "rmse_ae": xp.sqrt(l2)}
    if cfg.huber:
        return _Term(fr.atom_mean(_huber(xp, diff, cfg.deltas()[0]), 1), metrics)
    return _Term(l2, metrics)


def _frames(
    xp: Any, pred: Mapping[str, Array], cfg: EnerLossConfig, natoms: int, dtype: Any
) -> _Frames:
    """The per-batch normalization: 1/natoms, and per-frame 1/N when pred carries a mask."""
    mask = pred.get("mask")
    if mask is None:
        return _Frames(xp, cfg, 1.0 / natoms)
    mask = xp.astype(mask, dtype)
    inv = xp.reshape(1.0 / xp.sum(mask, axis=-1), (-1,))
    return _Frames(xp, cfg, 1.0 / natoms, mask, inv)


def ener_loss(
    pred: Mapping[str, Array],
    label: Mapping[str, Array],
    natoms: int,
    lr: float,
    cfg: EnerLossConfig,
) -> tuple[Array, dict[str, Array]]:
    """The "ener" loss and the metrics DeePMD reports, any array library.

    Metrics: rmse (sqrt of the loss), then per term l2_* and rmse_* (mse, also with Huber) or
    mae_* (loss_func 'mae'). pred: energy (nf,), force (nf,nat,3), virial (nf,9|3,3), atom_energy
    (nf,nat) and an optional mask (nf,nat) of real atoms; label: the same names (atom energy as
    atom_ener) plus optional find_<name> flags (default 1). A term needs non-zero prefactors, the
    prediction and the label; a flag of 0 removes it from the loss and turns its metrics into NaN,
    as in DeePMD-kit.
    """
    present = [pred[k] for k in ("energy", "force", "virial", "atom_energy") if k in pred]
    if not present:
        raise ValueError("ener_loss: pred holds none of energy, force, virial, atom_energy")
    xp = array_namespace(*present)
    dtype = present[0].dtype
    nan = xp.asarray(math.nan, dtype=dtype, device=device(present[0]))
    loss = xp.zeros((), dtype=dtype, device=device(present[0]))
    metrics: dict[str, Array] = {}
    fr = _frames(xp, pred, cfg, natoms, dtype)

    def shown(value: Array, find: Any) -> Array:
        value = stop_gradient(value)
        if isinstance(find, float):
            return value if find != 0.0 else nan
        return xp.where(xp.asarray(find) != 0, value, nan)

    def add(term: _Term, pref: float, find: Any) -> None:
        # scale * ((pref * find) * value), in DeePMD's order of operations
        nonlocal loss
        metrics.update({k: shown(v, find) for k, v in term.metrics.items()})
        if isinstance(find, float):
            if find == 0.0:
                return
            value = (pref * find) * term.value
        else:
            value = (pref * xp.astype(xp.asarray(find), dtype)) * term.value
        loss = loss + (value if term.scale is None else term.scale * value)

    ae_key = "atom_ener" if "atom_ener" in label else "atom_energy"
    terms = (
        ("e", "energy", "energy", _energy_term),
        ("f", "force", "force", _force_term),
        ("v", "virial", "virial", _virial_term),
        ("ae", "atom_energy", ae_key, _atom_energy_term),
    )
    for term, pred_key, label_key, build in terms:
        if cfg.active(term) and pred_key in pred and label_key in label:
            find = _find(label, label_key)
            pref = cfg.prefactor(term, lr)
            add(build(fr, pred[pred_key], label[label_key]), pref, find)

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
    return multitask_lcurve_header([(None, keys, with_validation)])


def lcurve_line(
    step: int,
    val_metrics: Mapping[str, Any] | None,
    trn_metrics: Mapping[str, Any],
    lr: float,
) -> str:
    """One lcurve.out row: step (1-based display step), val/trn pairs by sorted key, then lr.

    With `val_metrics` None or empty only the training columns are written, as DeePMD does.
    """
    return multitask_lcurve_line(step, [(val_metrics, trn_metrics)], lr)


def multitask_lcurve_header(tasks: Iterable[tuple[str | None, Iterable[str], bool]]) -> str:
    """The header of a multi-task lcurve.out: per (branch, metric keys, has validation), in
    model_dict order, the sorted keys as `<k>_val_<branch> <k>_trn_<branch>` (or only `_trn_`
    without validation data), as DeePMD-kit writes it; branch None: a single task's `<k>_val`."""
    text = "# {:5s}".format("step")
    for name, keys, with_validation in tasks:
        tail = "" if name is None else f"_{name}"
        for k in sorted(k for k in keys if "l2_" not in k):
            if with_validation:
                text += f"   {f'{k}_val{tail}':>11s} {f'{k}_trn{tail}':>11s}"
            else:
                text += f"   {f'{k}_trn{tail}':>11s}"
    text += "   {:8s}\n".format("lr")
    text += "# If there is no available reference data, rmse_*_{val,trn} will print nan\n"
    return text


def multitask_lcurve_line(
    step: int, rows: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, Any]]], lr: float
) -> str:
    """One multi-task lcurve.out row: per branch (validation or None, training) metrics."""
    text = f"{int(step):7d}"
    for val_metrics, trn_metrics in rows:
        for k in sorted(k for k in trn_metrics if "l2_" not in k):
            if val_metrics:
                text += f"   {float(val_metrics[k]):11.2e} {float(trn_metrics[k]):11.2e}"
            else:
                text += f"   {float(trn_metrics[k]):11.2e}"
    text += f"   {float(lr):8.1e}\n"
    return text
