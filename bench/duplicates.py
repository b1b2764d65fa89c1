#!/usr/bin/env python3
"""Near-duplicate benchmark, in one run.

  quality  the 12 scikit-image photos in 10 augmented copies each (crop of up to a sixth,
           rotation up to 10 degrees, mirror, brightness +-30%, JPEG quality 40-95; two
           draws) mixed with the distinct photos packages ship (scikit-image, scikit-learn,
           matplotlib): pair recall and precision of vision.duplicates with its defaults
           and with hashes alone (model => NULL), beside two baselines computed here on the
           same images, each at its best threshold for precision >= 0.99 and with pairs
           judged one by one: imagehash's pHash alone (mirror included) and the default
           model's cosine alone
  scale    a synthetic catalog (hashes with planted near-copies, features stored as the
           default model's, 3,840-d): seconds for vision.duplicates to group it, and the
           share of planted pairs grouped

    make bench-duplicates                     # 100,000 images at scale
    make bench-duplicates BENCH_ARGS=--quick  # one draw, 20,000 images, 1,280-d features
"""

import argparse
import io
import os
import time

import numpy as np
import psycopg2
from PIL import Image

from common import copy_features, write_results
from search import augmented_photos

from pgvision import DEFAULT_MODEL

HASH_BITS, COLOURS = 64, 49


def distinct_photos():
    """Whole photos no augmented copy comes from."""
    import matplotlib.cbook as cbook
    import sklearn.datasets as sk
    from skimage import data

    out = []
    for name in ("brick", "grass", "gravel", "cell", "clock", "page", "text", "logo",
                 "stereo_motorcycle", "shepp_logan_phantom"):
        a = getattr(data, name)()
        a = np.asarray(a[0] if isinstance(a, tuple) else a)
        if a.dtype != np.uint8:
            a = (255 * (a - a.min()) / max(a.max() - a.min(), 1e-9)).astype(np.uint8)
        out.append(Image.fromarray(a).convert("RGB"))
    out += [Image.fromarray(a) for a in sk.load_sample_images().images]
    folder = cbook._get_data_path("sample_data")
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        out.append(Image.open(os.path.join(folder, name)).convert("RGB"))
    return out


def photo_rows(seed):
    """(id, group, bytes): augmented copies share their photo's group; distinct photos have
    groups of their own."""
    rows = [(s, data) for s, data in augmented_photos(10, seed=seed)]
    for k, img in enumerate(distinct_photos()):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        rows.append((100 + k, buf.getvalue()))
    return [(i, group, data) for i, (group, data) in enumerate(rows, start=1)]


def pair_scores(found_pairs, group):
    """Pair recall and precision of a set of predicted same-group pairs."""
    ids = sorted(group)
    truth = {(a, b) for x, a in enumerate(ids) for b in ids[x + 1:] if group[a] == group[b]}
    hits = len(found_pairs & truth)
    return {"recall": hits / len(truth), "precision": hits / max(len(found_pairs), 1),
            "pairs": len(truth), "predicted": len(found_pairs)}


def grouped_pairs(rows):
    members = {}
    for group_id, image_id in rows:
        members.setdefault(group_id, []).append(image_id)
    return {(min(a, b), max(a, b)) for m in members.values() for a in m for b in m if a < b}


def best_threshold(scores, same, higher=True):
    """The threshold with the best recall at precision >= 0.99 (pairs one by one)."""
    best = {"threshold": None, "recall": 0.0, "precision": None}
    for t in np.unique(scores):
        chosen = scores >= t if higher else scores <= t
        hits = int((chosen & same).sum())
        precision = hits / max(int(chosen.sum()), 1)
        if precision >= 0.99 and hits / same.sum() > best["recall"]:
            best = {"threshold": float(t), "recall": hits / same.sum(), "precision": precision}
    return best


def quality(cur, seed):
    rows = photo_rows(seed)
    group = {i: g for i, g, _ in rows}
    cur.execute("DROP TABLE IF EXISTS bench_dups")
    cur.execute("CREATE TABLE bench_dups (id bigint PRIMARY KEY, image bytea)")
    for i, _, data in rows:
        cur.execute("INSERT INTO bench_dups VALUES (%s, %s)", (i, psycopg2.Binary(data)))
    cur.execute("CALL vision.extract_table('bench_dups', model => 'perceptual_hash')")
    cur.execute("CALL vision.extract_table('bench_dups')")
    out = {"images": len(rows), "photos": 12, "distinct": len(rows) - 120}
    for name, model in (("pgvision", DEFAULT_MODEL), ("pgvision, hashes alone", None)):
        started = time.monotonic()
        cur.execute("SELECT group_id, image_id FROM vision.duplicates('bench_dups', model => %s)",
                    (model,))
        out[name] = {**pair_scores(grouped_pairs(cur.fetchall()), group),
                     "seconds": time.monotonic() - started}
    # the baselines, by hand on the same images and the features pgvision stored
    import imagehash

    images = [Image.open(io.BytesIO(data)).convert("RGB") for _, _, data in rows]
    hashes = np.array([imagehash.phash(im).hash.ravel() for im in images])
    mirrored = np.array([imagehash.phash(im.transpose(Image.FLIP_LEFT_RIGHT)).hash.ravel()
                         for im in images])
    distance = np.minimum((hashes[:, None] != hashes[None]).sum(-1),
                          (hashes[:, None] != mirrored[None]).sum(-1))
    cur.execute("SELECT feature FROM vision.features WHERE source = 'bench_dups'::regclass "
                "AND model = %s ORDER BY image_id", (DEFAULT_MODEL,))
    X = np.array([r[0] for r in cur.fetchall()], dtype=np.float32)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    upper = np.triu_indices(len(rows), 1)
    labels = np.array([g for _, g, _ in rows])
    same = (labels[:, None] == labels[None])[upper]
    out["pHash alone"] = best_threshold(distance[upper], same, higher=False)
    out["cosine alone"] = best_threshold((unit @ unit.T)[upper], same)
    cur.execute("DELETE FROM vision.features WHERE source = 'bench_dups'::regclass")
    cur.execute("DELETE FROM vision.extract_jobs WHERE source = 'bench_dups'::regclass")
    cur.execute("DROP TABLE bench_dups")
    return out


