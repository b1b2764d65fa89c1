"""pgvision: CNN image features, similarity search and classification inside Postgres.

The SQL functions of the ``pgvision`` extension are thin PL/Python wrappers; each one calls a
function of this package, passing the PL/Python ``plpy`` module and the ``GD`` dictionary in,
so every module here imports and tests without a server.
"""

# The one source of truth for the version: scripts/install.sh writes it into pgvision.control,
# the migrations read it, and the extension refuses to run a package of another version.
__version__ = "0.19.0"

# The default model, chosen by measurement (make bench-quality, docs/extraction.md). A new
# default is a new model name: "inception_v3" keeps meaning the features it always meant.
DEFAULT_MODEL = "inception_v3_mixed6_grid_224"
