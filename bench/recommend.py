#!/usr/bin/env python3
"""Recommendation, bandit and map benchmark with simulated users, in one run.

Catalog: synthetic 2048-d features in 10 groups (a non-negative Gaussian mixture, stored as
inception_v3 features of table bench_rec). A simulated user likes exactly one group.

  recommender  after N random votes (one a like), precision@10 of vision.recommend vs
               ranking by cosine similarity to the liked images by hand, and the base
               rate (what random picks achieve), for N = 5, 20, 40, 80
  photos       the same on real photographs: the scikit-image photos in augmented copies
               (Inception-v3 features extracted in the database), 20 shoppers who each
               like 4 of the 12 photos, N = 5, 20, 40
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

from search import augmented_photos, clustered, copy_features

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


def vote(cur, user, image_id, liked, source="bench_rec"):
    cur.execute("SELECT vision.record_vote(%s, %s, %s, source => %s)",
                (user, int(image_id), bool(liked), source))


def recommender(cur, source, group, unit, rng, liked_groups, counts=(5, 20, 40, 80), users=5):
    """precision@10 of vision.recommend and of cosine to the likes by hand, for simulated
    users who like the groups ``liked_groups(user)`` and vote on ``N`` random images."""
    ids = np.array(sorted(group))
    out = {}
    for votes in counts:
        precisions, by_hand = [], []
        for user in range(users):
            name = f"sim{source}{votes}_{user}"
            target = liked_groups(user)
            voted = rng.choice(ids, votes, replace=False)
            # at least one like, so both sides rank (a cold start is another matter)
            voted[0] = rng.choice([i for i in ids if group[int(i)] in target and i not in voted])
            for image_id in voted:
                vote(cur, name, image_id, group[int(image_id)] in target, source)
            cur.execute("SELECT image_id, strategy FROM vision.recommend(%s, 10, source => %s)",
                        (name, source))
            rows = cur.fetchall()
            precisions.append(np.mean([group[r[0]] in target for r in rows]))
            liked = np.array([group[int(i)] in target for i in voted])
            by_hand.append(np.mean([group[int(i)] in target
                                    for i in cosine_to_likes(unit, voted, liked)]))
        out[votes] = {"precision_at_10": float(np.mean(precisions)),
                      "cosine_to_likes_precision_at_10": float(np.mean(by_hand)),
                      "strategy": rows[0][1]}
    return out


def photo_catalog(cur, per_photo):
    """The scikit-image photos, each in ``per_photo`` augmented copies (a group = a photo),
    with Inception-v3 features extracted in the database."""
    cur.execute("DROP TABLE IF EXISTS bench_rec_photos")
    cur.execute("CREATE TABLE bench_rec_photos (id bigint PRIMARY KEY, photo int, image bytea)")
    rows = augmented_photos(per_photo, seed=3)
    for i, (s, data) in enumerate(rows, start=1):
        cur.execute("INSERT INTO bench_rec_photos VALUES (%s, %s, %s)",
                    (i, s, psycopg2.Binary(data)))
    cur.execute("CALL vision.extract_table('bench_rec_photos')")
    cur.execute("SELECT f.image_id, p.photo, f.feature FROM vision.features f JOIN "
                "bench_rec_photos p ON p.id = f.image_id WHERE f.source = "
                "'bench_rec_photos'::regclass AND f.model = 'inception_v3' ORDER BY 1")
    found = cur.fetchall()
    vectors = np.array([r[2] for r in found], dtype=np.float32)
    return {r[0]: r[1] for r in found}, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


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
    results = {"images": n,
               "recommender": recommender(cur, "bench_rec", group, unit, rng,
                                          lambda user: {user % GROUPS}),
               "bandit": bandit(cur, group, 200)}
    results["recommender"]["random_precision_at_10"] = float(np.mean(
        [np.mean(np.array(list(group.values())) == g) for g in range(GROUPS)]))
    per_photo = 6 if args.quick else 10
    print(f"... catalog of photos, {per_photo} augmented copies each", flush=True)
    photo, photo_unit = photo_catalog(cur, per_photo)
    n_photos = len(set(photo.values()))
    shoppers = [rng.choice(n_photos, 4, replace=False) for _ in range(20)]
    results["photos"] = {
        "images": len(photo), "photos": n_photos,
        "recommender": recommender(cur, "bench_rec_photos", photo, photo_unit, rng,
                                   lambda user: set(shoppers[user].tolist()), (5, 20, 40),
                                   users=20),
        "random_precision_at_10": 4 / n_photos}
    cur.execute("DELETE FROM vision.features WHERE source = 'bench_rec_photos'::regclass")
    cur.execute("DELETE FROM vision.votes WHERE source = 'bench_rec_photos'::regclass")
    cur.execute("DROP TABLE bench_rec_photos")
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
    p = results["photos"]
    print(f"\nRecommender on {p['images']} photos ({p['photos']} photos in augmented copies), "
          f"20 simulated shoppers each liking 4 photos:")
    for votes in (5, 20, 40):
        row = p["recommender"][votes]
        base = row["cosine_to_likes_precision_at_10"]
        print(f"  {votes:>2} votes: precision@10 {row['precision_at_10']:.2f} "
              f"({row['strategy']}); cosine to likes by hand {base:.2f} = "
              f"{row['precision_at_10'] / max(base, 1e-9):.2f}x; "
              f"random {p['random_precision_at_10']:.2f}")
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
