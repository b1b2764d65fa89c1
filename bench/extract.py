#!/usr/bin/env python3
"""Feature extraction benchmark: pgvision in the database vs. a standalone TensorFlow script.

All figures come from one run on one machine, and are printed as ratios to the baseline:

  standalone   files → decode → model → .npy, in its own process (bench/standalone_extract.py)
  in-DB table  CALL vision.extract_table(...): read bytea rows, decode, model, write
               vision.features rows, error bookkeeping, per-batch commits
  in-DB per-row SELECT vision.extract_features(image) FROM t (one image per call)
  client       psycopg2 fetches the bytes, TensorFlow runs in the client, features are
               written back (what users do today without pgvision)

Both sides are warmed (model loaded, graph traced) before timing; the cold start of a fresh
backend (import TensorFlow + load the model) is measured separately. Images are the
scikit-image photos, augmented (crop, flip, rotation, colour) and saved as 640x480 JPEGs.

    make bench                       # 128 images per model
    make bench BENCH_ARGS=--quick    # 32 images, inception only
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import psycopg2
from PIL import Image, ImageEnhance, ImageOps
from skimage import data as photos

from pgvision.models import default_model_dir, read_manifest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
           "immunohistochemistry", "camera", "coins", "moon", "horse", "colorwheel"]


def sample_images(n, seed=0):
    """n distinct 640x480 JPEGs made from the scikit-image photos."""
    rng = np.random.default_rng(seed)
    bases = [Image.fromarray(np.asarray(getattr(photos, s)()).astype(np.uint8)).convert("RGB")
             for s in SOURCES]
    out = []
    for i in range(n):
        img = bases[i % len(bases)]
        w, h = img.size
        dx, dy = rng.integers(0, w // 5), rng.integers(0, h // 5)
        img = img.crop((dx, dy, dx + w * 4 // 5, dy + h * 4 // 5)).rotate(float(rng.uniform(-15, 15)))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.6, 1.4))).resize((640, 480))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(60, 95)))
        out.append(buf.getvalue())
    return out


def timed(cur, sql, params=None):
    started = time.monotonic()
    cur.execute(sql, params)
    rows = cur.fetchall() if cur.description else None
    return time.monotonic() - started, rows


def run_baseline(args):
    """bench/standalone_extract.py in its own process; its JSON result."""
    result = subprocess.run([sys.executable, os.path.join(HERE, "standalone_extract.py"), *args],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_model(dsn, entry, images, workdir):
    name, size = entry["name"], entry["input_height"]
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    table = f"bench_{name}"
    cur.execute("DELETE FROM vision.features WHERE source = to_regclass(%s)", (table,))
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, image bytea)")
    for i, data in enumerate(images):
        cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, psycopg2.Binary(data)))

    # Cold start: a fresh backend's first call (import TensorFlow, load + trace the model).
    cold_s, _ = timed(cur, f"SELECT vision.extract_features(image, %s) FROM {table} WHERE id = 0",
                      (name,))
    timed(cur, "CALL vision.extract_table(%s, model => %s, batch_size => 32)", (table, name))
    cur.execute("DELETE FROM vision.features WHERE source = %s::regclass", (table,))
    table_s, _ = timed(cur, "CALL vision.extract_table(%s, model => %s, batch_size => 32)",
                       (table, name))
    row_s, _ = timed(cur, f"SELECT id, vision.extract_features(image, %s) FROM {table}", (name,))
    cur.execute("DELETE FROM vision.features WHERE source = %s::regclass", (table,))
    model_args = ["--model", os.path.join(default_model_dir(), entry["file"]),
                  "--feature-layer", entry["feature_layer"], "--size", str(size)]
    client = run_baseline(model_args + ["--dsn", dsn, "--table", table])
    cur.execute(f"DROP TABLE {table}")
    conn.close()

    files = os.path.join(workdir, name)
    os.makedirs(files)
    for i, data in enumerate(images):
        with open(os.path.join(files, f"{i:06d}.jpg"), "wb") as fh:
            fh.write(data)
    standalone = run_baseline(model_args + ["--images", files,
                                            "--out", os.path.join(workdir, f"{name}.npy")])
    n = len(images)
    return {
        "model": name, "images": n,
        "standalone_img_s": n / standalone["seconds"],
        "table_img_s": n / table_s,
        "per_row_img_s": n / row_s,
        "client_img_s": n / client["seconds"],
        "table_vs_standalone": standalone["seconds"] / table_s,
        "table_vs_client": client["seconds"] / table_s,
        "per_row_vs_table": table_s / row_s,
        "cold_start_s": cold_s,
        "standalone_load_s": standalone["load_s"],
    }


def main():
    parser = argparse.ArgumentParser(description="pgvision extraction benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="32 images, inception_v3 only")
    parser.add_argument("--json", default="out/bench_extract.json")
    args = parser.parse_args()
    n = 32 if args.quick else args.images
    entries = [m for m in read_manifest(default_model_dir())
               if not args.quick or m["name"] == "inception_v3"]
    images = sample_images(n)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for entry in entries:
            print(f"... {entry['name']}: {n} images", flush=True)
            results.append(bench_model(args.dsn, entry, images, workdir))

    print(f"\n{'model':<14}{'standalone':>12}{'client':>10}{'in-DB table':>13}{'per-row':>10}"
          f"{'table/standalone':>18}{'table/client':>14}{'per-row/table':>15}{'cold start':>12}")
    for r in results:
        print(f"{r['model']:<14}{r['standalone_img_s']:>8.1f} i/s{r['client_img_s']:>6.1f} i/s"
              f"{r['table_img_s']:>9.1f} i/s{r['per_row_img_s']:>6.1f} i/s"
              f"{r['table_vs_standalone']:>17.2f}x{r['table_vs_client']:>13.2f}x"
              f"{r['per_row_vs_table']:>14.2f}x{r['cold_start_s']:>11.1f}s")
    print("\nGoals: table/standalone >= 0.90x, per-row/table >= 0.80x. Machine: "
          f"{os.cpu_count()} CPUs.")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"cpus": os.cpu_count(), "results": results}, fh, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
