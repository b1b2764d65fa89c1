#!/usr/bin/env python3
"""Baselines for bench/extract.py: what a user would otherwise run, with the same .keras
model, decoding and preprocessing as pgvision, batches behind one traced tf.function.

  files mode (--images DIR --out F.npy): read image files, write features to .npy
  client mode (--dsn DSN --table T): psycopg2 fetches the bytes from the database in batches,
      TensorFlow runs in this client process, features are written back to a table

Prints one JSON line: {"load_s": ..., "seconds": ..., "images": ...} where ``seconds`` covers
read + decode + preprocess + infer + write, after model load and one warm-up batch.
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="path of a .keras file")
    parser.add_argument("--feature-layer", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--images", help="directory of image files (files mode)")
    parser.add_argument("--out", help=".npy output (files mode)")
    parser.add_argument("--dsn", help="database to read from and write to (client mode)")
    parser.add_argument("--table", help="table (id bigint, image bytea) (client mode)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pgvision.images import load_batch
    from pgvision.models import Extractor, load_keras_file

    started = time.monotonic()
    extractor = Extractor(load_keras_file("standalone", args.model), (args.size, args.size),
                          "inception", args.feature_layer, "avg")
    size = (args.size, args.size)
    if args.dsn:
        seconds, count = client_pipeline(args, extractor, size)
        load_s = time.monotonic() - started - seconds
    else:
        files = sorted(os.listdir(args.images))
        warm, _, _ = load_batch([open(os.path.join(args.images, f), "rb").read()
                                 for f in files[:args.batch_size]], size, "inception")
        extractor(warm)
        load_s = time.monotonic() - started
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
    json.dump({"load_s": load_s, "seconds": seconds, "images": count}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
