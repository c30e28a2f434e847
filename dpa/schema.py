"""Building blocks of dpa's input schemas (pydantic): sections that refuse unknown keys and
true/false for numbers, error lines that name the dotted key, and small checks across keys."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .errors import ConfigError

Precision = Literal["default", "float64", "float32", "double", "single"]
CANONICAL_PRECISION = {"default": "float64", "double": "float64", "single": "float32"}


def takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a JSON true/false (bool itself, Any, or inside a union)."""
    if annotation is bool or annotation is Any:
        return True
    return any(takes_bool(arg) for arg in typing.get_args(annotation))


class Section(BaseModel):
    """A config section: no unknown keys, aliases accepted, and no true/false where a number or
    a list is expected (pydantic's lax mode would read `"numb_steps": true` as 1)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                annotation = field_annotations(cls).get(key)
                if isinstance(value, bool) and annotation is not None:
                    if not takes_bool(annotation):
                        raise PydanticCustomError(
                            "bool_not_allowed",
                            "true/false is not a valid value; give a value of the key's type",
                            {"key": key},
                        )
        return data


def field_annotations(section: type[BaseModel]) -> dict[str, Any]:
    """Every accepted spelling of a section's keys (names and aliases) -> the field's type."""
    found = {}
    for name, field in section.model_fields.items():
        alias = field.validation_alias
        spellings = [name, *(alias.choices if isinstance(alias, AliasChoices) else [alias])]
        found.update({s: field.annotation for s in spellings if isinstance(s, str)})
    return found


def strip_comments(value: Any) -> Any:
    """Drop keys starting with '_' (DeePMD-kit's `_comment` convention) at every level."""
    if isinstance(value, dict):
        return {k: strip_comments(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [strip_comments(v) for v in value]
    return value


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The section class a field holds (also inside `X | None`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def format_error(err: ValidationError, path: str, root: type[BaseModel]) -> str:
    """One readable line per problem of validating `root` at `path` (say "model.descriptor"):
    the dotted key, what is wrong, the allowed keys."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        key = f"{path}.{loc}" if loc else path
        if e["type"] == "extra_forbidden":
            allowed = allowed_keys(root, e["loc"])
            lines.append(f"unknown key {key!r}" + (f"; allowed keys: {allowed}" if allowed else ""))
        elif e["type"] == "bool_not_allowed":
            lines.append(f"{key}.{e['ctx']['key']}: {e['msg']} (got {e['input'][e['ctx']['key']]})")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def allowed_keys(root: type[BaseModel], loc: tuple) -> str:
    """Comma-separated field names of the section under `root` that holds the key at `loc`."""
    section = root
    for part in loc[:-1]:
        if isinstance(part, str) and part in section.model_fields:
            sub = section_of(section.model_fields[part].annotation)
            if sub is not None:
                section = sub
    return ", ".join(sorted(section.model_fields))


def need_number(key: str, value: Any) -> int:
    """A resolved neighbor count; `"auto"` needs data (neighbor statistics)."""
    if isinstance(value, str):
        raise ConfigError(
            f"model.descriptor.{key} = {value!r} needs training data to resolve; give an explicit "
            "number (e.g. from `dpa neighbor-stat` on your data)"
        )
    if value <= 0:
        raise ConfigError(f"model.descriptor.{key} = {value} must be a positive neighbor count")
    return int(value)


def check_radii(block: str, rcut: float, rcut_smth: float, names: tuple[str, str]) -> None:
    """rcut_smth < rcut of one block."""
    if rcut_smth >= rcut:
        raise ConfigError(
            f"model.descriptor.{block}.{names[1]} ({rcut_smth}) must be smaller than "
            f"{block}.{names[0]} ({rcut})"
        )


def ordered(small: tuple[str, float], large: tuple[str, float], strict: bool) -> None:
    """ConfigError unless small's value is below (or with strict=False, at most) large's."""
    (k_small, v_small), (k_large, v_large) = small, large
    bad = v_small >= v_large if strict else v_small > v_large
    if bad:
        relation = "smaller than" if strict else "at most"
        raise ConfigError(
            f"model.descriptor.{k_small} ({v_small}) must be {relation} "
            f"model.descriptor.{k_large} ({v_large})"
        )
