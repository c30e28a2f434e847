"""NumPy, the reference backend: energies from the array-API model, no autograd."""
