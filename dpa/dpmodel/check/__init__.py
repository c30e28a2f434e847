"""Load-time validation of a serialized model tree (`data["model"]`, spec §1-8, Appendix A).

Every array is checked for dtype and finiteness, every network layer for its shape along the
chain the forward pass feeds it, statistics against `sel`, biases against `type_map`, and the
config numbers the forward pass reads for sane bounds, so a corrupt or edited file fails here,
as a `ModelFileError` naming the JSON path and what was expected, and not later as NaN energies,
a silently wrong sum, a MemoryError or a raw traceback. The expected shapes follow the formulas
of the `build` functions and the forward code of `dpa.dpmodel`. NumPy only.
"""

from __future__ import annotations

from ...errors import ModelFileError
from .descriptors import check_descriptor, descriptor_flags
from .fitting import check_fitting, check_model_level
from .nodes import FIX, FLAGS, MAX_SEL, MAX_WIDTH, Node, type_map
from .tree import check_arrays, structure, walk_fields

__all__ = ["MAX_SEL", "MAX_WIDTH", "check_model_tree"]


def check_model_tree(model: dict) -> None:
    """Raise ModelFileError naming the path of the first invalid entry of a model tree."""
    try:
        _check_tree(Node(model, "model"))
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as err:
        # a shape of the tree no check foresaw: still one clear line, never a traceback
        raise ModelFileError(
            f"the model tree is malformed ({type(err).__name__}: {err}); {FIX}"
        ) from err


def _check_tree(root: Node) -> None:
    """The checks in order: structure, arrays, fields, descriptor, fitting, model level."""
    structure(root)
    ntypes = len(type_map(root["type_map"]))
    check_arrays(root)
    walk_fields(root["descriptor"], FLAGS | descriptor_flags(root["descriptor"]))
    walk_fields(root["fitting"])
    dim = check_descriptor(root["descriptor"], ntypes)
    check_fitting(root["fitting"], ntypes, dim)
    check_model_level(root, ntypes)
