"""The descriptor registry: serialized `type` names (aliases included) -> `DescriptorKind`.

The built-in descriptors are one line each in `BUILT_IN` (their modules are imported on the
first lookup); `register` adds another one at run time, say a descriptor defined in a user's
own module or a test.
"""

from __future__ import annotations

import importlib

from ...errors import ConfigError
from .protocol import DescriptorKind

# modules of dpa.dpmodel.descriptor that define `DESCRIPTOR`
BUILT_IN = (
    "se_e2_a",
    "dpa1",
    "dpa2",
    "dpa3",
)

_KINDS: dict[str, DescriptorKind] = {}
_BUILT_IN_LOADED: list[bool] = []


def register(kind: DescriptorKind) -> DescriptorKind:
    """Make `kind` known under its name and aliases; a name taken by another kind is an error."""
    _load_built_in()
    for name in kind.names:
        other = _KINDS.get(name)
        if other is not None and other is not kind:
            raise ConfigError(f"descriptor type {name!r} is already registered ({other.name})")
    for name in kind.names:
        _KINDS[name] = kind
    return kind


def unregister(kind: DescriptorKind) -> None:
    """Forget a kind added with `register` (built-in kinds stay)."""
    for name in kind.names:
        if _KINDS.get(name) is kind:
            del _KINDS[name]


def kind_of(desc: dict | str) -> DescriptorKind:
    """The kind of a serialized descriptor (or of a `type` name); a clear error if unknown."""
    _load_built_in()
    name = desc if isinstance(desc, str) else desc.get("type")
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ConfigError(f"unknown descriptor type {name!r}; supported: {', '.join(names())}")
    return kind


def names() -> list[str]:
    """Every registered `type` name, aliases included, in registration order."""
    _load_built_in()
    return list(_KINDS)


def _load_built_in() -> None:
    if _BUILT_IN_LOADED:
        return
    for module in BUILT_IN:
        kind = importlib.import_module(f"{__package__}.{module}").DESCRIPTOR
        for name in kind.names:
            _KINDS.setdefault(name, kind)
    _BUILT_IN_LOADED.append(True)
