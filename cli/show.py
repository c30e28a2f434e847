"""`dpa show MODEL`: what a model file holds (type, elements, cutoffs, size, precision, format)."""

from __future__ import annotations

import os

import click

from dpa_cli._context import Options, pass_options

__all__ = ["show", "file_format"]

_FORMATS = {
    ".dp": "dp (HDF5, backend-neutral)",
    ".pth": "pth (PyTorch)",
    ".jax": "jax (JAX)",
    ".savedmodel": "savedmodel (TensorFlow SavedModel, jax2tf export)",
}


def file_format(path: str) -> str:
    """A human-readable name of the model file format, from its suffix."""
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    return _FORMATS.get(suffix, f"unknown ({suffix or 'no suffix'})")


@click.command()
@click.argument("model", type=click.Path(dir_okay=True))
@pass_options
def show(opts: Options, model: str) -> None:
    """Show what MODEL is: descriptor type, type_map, cutoffs, sel, size, precision, format."""
    import dpa.io

    m = dpa.io.load(model)  # reading the file is enough: no framework, no GPU start-up
    fitting_precision = m.tree["fitting"].get("precision", "float64")
    precision = (
        m.precision
        if fitting_precision == m.precision
        else (f"{m.precision} (fitting {fitting_precision})")
    )
    rows = [
        ("model file", model),
        ("file format", file_format(model)),
        ("model type", "energy"),
        ("descriptor", str(m.descriptor_type)),
        ("type_map", " ".join(m.type_map)),
        ("rcut", f"{m.rcut:g}"),
        ("rcut_smth", f"{m.rcut_smth:g}"),
        ("sel", " ".join(str(s) for s in m.sel)),
        ("parameters", f"{m.num_params:,}"),
        ("precision", precision),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}} : {value}")
