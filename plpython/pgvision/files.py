"""Where pgvision keeps files on the database server: installed models and their manifest,
the per-cluster cache under the data directory, and content checksums."""

import hashlib
import json
import os

MANIFEST = "models.json"
RUNTIME_DIR = "pgvision"  # under the data directory (a backend's working directory)


def default_model_dir():
    """``<venv>/share/pgvision/models``: next to the venv this package is installed in."""
    site_packages = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(site_packages)))
    return os.path.join(prefix, "share", "pgvision", "models")


def runtime_dir(*parts):
    """A path under ``<data directory>/pgvision``: what this server computed and caches."""
    return os.path.join(os.getcwd(), RUNTIME_DIR, *parts)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(model_dir):
    """The installed models' manifest (written by ``make install``), or [] when absent."""
    path = os.path.join(model_dir, MANIFEST)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["models"]
