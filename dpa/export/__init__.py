"""Export of models for inference outside dpa: a TensorFlow SavedModel through jax2tf.

`graph` holds the pure JAX functions (traced types, symbolic shapes, in-graph neighbor list);
`savedmodel` converts them with jax2tf and saves them. Both import jax (and `savedmodel`
TensorFlow), so nothing here is imported by `import dpa`; `dpa.io` reaches it on writing a
`.savedmodel`.
"""
