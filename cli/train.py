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
    "--finetune",
    type=click.Path(),
    default=None,
    help="fine-tune from this pretrained model (any model format, DeePMD-kit .pt included)",
)
@click.option(
    "--model-branch",
    default=None,
    help="the pretrained branch to fine-tune from (name or alias), or RANDOM for a new fitting",
)
@click.option(
    "--use-pretrain-script",
    is_flag=True,
    help="take the descriptor and fitting_net configs from the pretrained model",
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
    finetune: str | None,
    model_branch: str | None,
    use_pretrain_script: bool,
    skip_neighbor_stat: bool,
) -> None:
    """Train on the systems INPUT names; writes lcurve.out, checkpoints and model.{pth,jax}."""
    import logging

    from dpa.train.loop import train

    if sum(x is not None for x in (init_model, restart, finetune)) > 1:
        raise click.UsageError("give one of --init-model, --restart and --finetune")
    if (model_branch is not None or use_pretrain_script) and finetune is None:
        raise click.UsageError("--model-branch and --use-pretrain-script go with --finetune")
    backend = opts.backend or "torch"
    if Options.console and backend == "jax":
        from dpa.backends.allocator import reexec_with_huge_pages

        reexec_with_huge_pages(retain_heap=True)  # before jax exists; see allocator.py
    if not opts.quiet:  # progress lines reach the "dpa" handler of the CLI even without -v
        logging.getLogger("dpa.train").setLevel(logging.INFO)
    final = train(
        input_path,
        backend,
        outdir,
        init_model,
        restart,
        skip_neighbor_stat,
        finetune=finetune,
        model_branch=model_branch,
        use_pretrain_script=use_pretrain_script,
    )
    opts.info(f"trained model: {final}")
