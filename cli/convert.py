"""`dpa convert IN OUT`: convert a model between file formats (.dp, .pth, .jax) exactly, or
export it as a TensorFlow SavedModel (OUT ending in .savedmodel)."""

from __future__ import annotations

import click

from dpa_cli._context import Options, pass_options

__all__ = ["convert"]


@click.command()
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=True))
@click.argument("out_path", metavar="OUT", type=click.Path(dir_okay=True))
@pass_options
def convert(opts: Options, in_path: str, out_path: str) -> None:
    """Convert model IN to OUT; formats by suffix (.dp, .pth, .jax, .savedmodel).

    OUT.savedmodel is a TensorFlow SavedModel directory (exported through jax2tf; needs jax and
    tensorflow) that runs in plain TensorFlow without dpa: signature serving_default(coord,
    atype, box) with the neighbor list built inside (box of zeros: no periodicity), and
    evaluate_nlist(coord, atype, box, nlist, shift) for a neighbor list built outside.
    """
    import dpa.io

    dpa.io.convert(in_path, out_path)
    opts.info(f"converted {in_path} -> {out_path}")
