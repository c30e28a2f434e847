"""JAX: evaluation (`backend`), training (`train`, `checkpointed`), fast kernels (`ops`), the
.jax format (`modelfile`), the whole-model graph that export serializes (`graph`) and XLA
settings (`xla_cpu`, `compile_cache`)."""
