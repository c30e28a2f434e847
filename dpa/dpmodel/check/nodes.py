"""Tree access with JSON paths, the bounds, and the primitive value checks every part uses."""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from ...errors import ModelFileError

MAX_SEL = 100_000  # most neighbor slots a list may have (sum of sel)
MAX_RCUT = 100.0  # Å
MAX_WIDTH = 1 << 16  # largest layer width, embedding dimension or head count
PRECISIONS = ("default", "float64", "float32", "double", "single")
FIX = "the file is corrupt or was edited; re-export it from its source"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# switches the forward pass (or DeePMD-kit) reads as booleans: a string or a number there would
# switch a branch on silently ("false" is truthy); a descriptor adds its own (`DescriptorKind.flags`)
FLAGS = frozenset(
    """attn_dotr attn_mask bias bias_out concat_output_tebd do_mask dotr has_gate mixed_types
    normalize padding resnet resnet_dt set_davg_zero smooth smooth_type_embedding
    tot_ener_zero trainable_ln type_one_side use_aparam_as_mask use_econf_tebd use_loc_mapping
    use_tebd_bias use_timestep""".split()
)


@dataclass(frozen=True)
class Node:
    """A value of the tree with its JSON path, for messages such as `model.fitting.ntypes`."""

    value: Any
    path: str

    def has(self, key: str) -> bool:
        """Whether the dict holds `key` with a non-None value."""
        return isinstance(self.value, dict) and self.value.get(key) is not None

    def __getitem__(self, key: str | int) -> Node:
        """The required entry `key` (a dict key or a list index)."""
        if isinstance(key, int):
            items = self.list()
            if key >= len(items):
                fail(self, f"has {len(items)} entries; expected at least {key + 1}")
            return Node(items[key], f"{self.path}[{key}]")
        if not isinstance(self.value, dict):
            fail(self, f"must be a dict (holding {key!r}), got {type(self.value).__name__}")
        if self.value.get(key) is None:
            raise ModelFileError(f"the model tree lacks {self.path}.{key}; the file is incomplete")
        return Node(self.value[key], f"{self.path}.{key}")

    def get(self, key: str, default: Any = None) -> Node:
        """The entry `key`, or a node holding `default` when it is absent (as `dict.get`: a
        stored None stays None, and the forward pass reads it so)."""
        if isinstance(self.value, dict) and key in self.value:
            return Node(self.value[key], f"{self.path}.{key}")
        return Node(default, f"{self.path}.{key}")

    def list(self) -> builtins.list[Any]:
        """The value as a list (a tuple is accepted)."""
        if not isinstance(self.value, list | tuple):
            fail(self, f"must be a list, got {type(self.value).__name__}")
        return list(self.value)

    def items(self) -> builtins.list[Node]:
        """The entries of a list value as nodes."""
        return [Node(v, f"{self.path}[{i}]") for i, v in enumerate(self.list())]


def fail(node: Node, problem: str, fix: str = FIX) -> NoReturn:
    """Raise the ModelFileError for `node`: its path, the problem, how to fix it."""
    raise ModelFileError(f"{node.path} {problem}; {fix}")


def integer(node: Node, lo: int = 0, hi: int = MAX_WIDTH) -> int:
    """An integer (an integral float is accepted) in [lo, hi]."""
    v = node.value
    ok = isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)
    if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
        ok, v = True, int(v)
    if not ok:
        fail(node, f"must be an integer, got {v!r}")
    if not lo <= int(v) <= hi:
        fail(node, f"is {v}; expected an integer in [{lo}, {hi}]")
    return int(v)


