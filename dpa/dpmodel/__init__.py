"""The reference model, written once against the Python array API (NumPy, PyTorch, JAX, strict).

Functions read the serialized model tree (the `.dp` schema of DeePMD-kit v3) directly.

Deviations from DESIGN's "array_api_compat and the standard library only", on purpose:
- NumPy is used for host-side static data (type groupings, exclusion tables) and for building
  fresh parameters (its random generator); no array of the computation is NumPy-specific.
- `dpa.errors` is imported so that bad configs raise the package's own errors.
- Derivatives are taken with respect to the edge vectors r_ij = x_j - x_i + S H (one backward
  pass); forces, virial and atom virial follow from them exactly (spec §9). The scatter-add this
  needs is supplied by each backend, since the array API has none. For message-passing
  descriptors (DPA-2, DPA-3) the atom virial needs three more backward passes (spec §9).
- `native/` holds torch's and JAX's own kernels (silu/silut, stop_gradient, row blocks, neighbor
  groups), imported lazily only for arrays of that framework (`native.native_kernels`): same
  numbers to round-off, far fewer passes over the DPA-3 angle tensors. Elsewhere the generic
  array-API code runs.
"""
