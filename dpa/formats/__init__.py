"""Neutral model-file primitives without a framework: the .dp HDF5 format and the array
checksum every format carries."""