def number(node: Node, lo: float, hi: float, lo_open: bool = False) -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with lo_open)."""
    v = node.value
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        fail(node, f"must be a number, got {v!r}")
    x = float(v)
    if not math.isfinite(x) or x < lo or x > hi or (lo_open and x == lo):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        fail(node, f"is {v!r}; expected a finite number in {interval}")
    return x


def widths(node: Node) -> list[int]:
    """A non-empty list of positive layer widths (`neuron`)."""
    widths = [integer(n, 1) for n in node.items()]
    if not widths:
        fail(node, "is empty; expected at least one layer width")
    return widths


def choice(node: Node, allowed: tuple[str, ...]) -> str:
    """A string among `allowed`."""
    if node.value not in allowed:
        fail(node, f"is {node.value!r}; expected one of {', '.join(map(repr, allowed))}")
    return node.value


def type_map(node: Node) -> list[str]:
    """type_map: a non-empty list of unique, non-empty strings."""
    names = node.list()
    if not names:
        fail(node, "is empty; expected the element names of the model")
    for item in node.items():
        if not isinstance(item.value, str) or not item.value:
            fail(item, f"must be a non-empty string, got {item.value!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        fail(node, f"lists {twice} more than once")
    return names


def as_array(node: Node) -> np.ndarray:
    """A variable as a NumPy array (ModelFileError when it is not array-like)."""
    try:
        return np.asarray(node.value)
    except (TypeError, ValueError) as err:
        fail(node, f"is not an array ({err})")


def array(node: Node, shape: tuple[int, ...], why: str) -> np.ndarray:
    """A variable of exactly `shape`; `why` says where the expected shape comes from."""
    array = as_array(node)
    if array.shape != shape:
        fail(node, f"has shape {array.shape}; expected {shape} ({why})")
    return array


def optional_array(node: Node, shape: tuple[int, ...], why: str) -> None:
    """A variable that may be absent (None) and otherwise has `shape`."""
    if node.value is not None:
        array(node, shape, why)


def type_list(node: Node, ntypes: int) -> None:
    """A list of atom types, each in [0, ntypes) (None: none, as the forward reads it)."""
    for item in node.items() if node.value is not None else []:
        integer(item, 0, ntypes - 1)


def type_pairs(node: Node, ntypes: int) -> None:
    """A list of [type, type] pairs, each type in [0, ntypes) (None: none)."""
    for pair in node.items() if node.value is not None else []:
        if len(pair.list()) != 2:
            fail(pair, f"is {pair.value!r}; expected a pair [type_a, type_b]")
        type_list(pair, ntypes)


def same_ntypes(node: Node, ntypes: int) -> None:
    """A stored `ntypes` field (when present) equals len(type_map)."""
    if node.value is not None and integer(node, 1, MAX_SEL) != ntypes:
        fail(node, f"is {node.value}; expected {ntypes} = len(model.type_map)")


def same_cutoffs(env_mat: Node, rcut: Node, rcut_smth: Node) -> None:
    """A block's stored env_mat repeats its cutoffs: a difference means one was edited."""
    for key, node in (("rcut", rcut), ("rcut_smth", rcut_smth)):
        stored = env_mat.get(key)
        if stored.value is not None and number(stored, 0.0, MAX_RCUT) != float(node.value):
            fail(stored, f"is {stored.value} but {node.path} is {node.value}; they must agree")


def cutoffs(rcut: Node, rcut_smth: Node) -> float:
    """0 < rcut <= MAX_RCUT and 0 <= rcut_smth < rcut; returns rcut."""
    rc = number(rcut, 0.0, MAX_RCUT, lo_open=True)
    if number(rcut_smth, 0.0, MAX_RCUT) >= rc:
        fail(rcut_smth, f"is {rcut_smth.value}; expected a value below {rcut.path} = {rc:g}")
    return rc


def sel_total(node: Node) -> int:
    """Number of neighbor slots of a `sel` (an int or a list of ints), at most MAX_SEL."""
    items = [node] if not isinstance(node.value, list | tuple) else node.items()
    total = sum(integer(item, 0, MAX_SEL) for item in items)
    if not 0 < total <= MAX_SEL:
        fail(node, f"adds up to {total} neighbor slots; expected 1 to {MAX_SEL}")
    return total


def protection(node: Node) -> None:
    """env_protection: added to r in 1/(r + p), so non-negative (and not absurd)."""
    number(node, 0.0, MAX_RCUT)
