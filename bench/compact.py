#!/usr/bin/env python3
"""Upgrading a catalog to half-precision storage: what the upgrade and the conversion cost,
and that searches answer throughout.

In a database of its own, with N synthetic clustered 2048-d vectors stored as 0.16.0 stored
them (real[]), prints from one run:
  1. ALTER EXTENSION pgvision UPDATE (0.16.0 -> 0.17.0): seconds, against reading every
     vector once (the baseline: what a rewrite would at least cost);
  2. CALL vision.compact_features: seconds and rows/s, against the same baseline;
  3. exact searches from another session every 0.2 s during the conversion: how many
     answered, none failed, and their latency against before it;
  4. the table's disk per image (heap, TOAST and key, after VACUUM FULL) before and after,
     and the recall@10 of exact search after against before.

    make bench-compact                       # 100k vectors
    make bench-compact BENCH_ARGS=--quick    # 10k
"""

import argparse
import threading
import time

import numpy as np
import psycopg2

from common import clustered_blocks, connect, copy_binary, feature_rows, write_results

DIMS, MODEL, TABLE, DATABASE = 2048, "inception_v3", "bench_compact", "pgvision_bench_compact"


def copy_single(cur, ids, vectors):
    """Binary COPY of rows as 0.16.0 stored them: (model, source, image_id, real[])."""
    rows = feature_rows(cur, TABLE, MODEL, ids, [
        ("array_len", ">i4"), ("ndim", ">i4"), ("flags", ">i4"), ("elem", ">u4"),
        ("dim", ">i4"), ("lbound", ">i4"),
        ("values", [("len", ">i4"), ("value", ">f4")], (DIMS,))])
    rows["array_len"], rows["ndim"], rows["elem"], rows["dim"] = 20 + 8 * DIMS, 1, 700, DIMS
    rows["lbound"], rows["values"]["len"], rows["values"]["value"] = 1, 4, vectors
    copy_binary(cur, "COPY vision.features (model, source, image_id, feature) FROM STDIN "
                "WITH (FORMAT binary)", rows)


def table_kb(cur, relation, n):
    cur.execute(f"VACUUM FULL {relation}")
    cur.execute("SELECT pg_total_relation_size(%s)", (relation,))
    return cur.fetchone()[0] / n / 1024


def top10(cur, probes):
    out = {}
    for p in probes:
        cur.execute("SELECT image_id FROM vision.similar(%s, 10, %s, source => %s, "
                    "approximate => false)", (p, MODEL, TABLE))
        out[p] = {r[0] for r in cur.fetchall()}
    return out


class Searcher(threading.Thread):
    """Exact searches from its own session every ``every`` seconds until stopped."""

    def __init__(self, dsn, probes, every=0.2):
        super().__init__(daemon=True)
        self.dsn, self.probes, self.every = dsn, probes, every
        self.latencies, self.failures = [], []
        self.done = threading.Event()

    def run(self):
        cur = connect_to(self.dsn, DATABASE).cursor()
        i = 0
        while not self.done.is_set():
            started = time.monotonic()
            try:
                cur.execute("SELECT count(*) FROM vision.similar(%s, 10, %s, source => %s, "
                            "approximate => false)",
                            (self.probes[i % len(self.probes)], MODEL, TABLE))
                assert cur.fetchone()[0] == 10
                self.latencies.append(time.monotonic() - started)
            except Exception as err:  # noqa: BLE001 - counted and reported, not raised
                self.failures.append(str(err).strip())
            i += 1
            self.done.wait(self.every)


def connect_to(dsn, dbname):
    """A connection to database ``dbname`` of the server ``dsn`` names (libpq merges them)."""
    conn = psycopg2.connect(dsn, dbname=dbname)
    conn.autocommit = True
    return conn


def main():
    parser = argparse.ArgumentParser(description="pgvision half-precision upgrade benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10k vectors")
    parser.add_argument("--json", default="out/bench_compact.json")
    args = parser.parse_args()
    n = 10_000 if args.quick else args.n
    admin = connect(args.dsn).cursor()
    admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    admin.execute(f"CREATE DATABASE {DATABASE}")
    dsn = args.dsn
    cur = connect_to(dsn, DATABASE).cursor()
    cur.execute("CREATE EXTENSION pgvision VERSION '0.16.0' CASCADE")
    cur.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY)")
    cur.execute(f"INSERT INTO {TABLE} SELECT generate_series(1, {n})")
    print(f"... loading {n} x {DIMS} as 0.16.0 stored them (real[])", flush=True)
    for ids, block in clustered_blocks(n, DIMS):
        copy_single(cur, ids, block)
    results = {"n": n, "dims": DIMS, "table_kb_before": table_kb(cur, "vision.features", n)}

    started = time.monotonic()
    cur.execute("SELECT sum(length(array_send(feature))) FROM vision.features")
    results["read_all_s"] = time.monotonic() - started
    started = time.monotonic()
    cur.execute("ALTER EXTENSION pgvision UPDATE TO '0.17.0'")
    results["upgrade_s"] = time.monotonic() - started

    probes = [int(p) for p in np.random.default_rng(3).choice(np.arange(1, n + 1), 20,
                                                              replace=False)]
    before = top10(cur, probes)  # also writes the snapshot the searches map
    searcher = Searcher(dsn, probes)
    searcher.start()
    time.sleep(2)
    quiet = len(searcher.latencies)
    print("... compacting", flush=True)
    started = time.monotonic()
    cur.execute(f"CALL vision.compact_features('{TABLE}')")
    converted, single = cur.fetchone()
    results["compact_s"] = time.monotonic() - started
    searcher.done.set()
    searcher.join()
    assert converted == n and single == 0, (converted, single)
    lat = np.array(searcher.latencies)
    results["searches"] = {"before_ms": 1000 * float(np.median(lat[:quiet])),
                           "during_ms": 1000 * float(np.median(lat[quiet:])),
                           "during_max_ms": 1000 * float(lat[quiet:].max()),
                           "answered_during": int(len(lat) - quiet),
                           "failed": searcher.failures}
    after = top10(cur, probes)
    results["recall_at_10_after"] = float(np.mean([len(after[p] & before[p]) / 10
                                                   for p in probes]))
    results["table_kb_after"] = table_kb(cur, "vision.stored_features", n)
    cur.connection.close()
    admin.execute(f"DROP DATABASE {DATABASE}")
    report(results)
    print()
    write_results(args.json, results)


def report(r):
    n, s = r["n"], r["searches"]
    print(f"\n{n} x {r['dims']} vectors stored as 0.16.0 stored them; reading every vector "
          f"once takes {r['read_all_s']:.1f} s (the baseline)")
    print(f"ALTER EXTENSION pgvision UPDATE: {r['upgrade_s']:.2f} s = "
          f"{r['upgrade_s'] / r['read_all_s']:.3f}x the baseline (no rewrite)")
    print(f"vision.compact_features: {r['compact_s']:.1f} s, {n / r['compact_s']:.0f} rows/s = "
          f"{r['compact_s'] / r['read_all_s']:.1f}x the baseline")
    print(f"searches from another session meanwhile: {s['answered_during']} answered, "
          f"{len(s['failed'])} failed; median {s['during_ms']:.0f} ms (max "
          f"{s['during_max_ms']:.0f}) against {s['before_ms']:.0f} ms before")
    print(f"table per image: {r['table_kb_before']:.1f} KB -> {r['table_kb_after']:.1f} KB "
          f"= {r['table_kb_after'] / r['table_kb_before']:.2f}x; exact top 10 after against "
          f"before: {r['recall_at_10_after']:.3f}")


if __name__ == "__main__":
    main()
