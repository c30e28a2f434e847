"""`dpa change-bias`: refit or set a model's energy bias (out_bias), like `dp change-bias`."""

from __future__ import annotations

import os
from typing import Any

import click

from dpa_cli._context import Options, pass_options

__all__ = ["change_bias_command", "default_output"]

#: Suffixes dpa writes; another input suffix (a DeePMD-kit .pt) gets a .dp output by default.
_WRITABLE = (".dp", ".pth", ".jax", ".savedmodel")
_BIAS_OPTS = ("-b", "--bias-value")


def default_output(model_path: str) -> str:
    """MODEL's name with `_updated` before the suffix, as DeePMD-kit (x.pth -> x_updated.pth);
    an input dpa cannot write (.pt) gives x_updated.dp."""
    root, suffix = os.path.splitext(model_path.rstrip("/"))
    return f"{root}_updated{suffix if suffix in _WRITABLE else '.dp'}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _ChangeBiasCommand(click.Command):
    """Accepts DeePMD-kit's `-b V1 V2 ...` (negative values included): the numbers after -b are
    rewritten as `--bias-value=V` each before click parses them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                out.extend(args[i:])
                break
            if arg in _BIAS_OPTS:
                i += 1
                taken = 0
                while i < len(args) and _is_number(args[i]):
                    out.append(f"--bias-value={args[i]}")
                    i += 1
                    taken += 1
                if taken == 0:
                    raise click.UsageError(f"{arg} needs at least one number", ctx)
                continue
            out.append(arg)
            i += 1
        return super().parse_args(ctx, out)


@click.command(name="change-bias", cls=_ChangeBiasCommand)
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option(
    "-s",
    "--system",
    "systems",
    multiple=True,
    help="System, or folder searched for systems, with energy labels; repeat for more "
    "(default: the current folder).",
)
@click.option(
    "-f",
    "--datafile",
    default=None,
    type=click.Path(),
    help="Text file listing the systems, one path a line.",
)
@click.option(
    "-b",
    "--bias-value",
    "bias_values",
    multiple=True,
    type=float,
    help="Set the bias to these values, one per type in the model's type_map order "
    "(-b V1 V2 ...); no data is read and -m plays no part.",
)
@click.option(
    "-n",
    "--numb-batch",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Frames per system, the first ones (0: all). DeePMD-kit draws them at random.",
)
@click.option(
    "-m",
    "--mode",
    type=click.Choice(["change", "set"]),
    default="change",
    show_default=True,
    help="change: add the least-squares fit of (label - prediction) per type to the bias; "
    "set: the bias becomes the least-squares fit of the labels per type.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(),
    help="Output model (default: MODEL with _updated before the suffix; .dp for a .pt input).",
)
@click.option(
    "--model-branch",
    default=None,
    help="Branch (head) of a multi-task model to change; the others are written unchanged.",
)
@pass_options
def change_bias_command(
    opts: Options,
    model_path: str,
    systems: tuple[str, ...],
    datafile: str | None,
    bias_values: tuple[float, ...],
    numb_batch: int,
    mode: str,
    output: str | None,
    model_branch: str | None,
) -> None:
    """Change the energy bias (out_bias) of MODEL from data or to given values."""
    given = [name for name, v in (("-s", systems), ("-f", datafile), ("-b", bias_values)) if v]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} exclude each other; give one of them")
    import dpa.io
    from dpa.multitask import MultiTaskModel, select_branch
    from dpa.train.change_bias import change_bias, read_datafile

    model = dpa.io.load_any(model_path)
    branch = select_branch(model, model_branch, "--model-branch")  # bad branch: fail first
    data: Any = None
    if not bias_values:
        paths = read_datafile(datafile) if datafile else list(systems) or ["."]
        from dpa.data import load_systems

        data = load_systems(paths)
    new = change_bias(
        model,
        systems=data,
        bias_values=list(bias_values) if bias_values else None,
        nbatch=numb_batch,
        mode=mode,  # type: ignore[arg-type]
        head=model_branch,
        backend=opts.backend,
    )
    new_branch = select_branch(new, model_branch, "--model-branch")
    target = output or default_output(model_path)
    dpa.io.save(new, target)
    where = ""
    if isinstance(model, MultiTaskModel):
        where = f" of branch {model.resolve(model_branch, '--model-branch')}"
    how = "set to the given values" if bias_values else f"mode {mode}"
    click.echo(f"# energy bias{where} ({how})")
    click.echo(f"# {'type':<8} {'old out_bias':>20} {'new out_bias':>20}")
    old_bias = branch.tree["@variables"].get("out_bias")
    new_bias = new_branch.tree["@variables"]["out_bias"].reshape(-1)
    for t, name in enumerate(branch.type_map):
        before = "-" if old_bias is None else f"{float(old_bias.reshape(-1)[t]):20.10f}"
        click.echo(f"  {name:<8} {before:>20} {float(new_bias[t]):20.10f}")
    opts.info(f"# wrote {target}")
