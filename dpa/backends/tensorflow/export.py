"""Export a model as a TensorFlow SavedModel: jax2tf (native serialization, shape-polymorphic)
of the pure JAX functions in `dpa.backends.jax.graph`, wrapped in tf.functions with input checks.

The SavedModel's callables (all float64 outputs):

* signature `serving_default(coord f64 [nf, nat, 3], atype i32 [nf, nat], box f64 [nf, 3, 3])
  -> energy [nf], force [nf, nat, 3], virial [nf, 3, 3], atom_energy [nf, nat]`; the neighbor
  list is built inside (brute force over atoms x periodic images, O(nat^2) per frame). A box of
  all zeros means no periodicity; a periodic box needs every face distance >= rcut / image_range.
* signature `evaluate_nlist(coord, atype, box, nlist i64 [nf, nat, nsel], shift i64
  [nf, nat, nsel, 3])`, same outputs: the neighbor list of `dpa.neighbor.build_neighbor_list`
  given from outside (pair j and integer image shift S per slot, j = -1 on empty slots), for
  systems too large for the in-graph builder or cells smaller than it accepts.
* signature `get_metadata() -> json` (string): the metadata also stored in
  assets/dpa_metadata.json.
* tf.functions `evaluate(coord, atype, box)` and `evaluate_nlist(...)` on the loaded object:
  the same, but they also take float32 coord/box and int64 atype (int32 nlist/shift), cast inside.

Bad input fails with a tf.errors.InvalidArgumentError whose message says what is wrong:
non-finite coordinates, types outside the type map, mismatched shapes, a box too small for the
in-graph neighbor list (or singular), neighbor indices out of range, overlapping atoms.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up banners are not errors

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from jax.experimental import jax2tf  # noqa: E402

from dpa._version import __version__  # noqa: E402
from dpa.backends.jax import graph  # noqa: E402
from dpa.backends.tensorflow.layout import FORMAT, FORMAT_VERSION, METADATA_ASSET, MODEL_ASSET  # noqa: E402
from dpa.dpmodel.model import neighbor_spec  # noqa: E402
from dpa.formats import dp  # noqa: E402
from dpa.tree import jsonable  # noqa: E402

# Platforms the serialized StableHLO is lowered for; TensorFlow picks the one it runs on.
PLATFORMS = ("cpu", "cuda")
OUTPUTS = ("energy", "force", "virial", "atom_energy")


def metadata(data: dict, spec: graph.GraphSpec) -> dict[str, Any]:
    """What a reader needs to use the SavedModel of model `data` without dpa: conventions,
    sizes, versions."""
    import jaxlib

    descriptor = data["model"]["descriptor"]

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "type_map": list(spec.type_map),
        "rcut": spec.rcut,
        "rcut_smth": neighbor_spec(descriptor).rcut_smth,
        "sel": list(spec.sel),
        "nsel": spec.nsel,
        "mixed_types": spec.mixed_types,
        "descriptor": descriptor["type"],
        "precision": str(descriptor.get("precision", "float64")),
        "image_range": spec.image_range,
        "conventions": {
            "units": "coord and box in Å; energy and virial in eV; force in eV/Å",
            "box": "cell vectors as rows; all zeros = no periodicity",
            "in_graph_neighbor_list": (
                f"images [-{spec.image_range}, {spec.image_range}]^3 of the wrapped atoms; "
                f"periodic boxes need every face distance >= rcut / {spec.image_range}"
            ),
            "nlist": "(nf, nat, nsel) neighbor index j, -1 on empty slots; sorted by distance "
            + ("(one list)" if spec.mixed_types else "in per-type blocks of widths sel"),
            "shift": "(nf, nat, nsel, 3) integer image shift S: r_ij = x_j - x_i + S @ box",
        },
        "signatures": {
            "serving_default": ["coord", "atype", "box"],
            "evaluate_nlist": ["coord", "atype", "box", "nlist", "shift"],
            "get_metadata": [],
            "outputs": list(OUTPUTS),
        },
        "versions": {
            "dpa": __version__,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "jax2tf": {
            "native_serialization": True,
            "platforms": list(PLATFORMS),
            "calling_convention_version": int(jax.config.jax_export_calling_convention_version),
        },
        "model_def_script": jsonable(data.get("model_def_script")),
        "model_tree": jsonable(spec.skeleton),  # variables: their index in `params`
    }


def _face_distances(box: tf.Tensor) -> tf.Tensor:
    """(nf, 3) distances between opposite faces (rows = cell vectors), as in dpa.neighbor."""
    h0, h1, h2 = box[:, 0], box[:, 1], box[:, 2]
    c = tf.stack([tf.linalg.cross(h1, h2), tf.linalg.cross(h2, h0), tf.linalg.cross(h0, h1)], 1)
    vol = tf.abs(tf.reduce_sum(h0 * c[:, 0], axis=-1))
    return vol[:, None] / tf.norm(c, axis=-1)


class ExportedModel(tf.Module):
    """The tf.Module that is saved: variables, converted functions, checks and metadata."""

    def __init__(
        self, data: dict, image_range: int = graph.IMAGE_RANGE, assets: Path | None = None
    ) -> None:
        super().__init__(name="dpa")
        spec, leaves = graph.graph_spec(data["model"], image_range)
        self._spec = spec
        self.params = [tf.Variable(a, trainable=False, name=f"p{i}") for i, a in enumerate(leaves)]
        meta = metadata(data, spec)
        self._metadata_json = json.dumps(meta, sort_keys=True)
        if assets is not None:  # copied into the SavedModel's assets/ by tf.saved_model.save
            (assets / METADATA_ASSET).write_text(json.dumps(meta, indent=1, sort_keys=True))
            dp.write(assets / MODEL_ASSET, data)
            self.metadata_file = tf.saved_model.Asset(str(assets / METADATA_ASSET))
            self.model_file = tf.saved_model.Asset(str(assets / MODEL_ASSET))
        convert = partial(
            jax2tf.convert, with_gradient=False, native_serialization_platforms=PLATFORMS
        )
        # two converted functions: the neighbor-list builder and the model on a given list;
        # serving_default chains them, evaluate_nlist calls the second one alone
        frames = ["(f, n, 3)", "(f, n)", "(f, 3, 3)"]
        self._build_fn = convert(partial(graph.build_nlist, spec), polymorphic_shapes=frames)
        nlist_shapes = [f"(f, n, {spec.nsel})", f"(f, n, {spec.nsel}, 3)"]
        self._model_fn = convert(
            partial(graph.evaluate_nlist, spec), polymorphic_shapes=[None, *frames, *nlist_shapes]
        )
        f64, i32, i64 = tf.float64, tf.int32, tf.int64
        inputs = [
            tf.TensorSpec([None, None, 3], f64, name="coord"),
            tf.TensorSpec([None, None], i32, name="atype"),
            tf.TensorSpec([None, 3, 3], f64, name="box"),
        ]
        nlist_inputs = [
            tf.TensorSpec([None, None, spec.nsel], i64, name="nlist"),
            tf.TensorSpec([None, None, spec.nsel, 3], i64, name="shift"),
        ]
        # traced (and converted by jax2tf) once, here; kept as concrete functions only: a
        # tf.function attribute would be traced again by tf.saved_model.save, and one called
        # from inside another graph (the signatures, the casting wrappers) would be traced again
        model = tf.function(self._model, input_signature=inputs + nlist_inputs, autograph=False)
        self._model_cf = model.get_concrete_function()
        serving = tf.function(self._serving, input_signature=inputs, autograph=False)
        serving_nlist = tf.function(
            self._serving_nlist, input_signature=inputs + nlist_inputs, autograph=False
        )
        self._serving_cf = serving.get_concrete_function()
        self._serving_nlist_cf = serving_nlist.get_concrete_function()
        self.get_metadata = tf.function(self._get_metadata, input_signature=[], autograph=False)
        self.evaluate = tf.function(self._evaluate, autograph=False)
        self.evaluate_nlist = tf.function(self._evaluate_nlist, autograph=False)
        for ft in (tf.float32, f64):
            for it in (i32, i64):
                frame_specs = [
                    tf.TensorSpec([None, None, 3], ft),
                    tf.TensorSpec([None, None], it),
                    tf.TensorSpec([None, 3, 3], ft),
                ]
                self.evaluate.get_concrete_function(*frame_specs)
                for nt in (i32, i64):
                    self.evaluate_nlist.get_concrete_function(
                        *frame_specs,
                        tf.TensorSpec([None, None, spec.nsel], nt),
                        tf.TensorSpec([None, None, spec.nsel, 3], nt),
                    )

    @property
    def nsel(self) -> int:
        """Width of the neighbor list `evaluate_nlist` takes."""
        return self._spec.nsel

    @property
    def signatures(self) -> dict[str, Any]:
        """The named signatures saved with the module."""
        return {
            "serving_default": self._serving_cf,
            "evaluate_nlist": self._serving_nlist_cf,
            "get_metadata": self.get_metadata.get_concrete_function(),
        }

    def _get_metadata(self) -> dict[str, tf.Tensor]:
        return {"json": tf.constant(self._metadata_json)}

    def _input_checks(self, coord: tf.Tensor, atype: tf.Tensor, box: tf.Tensor) -> list:
        spec = self._spec
        shape = tf.shape(coord)
        return [
            tf.debugging.assert_equal(
                tf.shape(atype), shape[:2], message="atype must have shape [nf, nat] like coord"
            ),
            tf.debugging.assert_equal(
                tf.shape(box)[0], shape[0], message="box must have shape [nf, 3, 3] like coord"
            ),
            tf.debugging.assert_all_finite(coord, "coord holds NaN or inf"),
            tf.debugging.assert_all_finite(box, "box holds NaN or inf"),
            tf.debugging.assert_non_negative(
                atype, message=f"atom types must be indices into the type_map {list(spec.type_map)}"
            ),
            tf.debugging.assert_less(
                atype,
                tf.constant(spec.ntypes, atype.dtype),
                message=f"atom types must be indices into the type_map {list(spec.type_map)}",
            ),
        ]

    def _box_check(self, box: tf.Tensor) -> tf.Operation:
        """Refuse periodic boxes the in-graph builder cannot cover (never wrong numbers)."""
        spec = self._spec
        periodic = tf.reduce_any(tf.not_equal(box, 0.0), axis=[1, 2])
        shortest = tf.reduce_min(_face_distances(box), axis=-1)
        limit = spec.rcut * (1.0 + graph.SCREEN_REL) / spec.image_range
        ok = tf.reduce_all(tf.logical_or(tf.logical_not(periodic), shortest >= limit))
        return tf.debugging.Assert(
            ok,
            [
                f"box too small or singular for the in-graph neighbor list: every face distance "
                f"of a periodic box must be >= rcut / {spec.image_range} = {limit:.6g} Å "
                "(give box = zeros for a non-periodic system, or use the evaluate_nlist "
                "signature with a neighbor list built outside). Shortest face distance per "
                "frame:",
                shortest,
            ],
            summarize=16,
        )

    def _finish(self, out: dict, checks: list) -> dict[str, tf.Tensor]:
        overlap = tf.debugging.assert_greater(
            out["min_distance"],
            tf.constant(graph.OVERLAP_DISTANCE, tf.float64),
            message="two atoms (or an atom and a periodic image) overlap; remove duplicate atoms "
            "or check the box",
        )
        with tf.control_dependencies([*checks, overlap]):
            return {k: tf.identity(out[k], name=k) for k in OUTPUTS}

    def _serving(self, coord: tf.Tensor, atype: tf.Tensor, box: tf.Tensor) -> dict:
        checks = [*self._input_checks(coord, atype, box), self._box_check(box)]
        with tf.control_dependencies(checks):
            nlist, shift = self._build_fn(coord, atype, box)
            out = self._model_cf(coord, atype, box, nlist, shift)
        return self._finish(out, checks)

    def _serving_nlist(self, coord, atype, box, nlist, shift) -> dict:
        checks = self._input_checks(coord, atype, box)
        nat = tf.cast(tf.shape(coord)[1], nlist.dtype)
        checks += [
            tf.debugging.assert_equal(
                tf.shape(nlist)[:2], tf.shape(coord)[:2], message="nlist must be [nf, nat, nsel]"
            ),
            tf.debugging.assert_equal(
                tf.shape(shift)[:3], tf.shape(nlist), message="shift must be [nf, nat, nsel, 3]"
            ),
            tf.debugging.assert_greater_equal(
                nlist, tf.constant(-1, nlist.dtype), message="nlist entries must be >= -1"
            ),
            tf.debugging.assert_less(nlist, nat, message="nlist entries must be < nat"),
        ]
        with tf.control_dependencies(checks):
            out = self._model_cf(coord, atype, box, nlist, shift)
        return self._finish(out, checks)

    def _model(self, coord, atype, box, nlist, shift) -> dict:
        return self._model_fn(self.params, coord, atype, box, nlist, shift)

    def _evaluate(self, coord, atype, box) -> dict:
        return self._serving_cf(
            tf.cast(coord, tf.float64), tf.cast(atype, tf.int32), tf.cast(box, tf.float64)
        )

    def _evaluate_nlist(self, coord, atype, box, nlist, shift) -> dict:
        return self._serving_nlist_cf(
            tf.cast(coord, tf.float64),
            tf.cast(atype, tf.int32),
            tf.cast(box, tf.float64),
            tf.cast(nlist, tf.int64),
            tf.cast(shift, tf.int64),
        )


def build_module(data: dict, image_range: int = graph.IMAGE_RANGE) -> ExportedModel:
    """The exported module in memory (not saved): what the tensorflow backend runs for a model
    that was not loaded from a .savedmodel."""
    return ExportedModel(data, image_range)


def export(data: dict, path: str | os.PathLike, image_range: int = graph.IMAGE_RANGE) -> None:
    """Write `data` (a model) as a SavedModel into the empty or absent directory `path`.

    Not atomic by itself: `dpa.io.save` / `dpa.backends.tensorflow.savedmodel.write` wrap it in a temporary
    directory that is renamed when complete."""
    with tempfile.TemporaryDirectory(prefix="dpa-savedmodel-assets-") as staging:
        module = ExportedModel(data, image_range, Path(staging))
        tf.saved_model.save(module, str(path), signatures=module.signatures)
