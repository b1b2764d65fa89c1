"""What the benchmarks share: sample photos, a timer, loading a table, and the parallel-worker
measurement that both the extraction and the scale-out benchmarks report."""

import io
import json
import os
import time

import numpy as np
import psycopg2
from PIL import Image, ImageEnhance, ImageOps
from skimage import data as photos

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


def write_results(path, results):
    """A benchmark's results as JSON at ``path`` (folders made as needed), said on stdout."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {path}")


def timed(cur, sql, params=None):
    started = time.monotonic()
    cur.execute(sql, params)
    rows = cur.fetchall() if cur.description else None
    return time.monotonic() - started, rows



def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def load(cur, table, images, fillfactor=None):
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, image bytea)" +
                (f" WITH (fillfactor = {fillfactor})" if fillfactor else ""))
    for i, data in enumerate(images):
        cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, psycopg2.Binary(data)))
    cur.execute(f"ANALYZE {table}")


def parallel_workers(dsn, images, model, cpus, counts=(1, 2)):
    """CREATE TABLE AS over a parallel scan with each number of workers in ``counts`` (leader
    not taking rows), each a fresh process: returns seconds per configuration and the cold
    start."""
    cur = connect(dsn).cursor()
    # fillfactor spreads the rows over blocks, which is how a parallel scan hands out work
    load(cur, "bench_parallel", images, fillfactor=10)
    # Only workers take rows; force_parallel_mode puts even the 1-worker plan in a worker.
    for setting in ("parallel_leader_participation = off", "force_parallel_mode = on",
                    f"pgvision.intra_op_threads = {max(1, cpus // 2)}"):
        cur.execute(f"SET {setting}")
    out = {}
    for workers in counts:
        cur.execute(f"SET max_parallel_workers_per_gather = {workers}")
        cur.execute(f"ALTER TABLE bench_parallel SET (parallel_workers = {workers})")
        cur.execute("SELECT set_config('pgvision.handle', vision.model_handle(%s), false)",
                    (model,))
        cold, _ = timed(cur, "SELECT count(vision.extract_features_with(image, "
                             "current_setting('pgvision.handle'))) FROM bench_parallel "
                             "WHERE id + 0 = 0")
        cur.execute("DROP TABLE IF EXISTS bench_parallel_out")
        seconds, plan = timed(cur, "EXPLAIN (ANALYZE, COSTS OFF) CREATE TABLE bench_parallel_out "
                                   "AS SELECT id, vision.extract_features_with(image, "
                                   "current_setting('pgvision.handle')) AS feature "
                                   "FROM bench_parallel")
        launched = [line for (line,) in plan if "Workers Launched" in line]
        assert launched and launched[0].split()[-1] == str(workers), plan
        cur.execute("SELECT count(*) FROM bench_parallel_out WHERE feature IS NOT NULL")
        assert cur.fetchone()[0] == len(images)
        out[workers] = {"seconds": seconds, "cold_start_s": cold}
    cur.execute("DROP TABLE bench_parallel_out")
    cur.execute("DROP TABLE bench_parallel")
    cur.connection.close()
    return out


def copy_binary(cur, statement, rows):
    """``COPY ... FROM STDIN WITH (FORMAT binary)`` of ``rows``, a numpy structured array laid
    out as Postgres' binary tuples (built with numpy: ~100x faster than formatting floats as
    text)."""
    data = b"PGCOPY\n\xff\r\n\0" + b"\0" * 8 + rows.tobytes() + b"\xff\xff"
    cur.copy_expert(statement, io.BytesIO(data))


def feature_rows(cur, table, model, ids, value_fields):
    """Binary COPY tuples (model, source, image_id, value) for ``ids`` of ``table``, the key
    filled in; ``value_fields`` (numpy dtype fields: its length, then its bytes) for the
    caller to fill."""
    cur.execute("SELECT %s::regclass::oid", (table,))
    oid = cur.fetchone()[0]
    name = model.encode()
    rows = np.zeros(len(ids), dtype=[
        ("fields", ">i2"), ("model_len", ">i4"), ("model", f"S{len(name)}"),
        ("source_len", ">i4"), ("source", ">u4"), ("id_len", ">i4"), ("id", ">i8"),
        *value_fields])
    rows["fields"], rows["model_len"], rows["model"] = 4, len(name), name
    rows["source_len"], rows["source"] = 4, oid
    rows["id_len"], rows["id"] = 8, np.asarray(ids, dtype=np.int64)
    return rows


def copy_features(cur, table, model, ids, vectors):
    """COPY (model, table, id, vector) rows into vision.stored_features in half precision, as
    pgvision stores them."""
    dims = vectors.shape[1]
    rows = feature_rows(cur, table, model, ids, [("half_len", ">i4"), ("half", "<f2", (dims,))])
    rows["half_len"], rows["half"] = 2 * dims, vectors
    copy_binary(cur, "COPY vision.stored_features (model, source, image_id, half) FROM STDIN "
                "WITH (FORMAT binary)", rows)


def feature_table(cur, table, model, n, blocks):
    """(Re)create ``table`` with ids 1..n and store ``blocks`` of (ids, vectors) as its
    features for ``model``."""
    cur.execute("DELETE FROM vision.stored_features WHERE source = to_regclass(%s)", (table,))
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY)")
    cur.execute(f"INSERT INTO {table} SELECT generate_series(1, {n})")
    for ids, vectors in blocks:
        copy_features(cur, table, model, ids, vectors)


def clustered_blocks(n, dims=2048, centres=500, block=10_000, seed=0):
    """A synthetic catalog with the cluster structure of CNN features (a non-negative
    Gaussian mixture), as (ids, vectors) blocks, the same for the same seed: a million
    vectors never need to be in memory at once."""
    rng = np.random.default_rng(seed)
    c = rng.gamma(0.4, 1.0, (centres, dims)).astype(np.float32)
    for start in range(0, n, block):
        size = min(block, n - start)
        r = np.random.default_rng([seed, start])
        x = c[r.integers(0, centres, size)] + r.normal(0, 0.35, (size, dims)).astype(np.float32)
        yield np.arange(start + 1, start + size + 1), np.maximum(x, 0, out=x)
