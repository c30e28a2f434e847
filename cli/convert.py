"""`dpa convert IN OUT`: convert a model between file formats (.dp, .pth, .jax) exactly, or
export it as a TensorFlow SavedModel (OUT ending in .savedmodel); `--head` extracts one branch
of a multi-task model."""

from __future__ import annotations

import click

from dpa_cli._context import Options, pass_options

__all__ = ["convert"]


@click.command()
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=True))
@click.argument("out_path", metavar="OUT", type=click.Path(dir_okay=True))
@click.option(
    "--head",
    default=None,
    help="Extract this branch of a multi-task model (name or alias, any case) as a single-task "
    "model. Without it a multi-task model stays whole (.dp, .pth, .jax); .savedmodel needs it.",
)
@pass_options
def convert(opts: Options, in_path: str, out_path: str, head: str | None) -> None:
    """Convert model IN to OUT; formats by suffix (.dp, .pth, .jax, .savedmodel).

    OUT.savedmodel is a TensorFlow SavedModel directory (exported through jax2tf; needs jax and
    tensorflow) that runs in plain TensorFlow without dpa: signature serving_default(coord,
    atype, box) with the neighbor list built inside (box of zeros: no periodicity), and
    evaluate_nlist(coord, atype, box, nlist, shift) for a neighbor list built outside.

    IN may also be a DeePMD-kit PyTorch training checkpoint (.pt, read only).
    """
    import dpa.io

    dpa.io.convert(in_path, out_path, head=head)
    branch = "" if head is None else f" (branch {head})"
    opts.info(f"converted {in_path}{branch} -> {out_path}")
