#!/usr/bin/env python3
"""Visual search benchmark: pgvision's exact and HNSW search vs. numpy / faiss standalone.

Printed as figures and ratios from one run on one machine:
  1. near-duplicate retrieval with the default model on real photos (scikit-image, each in
     several augmented copies): recall of a photo's own copies among its nearest neighbours;
  2. exact k-NN latency: vision.similar(approximate => false) vs numpy and faiss IndexFlatIP;
  3. HNSW: build time, size, recall@10 against exact, queries/s in-DB vs standalone faiss with
     the same parameters, at several ef_search values, with and without PCA.
Data for 2-3: synthetic 2048-d vectors with the cluster structure of CNN features (a
non-negative Gaussian mixture; uniformly random vectors have no neighbourhoods and defeat any
graph index), and perturbations of real Inception-v3 features of the photos.

    make bench-search                    # 100k synthetic + 10k real-derived vectors
    make bench-search BENCH_ARGS=--quick # 10k + 2k
"""

import argparse
import io
import os
import time

import numpy as np
import psycopg2
from PIL import Image, ImageEnhance, ImageOps

from common import SOURCES, feature_table, photos, write_results

MODEL, DIMS = "inception_v3", 2048


def clustered(n, seed=0, centres=500):
    rng = np.random.default_rng(seed)
    c = rng.gamma(0.4, 1.0, (centres, DIMS)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + rng.normal(0, 0.35, (n, DIMS)).astype(np.float32)
    return np.maximum(x, 0, out=x)


def perturbed(real, n, seed=1):
    """n vectors around real features: multiplicative jitter and random drop-out."""
    rng = np.random.default_rng(seed)
    base = real[rng.integers(0, len(real), n)]
    noise = rng.lognormal(0, 0.35, base.shape).astype(np.float32)
    keep = rng.random(base.shape) > 0.15
    return (base * noise * keep).astype(np.float32)


def copy_features(cur, table, vectors):
    """``table`` with ids 1..n whose features are ``vectors`` (binary COPY: exact floats)."""
    feature_table(cur, table, MODEL, len(vectors), [(np.arange(1, len(vectors) + 1), vectors)])


def augmented_photos(per_photo=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s, name in enumerate(SOURCES):
        base = Image.fromarray(np.asarray(getattr(photos, name)()).astype(np.uint8)).convert("RGB")
        for j in range(per_photo):
            img = base
            if j:
                w, h = img.size
                dx, dy = rng.integers(0, w // 6), rng.integers(0, h // 6)
                img = img.crop((dx, dy, dx + w * 5 // 6, dy + h * 5 // 6))
                img = img.rotate(float(rng.uniform(-10, 10)))
                if j % 2:
                    img = ImageOps.mirror(img)
                img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=int(rng.integers(40, 95)))
            rows.append((s, buf.getvalue()))
    return rows


def near_duplicates(cur):
    rows = augmented_photos()
    cur.execute("DELETE FROM vision.features WHERE source = to_regclass('bench_photos')")
    cur.execute("DROP TABLE IF EXISTS bench_photos")
    cur.execute("CREATE TABLE bench_photos (id bigint PRIMARY KEY, photo int, image bytea)")
    for i, (s, data) in enumerate(rows, start=1):
        cur.execute("INSERT INTO bench_photos VALUES (%s, %s, %s)", (i, s, psycopg2.Binary(data)))
    cur.execute("CALL vision.extract_table('bench_photos')")
    cur.execute("SELECT id, photo FROM bench_photos")
    photo = dict(cur.fetchall())
    siblings = len(rows) // len(SOURCES) - 1
    hits1 = hitsk = 0
    for image_id in photo:
        cur.execute("SELECT image_id FROM vision.similar(%s, %s, source => 'bench_photos')",
                    (image_id, siblings))
        found = [r[0] for r in cur.fetchall()]
        hits1 += photo[found[0]] == photo[image_id]
        hitsk += sum(photo[f] == photo[image_id] for f in found)
    cur.execute("SELECT image_id, feature FROM vision.features WHERE source = "
                "'bench_photos'::regclass ORDER BY image_id")
    real = np.array([r[1] for r in cur.fetchall()], dtype=np.float32)
    return {"images": len(rows), "siblings": siblings, "recall_at_1": hits1 / len(photo),
            f"recall_at_{siblings}": hitsk / (siblings * len(photo))}, real


def exact_top(vectors, unit, q, k):
    d = 1 - unit @ (q / np.linalg.norm(q))
    idx = np.argpartition(d, k)[:k + 1]
    return idx[np.argsort(d[idx])]


def bench_dataset(cur, label, vectors, queries, efs, pca_dims):
    import faiss

    table = f"bench_{label}"
    n = len(vectors)
    started = time.monotonic()
    copy_features(cur, table, vectors)
    load_s = time.monotonic() - started
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = {q: [int(i) + 1 for i in exact_top(vectors, unit, vectors[q - 1], 10) if i + 1 != q][:10]
             for q in queries}
    out = {"vectors": n, "load_s": load_s}

    # exact: in-DB (warm cache) vs numpy and faiss flat, same queries
    cur.execute(f"SELECT count(*) FROM vision.similar(1, 10, '{MODEL}', "
                f"source => '{table}', approximate => false)")
    started, agree = time.monotonic(), 0
    for q in queries:
        cur.execute(f"SELECT image_id FROM vision.similar(%s, 10, '{MODEL}', "
                    f"source => '{table}', approximate => false)", (q,))
        agree += len(set(r[0] for r in cur.fetchall()) & set(truth[q]))
    out["exact_in_db_ms"] = 1000 * (time.monotonic() - started) / len(queries)
    out["exact_agreement"] = agree / (10 * len(queries))  # 1.0 unless float ties differ
    started = time.monotonic()
    for q in queries:
        exact_top(vectors, unit, vectors[q - 1], 10)
    out["exact_numpy_ms"] = 1000 * (time.monotonic() - started) / len(queries)
    flat = faiss.IndexFlatIP(DIMS)
    flat.add(unit)
    started = time.monotonic()
    for q in queries:
        flat.search(unit[q - 1:q], 11)
    out["exact_faiss_flat_ms"] = 1000 * (time.monotonic() - started) / len(queries)

    for pca in (None, pca_dims):
        tag = f"pca{pca}" if pca else "full"
        started = time.monotonic()
        cur.execute(f"SELECT vision.create_index('{table}', '{MODEL}', ef_search => 40, "
                    "pca_dims => %s)",
                    (pca,))
        build_in_db = time.monotonic() - started
        cur.execute("SELECT size_bytes FROM vision.index_status WHERE source = %s::regclass",
                    (table,))
        size = cur.fetchone()[0]
        from pgvision.search import ann, build_index
        started = time.monotonic()
        standalone = build_index(vectors, "cosine", 16, 64, pca)
        build_alone = time.monotonic() - started
        faiss.omp_set_num_threads(1)  # queries: one core each side
        for ef in efs:
            cur.execute("SET pgvision.ef_search = %s", (ef,))
            hits, started = 0, time.monotonic()
            for q in queries:
                cur.execute(f"SELECT image_id FROM vision.similar(%s, 10, '{MODEL}', "
                            f"source => '{table}', approximate => true)", (q,))
                hits += len(set(r[0] for r in cur.fetchall()) & set(truth[q]))
            in_db_qps = len(queries) / (time.monotonic() - started)
            started = time.monotonic()
            cur.execute(f"SELECT query_id, image_id FROM vision.similar_many(%s::bigint[], 10, "
                        f"'{MODEL}', source => '{table}', approximate => true)", (queries,))
            cur.fetchall()
            batch_qps = len(queries) / (time.monotonic() - started)
            hits_alone, started = 0, time.monotonic()
            for q in queries:
                found = ann(standalone, vectors[q - 1], "cosine", 41 if pca else 11, ef)[0] + 1
                hits_alone += len(set(found[found != q][:10].tolist()) & set(truth[q]))
            alone_qps = len(queries) / (time.monotonic() - started)
            out[f"{tag}_ef{ef}"] = {"recall_at_10": hits / (10 * len(queries)),
                                    "standalone_recall_at_10": hits_alone / (10 * len(queries)),
                                    "in_db_qps": in_db_qps, "standalone_qps": alone_qps,
                                    "qps_ratio": in_db_qps / alone_qps,
                                    "in_db_batch_qps": batch_qps,
                                    "batch_qps_ratio": batch_qps / alone_qps}
        faiss.omp_set_num_threads(os.cpu_count())
        out[f"{tag}_build_in_db_s"] = build_in_db
        out[f"{tag}_build_standalone_s"] = build_alone
        out[f"{tag}_size_mb"] = size / 2 ** 20
    cur.execute("RESET pgvision.ef_search")
    cur.execute("DELETE FROM vision.features WHERE source = %s::regclass", (table,))
    cur.execute("DELETE FROM vision.indexes WHERE source = %s::regclass", (table,))
    cur.execute(f"DROP TABLE {table}")
    return out


def main():
    parser = argparse.ArgumentParser(description="pgvision search benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="out/bench_search.json")
    args = parser.parse_args()
    n_syn, n_real, n_q = (10_000, 2_000, 100) if args.quick else (100_000, 10_000, 200)
    efs = (40, 100, 200)
    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    cur = conn.cursor()

    print("... near-duplicate retrieval on augmented photos (default model)", flush=True)
    dup, real = near_duplicates(cur)
    results = {"near_duplicates": dup}
    rng = np.random.default_rng(7)
    for label, vectors in (("synthetic", clustered(n_syn)), ("real_perturbed", perturbed(real, n_real))):
        print(f"... {label}: {len(vectors)} x {DIMS}", flush=True)
        queries = [int(q) for q in rng.choice(np.arange(1, len(vectors) + 1), n_q, replace=False)]
        results[label] = bench_dataset(cur, label, vectors, queries, efs, 256)

    siblings = dup["siblings"]
    print(f"\nNear-duplicates ({dup['images']} images, {siblings} copies each): "
          f"recall@1 {dup['recall_at_1']:.2f}, recall@{siblings} "
          f"{dup['recall_at_' + str(siblings)]:.2f}")
    for label in ("synthetic", "real_perturbed"):
        r = results[label]
        print(f"\n{label}: {r['vectors']} x {DIMS}")
        print(f"  exact k=10: in-DB {r['exact_in_db_ms']:.1f} ms/query, numpy "
              f"{r['exact_numpy_ms']:.1f} ms, faiss flat {r['exact_faiss_flat_ms']:.1f} ms "
              f"(in-DB/numpy time {r['exact_in_db_ms'] / r['exact_numpy_ms']:.2f}x)")
        for tag in ("full", "pca256"):
            print(f"  HNSW {tag}: build in-DB {r[f'{tag}_build_in_db_s']:.1f} s (standalone "
                  f"{r[f'{tag}_build_standalone_s']:.1f} s), {r[f'{tag}_size_mb']:.0f} MB")
            for ef in efs:
                e = r[f"{tag}_ef{ef}"]
                print(f"    ef {ef:>3}: recall@10 {e['recall_at_10']:.3f} (standalone "
                      f"{e['standalone_recall_at_10']:.3f}), {e['in_db_qps']:.0f} q/s in-DB vs "
                      f"{e['standalone_qps']:.0f} standalone = {e['qps_ratio']:.2f}x; "
                      f"similar_many {e['in_db_batch_qps']:.0f} q/s = {e['batch_qps_ratio']:.2f}x")
    print()
    write_results(args.json, results)


if __name__ == "__main__":
    main()
