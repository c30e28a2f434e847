"""TensorFlow: evaluates a model exported as a SavedModel (`dpa convert m.dp m.savedmodel`).

A SavedModel is a program, so dpa runs a file's graph only when asked for this backend
(`dpa.load_model("m.savedmodel", backend="tensorflow")`, `--backend tensorflow`, DPA_BACKEND),
and logs a warning that this trusts the file. Before TensorFlow loads it, the file is checked
without running anything (`dpa.backends.tensorflow.graph_check`): only the ops, objects and signatures dpa's
exporter writes, and variables equal to the model embedded in assets/dpa_model.dp; metadata comes
from assets/dpa_metadata.json. dpa builds the neighbor list in NumPy (O(N) cell list, so large
systems work) and calls the `evaluate_nlist` signature; forces and virials come from the gradients
inside the exported graph. Any other model given to this backend (another file, a `Model`, or a
SavedModel's model changed after loading, e.g. to another precision) is exported in memory first
(jax2tf, a few seconds): what its SavedModel would compute. The atom virial is not exported.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up banners are not errors

import tensorflow as tf  # noqa: E402

from dpa.backends.base import Backend  # noqa: E402
from dpa.backends.tensorflow.graph_check import check_savedmodel, check_variables, identical  # noqa: E402
from dpa.backends.tensorflow.layout import METADATA_ASSET, MODEL_ASSET  # noqa: E402
from dpa.backends.tensorflow.savedmodel import read_metadata  # noqa: E402
from dpa.dpmodel.batch import Batch  # noqa: E402
from dpa.errors import BackendError, DataError, ModelFileError  # noqa: E402
from dpa.tree import (
    jsonable,  # noqa: E402
    split_variables,  # noqa: E402
)

log = logging.getLogger("dpa")


class _Prepared:
    """The callable `evaluate_nlist` signature of a SavedModel (it takes full-width lists)."""

    def __init__(self, fn: Any, keep: Any = None, meta: dict | None = None) -> None:
        self.fn = fn
        self.keep = keep  # the loaded module, whose variables the signature reads
        self.meta = meta or {}


def _same_tree(tree: dict, other: dict) -> bool:
    """Whether two model trees are equal: structure, options and every array, exactly."""
    skeleton, leaves = split_variables(tree)
    other_skeleton, other_leaves = split_variables(other)
    if jsonable(skeleton) != jsonable(other_skeleton) or len(leaves) != len(other_leaves):
        return False
    return all(
        identical(np.asarray(a), np.asarray(b)) for a, b in zip(leaves, other_leaves, strict=True)
    )


def _embedded_tree(path: Path) -> dict:
    """The model tree embedded in the SavedModel (assets/dpa_model.dp), read without TensorFlow."""
    from dpa.backends.tensorflow import savedmodel

    return savedmodel.read(path)["model"]


def _release(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string, for comparisons."""
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def _too_old_hint(meta: dict) -> str:
    """Why this TensorFlow may fail on the SavedModel's StableHLO, if it is older than the one
    it was exported with (jax2tf's serialized module needs a TensorFlow at least as new)."""
    versions = meta.get("versions") or {}
    exported = str(versions.get("tensorflow", ""))
    if not exported or _release(tf.__version__) >= _release(exported):
        return ""
    return (
        f"; it was exported with jax {versions.get('jax')} and TensorFlow {exported}, and "
        f"TensorFlow {tf.__version__} may be too old to read it: upgrade TensorFlow"
    )


def _verify(path: Path, tree: dict) -> dict:
    """The file's metadata, after checking without running anything that its graph holds only
    what dpa's exporter writes and that its variables are exactly `tree`'s arrays."""
    meta = read_metadata(path)  # format and version checks from the assets
    skeleton, leaves = split_variables(tree)
    if meta.get("model_tree") != jsonable(skeleton):
        raise ModelFileError(
            f"{path}: assets/{METADATA_ASSET} describes another model than assets/"
            f"{MODEL_ASSET}; export the model again with `dpa convert model.dp model.savedmodel`"
        )
    check_savedmodel(path)
    check_variables(path, [np.asarray(a) for a in leaves])
    return meta


