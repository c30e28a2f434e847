"""`dpa test`: errors of a model on labelled systems, with `dp test`-style report and files."""

from __future__ import annotations

import click

from dpa_cli._context import Options, pass_options

__all__ = ["test_command", "format_errors"]

#: (error key, MAE label, RMSE label, unit), in the order `dp test` reports them.
_REPORT = (
    ("energy", "Energy MAE         ", "Energy RMSE        ", "eV"),
    ("energy_per_atom", "Energy MAE/Natoms  ", "Energy RMSE/Natoms ", "eV"),
    ("force", "Force  MAE         ", "Force  RMSE        ", "eV/Å"),
    ("virial", "Virial MAE         ", "Virial RMSE        ", "eV"),
    ("virial_per_atom", "Virial MAE/Natoms  ", "Virial RMSE/Natoms ", "eV"),
)
_RULE = "# " + "-" * 47


def format_errors(errors: dict) -> list[str]:
    """Report lines `<label>: <value> <unit>` (MAE then RMSE) for the errors present."""
    lines = []
    for key, mae_label, rmse_label, unit in _REPORT:
        if key in errors:
            lines.append(f"{mae_label}: {errors[key].mae:e} {unit}")
            lines.append(f"{rmse_label}: {errors[key].rmse:e} {unit}")
    return lines


def _prepare_detail_folder(prefix: str) -> None:
    """Create the folder of the detail files (like `mkdir -p`), with a clear error if impossible."""
    import os

    from dpa.errors import DataError

    folder = os.path.dirname(os.path.abspath(prefix))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise DataError(f"-d {prefix}: cannot create folder {folder} ({err.strerror})") from None


@click.command(name="test")
@click.option("-m", "--model", required=True, type=click.Path(), help="Model file to test.")
@click.option(
    "-s",
    "--system",
    "systems",
    required=True,
    multiple=True,
    help="System (or folder of systems) to test on; repeat for more.",
)
@click.option(
    "-n",
    "--numb-test",
    type=click.IntRange(min=1),
    default=None,
    help="Frames to test per system, from the first (default: all).",
)
@click.option(
    "-d",
    "--detail-file",
    "prefix",
    default=None,
    help="Write dp-test detail files PREFIX.e.out, .e_peratom.out, .f.out, .v.out, "
    ".v_peratom.out (a suffix of PREFIX is replaced, as dp test does).",
)
@click.option("--fmt", default=None, help="dpdata format of the systems (default: deepmd/npy).")
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Frames evaluated at once (bounds memory).",
)
@click.option(
    "--compile",
    "compile_model",
    is_flag=True,
    help="torch only: torch.compile the model (slow first call, ~1.5x faster after; many frames).",
)
@click.option(
    "--precision",
    type=click.Choice(["float64", "float32"]),
    default=None,
    help="Evaluate in this precision instead of the model's own (no retraining needed).",
)
@click.option(
    "--head",
    default=None,
    help="Branch of a multi-task model to test (name or alias, any case).",
)
@pass_options
def test_command(
    opts: Options,
    model: str,
    systems: tuple[str, ...],
    numb_test: int | None,
    prefix: str | None,
    fmt: str | None,
    chunk_size: int,
    compile_model: bool,
    precision: str | None,
    head: str | None,
) -> None:
    """Test MODEL on labelled systems: energy, force and virial MAE/RMSE, like `dp test`."""
    import dpa
    from dpa.data import load_systems
    from dpa.data.evaluation import evaluate_system
    from dpa.data.metrics import merge_errors

    data = load_systems(list(systems), fmt=fmt)  # before the model: bad data fails fast
    if prefix is not None:  # make the detail folder now, not after a long evaluation
        _prepare_detail_folder(prefix)
    pot = dpa.load_model(
        model, backend=opts.backend, compile=compile_model, precision=precision, head=head
    )
    for system in data:  # fail before any evaluation when an element is unknown to the model
        system.remap_types(pot.type_map)
    if not pot.can_compute_forces:
        opts.info(
            f"# backend {pot.backend} computes no forces: reporting energy errors only "
            "(use --backend torch or jax for forces and virials)"
        )
    results = []
    for system in data:
        result = evaluate_system(pot, system, nframes=numb_test, chunk_size=chunk_size)
        results.append(result)
        if opts.quiet:
            continue
        click.echo("# ---------------output of dpa test---------------")
        click.echo(f"# testing system : {system.name}")
        click.echo(f"# number of test data : {result.nframes}")
        lines = format_errors(result.errors)
        for line in lines or ["# no labels to compare with"]:
            click.echo(line)
        click.echo(_RULE)
    click.echo("# ----------weighted average of errors-----------")
    click.echo(f"# number of systems : {len(results)}")
    click.echo(f"# number of test data : {sum(r.nframes for r in results)}")
    for line in format_errors(merge_errors(r.errors for r in results)):
        click.echo(line)
    click.echo(_RULE)
    if prefix is not None:
        from dpa.data.detail import write_details

        for path in write_details(prefix, results):
            opts.info(f"# wrote {path}")
