#!/usr/bin/env python3
"""Scale-out, in one run on the same images: 1 vs 2 Postgres parallel workers
(vision.extract_features_with) and 1 vs 2 PL/Proxy shards (vision_cluster.extract), printed
as speed-up and efficiency (= speed-up / 2); then the per-query overhead of the cluster
(coordinator merge, postgres_fdw transfer of 2048-d arrays) against the single node.

Every process (worker or shard backend) gets the same inference threads, half the cores, so
two of them use the machine and one uses half of it: efficiency then says how much of the
doubled resources turns into throughput. Parallel workers are new processes per query, so
their time includes loading the model (printed: a 1-row query's time in a fresh worker).
The default model is Inception-v3, the product's default and the cost a catalog pays; with
MobileNet-v2 (--model) 96 images take about a second and fixed per-query costs dominate.

    make bench-scale                       # 96 images, inception_v3
"""

import argparse
import json
import os
import shutil
import subprocess

import numpy as np
import psycopg2

from common import connect, load, parallel_workers, sample_images, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shards_sh(env, *args):
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "shards.sh"), *args], env=env,
                          check=True, capture_output=True, text=True).stdout.strip()


def sharded(images, model, cpus, shard_count, single_ms):
    """Extraction through vision_cluster.extract on `shard_count` shards (warmed backends),
    then per-query similar() and fdw read costs."""
    base = f"/var/tmp/pgvision-bench-shards-{shard_count}"
    shutil.rmtree(base, ignore_errors=True)
    env = {**os.environ, "SHARD_BASE": base, "SHARDS": str(shard_count),
           "SHARD_PORT": str(5460 + 10 * shard_count)}
    shards_sh(env, "start")
    try:
        threads = max(1, cpus // 2)
        for i in range(shard_count):
            shard = connect(shards_sh(env, "dsn", f"shard{i}"))
            shard.cursor().execute(f"ALTER DATABASE pgvision SET pgvision.intra_op_threads = "
                                   f"{threads}")
            shard.cursor().execute("CREATE TABLE bench_images (id bigint PRIMARY KEY, image bytea)")
            shard.close()
        coord = connect(shards_sh(env, "dsn", "coord"))
        cur = coord.cursor()
        cur.execute("SELECT vision_cluster.distribute_table('bench_images')")
        for i, data in enumerate(images):
            cur.execute("INSERT INTO bench_images VALUES (%s, %s)", (i, psycopg2.Binary(data)))
        # warm every shard's backend (PL/Proxy keeps the connections): 1 row each
        cur.execute("SELECT * FROM vision_cluster.extract('bench_images', model => %s, "
                    "max_rows => 1)", (model,))
        seconds, rows = timed(cur, "SELECT * FROM vision_cluster.extract('bench_images', "
                                   "model => %s, max_rows => 100000)", (model,))
        assert sum(r[1] for r in rows) + shard_count == len(images)
        similar = []
        for image_id in range(20):
            took, _ = timed(cur, "SELECT * FROM vision_cluster.similar(%s, 'bench_images', 10, %s)",
                            (image_id, model))
            similar.append(took)
        fdw, got = timed(cur, "SELECT count(feature) FROM vision_cluster.features")
        coord.close()
        return {"shards": shard_count, "seconds": seconds,
                "similar_ms": 1000 * float(np.median(similar[2:])),
                "fdw_read_ms": 1000 * fdw, "fdw_rows": got[0][0],
                "single_node_similar_ms": single_ms}
    finally:
        shards_sh(env, "stop")
        shutil.rmtree(base, ignore_errors=True)


def single_node_similar(dsn, images, model):
    cur = connect(dsn).cursor()
    load(cur, "bench_single", images)
    cur.execute("CALL vision.extract_table('bench_single', model => %s)", (model,))
    took = []
    for image_id in range(20):
        t, _ = timed(cur, "SELECT * FROM vision.similar(%s, 10, %s, source => 'bench_single')",
                     (image_id, model))
        took.append(t)
    local_read, _ = timed(cur, "SELECT count(feature) FROM vision.features "
                               "WHERE source = 'bench_single'::regclass")
    cur.execute("DROP TABLE bench_single")  # the event trigger drops its features
    cur.connection.close()
    return 1000 * float(np.median(took[2:])), 1000 * local_read


def main():
    parser = argparse.ArgumentParser(description="pgvision scale-out benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--model", default="inception_v3")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="out/bench_scale.json")
    args = parser.parse_args()
    n = 48 if args.quick else args.images
    images = sample_images(n)
    cpus = os.cpu_count()

    par = parallel_workers(args.dsn, images, args.model, cpus)
    single_ms, local_read_ms = single_node_similar(args.dsn, images, args.model)
    shard = {k: sharded(images, args.model, cpus, k, single_ms) for k in (1, 2)}

    speedup_par = par[1]["seconds"] / par[2]["seconds"]
    speedup_shards = shard[1]["seconds"] / shard[2]["seconds"]
    print(f"\nScale-out: {n} images, {args.model}, {cpus} cores")
    print(f"{'configuration':38s} {'seconds':>8s} {'img/s':>7s}")
    for k in (1, 2):
        print(f"{f'{k} parallel worker(s), end to end':38s} {par[k]['seconds']:8.2f} "
              f"{n / par[k]['seconds']:7.1f}")
    for k in (1, 2):
        print(f"{f'{k} shard(s), warmed':38s} {shard[k]['seconds']:8.2f} "
              f"{(n - k) / shard[k]['seconds']:7.1f}")
    print(f"\nparallel workers 2 vs 1: speed-up {speedup_par:.2f}, efficiency "
          f"{speedup_par / 2:.2f} (end to end; a fresh worker's 1-row query "
          f"{par[1]['cold_start_s']:.1f} s / {par[2]['cold_start_s']:.1f} s)")
    print(f"shards 2 vs 1: speed-up {speedup_shards:.2f}, efficiency {speedup_shards / 2:.2f}")
    print(f"similar() per query: single node {single_ms:.2f} ms, 1 shard "
          f"{shard[1]['similar_ms']:.2f} ms, 2 shards {shard[2]['similar_ms']:.2f} ms "
          f"(cluster overhead {shard[2]['similar_ms'] - single_ms:+.2f} ms)")
    print(f"reading all {shard[2]['fdw_rows']} feature arrays: local {local_read_ms:.1f} ms, "
          f"through postgres_fdw from 2 shards {shard[2]['fdw_read_ms']:.1f} ms")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump({"images": n, "model": args.model, "cpus": cpus, "parallel": par,
                   "shards": shard, "single_node_similar_ms": single_ms,
                   "local_read_ms": local_read_ms,
                   "parallel_speedup": speedup_par,
                   "shard_speedup": speedup_shards}, fh, indent=2)


if __name__ == "__main__":
    main()
