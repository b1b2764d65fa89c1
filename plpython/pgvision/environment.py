"""What the server's Python holds, for ``pgvision doctor``: the interpreter, where pgvision
is imported from, the versions of the packages it needs (read from their metadata, nothing
imported), the installed model files, and the limits in force for the session.

    >>> sorted(package_versions(["numpy"]))
    ['numpy']
"""

import importlib.metadata
import json
import os
import sys

from . import __version__, settings
from .files import default_model_dir

# distribution name -> what it is for; TensorFlow is optional for serving (ONNX Runtime
# extracts, scikit-learn trains the heads), needed to register or fine-tune models.
PACKAGES = {"numpy": "required", "pillow": "required", "onnxruntime": "required",
            "faiss-cpu": "required", "scikit-learn": "required",
            "imagehash": "perceptual hashes (vision.duplicates)",
            "rapidocr": "words in images (model pp_ocr_v6)",
            "opencv-python-headless": "words in images (model pp_ocr_v6)",
            "tensorflow-cpu": "registering and fine-tuning models",
            "keras": "registering and fine-tuning models",
            "tf2onnx": "converting registered models to ONNX"}


def package_versions(names):
    """{distribution: version or None}."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment(plpy, GD):
    """The facts above as a JSON text (jsonb for SQL)."""
    model_dir = default_model_dir()
    files = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []
    return json.dumps({
        "python": sys.version.split()[0],
        "prefix": sys.prefix,
        "pgvision": __version__,
        "pgvision_path": os.path.dirname(os.path.abspath(__file__)),
        "packages": package_versions(PACKAGES),
        "package_roles": PACKAGES,
        "model_dir": model_dir,
        "model_files": files,
        "runtime": settings.runtime_setting(plpy, GD),
        "limits": {name: settings.limit(plpy, GD, name) for name in settings.LIMITS},
        "server_pid": os.getpid(),
    })
