"""`.pt`: DeePMD-kit PyTorch training checkpoints (`dp --pt train`), read into dpa data dicts.

Reading only: dpa writes `.dp`, `.pth` and `.jax`, never `.pt`. The file is opened with
`torch.load(weights_only=True)`, which unpickles plain data only (dicts, lists, numbers,
strings, tensors), so opening a checkpoint never runs code from it.

A checkpoint is `{"model": state_dict, "optimizer": ..., ["ema": ...]}` (or a bare state dict).
Its state dict holds `_extra_state.model_params` (the normalized `model` config) and one tensor
per parameter or buffer, named `model.<head>.<module path>`; `<head>` is `Default` for a
single-task model, else each branch of `model_params["model_dict"]`. The dp tree of a branch is
`build_model(config).tree` (the same structure DeePMD-kit serializes) with every array replaced
by the tensor the renaming rules below map to it: the weights are the file's, never random.
A tensor several branches share (a shared descriptor or fitting: one storage in the file)
becomes one NumPy array at each place, so a multi-task model stores it once.
The layout and the rules are documented in docs/deepmd_pt_checkpoints.md.

EMA: a checkpoint's "ema" entry is not read; the regular weights are what `dp freeze` uses.
DeePMD-kit's `model_ema.ckpt-N.pt` file (same layout) holds the EMA weights.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from typing import Any

import numpy as np

from dpa._version import __version__, pip_install
from dpa.errors import DPAError, ModelFileError

__all__ = ["read"]

#: The head name of a single-task checkpoint.
SINGLE_HEAD = "Default"

Path_ = tuple[str | int, ...]

# state-dict keys that are no tree array: the second name of every network collection,
# compression placeholders (zero-size), and the buffer copy of the list `default_fparam`
_SKIP = re.compile(
    r"(^|\.)_networks\.|\.type_embd_data$|\.compress_(info|data)\.\d+$"
    r"|^atomic_model\.fitting_net\.default_fparam_tensor$"
)
# a descriptor's environment blocks: state-dict module -> tree node, per tree descriptor type
_BLOCKS: dict[str, dict[str, str | None]] = {
    "se_e2_a": {"sea": None},
    "dpa1": {"se_atten": None},
    "se_atten_v2": {"se_atten": None},
    "dpa2": {
        "repinit": "repinit_variable",
        "repinit_three_body": "repinit_three_body_variable",
        "repformers": "repformers_variable",
    },
    "dpa3": {"repflows": "repflow_variable"},
}
# module names that the tree calls otherwise (inside a block)
_RENAME = {
    "filter_layers": "embeddings",
    "filter_layers_strip": "embeddings_strip",
    "dpa1_attention": "attention_layers",
}
# a block's list of layers: state-dict block -> tree list name
_LAYER_LISTS = {"repformers": "repformer_layers", "repflows": "repflow_layers"}
# parameters of a Layer / LayerNorm -> tree variable names
_LEAF = {"matrix": "w", "bias": "b", "idt": "idt"}
_STATS = {"mean": "davg", "stddev": "dstd"}
_RESIDUAL = re.compile(r"^(g1|g2|h2|n|e|a)_residual$")
_TYPE_EMBEDDING = re.compile(r"^(type|chg|spin)_embedding\.embedding\.embedding_net\.(.+)$")
_DESCRIPTOR_ALIASES = {"se_a": "se_e2_a", "se_atten": "dpa1"}


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The data dict of a DeePMD-kit `.pt` checkpoint: a single-task `Model`'s, or a
    `MultiTaskModel`'s with one branch per entry of `model_dict`."""
    from dpa.multitask import MULTITASK_CLASS

    state = _state_dict(path)
    params = _model_params(state, path)
    arrays = _ArrayCopies()
    skeletons = _Skeletons()
    meta = {"backend": "PyTorch", "software": "dpa", "version": __version__}
    if "model_dict" not in params:
        branch = _read_branch(state, SINGLE_HEAD, params, arrays, skeletons, path)
        return {**meta, **branch}
    model_dict = params["model_dict"]
    if not isinstance(model_dict, dict) or not model_dict:
        raise ModelFileError(
            f"{path}: _extra_state.model_params.model_dict is empty or not a dict; "
            "this is not a DeePMD-kit multi-task checkpoint dpa can read"
        )
    branches = {
        name: _read_branch(state, name, config, arrays, skeletons, path)
        for name, config in model_dict.items()
    }
    return {
        **meta,
        "model": {"@class": MULTITASK_CLASS, "@version": 1, "branches": branches},
        "model_def_script": params,
        "@variables": {},
    }


