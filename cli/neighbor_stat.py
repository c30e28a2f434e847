"""`dpa neighbor-stat`: minimum pair distance and maximum neighbors per type within a cutoff."""

from __future__ import annotations

import re

import click

from dpa_cli._context import Options, pass_options

__all__ = ["neighbor_stat", "merge_type_maps"]

#: Frames passed to dpa.neighbor.neighbor_stat at once (bounds memory).
_CHUNK = 64


def merge_type_maps(type_maps: list[list[str]]) -> list[str]:
    """The union of several type maps, elements in order of first appearance."""
    merged: list[str] = []
    for type_map in type_maps:
        merged.extend(t for t in type_map if t not in merged)
    return merged


def _split_types(values: tuple[str, ...]) -> list[str]:
    """Type names from `-t O -t H`, `-t O,H` or `-t "O H"`."""
    return [t for v in values for t in re.split(r"[,\s]+", v) if t]


@click.command(name="neighbor-stat")
@click.option(
    "-s",
    "--system",
    "systems",
    required=True,
    multiple=True,
    help="System (or folder of systems); repeat for more.",
)
@click.option("-r", "--rcut", required=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--fmt", default=None, help="dpdata format of the systems (default: deepmd/npy).")
@click.option(
    "-t",
    "--type-map",
    "type_map",
    multiple=True,
    help="Element order of the result (e.g. -t O -t H or -t O,H); default: as found in the data.",
)
@pass_options
def neighbor_stat(
    opts: Options, systems: tuple[str, ...], rcut: float, fmt: str | None, type_map: tuple[str, ...]
) -> None:
    """Minimum pair distance and maximum number of neighbors of each type within RCUT."""
    import numpy as np

    from dpa.data import load_systems
    from dpa.errors import DataError

    data = load_systems(list(systems), fmt=fmt)
    tmap = _split_types(type_map) or merge_type_maps([s.type_map for s in data])
    if len(set(tmap)) != len(tmap):
        raise DataError(f"--type-map lists an element twice: {' '.join(tmap)}")
    ntypes = len(tmap)
    atypes = [s.remap_types(tmap) for s in data]  # an unknown element fails before any work
    from dpa import neighbor

    min_all, max_all = np.inf, np.zeros(ntypes, dtype=np.int64)
    for system, atype in zip(data, atypes, strict=True):
        min_sys, max_sys = np.inf, np.zeros(ntypes, dtype=np.int64)
        for start in range(0, system.nframes, _CHUNK):
            stop = min(start + _CHUNK, system.nframes)
            box = None if system.box is None else system.box[start:stop]
            dmin, nmax = neighbor.neighbor_stat(system.coord[start:stop], atype, box, rcut, ntypes)
            min_sys = min(min_sys, float(dmin))
            max_sys = np.maximum(max_sys, np.asarray(nmax, dtype=np.int64).reshape(ntypes))
        min_all, max_all = min(min_all, min_sys), np.maximum(max_all, max_sys)
        opts.info(
            f"# {system.name} ({system.nframes} frames): min_nbor_dist {min_sys:.6f}, "
            f"max_nbor_size {max_sys.tolist()}"
        )
    click.echo(f"type_map: {' '.join(tmap)}")
    click.echo(f"rcut: {rcut:g}")
    click.echo(f"min_nbor_dist: {min_all:.6f}")
    click.echo(f"max_nbor_size: {max_all.tolist()}")
