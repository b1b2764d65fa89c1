#!/usr/bin/env python3
"""Extraction spread over sessions on one node: 1 session vs 2 sessions splitting one table
with vision.extract_table(parts => 2, part => i), in one run. Speed-up and efficiency are
against one session whose inference uses half the cores (so 2 such sessions use them all).

Each configuration runs in fresh, warmed backends (a backend reads its thread settings when
it first loads a model): the model is loaded before the clock starts.

    make bench-sessions                    # 96 images, mobilenet_v2
"""

import argparse
import json
import os
import threading
import time

import psycopg2

from common import sample_images


def connect(dsn, threads):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    if threads:
        cur.execute(f"SET pgvision.intra_op_threads = {threads}")
        cur.execute(f"SET pgvision.inter_op_threads = {threads}")
    return conn


def run(dsn, table, model, sessions, threads):
    conns = [connect(dsn, threads) for _ in range(sessions)]
    for conn in conns:  # warm: import TF with these threads, load and trace the model
        conn.cursor().execute(f"SELECT vision.extract_features(image, %s) FROM {table} "
                              "WHERE id = 0", (model,))
    conns[0].cursor().execute("DELETE FROM vision.features WHERE source = %s::regclass",
                              (table,))

    def work(i):
        conns[i].cursor().execute("CALL vision.extract_table(%s, model => %s, batch_size => 16, "
                                  "parts => %s, part => %s)", (table, model, sessions, i))

    started = time.monotonic()
    threads_ = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
    [t.start() for t in threads_]
    [t.join() for t in threads_]
    seconds = time.monotonic() - started
    for conn in conns:
        conn.close()
    return seconds


def main():
    parser = argparse.ArgumentParser(description="pgvision sessions benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="out/bench_sessions.json")
    args = parser.parse_args()
    n = 48 if args.quick else args.images
    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    cur = conn.cursor()
    table = "bench_sessions"
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, image bytea)")
    for i, data in enumerate(sample_images(n)):
        cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, psycopg2.Binary(data)))
    cpus = os.cpu_count()
    half = max(1, cpus // 2)
    configs = [(1, half), (1, 0), (2, half), (2, 0)]
    results = []
    for sessions, threads in configs:
        seconds = run(args.dsn, table, args.model, sessions, threads)
        results.append({"sessions": sessions, "threads_per_backend": threads or "all",
                        "seconds": seconds, "img_s": n / seconds})
    cur.execute(f"DROP TABLE {table}")
    base = results[0]["img_s"]
    print(f"\n{n} images, {args.model}, {cpus} CPUs")
    for r in results:
        speedup = r["img_s"] / base
        print(f"  {r['sessions']} session(s), threads {r['threads_per_backend']!s:>3}: "
              f"{r['img_s']:5.1f} img/s  speed-up {speedup:.2f}x  efficiency "
              f"{speedup / r['sessions']:.2f}")
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
