"""`dpa doc-train-input`: every key of a training input with its type, default and meaning."""

from __future__ import annotations

import click

__all__ = ["doc_train_input"]


@click.command(name="doc-train-input")
def doc_train_input() -> None:
    """Print the keys of a training input (input.json): type, default and meaning."""
    from dpa.train.config import doc_train_input as make_doc  # lazy: `dpa --help` stays light

    click.echo(make_doc(), nl=False)
