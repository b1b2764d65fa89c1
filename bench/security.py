#!/usr/bin/env python3
"""What the security checks cost, and what the extraction memory bound saves, in one run.

1. Per-call search latency as a superuser (who bypasses row-level security) and as a plain
   role with SELECT on the table (row-level security on pgvision's tables, the explicit
   privilege check), exact and HNSW: ratio plain / superuser. Then the same plain role once
   the table has a row-level security policy of its own that hides half of its rows from
   it (every answer checked against the caller's SELECT): ratio with / without the policy.
2. Peak resident memory (VmHWM) of a fresh backend extracting a table with batch_size 16 /
   64 / 128, without the bound (pgvision.max_batch_memory_mb = 0, what 0.6.0 did) and with
   the default bound: before / after.

    make bench-security                      # 10k vectors; Inception-v3, 128 images
    make bench-security BENCH_ARGS=--quick   # 2k vectors; MobileNet-v2, 64 images
"""

import argparse
import json
import os
import time

import psycopg2

from common import connect, load, sample_images
from search import clustered, copy_features

ROLE = "bench_reader"


def latency(cur, sql, params, repeat):
    cur.execute(sql, params)  # warm: model, matrix, index and plans cached
    started = time.perf_counter()
    for _ in range(repeat):
        cur.execute(sql, params)
        cur.fetchall()
    return (time.perf_counter() - started) / repeat * 1000


def search_cost(dsn, n, repeat):
    admin = connect(dsn)
    cur = admin.cursor()
    copy_features(cur, "bench_secure", clustered(n))
    cur.execute("SELECT vision.create_index('bench_secure', 'inception_v3')")
    cur.execute(f"DROP ROLE IF EXISTS {ROLE}")
    cur.execute(f"CREATE ROLE {ROLE} LOGIN")
    cur.execute(f"GRANT SELECT ON bench_secure TO {ROLE}")
    reader = psycopg2.connect(dsn.replace("user=postgres", f"user={ROLE}"))
    reader.autocommit = True
    out = {}
    try:
        for label, approximate in (("exact", "false"), ("hnsw", "true")):
            sql = ("SELECT * FROM vision.similar(%s, 10, 'inception_v3', source => 'bench_secure', "
                   f"approximate => {approximate})")
            su = latency(cur, sql, (n // 2,), repeat)
            plain = latency(reader.cursor(), sql, (n // 2,), repeat)
            out[label] = {"superuser_ms": su, "plain_role_ms": plain, "ratio": plain / su}
        cur.execute("ALTER TABLE bench_secure ENABLE ROW LEVEL SECURITY")
        cur.execute(f"CREATE POLICY half ON bench_secure TO {ROLE} USING (id % 2 = 0)")
        for label, approximate in (("exact", "false"), ("hnsw", "true")):
            sql = ("SELECT * FROM vision.similar(%s, 10, 'inception_v3', source => 'bench_secure', "
                   f"approximate => {approximate})")
            policy = latency(reader.cursor(), sql, (n // 2,), repeat)
            out[label].update(policy_ms=policy, policy_ratio=policy / out[label]["plain_role_ms"])
    finally:
        reader.close()
        cur.execute("DROP TABLE bench_secure")
        cur.execute(f"DROP OWNED BY {ROLE}")
        cur.execute(f"DROP ROLE {ROLE}")
        admin.close()
    return out


def peak_rss(dsn, model, batch, bound):
    """VmHWM (MB) of a fresh backend that extracts bench_memory with this batch and bound."""
    conn = connect(dsn)
    cur = conn.cursor()
    cur.execute("DELETE FROM vision.features WHERE source = 'bench_memory'::regclass")
    cur.execute(f"SET pgvision.max_batch_memory_mb = {bound}")
    cur.execute(f"CALL vision.extract_table('bench_memory', model => '{model}', "
                f"batch_size => {batch})")
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    with open(f"/proc/{pid}/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    conn.close()
    return hwm / 1024


def memory(dsn, model, images):
    cur = connect(dsn).cursor()
    load(cur, "bench_memory", sample_images(images))
    out = {}
    for batch in (16, 64, 128):
        before, after = peak_rss(dsn, model, batch, 0), peak_rss(dsn, model, batch, 1024)
        out[batch] = {"unbounded_mb": before, "bounded_mb": after, "ratio": after / before}
    cur.execute("DROP TABLE bench_memory")
    cur.connection.close()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, help="vectors in the search table (default 10k)")
    parser.add_argument("--search-only", action="store_true", help="skip the memory part")
    args = parser.parse_args()
    n, repeat = (2_000, 200) if args.quick else (10_000, 500)
    n = args.n or n
    model, images = ("mobilenet_v2", 64) if args.quick else ("inception_v3", 128)
    search = search_cost(args.dsn, n, repeat)
    print(f"\nPer-call search latency, {n} x 2048-d, superuser vs a plain role with SELECT "
          "(row-level security and privilege checks):")
    for label, r in search.items():
        print(f"  {label:6} {r['superuser_ms']:7.2f} ms  {r['plain_role_ms']:7.2f} ms  "
              f"ratio {r['ratio']:.2f}")
    print("\nThe same plain role once the table's own policy hides half of its rows from it:")
    for label, r in search.items():
        print(f"  {label:6} {r['plain_role_ms']:7.2f} ms  {r['policy_ms']:7.2f} ms  "
              f"ratio {r['policy_ratio']:.2f}")
    mem = {} if args.search_only else memory(args.dsn, model, images)
    if mem:
        print(f"\nPeak backend RSS extracting {images} images with {model}, without / with the "
              "default memory bound (1024 MB):")
    for batch, r in mem.items():
        print(f"  batch_size {batch:4}  {r['unbounded_mb']:7.0f} MB  {r['bounded_mb']:7.0f} MB  "
              f"ratio {r['ratio']:.2f}")
    os.makedirs("out", exist_ok=True)
    with open("out/bench_security.json", "w") as fh:
        json.dump({"search": search, "memory": mem, "model": model}, fh, indent=1)


if __name__ == "__main__":
    main()