def synthetic(n, dims=1280, share=0.1, seed=0):
    """Hash vectors and features of ``n`` images, the last ``share`` of them near-copies of
    earlier ones (a few hash bits flipped, colours and features jittered)."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (n, 2 * HASH_BITS)).astype(np.float32)
    colours = rng.dirichlet(np.full(COLOURS, 0.3), n).astype(np.float32)
    centres = rng.gamma(0.4, 1.0, (500, dims)).astype(np.float32)
    features = centres[rng.integers(0, 500, n)] + rng.normal(0, 0.35, (n, dims)).astype(
        np.float32)
    copies = int(n * share)
    originals = rng.integers(0, n - copies, copies)
    for k, o in enumerate(originals):
        c = n - copies + k
        bits[c] = bits[o]
        bits[c, rng.choice(2 * HASH_BITS, rng.integers(0, 7), replace=False)] = 1 - bits[c, 0]
        colours[c] = 0.9 * colours[o] + 0.1 * colours[rng.integers(0, n)]
        features[c] = features[o] * rng.uniform(0.9, 1.1, dims)
    np.maximum(features, 0, out=features)
    return (np.hstack([bits, colours]), features,
            {(int(o) + 1, n - copies + k + 1) for k, o in enumerate(originals)})


def scale(cur, n, model, dims):
    hashes, features, planted = synthetic(n, dims)
    cur.execute("DELETE FROM vision.features WHERE source = to_regclass('bench_dups_scale')")
    cur.execute("DROP TABLE IF EXISTS bench_dups_scale")
    cur.execute("CREATE TABLE bench_dups_scale (id bigint PRIMARY KEY)")
    cur.execute(f"INSERT INTO bench_dups_scale SELECT generate_series(1, {n})")
    ids = np.arange(1, n + 1)
    for start in range(0, n, 10_000):
        part = slice(start, start + 10_000)
        copy_features(cur, "bench_dups_scale", "perceptual_hash", ids[part], hashes[part])
        copy_features(cur, "bench_dups_scale", model, ids[part], features[part])
    out = {"images": n, "planted_pairs": len(planted), "model": model, "dims": dims}
    for name, model in (("hashes and features", model), ("hashes alone", None)):
        cur.execute("SELECT count(*) FROM vision.similar(1, 1, 'perceptual_hash', "
                    "source => 'bench_dups_scale')")  # the snapshots, written once
        if model:
            cur.execute("SELECT count(*) FROM vision.similar(1, 1, %s, "
                        "source => 'bench_dups_scale')", (model,))
        started = time.monotonic()
        cur.execute("SELECT group_id, image_id FROM vision.duplicates('bench_dups_scale', "
                    "model => %s)", (model,))
        rows = cur.fetchall()
        seconds = time.monotonic() - started
        pairs = grouped_pairs(rows)
        out[name] = {"seconds": seconds, "planted_found": len(pairs & planted) / len(planted),
                     "groups": len({g for g, _ in rows})}
    cur.execute("DELETE FROM vision.features WHERE source = 'bench_dups_scale'::regclass")
    cur.execute("DROP TABLE bench_dups_scale")
    return out


def main():
    parser = argparse.ArgumentParser(description="pgvision near-duplicate benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="out/bench_duplicates.json")
    args = parser.parse_args()
    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    cur = conn.cursor()
    results = {"quality": {}}
    for seed in (3,) if args.quick else (3, 7):
        print(f"... photos in augmented copies (draw {seed}) and distinct photos", flush=True)
        results["quality"][seed] = quality(cur, seed)
    n, model, dims = (20_000, "mobilenet_v2", 1280) if args.quick else (100_000, DEFAULT_MODEL,
                                                                         3840)
    print(f"... a synthetic catalog of {n:,} images ({dims}-d {model} features)", flush=True)
    results["scale"] = scale(cur, n, model, dims)

    for seed, q in results["quality"].items():
        print(f"\nNear-duplicate pairs, draw {seed}: {q['images']} images ({q['photos']} photos "
              f"x 10 copies, {q['distinct']} distinct photos), "
              f"{q['pgvision']['pairs']} true pairs")
        print("  method                               recall  precision")
        for name in ("pgvision", "pgvision, hashes alone", "pHash alone", "cosine alone"):
            r = q[name]
            note = (f"  (best threshold for precision >= 0.99: {r['threshold']:g}, pairs one by "
                    "one)" if "threshold" in r and r["threshold"] is not None else "")
            precision = "-" if r["precision"] is None else f"{r['precision']:.3f}"
            print(f"  {name:<36} {r['recall']:6.3f}  {precision:>9}{note}")
    s = results["scale"]
    print(f"\n{s['images']:,} synthetic images ({s['dims']}-d features stored as {s['model']}), "
          f"{s['planted_pairs']:,} planted near-copies:")
    for name in ("hashes and features", "hashes alone"):
        r = s[name]
        print(f"  vision.duplicates, {name:<20} {r['seconds']:6.1f} s, planted pairs grouped "
              f"{r['planted_found']:.3f}, {r['groups']:,} groups")
    write_results(args.json, results)


if __name__ == "__main__":
    main()
