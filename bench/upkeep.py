#!/usr/bin/env python3
"""What keeping a table current costs, in one run.

1. Writes to the user's table with and without pgvision's change tracking: INSERT of image
   rows, UPDATE of their images, UPDATE of another column, DELETE: ratio tracked / untracked
   (the tracked table has features, so the triggers really delete them).
2. ``CALL vision.maintain`` after 1% of a 10k-row table changed (images replaced), with an
   HNSW index: seconds, and the share of it that is extraction.

    make bench-upkeep                      # 1000 rows for writes, 10k table for maintain
    make bench-upkeep BENCH_ARGS=--quick   # 300 and 2k
"""

import argparse
import io
import json
import os

import numpy as np
import psycopg2

from common import connect, sample_images, timed

MODEL, DIMS = "mobilenet_v2", 1280


def fake_features(cur, table, ids, seed=0):
    """Features for ``ids`` without extracting them (COPY), so a large table is set up fast."""
    rng = np.random.default_rng(seed)
    cur.execute("DELETE FROM vision.features WHERE source = %s::regclass AND model = %s",
                (table, MODEL))
    buf = io.StringIO()
    for i in ids:
        vector = np.maximum(rng.normal(0, 1, DIMS), 0)
        buf.write(f"{MODEL}\t{table}\t{i}\t{{{','.join(f'{x:.3g}' for x in vector)}}}\n")
    buf.seek(0)
    cur.copy_expert("COPY vision.features (model, source, image_id, feature) FROM STDIN", buf)


def make_table(cur, table, images, tracked):
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, price int, image bytea)")
    if tracked:  # extract_table installs the triggers (here with nothing pending)
        cur.execute(f"INSERT INTO {table} VALUES (0, 0, %s)", (psycopg2.Binary(images[0]),))
        cur.execute(f"CALL vision.extract_table('{table}', model => '{MODEL}')")
        cur.execute(f"DELETE FROM {table}")


def seconds(cur, sql, params=None):
    return timed(cur, sql, params)[0]


def writes(dsn, n):
    cur = connect(dsn).cursor()
    images = sample_images(n)
    fresh = sample_images(n, seed=1)
    out = {}
    for tracked in (False, True):
        table = "bench_tracked" if tracked else "bench_untracked"
        make_table(cur, table, images, tracked)
        rows = [(i, i, psycopg2.Binary(data)) for i, data in enumerate(images, start=1)]
        t = {"insert": seconds(cur, f"INSERT INTO {table} SELECT * FROM unnest(%s::bigint[], "
                                  "%s::int[], %s::bytea[])", tuple(map(list, zip(*rows))))}
        fake_features(cur, table, range(1, n + 1))
        t["update image"] = seconds(cur, f"UPDATE {table} t SET image = u.image FROM unnest("
                                       "%s::bigint[], %s::bytea[]) AS u (id, image) "
                                       "WHERE t.id = u.id",
                                  (list(range(1, n + 1)), [psycopg2.Binary(d) for d in fresh]))
        fake_features(cur, table, range(1, n + 1))
        t["update price"] = seconds(cur, f"UPDATE {table} SET price = price + 1")
        t["delete"] = seconds(cur, f"DELETE FROM {table}")
        out[tracked] = t
        cur.execute(f"DROP TABLE {table}")
    cur.connection.close()
    return {op: {"untracked_s": out[False][op], "tracked_s": out[True][op],
                 "ratio": out[True][op] / out[False][op]} for op in out[False]}


def maintain(dsn, n):
    cur = connect(dsn).cursor()
    table = "bench_live"
    images = sample_images(64)
    make_table(cur, table, images, tracked=False)
    cur.execute(f"INSERT INTO {table} SELECT i, i, (%s::bytea[])[1 + i %% 64] "
                "FROM generate_series(1, %s) i", ([psycopg2.Binary(d) for d in images], n))
    fake_features(cur, table, range(1, n + 1))
    cur.execute(f"CALL vision.extract_table('{table}', model => '{MODEL}')")  # triggers, job
    cur.execute(f"SELECT vision.create_index('{table}', '{MODEL}')")
    changed = max(1, n // 100)
    cur.execute(f"UPDATE {table} SET image = (%s::bytea[])[1 + id %% 64] WHERE id <= %s",
                ([psycopg2.Binary(d) for d in sample_images(64, seed=2)], changed))
    maintain_s, rows = timed(cur, f"CALL vision.maintain('{table}')")
    report = rows[0][0]
    cur.execute(f"UPDATE {table} SET image = image || '\\x00'::bytea WHERE id <= %s", (changed,))
    cur.execute("DELETE FROM vision.indexes WHERE source = %s::regclass", (table,))
    extract_only, _ = timed(cur, f"CALL vision.maintain('{table}')")
    cur.execute(f"DROP TABLE {table}")
    cur.connection.close()
    return {"rows": n, "changed": changed, "maintain_s": maintain_s, "report": report,
            "extraction_only_s": extract_only}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_writes, n_table = (300, 2_000) if args.quick else (1_000, 10_000)
    w = writes(args.dsn, n_writes)
    print(f"\nWrites to the user's table ({n_writes} rows of 640x480 JPEGs), without / with "
          "change tracking:")
    for op, r in w.items():
        print(f"  {op:13} {r['untracked_s']:7.3f} s  {r['tracked_s']:7.3f} s  "
              f"ratio {r['ratio']:.2f}")
    m = maintain(args.dsn, n_table)
    print(f"\nvision.maintain after {m['changed']} of {m['rows']} images changed "
          f"({MODEL}, HNSW index): {m['maintain_s']:.1f} s "
          f"(the same extraction without an index to refresh: {m['extraction_only_s']:.1f} s)")
    print(f"  report: {json.dumps(m['report'])}")
    os.makedirs("out", exist_ok=True)
    with open("out/bench_upkeep.json", "w") as fh:
        json.dump({"writes": w, "maintain": m}, fh, indent=1)


if __name__ == "__main__":
    main()
