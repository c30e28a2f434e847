"""`dpa --backend torch|jax train INPUT`: train a model as a DeePMD-kit v3 style input says."""

from __future__ import annotations

import click

from dpa_cli._context import Options, pass_options

__all__ = ["train_command"]


@click.command("train")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "outdir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="folder for lcurve.out, checkpoints, model",
)
@click.option(
    "--init-model",
    type=click.Path(),
    default=None,
    help="start from this model's weights and statistics (any model format)",
)
@click.option(
    "--restart",
    type=click.Path(),
    default=None,
    help="continue from a checkpoint file, its `checkpoint` pointer or their folder",
)
@click.option(
    "--skip-neighbor-stat",
    is_flag=True,
    help="do not scan the data for neighbor counts (sel must then be numbers)",
)
@pass_options
def train_command(
    opts: Options,
    input_path: str,
    outdir: str,
    init_model: str | None,
    restart: str | None,
    skip_neighbor_stat: bool,
) -> None:
    """Train on the systems INPUT names; writes lcurve.out, checkpoints and model.{pth,jax}."""
    import logging

    from dpa.train.loop import train

    if init_model and restart:
        raise click.UsageError("give --init-model or --restart, not both")
    backend = opts.backend or "torch"
    if Options.console and backend == "jax":
        from dpa.backends.allocator import reexec_with_huge_pages

        reexec_with_huge_pages(retain_heap=True)  # before jax exists; see allocator.py
    if not opts.quiet:  # progress lines reach the "dpa" handler of the CLI even without -v
        logging.getLogger("dpa.train").setLevel(logging.INFO)
    final = train(input_path, backend, outdir, init_model, restart, skip_neighbor_stat)
    opts.info(f"trained model: {final}")
