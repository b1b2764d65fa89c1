"""The ``pgvision`` command: load a folder of images, extract, search, classify, map, manage
models, migrate and check a server, from a shell (``pgvision --help``).

A client of the extension: everything it does goes through pgvision's SQL functions over a
libpq connection, as the connecting role.
"""
