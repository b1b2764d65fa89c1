#!/usr/bin/env python3
"""Recommendation, bandit and map benchmark with simulated users, in one run.

Catalog: synthetic 2048-d features in 10 groups (a non-negative Gaussian mixture, stored as
inception_v3 features of table bench_rec). A simulated user likes exactly one group.

  recommender  after N random votes (one a like), precision@10 of vision.recommend vs
               ranking by cosine similarity to the liked images by hand, and the base
               rate (what random picks achieve), for N = 5, 20, 40, 80
  bandit       200 rounds of vision.bandit_next + vote: regret (dislikes) vs picking
               uniformly at random and greedily (each cluster once, then the best like
               rate), over 10 clusters from vision.cluster
  map          vision.embed_2d (t-SNE) time on the catalog, and the PNG written to out/

    make bench-recommend                     # 2000 images
    make bench-recommend BENCH_ARGS=--quick  # 1000 images
"""

import argparse
import json
import os
import time

import numpy as np
import psycopg2

from search import clustered, copy_features

GROUPS = 10


def simulate(cur, n, rng):
    vectors = clustered(n, seed=5, centres=GROUPS)
    copy_features(cur, "bench_rec", vectors)
    from sklearn.cluster import KMeans
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    group = KMeans(GROUPS, n_init=4, random_state=0).fit_predict(unit)
    return {i + 1: int(g) for i, g in enumerate(group)}, unit


def cosine_to_likes(unit, voted, liked, k=10):
    """The baseline by hand: unseen images ranked by cosine similarity to the mean liked one."""
    if not liked.any():
        return None
    score = unit @ unit[voted[liked] - 1].mean(axis=0)
    score[voted - 1] = -np.inf
    return np.argsort(-score, kind="stable")[:k] + 1


def vote(cur, user, image_id, liked):
    cur.execute("SELECT vision.record_vote(%s, %s, %s, source => 'bench_rec')",
                (user, int(image_id), bool(liked)))


def recommender(cur, group, unit, rng):
    ids = np.array(sorted(group))
    out = {}
    for votes in (5, 20, 40, 80):
        precisions, by_hand = [], []
        for user in range(5):
            name = f"sim{votes}_{user}"
            target = user % GROUPS
            voted = rng.choice(ids, votes, replace=False)
            # at least one like, so both sides rank (a cold start is another matter)
            voted[0] = rng.choice([i for i in ids if group[int(i)] == target and i not in voted])
            for image_id in voted:
                vote(cur, name, image_id, group[int(image_id)] == target)
            cur.execute("SELECT image_id, strategy FROM vision.recommend(%s, 10, "
                        "source => 'bench_rec')", (name,))
            rows = cur.fetchall()
            precisions.append(np.mean([group[r[0]] == target for r in rows]))
            liked = np.array([group[int(i)] == target for i in voted])
            by_hand.append(np.mean([group[int(i)] == target
                                    for i in cosine_to_likes(unit, voted, liked)]))
        out[votes] = {"precision_at_10": float(np.mean(precisions)),
                      "cosine_to_likes_precision_at_10": float(np.mean(by_hand)),
                      "strategy": rows[0][1]}
    out["random_precision_at_10"] = float(np.mean([np.mean(np.array(list(group.values())) == g)
                                                   for g in range(GROUPS)]))
    return out


def bandit(cur, group, rounds):
    cur.execute("SELECT vision.cluster(k => %s, source => 'bench_rec')", (GROUPS,))
    cur.execute("SELECT image_id, cluster FROM vision.clusters WHERE source = 'bench_rec'::regclass")
    cluster = dict(cur.fetchall())
    liked_cluster = cluster[next(i for i, g in group.items() if g == 3)]
    regret = 0
    for _ in range(rounds):
        cur.execute("SELECT cluster, image_id FROM vision.bandit_next('thompson', "
                    "source => 'bench_rec')")
        c, image_id = cur.fetchone()
        liked = c == liked_cluster
        regret += not liked
        vote(cur, "thompson", image_id, liked)
    share = np.mean([c == liked_cluster for c in cluster.values()])
    sizes = np.bincount(list(cluster.values()))
    return {"rounds": rounds, "regret": regret, "random_regret": float(rounds * (1 - share)),
            "greedy_regret": greedy_regret(sizes, liked_cluster, rounds),
            "least_regret": max(0, rounds - int(sizes[liked_cluster]))}


def greedy_regret(sizes, liked_cluster, rounds):
    """Regret of the greedy policy under the bandit's rules (each image shown once): try
    every cluster once, then always the best like rate seen so far among clusters with
    images left."""
    left = sizes.astype(float)
    likes, shown = np.zeros(len(sizes)), np.zeros(len(sizes))
    regret = 0
    for _ in range(rounds):
        open_ = np.flatnonzero(left > 0)
        untried = open_[shown[open_] == 0]
        pick = untried[0] if len(untried) else open_[np.argmax(likes[open_] / shown[open_])]
        liked = pick == liked_cluster
        regret += not liked
        likes[pick] += liked
        shown[pick] += 1
        left[pick] -= 1
    return regret


def main():
    parser = argparse.ArgumentParser(description="pgvision recommendation benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="out/bench_recommend.json")
    args = parser.parse_args()
    n = 1000 if args.quick else 2000
    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    cur = conn.cursor()
    rng = np.random.default_rng(0)
    print(f"... catalog of {n} synthetic images in {GROUPS} groups", flush=True)
    group, unit = simulate(cur, n, rng)
    results = {"images": n, "recommender": recommender(cur, group, unit, rng),
               "bandit": bandit(cur, group, 200)}
    started = time.monotonic()
    cur.execute("SELECT vision.embed_2d(method => 'tsne', source => 'bench_rec')")
    results["tsne_seconds_reported"] = cur.fetchone()[0]
    results["tsne_seconds_call"] = time.monotonic() - started
    cur.execute("SELECT vision.plot_map(source => 'bench_rec')")
    os.makedirs("out", exist_ok=True)
    with open("out/bench_map.png", "wb") as fh:
        fh.write(bytes(cur.fetchone()[0]))
    cur.execute("DROP TABLE bench_rec")

    r = results["recommender"]
    print(f"\nRecommender, 5 simulated users per row, each liking one of {GROUPS} groups:")
    for votes in (5, 20, 40, 80):
        base = r[votes]["cosine_to_likes_precision_at_10"]
        print(f"  {votes:>2} votes: precision@10 {r[votes]['precision_at_10']:.2f} "
              f"({r[votes]['strategy']}); cosine to likes by hand {base:.2f} = "
              f"{r[votes]['precision_at_10'] / max(base, 1e-9):.2f}x; "
              f"random {r['random_precision_at_10']:.2f}")
    b = results["bandit"]
    print(f"Bandit, {b['rounds']} rounds: regret {b['regret']} vs {b['random_regret']:.0f} "
          f"for uniform random picks and {b['greedy_regret']} for greedy picks (the least "
          f"possible: {b['least_regret']}, once the liked cluster's images are all shown)")
    print(f"t-SNE of {n} x 2048: {results['tsne_seconds_call']:.1f} s; map in out/bench_map.png")
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