def _state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's state dict, loaded as plain data only."""
    try:
        import torch
    except ImportError as err:
        raise ModelFileError(
            f"{path}: reading DeePMD-kit .pt checkpoints needs PyTorch: {pip_install('torch')}"
        ) from err
    try:
        with warnings.catch_warnings():  # a TorchScript archive is refused below, not loaded
            warnings.filterwarnings("ignore", message=".*TorchScript archive")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise ModelFileError(
                f"{path}: the file holds Python objects other than plain data (tensors, dicts, "
                "lists, numbers, strings); dpa opens .pt files with torch.load(weights_only="
                "True) and never runs code from a file. A DeePMD-kit training checkpoint holds "
                "plain data only: use one written by `dp --pt train`"
            ) from None
        raise ModelFileError(f"{path}: not a PyTorch checkpoint ({err})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        if "torchscript" in str(err).lower():
            raise ModelFileError(
                f"{path}: a TorchScript program (such as a frozen DeePMD-kit model), not a "
                "training checkpoint; dpa never runs TorchScript: read the checkpoint "
                "(model.ckpt.pt) instead, or convert with `dp convert-backend model.pth model.dp`"
            ) from None
        raise ModelFileError(f"{path}: not a PyTorch checkpoint ({err})") from None
    if isinstance(payload, dict) and payload.get("format") == "dpa.pth":
        raise ModelFileError(f"{path}: a dpa .pth model file saved as .pt; rename it to .pth")
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ModelFileError(
            f"{path}: not a DeePMD-kit checkpoint: expected a dict with a 'model' state dict "
            f"(or a state dict), found {type(payload).__name__}"
        )
    return state


def _model_params(state: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """`_extra_state.model_params`: the config DeePMD-kit stores in every checkpoint."""
    extra = state.get("_extra_state")
    params = extra.get("model_params") if isinstance(extra, dict) else None
    if not isinstance(params, dict):
        raise ModelFileError(
            f"{path}: not a DeePMD-kit checkpoint: its state dict has no "
            "'_extra_state.model_params' (the model config DeePMD-kit writes into every "
            "`dp --pt train` checkpoint); dpa reads .pt files written by DeePMD-kit v3 only"
        )
    return params


class _ArrayCopies:
    """NumPy copies of tensors, one per tensor storage: tensors that share memory in the
    checkpoint (a module shared by several branches) become one array object."""

    def __init__(self) -> None:
        self._done: dict[tuple, np.ndarray] = {}

    def __call__(self, tensor: Any) -> np.ndarray:
        if tensor.numel() == 0:  # every empty tensor reports data pointer 0: never alias them
            return np.array(tensor.detach().cpu().numpy(), copy=True)
        key = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            str(tensor.dtype),
        )
        if key not in self._done:
            self._done[key] = np.array(tensor.detach().cpu().numpy(), copy=True)
        return self._done[key]


class _Skeletons:
    """`build_model(config).tree` per distinct config: branches of one checkpoint usually have
    the same config (up to `info` and aliases), and drawing a large model's random weights
    takes seconds, for arrays that are all replaced anyway."""

    _BRANCH_ONLY = ("info", "model_branch_alias")

    def __init__(self) -> None:
        self._built: dict[str, dict[str, Any]] = {}

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        from dpa.model import build_model

        same = {k: v for k, v in config.items() if k not in self._BRANCH_ONLY}
        key = json.dumps(same, sort_keys=True, default=repr)
        if key not in self._built:
            self._built[key] = build_model(config).tree
        return self._built[key]  # read only: _mark_unfilled copies it


class _Unfilled:
    """The place of a tree array no checkpoint tensor has filled yet."""

    def __init__(self, like: Any) -> None:
        self.shape = tuple(np.shape(like))
        self.dtype = np.asarray(like).dtype


def _read_branch(
    state: dict[str, Any],
    head: str,
    config: Any,
    arrays: _ArrayCopies,
    skeletons: _Skeletons,
    path: str | os.PathLike,
) -> dict[str, Any]:
    """The branch `head`: {"model": tree, "model_def_script": config, "@variables": {...}}."""
    where = f"{path}" if head == SINGLE_HEAD else f"{path}: branch {head!r}"
    if not isinstance(config, dict) or "descriptor" not in config:
        raise ModelFileError(f"{where}: its model config has no 'descriptor' section")
    try:
        skeleton = skeletons(config)  # DeePMD-kit's tree structure, random arrays
    except DPAError as err:  # options dpa does not support (DPA-1 lmax > 1, charge/spin, ...)
        raise ModelFileError(
            f"{where}: dpa cannot read this checkpoint, its model uses an option dpa does not "
            f"support ({err})"
        ) from None
    tree = _mark_unfilled(skeleton)
    descriptor = _DESCRIPTOR_ALIASES.get(
        str(config["descriptor"].get("type")), str(config["descriptor"].get("type"))
    )
    prefix = f"model.{head}."
    variables: dict[str, Any] = {}
    unmapped: list[str] = []
    found = False
    for key, tensor in state.items():
        if not key.startswith(prefix):
            continue
        found = True
        name = key[len(prefix) :]
        if name == "min_nbor_dist":
            variables["min_nbor_dist"] = arrays(tensor)
            continue
        place = _tree_path(name, descriptor)
        if place is None:
            continue
        if not _fill(tree, place, tensor, arrays, key, where):
            unmapped.append(key)
    if not found:
        raise ModelFileError(
            f"{where}: the state dict has no tensors named '{prefix}*'; the file's "
            "model_params and weights do not belong together"
        )
    if unmapped:
        raise ModelFileError(
            f"{where}: {len(unmapped)} tensor(s) have no place in the model tree, e.g. "
            f"{', '.join(unmapped[:5])}; this checkpoint uses modules dpa does not read yet "
            "(supported: se_e2_a, DPA-1, se_atten_v2, DPA-2, DPA-3 energy models)"
        )
    missing = _unfilled_paths(tree)
    if missing:
        raise ModelFileError(
            f"{where}: {len(missing)} array(s) of the model have no tensor in the checkpoint, "
            f"e.g. {', '.join(missing[:5])}; the file is incomplete or from an unsupported "
            "DeePMD-kit version"
        )
    return {"model": tree, "model_def_script": config, "@variables": variables}


def _tree_path(name: str, descriptor: str) -> Path_ | None:
    """Where state-dict tensor `name` (head prefix removed) goes in the model tree; None for
    the tensors that are no tree array. An unknown name gives a path that does not exist."""
    if _SKIP.search(name):
        return None
    if name in ("atomic_model.out_bias", "atomic_model.out_std"):
        return ("@variables", name.rsplit(".", 1)[1])
    parts = name.split(".")
    if parts[:2] == ["atomic_model", "fitting_net"]:
        rest = parts[2:]
        if rest[:2] == ["filter_layers", "networks"]:
            return ("fitting", "nets", "networks", *_module_path(rest[2:]))
        return ("fitting", "@variables", *rest)  # bias_atom_e, case_embd, fparam_avg, ...
    if parts[:2] != ["atomic_model", "descriptor"]:
        return ("?", *parts)
    rest = parts[2:]
    match = _TYPE_EMBEDDING.match(".".join(rest))
    if match:
        return (
            "descriptor",
            f"{match[1]}_embedding",
            "embedding",
            *_module_path(match[2].split(".")),
        )
    blocks = _BLOCKS.get(descriptor, {})
    if rest and rest[0] in blocks:
        node = blocks[rest[0]]
        base: Path_ = ("descriptor",) if node is None else ("descriptor", node)
        block, inner = rest[0], rest[1:]
        if inner == ["adam_degree_gain_raw"]:  # DPA-1 lmax > 1
            return (*base, "@variables", "degree_gain_raw")
        if len(inner) == 1 and inner[0] in _STATS:
            return (*base, "@variables", _STATS[inner[0]])
        if inner[:1] == ["layers"] and block in _LAYER_LISTS:
            inner = [_LAYER_LISTS[block], *inner[1:]]
        if len(inner) >= 2 and _RESIDUAL.match(inner[-2]) and inner[-1].isdigit():
            owner = _module_path(inner[:-2], leaf=False)
            return (*base, *owner, "@variables", inner[-2], int(inner[-1]))
        return (*base, *_module_path([_RENAME.get(p, p) for p in inner]))
    # descriptor-level layers: g1_shape_tranform, tebd_transform, mix_cs_mlp
    return ("descriptor", *_module_path(rest))


def _module_path(parts: list[str], leaf: bool = True) -> Path_:
    """A module path in the tree: a number indexes the list before it, and a Layer's
    parameter (matrix, bias, idt) is its `@variables` entry (w, b, idt)."""
    out: list[str | int] = [int(p) if p.isdigit() else p for p in parts]
    if leaf and out and isinstance(out[-1], str) and out[-1] in _LEAF:
        out[-1:] = ["@variables", _LEAF[out[-1]]]
    return tuple(out)


def _mark_unfilled(node: Any, inside: bool = False) -> Any:
    """A copy of a tree with each array replaced by an `_Unfilled` marker of its shape."""
    if isinstance(node, dict):
        return {k: _mark_unfilled(v, inside or k == "@variables") for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_mark_unfilled(v, inside) for v in node]
    return _Unfilled(node) if inside and node is not None else node


def _fill(
    tree: dict[str, Any],
    place: Path_,
    tensor: Any,
    arrays: _ArrayCopies,
    key: str,
    where: str,
) -> bool:
    """Put `tensor` at `place` if the tree has an unfilled array there; False if it has none."""
    node: Any = tree
    for step in place[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return False
    last = place[-1]
    try:
        slot = node[last]
    except (KeyError, IndexError, TypeError):
        return False
    if not isinstance(slot, _Unfilled):
        return False  # no array expected there (or filled twice): no place for this tensor
    if tuple(tensor.shape) != slot.shape:
        raise ModelFileError(
            f"{where}: tensor {key} has shape {tuple(tensor.shape)}, but the checkpoint's "
            f"model config implies {slot.shape}; the file's config and weights disagree"
        )
    array = arrays(tensor)
    if array.dtype != slot.dtype:
        raise ModelFileError(
            f"{where}: tensor {key} is {array.dtype}, but the checkpoint's model config "
            f"implies {slot.dtype}; the file's config and weights disagree"
        )
    node[last] = array
    return True


def _unfilled_paths(node: Any, path: str = "model") -> list[str]:
    """The tree paths of the arrays still unfilled."""
    if isinstance(node, _Unfilled):
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _unfilled_paths(v, f"{path}/{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _unfilled_paths(v, f"{path}[{i}]")]
    return []
