#!/usr/bin/env python3
"""Baselines for bench/extract.py: what a user would otherwise run, with the same .keras
model, decoding and preprocessing as pgvision, on one of three runtimes:

  tensorflow  batches behind one traced tf.function (pgvision.extractors.Extractor)
  onnx        ONNX Runtime on the ONNX file `make install` converted the model to
  litert      LiteRT (XNNPACK) on a .tflite converted from the Keras model before timing

  files mode (--images DIR --out F.npy): read image files, write features to .npy
  client mode (--dsn DSN --table T): psycopg2 fetches the bytes from the database in batches,
      the model runs in this client process, features are written back to a table

Prints one JSON line: {"runtime", "load_s", "seconds", "images", "rss_mb"}: ``load_s`` is
importing the runtime and loading the model; ``seconds`` covers read + decode + preprocess +
infer + write, after one warm-up batch; ``rss_mb`` is the process's peak memory.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def client_pipeline(args, extractor, size):
    """psycopg2 → TensorFlow in this process → features written back: (seconds, images)."""
    import psycopg2
    import psycopg2.extras

    from pgvision.images import load_batch

    conn = psycopg2.connect(args.dsn)
    cur = conn.cursor()
    cur.execute(f"SELECT image FROM {args.table} ORDER BY id LIMIT %s", (args.batch_size,))
    warm, _, _ = load_batch([bytes(r[0]) for r in cur.fetchall()], size, "inception")
    extractor(warm)
    cur.execute("DROP TABLE IF EXISTS client_features")
    cur.execute("CREATE TABLE client_features (image_id bigint PRIMARY KEY, feature real[])")
    conn.commit()
    started = time.monotonic()
    reader = conn.cursor(name="images")  # server-side cursor: batches, not the whole table
    reader.itersize = args.batch_size
    reader.execute(f"SELECT id, image FROM {args.table} ORDER BY id")
    count = 0
    while True:
        rows = reader.fetchmany(args.batch_size)
        if not rows:
            break
        batch, ok, _ = load_batch([bytes(r[1]) for r in rows], size, "inception")
        features = extractor(batch)
        psycopg2.extras.execute_values(
            cur, "INSERT INTO client_features VALUES %s",
            [(rows[p][0], f.tolist()) for p, f in zip(ok, features)])
        count += len(rows)
    conn.commit()
    seconds = time.monotonic() - started
    cur.execute("DROP TABLE client_features")
    conn.commit()
    conn.close()
    return seconds, count


class LiteRTExtractor:
    """The Keras extractor converted to .tflite, run by the LiteRT interpreter (XNNPACK)."""

    def __init__(self, tflite_path, size, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=tflite_path, num_threads=threads or None)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = None

    def __call__(self, batch):
        if len(batch) != self.batch:  # resizing re-plans the graph: only on a new batch size
            self.interpreter.resize_tensor_input(self.input, batch.shape)
            self.interpreter.allocate_tensors()
            self.batch = len(batch)
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


def convert_to_tflite(args, size):
    """Write the cut Keras model as .tflite at --tflite (a one-off, like make install)."""
    import tensorflow as tf
    from pgvision.extractors import Extractor, load_keras_file

    extractor = Extractor(load_keras_file("standalone", args.model), size, "inception",
                          args.feature_layer, args.pooling)
    with open(args.tflite, "wb") as fh:
        fh.write(tf.lite.TFLiteConverter.from_keras_model(extractor.model).convert())


def rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_extractor(args, size):
    """(extractor, seconds to import the runtime and load the model)."""
    from pgvision import extractors, runtimes
    from pgvision.extractors import Extractor, load_keras_file
    from pgvision.files import sha256_file

    started = time.monotonic()
    if args.runtime == "tensorflow":
        extractor = Extractor(load_keras_file("standalone", args.model), size, "inception",
                              args.feature_layer, args.pooling)
    elif args.runtime == "onnx":
        cut = {"sha256": sha256_file(args.model), "feature_layer": args.feature_layer,
               "pooling": args.pooling, "input_height": size[0], "input_width": size[1]}
        name = runtimes.int8_file_name(cut) if args.int8 else runtimes.onnx_file_name(cut)
        extractor = extractors.OnnxExtractor(os.path.join(os.path.dirname(args.model), name),
                                             size, "inception")
    else:
        extractor = LiteRTExtractor(args.tflite, size, os.cpu_count())
    return extractor, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="path of a .keras file")
    parser.add_argument("--feature-layer", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--pooling", default="avg")
    parser.add_argument("--int8", action="store_true",
                        help="onnx: run the model's int8 copy (what pgvision runs on this CPU)")
    parser.add_argument("--images", help="directory of image files (files mode)")
    parser.add_argument("--out", help=".npy output (files mode)")
    parser.add_argument("--dsn", help="database to read from and write to (client mode)")
    parser.add_argument("--table", help="table (id bigint, image bytea) (client mode)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runtime", choices=["tensorflow", "onnx", "litert"],
                        default="tensorflow")
    parser.add_argument("--tflite", help=".tflite file (litert), written by --convert-tflite")
    parser.add_argument("--convert-tflite", action="store_true",
                        help="only write the --tflite file and exit")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pgvision.images import load_batch

    size = (args.size, args.size)
    if args.convert_tflite:
        return convert_to_tflite(args, size)
    extractor, load_s = make_extractor(args, size)
    if args.dsn:
        seconds, count = client_pipeline(args, extractor, size)
    else:
        files = sorted(os.listdir(args.images))
        warm, _, _ = load_batch([open(os.path.join(args.images, f), "rb").read()
                                 for f in files[:args.batch_size]], size, "inception")
        extractor(warm)
        started = time.monotonic()
        out = []
        for i in range(0, len(files), args.batch_size):
            chunk = []
            for name in files[i:i + args.batch_size]:
                with open(os.path.join(args.images, name), "rb") as fh:
                    chunk.append(fh.read())
            batch, ok, errors = load_batch(chunk, size, "inception")
            out.append(extractor(batch))
        np.save(args.out, np.concatenate(out))
        seconds, count = time.monotonic() - started, len(files)
    json.dump({"runtime": args.runtime, "load_s": load_s, "seconds": seconds, "images": count,
               "rss_mb": rss_mb()}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
