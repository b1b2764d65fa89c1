#!/usr/bin/env python3
"""How well a catalog map uses its space: the share of the canvas its thumbnails cover and
the share of thumbnails that another one overlaps, for 0.11.0's scatter (scaled by the
extreme points), the scatter clipped at the 1st/99th percentiles, and the grid (each image
in a cell of its own, by an optimal assignment from the 2-D map), in one run.

Maps: the demo table's stored t-SNE map (``make demo`` first; its image sizes from the
table), and t-SNE of 2,000 clustered 2048-d vectors like CNN features (640x480 thumbnails).
Also how well the grid keeps neighbours: the share of a cell's 4 neighbours that are among
the image's 12 nearest in 2-D (a random placement keeps about 12/n).

    make bench-map                 # demo table + 2,000 synthetic
    make bench-map BENCH_ARGS=--quick   # demo table + 500
"""

import argparse
import io
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "plpython"))
from pgvision import pictures  # noqa: E402

LAYOUTS = {"scatter, 0.11.0 (min-max)": ("scatter", (0.0, 100.0)),
           "scatter, clipped 1-99%": ("scatter", pictures.CLIP_PERCENTILES),
           "grid": ("grid", pictures.CLIP_PERCENTILES)}


def kept_neighbours(xy, cells):
    where = {tuple(c): i for i, c in enumerate(cells)}
    nearest = np.argsort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1:13]
    shares = []
    for i, (c, r) in enumerate(cells):
        around = [where[p] for p in ((c + 1, r), (c - 1, r), (c, r + 1), (c, r - 1)) if p in where]
        shares.append(np.mean([j in nearest[i] for j in around]) if around else 0.0)
    return float(np.mean(shares))


def measure(name, xy, sizes, size):
    out = {"images": len(xy)}
    for label, (layout, clip) in LAYOUTS.items():
        started = time.perf_counter()
        boxes, _ = pictures.map_boxes(xy, sizes, size, layout, clip=clip)
        seconds = time.perf_counter() - started
        covered, overlapped = pictures.coverage(boxes, size)
        out[label] = {"covered": covered, "overlapped": overlapped, "layout_s": seconds}
    out["grid"]["neighbours_kept"] = kept_neighbours(xy, pictures.grid_cells(xy))
    print(f"\n{name}: {len(xy)} images on a {size}x{size} map")
    print(f"  {'layout':28} {'canvas covered':>15} {'thumbnails overlapped':>22} {'layout s':>9}")
    for label in LAYOUTS:
        r = out[label]
        print(f"  {label:28} {r['covered']:15.2f} {r['overlapped']:22.2f} {r['layout_s']:9.2f}")
    print(f"  grid: share of a cell's neighbours among the image's 12 nearest in 2-D: "
          f"{out['grid']['neighbours_kept']:.2f} (random placement: {12 / len(xy):.2f})")
    return out


def demo_map(dsn, table):
    import psycopg2
    from PIL import Image

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    if not cur.fetchone()[0]:
        return None
    cur.execute(f"SELECT m.x, m.y, i.image FROM vision.map_2d m JOIN {table} i "
                f"ON i.id = m.image_id WHERE m.source = %s::regclass ORDER BY m.image_id",
                (table,))
    rows = cur.fetchall()
    conn.close()
    if not rows:
        return None
    xy = np.array([[x, y] for x, y, _ in rows])
    sizes = [Image.open(io.BytesIO(bytes(data))).size for _, _, data in rows]
    return xy, sizes


def synthetic_map(n, seed=0):
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.4, 1.0, (12, 2048))
    x = centres[rng.integers(0, 12, n)] + rng.normal(0, 0.35, (n, 2048))
    x = np.maximum(x, 0) @ rng.normal(size=(2048, 50)) / 45  # a cheap projection first
    return TSNE(2, init="pca", random_state=0, perplexity=30).fit_transform(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--table", default="demo_images")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = {}
    demo = demo_map(args.dsn, args.table)
    if demo is None:
        print(f"{args.table}: no stored 2-D map (run make demo first); skipped")
    else:
        results["demo"] = measure(f"{args.table} (t-SNE as stored)", *demo, 800)
    n = 500 if args.quick else 2000
    xy = synthetic_map(n)
    results["synthetic"] = measure("clustered 2048-d vectors, t-SNE", xy, [(640, 480)] * n, 1600)
    os.makedirs("out", exist_ok=True)
    with open("out/bench_map.json", "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
