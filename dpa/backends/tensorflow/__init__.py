"""TensorFlow: runs SavedModels (`backend`), writes them through jax2tf (`export`), and owns
their layout (`savedmodel`) and the check that runs nothing (`graph_check`)."""
