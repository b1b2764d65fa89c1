#!/usr/bin/env python3
"""`pgvision load` against `psql \\copy` of the same bytes, in one run.

A folder of N distinct 640x480 JPEGs (~60 kB each) is loaded three ways into fresh tables:

1. baseline: `psql -c "\\copy t (image) FROM 'images.copy'"`, the bytes already written as
   COPY text (hex bytea) in one file (preparing that file is not timed);
2. `pgvision load DIR --table t --create`: reads every file, checks it is an image, hashes
   it, skips duplicates, stores name/size/format/sha256 too, over binary COPY;
3. the same with --batch-mb 8 (more commits, what an interrupted load would keep).

Prints seconds, MB/s and the ratio baseline / pgvision (the goal: >= 0.8).

    make bench-load                       # 2000 images
    make bench-load BENCH_ARGS="--images 500"
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import connect, sample_images


def timed_run(args, env=None):
    started = time.monotonic()
    subprocess.run(args, check=True, capture_output=True, env=env)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    images = sample_images(min(args.images, 200))
    folder = tempfile.mkdtemp(prefix="pgvision-bench-load-")
    for i in range(args.images):  # distinct bytes: a comment segment after the JPEG header
        data = images[i % len(images)]
        data = data[:2] + b"\xff\xfe" + (6).to_bytes(2, "big") + i.to_bytes(4, "big") + data[2:]
        with open(os.path.join(folder, f"img{i:06d}.jpg"), "wb") as fh:
            fh.write(data)
    files = sorted(os.listdir(folder))
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    copy_file = os.path.join(folder, "..", os.path.basename(folder) + ".copy")
    with open(copy_file, "w") as out:
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                out.write("\\\\x" + fh.read().hex() + "\n")
    command = os.path.join(os.path.dirname(sys.executable), "pgvision")
    env = dict(os.environ, DATABASE_URL=args.dsn)
    cur = connect(args.dsn).cursor()

    def fresh(table, create=True):
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        if create:
            cur.execute(f"CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY "
                        "PRIMARY KEY, image bytea NOT NULL)")

    results = {"images": args.images, "megabytes": round(total / 1e6, 1)}
    ways = {
        "psql \\copy (baseline)": lambda: (fresh("bench_load_copy"), timed_run(
            ["psql", "-X", "-q", args.dsn, "-c",
             f"\\copy bench_load_copy (image) FROM '{copy_file}'"]))[1],
        "pgvision load": lambda: (fresh("bench_load_cli", create=False), timed_run(
            [command, "-q", "load", folder, "--table", "bench_load_cli", "--create"],
            env))[1],
        "pgvision load --batch-mb 8": lambda: (fresh("bench_load_cli8", create=False), timed_run(
            [command, "-q", "load", folder, "--table", "bench_load_cli8", "--create",
             "--batch-mb", "8"], env))[1],
    }
    print(f"{args.images} JPEGs, {total / 1e6:.1f} MB (best of {args.repeat})")
    baseline = None
    for name, way in ways.items():
        seconds = min(way() for _ in range(args.repeat))
        baseline = baseline or seconds
        results[name] = {"seconds": round(seconds, 3), "mb_per_s": round(total / 1e6 / seconds, 1),
                         "ratio": round(baseline / seconds, 2)}
        print(f"  {name:<28} {seconds:6.2f} s  {total / 1e6 / seconds:6.1f} MB/s  "
              f"ratio {baseline / seconds:.2f}")
    for table in ("bench_load_copy", "bench_load_cli", "bench_load_cli8"):
        fresh(table, create=False)
    os.makedirs("out", exist_ok=True)
    with open("out/bench_load.json", "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
