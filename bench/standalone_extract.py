#!/usr/bin/env python3
"""Baseline for bench/extract.py: the standalone TensorFlow script a user would otherwise run.

Reads image files, decodes and preprocesses them exactly as pgvision does, runs the same
.keras model in batches behind one traced tf.function, and writes features to a .npy file.
Prints one JSON line: {"load_s": ..., "seconds": ..., "images": ...} where ``seconds`` covers
read + decode + preprocess + infer + write, after model load and one warm-up batch.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="path of a .keras file")
    parser.add_argument("--feature-layer", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--images", required=True, help="directory of image files")
    parser.add_argument("--out", required=True, help=".npy output")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pgvision.images import load_batch
    from pgvision.models import Extractor, load_keras_file

    started = time.monotonic()
    extractor = Extractor(load_keras_file("standalone", args.model), (args.size, args.size),
                          "inception", args.feature_layer, "avg")
    files = sorted(os.listdir(args.images))
    warm, _, _ = load_batch([open(os.path.join(args.images, f), "rb").read()
                             for f in files[:args.batch_size]], (args.size, args.size), "inception")
    extractor(warm)
    load_s = time.monotonic() - started

    started = time.monotonic()
    out = []
    for i in range(0, len(files), args.batch_size):
        chunk = []
        for name in files[i:i + args.batch_size]:
            with open(os.path.join(args.images, name), "rb") as fh:
                chunk.append(fh.read())
        batch, ok, errors = load_batch(chunk, (args.size, args.size), "inception")
        out.append(extractor(batch))
    np.save(args.out, np.concatenate(out))
    seconds = time.monotonic() - started
    json.dump({"load_s": load_s, "seconds": seconds, "images": len(files)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
