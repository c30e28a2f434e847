"""`dpa show MODEL`: what a model file holds (type, elements, cutoffs, size, precision, format);
for a multi-task file, its branches and the parameters they share."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from dpa_cli._context import Options, pass_options

if TYPE_CHECKING:
    from dpa.model import Model
    from dpa.multitask import MultiTaskModel

__all__ = ["show", "file_format"]

_FORMATS = {
    ".dp": "dp (HDF5, backend-neutral)",
    ".pth": "pth (PyTorch)",
    ".jax": "jax (JAX)",
    ".savedmodel": "savedmodel (TensorFlow SavedModel, jax2tf export)",
    ".pt": "pt (DeePMD-kit PyTorch checkpoint, read only)",
}


def file_format(path: str) -> str:
    """A human-readable name of the model file format, from its suffix."""
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    return _FORMATS.get(suffix, f"unknown ({suffix or 'no suffix'})")


def _echo_rows(rows: list[tuple[str, str]], indent: str = "") -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{indent}{key:<{width}} : {value}")


def _model_rows(m: Model) -> list[tuple[str, str]]:
    """The rows that describe one single-task model."""
    fitting_precision = m.tree["fitting"].get("precision", "float64")
    precision = (
        m.precision
        if fitting_precision == m.precision
        else (f"{m.precision} (fitting {fitting_precision})")
    )
    return [
        ("descriptor", str(m.descriptor_type)),
        ("type_map", " ".join(m.type_map)),
        ("rcut", f"{m.rcut:g}"),
        ("rcut_smth", f"{m.rcut_smth:g}"),
        ("sel", " ".join(str(s) for s in m.sel)),
        ("parameters", f"{m.num_params:,}"),
        ("precision", precision),
    ]


def shared_parameters(m: MultiTaskModel) -> int:
    """Parameters in arrays that more than one branch uses (each such array counted once)."""
    from dpa.tree import variables

    users: dict[int, tuple[int, int]] = {}  # id -> (size, number of branches using it)
    for branch in m.branches.values():
        for array in variables(branch.tree):
            size, count = users.get(id(array), (int(array.size), 0))
            users[id(array)] = (size, count + 1)
    return sum(size for size, count in users.values() if count > 1)


def _show_multitask(path: str, m: MultiTaskModel) -> None:
    summed = sum(b.num_params for b in m.branches.values())
    _echo_rows(
        [
            ("model file", path),
            ("file format", file_format(path)),
            ("model type", f"energy, multi-task ({len(m.branches)} branches)"),
            ("branches", ", ".join(m.names)),
            ("parameters", f"{m.num_params:,} stored (shared arrays once)"),
            ("shared", f"{shared_parameters(m):,} in arrays several branches use"),
            ("summed", f"{summed:,} over the branches (each as a single-task model)"),
        ]
    )
    for name, branch in m.branches.items():
        click.echo(f"branch {name}")
        rows = [("aliases", ", ".join(m.aliases(name)) or "-"), *_model_rows(branch)]
        observed = m.info(name).get("observed_type")
        if observed:
            rows.append(("observed types", " ".join(str(t) for t in observed)))
        _echo_rows(rows, indent="  ")
    click.echo("(choose a branch with --head NAME in dpa convert, dpa test, or dpa show)")


@click.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option(
    "--head",
    default=None,
    help="Show only this branch of a multi-task model (name or alias, any case).",
)
@pass_options
def show(opts: Options, model: str, head: str | None) -> None:
    """Show what MODEL is: descriptor type, type_map, cutoffs, sel, size, precision, format;
    for a multi-task model, each branch and the parameters the branches share."""
    import dpa.io
    from dpa.multitask import MultiTaskModel

    if head is None:  # reading the file is enough: no framework, no GPU start-up
        loaded = dpa.io.load_any(model)
        if isinstance(loaded, MultiTaskModel):
            _show_multitask(model, loaded)
            return
        m = loaded
    else:
        m = dpa.io.load(model, head)
    rows = [
        ("model file", model),
        ("file format", file_format(model)),
        ("model type", "energy"),
    ]
    if head is not None:
        rows.append(("branch", head))
    _echo_rows([*rows, *_model_rows(m)])
