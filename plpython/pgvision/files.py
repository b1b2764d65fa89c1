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


class PackagedSpec:
    """A built-in model's "file": a JSON specification shipped inside this package, read and
    checksummed once per process (a registry row is recognised by that checksum, so a
    changed specification is noticed like a changed network).

        >>> spec = PackagedSpec("perceptual_hash.json", "perceptual_hash")
        >>> spec.spec()["kind"], len(spec.sha256())
        ('perceptual_hash', 64)
    """

    def __init__(self, filename, kind):
        self.path = os.path.join(os.path.dirname(os.path.abspath(__file__)), filename)
        self.kind = kind
        self._spec = self._sha256 = None

    def read(self, path=None):
        path = path or self.path
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
        if spec.get("kind") != self.kind:
            raise ValueError(f"{path} is not a {self.kind} specification")
        return spec

    def spec(self):
        """The shipped specification (do not modify the dict)."""
        if self._spec is None:
            self._spec = self.read()
        return self._spec

    def sha256(self):
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256
