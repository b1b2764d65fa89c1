#!/usr/bin/env python3
"""Convert the installed models (``<venv>/share/pgvision/models``) to ONNX, once, and
quantise those whose manifest entry says ``"int8": true``.

Each backend then loads the ONNX file with ONNX Runtime instead of importing TensorFlow and
rebuilding the Keras model (see pgvision.runtimes). Idempotent: converts only models whose
ONNX file is missing, and removes ONNX files no installed model uses any more. The int8 copy
is calibrated on the images in tools/calibration (shipped: the same file on every machine).
"""

import argparse
import os
import sys

from pgvision import runtimes
from pgvision.extractors import tensorflow_extractor
from pgvision.files import read_manifest
from pgvision.images import load_batch

CALIBRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calibration")


def calibration_batches(entry):
    """The calibration images, preprocessed for ``entry``'s model, one image a batch."""
    images = []
    for name in sorted(os.listdir(CALIBRATION)):
        if name.endswith(".jpg"):
            with open(os.path.join(CALIBRATION, name), "rb") as fh:
                images.append(fh.read())
    batch, _, _ = load_batch(images, (entry["input_height"], entry["input_width"]),
                             entry["preprocessing"])
    return [batch[i:i + 1] for i in range(len(batch))]


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
        name = runtimes.onnx_file_name(entry)
        wanted.add(name)
        if not os.path.isfile(os.path.join(model_dir, name)):
            keras_file = os.path.join(model_dir, entry["file"])
            extractor = tensorflow_extractor("convert_onnx", entry, lambda: (keras_file, False))
            runtimes.convert(extractor, os.path.join(model_dir, name))
            print(f"==> converted {entry['name']} to ONNX ({name})", flush=True)
        if entry.get("int8"):
            int8 = runtimes.int8_file_name(entry)
            wanted.add(int8)
            if not os.path.isfile(os.path.join(model_dir, int8)):
                runtimes.quantise(os.path.join(model_dir, name), os.path.join(model_dir, int8),
                                  calibration_batches(entry))
                print(f"==> quantised {entry['name']} to int8 ({int8})", flush=True)
    for name in os.listdir(model_dir):
        if name.endswith(".onnx") and name not in wanted:
            os.unlink(os.path.join(model_dir, name))


if __name__ == "__main__":
    main()
