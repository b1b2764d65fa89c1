#!/usr/bin/env python3
"""Convert the installed models (``<venv>/share/pgvision/models``) to ONNX, once.

Each backend then loads the ONNX file with ONNX Runtime instead of importing TensorFlow and
rebuilding the Keras model (see pgvision.runtimes). Idempotent: converts only models whose
ONNX file is missing, and removes ONNX files no installed model uses any more.
"""

import argparse
import os
import sys

from pgvision import runtimes
from pgvision.extractors import tensorflow_extractor
from pgvision.files import read_manifest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=sys.prefix)
    args = parser.parse_args()
    model_dir = os.path.join(args.venv, "share", "pgvision", "models")
    if not runtimes.onnx_installed():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    wanted = set()
    for entry in read_manifest(model_dir):
        name = runtimes.onnx_file_name(entry["sha256"], entry["feature_layer"], entry["pooling"])
        wanted.add(name)
        if os.path.isfile(os.path.join(model_dir, name)):
            continue
        keras_file = os.path.join(model_dir, entry["file"])
        extractor = tensorflow_extractor("convert_onnx", entry, lambda: (keras_file, False))
        runtimes.convert(extractor, os.path.join(model_dir, name))
        print(f"==> converted {entry['file']} to ONNX ({name})", flush=True)
    for name in os.listdir(model_dir):
        if name.endswith(".onnx") and name not in wanted:
            os.unlink(os.path.join(model_dir, name))


if __name__ == "__main__":
    main()
