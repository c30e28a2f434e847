"""Names of a dpa SavedModel's format and assets, shared by the reader and the exporter."""

FORMAT = "dpa.savedmodel"
# Bump on any change of signatures, conventions or asset layout that old readers would misread.
FORMAT_VERSION = 1
METADATA_ASSET = "dpa_metadata.json"
MODEL_ASSET = "dpa_model.dp"
