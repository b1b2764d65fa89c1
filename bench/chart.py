#!/usr/bin/env python3
"""One PNG of the benchmark results: every ratio against its baseline, and the cold starts.

Reads the JSON files the other bench/ scripts wrote (missing ones are skipped) and draws
two panels: pgvision / baseline ratios, each with its goal where the issue set one (1.0 =
as fast as the baseline), and a fresh backend's cold start per model and runtime against
the 5 s goal.

    make bench-chart            # out/bench_*.json → out/bench.png
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402


def load(directory, name):
    path = os.path.join(directory, f"bench_{name}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def extract_ratios(result):
    for r in result["results"]:
        m = r["model"]
        yield f"{m}: in-DB table / standalone (ONNX Runtime)", r["table_vs_standalone"], 0.9
        yield f"{m}: in-DB table / client (psycopg2 + TF)", r["table_vs_client_tf"], None
        yield f"{m}: in-DB per-row / in-DB table", r["per_row_vs_table"], 0.8
        yield f"{m}: in-DB ONNX Runtime / in-DB TensorFlow", r["onnx_vs_tensorflow_in_db"], None
        if "parallel_vs_standalone" in r:
            yield (f"{m}: in-DB parallel, 2 workers / standalone", r["parallel_vs_standalone"],
                   None)


def search_ratios(result):
    synthetic = result.get("synthetic", {})
    n = synthetic.get("vectors")
    if "exact_in_db_ms" in synthetic:
        yield (f"exact kNN {n:,}: in-DB / numpy (speed)",
               synthetic["exact_numpy_ms"] / synthetic["exact_in_db_ms"], None)
    for key, value in synthetic.items():
        if key.startswith("full_ef") and isinstance(value, dict):
            yield f"HNSW {key[5:]}: in-DB / faiss HNSW QPS, one query per call", value["qps_ratio"], None
            yield f"HNSW {key[5:]}: in-DB / faiss HNSW QPS, batched", value["batch_qps_ratio"], None


def scale_ratios(result):
    if "shard_speedup" in result:
        yield "2 shards: efficiency (speed-up / 2)", result["shard_speedup"] / 2, 0.85
    if "parallel_speedup" in result:
        yield "2 parallel workers: efficiency", result["parallel_speedup"] / 2, 0.85


def sessions_ratios(result):
    by = {(r["sessions"], r["threads_per_backend"]): r["img_s"] for r in result}
    if (1, 1) in by and (2, 1) in by:
        yield "2 sessions: efficiency", by[(2, 1)] / (2 * by[(1, 1)]), 0.85


def classify_ratios(result):
    throughput = result.get("throughput")
    if throughput:
        yield "classify_table: in-DB / standalone scoring", throughput["ratio"], None


def text_ratios(result):
    yield "read text: in-DB / RapidOCR direct", result["ratio"], 0.9


def serving_ratios(result):
    vector = result.get("pgvector")
    if not vector or "disk" not in vector:
        return
    n = result["n"]
    yield (f"disk per image {n:,}: pgvector / pgvision (1 = as lean)",
           vector["disk"]["total_kb"] / result["disk"]["total_kb"], 1.0)
    for storage in ("int8", "float16", "float32"):
        ours = result.get(f"hnsw_{storage}", {}).get("ef100")
        if ours:
            yield (f"HNSW {storage} ef 100, {n:,}: pgvision / pgvector q/s",
                   ours["qps"] / vector["ef100"]["qps"], 1.0)


def ratios(directory):
    sources = {"extract": extract_ratios, "search": search_ratios, "classify": classify_ratios,
               "sessions": sessions_ratios, "scale": scale_ratios, "text": text_ratios,
               "serving": serving_ratios}
    rows = []
    for name, rows_of in sources.items():
        result = load(directory, name)
        if result is not None:
            rows.extend(rows_of(result))
    return rows


def cold_starts(directory):
    result = load(directory, "extract")
    if result is None:
        return []
    return [(f"{r['model']} ({runtime})", seconds)
            for r in result["results"] for runtime, seconds in r["cold_start_s"].items()]


def draw(directory, out):
    rows, cold = ratios(directory), cold_starts(directory)
    if not rows:
        raise SystemExit(f"bench/chart.py: no bench_*.json in {directory}: run make bench first")
    height = 0.32 * (len(rows) + len(cold)) + 2.5
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, height),
        gridspec_kw={"height_ratios": [len(rows), max(len(cold), 1)]})
    labels = [label for label, _, _ in rows][::-1]
    values = [value for _, value, _ in rows][::-1]
    goals = [goal for _, _, goal in rows][::-1]
    colours = ["#c0392b" if goal is not None and value < goal else "#2e86c1"
               for value, goal in zip(values, goals)]
    top.barh(labels, values, color=colours)
    for y, (value, goal) in enumerate(zip(values, goals)):
        top.text(value, y, f" {value:.2f}", va="center", fontsize=8)
        if goal is not None:
            top.plot([goal, goal], [y - 0.4, y + 0.4], color="black", linewidth=2)
    top.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    top.set_xlabel("pgvision / baseline (higher is better; black tick: goal; red: below goal)")
    top.set_title(f"pgvision benchmarks ({os.cpu_count()} CPUs)")
    top.tick_params(axis="y", labelsize=8)
    if cold:
        bottom.barh([c[0] for c in cold][::-1], [c[1] for c in cold][::-1], color="#7d3c98")
        for y, seconds in enumerate([c[1] for c in cold][::-1]):
            bottom.text(seconds, y, f" {seconds:.1f} s", va="center", fontsize=8)
        bottom.axvline(5.0, color="black", linewidth=2)
        bottom.set_xlabel("fresh backend's first call: import runtime + load model (s); "
                          "goal < 5 s")
        bottom.tick_params(axis="y", labelsize=8)
    else:
        bottom.set_axis_off()
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="out", help="where the bench_*.json files are")
    parser.add_argument("--out", default="out/bench.png")
    args = parser.parse_args()
    draw(args.dir, args.out)


if __name__ == "__main__":
    main()
