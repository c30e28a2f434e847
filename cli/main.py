"""Entry point of the `dpa` command: global options, error reporting, and the command table."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import click

from dpa_cli._context import Options
from dpa_cli.change_bias import change_bias_command
from dpa_cli.convert import convert
from dpa_cli.doc_train_input import doc_train_input
from dpa_cli.dptest import test_command
from dpa_cli.neighbor_stat import neighbor_stat
from dpa_cli.show import show
from dpa_cli.train import train_command

__all__ = ["cli", "main"]

BACKENDS = ("numpy", "torch", "jax", "tensorflow")


def _one_line(err: BaseException) -> str:
    """The error message folded onto one line (the CLI prints exactly one line per error)."""
    return " ".join(str(err).split()) or type(err).__name__


class DPAGroup(click.Group):
    """A click group that turns a DPAError into `dpa: error: <message>` on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report a DPAError as one line (with its traceback under -v)."""
        try:
            return super().invoke(ctx)
        except Exception as err:
            from dpa.errors import DPAError  # here, not at import: `dpa --help` stays instant

            if not isinstance(err, DPAError):
                raise
            opts = ctx.find_object(Options)
            if opts is not None and opts.verbose:
                click.echo("".join(traceback.format_exc()).rstrip(), err=True)
            click.echo(f"dpa: error: {_one_line(err)}", err=True)
            ctx.exit(1)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Eager --version: print and exit before any command runs."""
    if not value or ctx.resilient_parsing:
        return
    import dpa

    click.echo(f"dpa {dpa.__version__}")
    ctx.exit()


def _setup_logging(verbosity: int) -> None:
    """Route the `dpa` library logger to stderr at a level set by -v/-q."""
    level = {-1: logging.ERROR, 0: logging.WARNING}.get(verbosity, logging.INFO)
    logger = logging.getLogger("dpa")
    logger.setLevel(level)
    if not any(getattr(h, "_dpa_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("dpa: %(levelname)s: %(message)s"))
        handler._dpa_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


@click.group(cls=DPAGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    envvar="DPA_BACKEND",
    show_envvar=True,
    default=None,
    help="Backend to evaluate with (default: chosen by the model file's suffix; tensorflow runs "
    "a .savedmodel's own graph, which trusts the file).",
)
@click.option("-v", "--verbose", is_flag=True, help="Print more, and full tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Print results only.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the dpa version and exit.",
)
@click.pass_context
def cli(ctx: click.Context, backend: str | None, verbose: bool, quiet: bool) -> None:
    """dpa: DPA machine-learning interatomic potentials (DeepPot-SE, DPA-1, DPA-2, DPA-3)."""
    if verbose and quiet:
        raise click.UsageError("-v/--verbose and -q/--quiet exclude each other")
    verbosity = 1 if verbose else -1 if quiet else 0
    ctx.obj = Options(backend=backend, verbosity=verbosity)
    _setup_logging(verbosity)


cli.add_command(show)
cli.add_command(convert)
cli.add_command(test_command)
cli.add_command(neighbor_stat)
cli.add_command(doc_train_input)
cli.add_command(train_command)
cli.add_command(change_bias_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`dpa = "dpa_cli.main:main"`)."""
    if argv is None and {"train", "test"} & set(sys.argv[1:]):
        from dpa.backends.allocator import reexec_with_huge_pages
        from dpa.backends.jax.compile_cache import use_persistent_cache

        use_persistent_cache()  # jax reads it at import; the restart below inherits it

        reexec_with_huge_pages()  # before torch/jax exist: evaluations fault far less
    if argv is None:
        Options.console = True  # commands may restart the process (train: retained heap)
    cli.main(args=argv, prog_name="dpa")


if __name__ == "__main__":  # pragma: no cover
    main()