def _load(path: Path, tree: dict) -> _Prepared:
    """The SavedModel at `path`, checked, loaded and ready to run (it holds `tree`)."""
    meta = _verify(path, tree)
    log.warning(
        "%s: running the SavedModel's TensorFlow graph (backend 'tensorflow') trusts the file: "
        "it is a program; load it without backend='tensorflow' to evaluate its embedded model",
        path,
    )
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:  # a damaged SavedModel, or one too new for this TensorFlow
        raise ModelFileError(
            f"{path}: TensorFlow cannot load this SavedModel ({err}){_too_old_hint(meta)}"
        ) from err
    signatures = getattr(loaded, "signatures", {})
    if "evaluate_nlist" not in signatures:
        raise ModelFileError(f"{path}: not a SavedModel exported by dpa (signatures missing)")
    return _Prepared(signatures["evaluate_nlist"], loaded, meta)


class TensorFlowBackend(Backend):
    """Runs the exported graph: a SavedModel file, or the in-memory export of a model tree."""

    name = "tensorflow"
    can_compute_forces = True
    takes_trimmed_lists = False  # the exported signature has a fixed list width

    def __init__(self, savedmodel: str | os.PathLike | None = None) -> None:
        self._savedmodel = None if savedmodel is None else Path(savedmodel)

    def bound_to(self, path: str | os.PathLike) -> TensorFlowBackend:
        """This backend running the SavedModel at `path` itself (other files: exported)."""
        return TensorFlowBackend(path) if Path(path).suffix == ".savedmodel" else self

    @property
    def device(self) -> str:
        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else "cpu"

    def prepare(self, tree: dict) -> _Prepared:
        """The bound SavedModel when `tree` is its embedded model, else an in-memory export."""
        path = self._savedmodel
        if path is not None and _same_tree(tree, _embedded_tree(path)):
            return _load(path, tree)
        from dpa.backends.tensorflow.export import build_module

        module = build_module({"model": tree})
        return _Prepared(module.signatures["evaluate_nlist"], module)

    def evaluate(self, prepared, batch: Batch, atomic: bool) -> dict[str, np.ndarray]:
        coord, box, nlist, shift, atype = (
            batch.coord,
            batch.box,
            batch.nlist,
            batch.shift,
            batch.atype,
        )
        fparam, aparam = batch.fparam, batch.aparam
        if atomic:
            raise BackendError(
                "the SavedModel export has no atom virial; evaluate with atomic=False, or load "
                "the model with backend='jax' or 'torch' (a .savedmodel holds the full model)"
            )
        if fparam is not None or aparam is not None:
            raise BackendError("the SavedModel export takes no fparam/aparam")
        nf, nat = coord.shape[:2]
        try:
            out = prepared.fn(
                coord=tf.constant(coord, tf.float64),
                atype=tf.constant(np.broadcast_to(atype, (nf, nat)), tf.int32),
                box=tf.constant(np.zeros((nf, 3, 3)) if box is None else box, tf.float64),
                nlist=tf.constant(nlist, tf.int64),
                shift=tf.constant(shift, tf.int64),
            )
        except tf.errors.InvalidArgumentError as err:  # the graph's own input checks
            if "vhlo" in err.message.lower() or "stablehlo" in err.message.lower():
                hint = _too_old_hint(prepared.meta)
                msg = f"TensorFlow cannot run the SavedModel{hint}: {err.message}"
                raise BackendError(msg) from None
            raise DataError(f"the SavedModel refused the input: {err.message}") from None
        return {k: v.numpy() for k, v in out.items()}


def make_backend(savedmodel: str | os.PathLike | None = None) -> TensorFlowBackend:
    return TensorFlowBackend(savedmodel)
