#!/usr/bin/env python3
"""Recommendation, bandit and map benchmark with simulated users, in one run.

Catalog: synthetic 2048-d features in 10 groups (a non-negative Gaussian mixture, stored as
inception_v3 features of table bench_rec). A simulated user likes exactly one group.

  recommender  after N random votes (one a like), precision@10 of vision.recommend beside
               the candidate scorers computed here by hand on the same votes: cosine to
               the mean like (the floor), Rocchio, the logistic taste model of 0.7.0-0.12.0
               (Rocchio under 10 votes of a kind, cross-validated logistic from then on),
               nearest liked - 1/2 nearest disliked, and a blend chosen per user by
               leave-pair-out AUC on their own votes; and the base rate, N = 5, 20, 40, 80
  harder       the same on a harder synthetic catalog (20 overlapping groups, noisy; a
               user likes 2), N = 5, 20, 40; 100 users (20 with --quick)
  photos       the same on real photographs: the scikit-image photos in augmented copies
               (the default model's features extracted in the database), 100 shoppers (20
               with --quick) who each like 4 of the 12 photos, N = 5, 20, 40
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

from search import MODEL, augmented_photos, clustered, copy_features

from pgvision import DEFAULT_MODEL

GROUPS = 10


def simulate(cur, n, rng):
    vectors = clustered(n, seed=5, centres=GROUPS)
    copy_features(cur, "bench_rec", vectors)
    from sklearn.cluster import KMeans
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    group = KMeans(GROUPS, n_init=4, random_state=0).fit_predict(unit)
    return {i + 1: int(g) for i, g in enumerate(group)}, unit


# --- the candidate scorers, by hand: (unit rows, liked rows, disliked rows) -> scores --------

def unit_rows(X):
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def cosine_to_likes(U, L, D):
    return U @ unit_rows(L.mean(axis=0, keepdims=True))[0]


def rocchio(U, L, D):
    w = unit_rows(L.mean(axis=0, keepdims=True))[0]
    if len(D):
        w = w - 0.5 * unit_rows(D.mean(axis=0, keepdims=True))[0]
    return U @ w


def taste_0_12(U, L, D):
    """0.7.0-0.12.0's taste model: Rocchio under 10 likes or dislikes, then logistic
    regression with C chosen by cross-validation (pgvision.learners 'logistic')."""
    from pgvision import learners
    if min(len(L), len(D)) < 10:
        return rocchio(U, L, D)
    X = np.vstack([L, D])
    y = np.r_[np.ones(len(L), int), np.zeros(len(D), int)]
    return learners.fit("logistic", X, y, {}, 2).scores(U)[:, 1]


def nearest(U, L, D):
    score = (U @ L.T).max(axis=1)
    return score - 0.5 * (U @ D.T).max(axis=1) if len(D) else score


def logistic(U, L, D):
    from pgvision.learners import binary_logistic
    if not len(D):
        return nearest(U, L, D)
    w, b = binary_logistic(np.vstack([L, D]), np.r_[np.ones(len(L)), np.zeros(len(D))], 10.0)
    return U @ w + b


def pair_auc(scorer, V, liked, pairs=64):
    """Leave-pair-out AUC on a user's own votes: one like and one dislike held out, both
    scored by the model of the rest (pooling leave-one-out scores of different models is
    biased: a held-out like leaves fewer likes behind)."""
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(liked), np.flatnonzero(~liked)
    all_pairs = [(p, n) for p in pos for n in neg]
    chosen = rng.choice(len(all_pairs), min(pairs, len(all_pairs)), replace=False)
    wins = 0.0
    for p, n in (all_pairs[i] for i in chosen):
        keep = np.ones(len(V), bool)
        keep[[p, n]] = False
        s = scorer(V[[p, n]], V[keep & liked], V[keep & ~liked]) if (keep & liked).any() \
            else np.zeros(2)
        wins += 1.0 if s[0] > s[1] else 0.5 if s[0] == s[1] else 0.0
    return wins / len(chosen)


def blend(U, L, D):
    """The candidate with the best leave-pair-out AUC on this user's votes."""
    if min(len(L), len(D)) < 2:
        return nearest(U, L, D)
    V, liked = np.vstack([L, D]), np.r_[np.ones(len(L), bool), np.zeros(len(D), bool)]
    candidates = (nearest, logistic, rocchio)
    return candidates[int(np.argmax([pair_auc(c, V, liked) for c in candidates]))](U, L, D)


# column names: cosine to the mean like, Rocchio, 0.12.0's taste model, nearest liked - 1/2
# nearest disliked, the per-user blend
CANDIDATES = {"cosine": cosine_to_likes, "rocchio": rocchio, "taste 0.12": taste_0_12,
              "nearest": nearest, "blend": blend}


def vote(cur, user, image_id, liked, source="bench_rec", model=MODEL):
    cur.execute("SELECT vision.record_vote(%s, %s, %s, model => %s, source => %s)",
                (user, int(image_id), bool(liked), model, source))


def recommender(cur, source, group, unit, rng, liked_groups, counts=(5, 20, 40, 80), users=5,
                model=MODEL):
    """precision@10 of vision.recommend and of every candidate scorer by hand on the same
    votes, for simulated users who like the groups ``liked_groups(user)`` and vote on
    ``N`` random images (at least one a like). ``unit``: row i is image i + 1."""
    ids = np.array(sorted(group))
    out = {}
    for votes in counts:
        hits = {name: [] for name in ("pgvision", *CANDIDATES)}
        strategies = set()
        for user in range(users):
            name = f"sim{source}{votes}_{user}"
            target = liked_groups(user)
            voted = rng.choice(ids, votes, replace=False)
            # at least one like, so both sides rank (a cold start is another matter)
            voted[0] = rng.choice([i for i in ids if group[int(i)] in target and i not in voted])
            for image_id in voted:
                vote(cur, name, image_id, group[int(image_id)] in target, source, model)
            cur.execute("SELECT image_id, strategy FROM vision.recommend(%s, 10, model => %s, "
                        "source => %s)", (name, model, source))
            rows = cur.fetchall()
            strategies.update(r[1] for r in rows)
            hits["pgvision"].append(np.mean([group[r[0]] in target for r in rows]))
            liked = np.array([group[int(i)] in target for i in voted])
            unseen = np.setdiff1d(ids, voted)
            L, D, U = unit[voted[liked] - 1], unit[voted[~liked] - 1], unit[unseen - 1]
            for candidate, scorer in CANDIDATES.items():
                top = unseen[np.argsort(-scorer(U, L, D), kind="stable")[:10]]
                hits[candidate].append(np.mean([group[int(i)] in target for i in top]))
        out[votes] = {name: float(np.mean(h)) for name, h in hits.items()}
        out[votes]["strategy"] = " / ".join(sorted(strategies))
    return out


def vote_latency(cur, source, ids, rng, votes=40, rounds=20):
    """Milliseconds of one vision.record_vote (it refits the taste model) for a user who
    has ``votes`` votes: median and max over ``rounds`` changed votes."""
    voted = rng.choice(ids, votes, replace=False)
    for i, image_id in enumerate(voted):
        vote(cur, "latency", image_id, i % 3 == 0, source)
    times = []
    for image_id in voted[:rounds]:
        started = time.perf_counter()
        cur.execute("SELECT vision.record_vote('latency', %s, NOT liked, model => %s, "
                    "source => %s) FROM vision.votes WHERE user_id = 'latency' AND "
                    "image_id = %s", (int(image_id), MODEL, source, int(image_id)))
        times.append((time.perf_counter() - started) * 1000)
    return {"votes": votes, "median_ms": float(np.median(times)), "max_ms": float(max(times))}


def overlapping(n, groups=20, spread=0.12, noise=0.4, seed=5):
    """A harder catalog: groups that share most of their direction, with noise."""
    r0 = np.random.default_rng(seed)
    centres = r0.gamma(0.4, 1.0, 2048) + spread * r0.gamma(0.4, 1.0, (groups, 2048))
    group = r0.integers(0, groups, n)
    vectors = np.maximum(centres[group] + r0.normal(0, noise, (n, 2048)), 0).astype(np.float32)
    return vectors, group


def print_table(title, rows, base):
    names = ["pgvision", *CANDIDATES]
    print(f"\n{title}")
    print("  votes  " + "  ".join(f"{n:>10}" for n in names) + "  random")
    for votes, row in rows.items():
        best = max(row[n] for n in CANDIDATES)
        print(f"  {votes:>5}  " + "  ".join(f"{row[n]:>10.3f}" for n in names)
              + f"  {base:6.3f}   pgvision/best {row['pgvision'] / max(best, 1e-9):.2f}x, "
              f"/cosine {row['pgvision'] / max(row['cosine'], 1e-9):.2f}x "
              f"({row['strategy']})")


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
                "'bench_rec_photos'::regclass AND f.model = %s ORDER BY 1", (DEFAULT_MODEL,))
    found = cur.fetchall()
    vectors = np.array([r[2] for r in found], dtype=np.float32)
    return {r[0]: r[1] for r in found}, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def bandit(cur, group, rounds):
    cur.execute("SELECT vision.cluster(k => %s, model => %s, source => 'bench_rec')",
                (GROUPS, MODEL))
    cur.execute("SELECT image_id, cluster FROM vision.clusters WHERE source = 'bench_rec'::regclass")
    cluster = dict(cur.fetchall())
    liked_cluster = cluster[next(i for i, g in group.items() if g == 3)]
    regret = 0
    for _ in range(rounds):
        cur.execute("SELECT cluster, image_id FROM vision.bandit_next('thompson', "
                    "model => %s, source => 'bench_rec')", (MODEL,))
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
               "bandit": bandit(cur, group, 200),
               "record_vote": vote_latency(cur, "bench_rec", np.array(sorted(group)), rng)}
    results["recommender"]["random_precision_at_10"] = float(np.mean(
        [np.mean(np.array(list(group.values())) == g) for g in range(GROUPS)]))
    print(f"... a harder catalog of {n} images in 20 overlapping groups", flush=True)
    hard_vectors, hard_group = overlapping(n)
    copy_features(cur, "bench_rec_hard", hard_vectors)
    hard = {i + 1: int(g) for i, g in enumerate(hard_group)}
    # 20 users' precision@10 moves by ~0.02 from one draw to the next: the full run asks 100
    panel = 20 if args.quick else 100
    pairs = [set(rng.choice(20, 2, replace=False).tolist()) for _ in range(panel)]
    results["harder"] = {
        "images": n,
        "recommender": recommender(cur, "bench_rec_hard", hard, unit_rows(hard_vectors), rng,
                                   lambda user: pairs[user], (5, 20, 40), users=panel),
        "random_precision_at_10": float(np.mean([np.isin(hard_group, list(p)).mean()
                                                 for p in pairs]))}
    cur.execute("DELETE FROM vision.votes WHERE source = 'bench_rec_hard'::regclass")
    cur.execute("DROP TABLE bench_rec_hard")
    per_photo = 6 if args.quick else 10
    print(f"... catalog of photos, {per_photo} augmented copies each", flush=True)
    photo, photo_unit = photo_catalog(cur, per_photo)
    n_photos = len(set(photo.values()))
    shoppers = [rng.choice(n_photos, 4, replace=False) for _ in range(panel)]
    results["photos"] = {
        "images": len(photo), "photos": n_photos,
        "recommender": recommender(cur, "bench_rec_photos", photo, photo_unit, rng,
                                   lambda user: set(shoppers[user].tolist()), (5, 20, 40),
                                   users=panel, model=DEFAULT_MODEL),
        "random_precision_at_10": 4 / n_photos}
    cur.execute("DELETE FROM vision.features WHERE source = 'bench_rec_photos'::regclass")
    cur.execute("DELETE FROM vision.votes WHERE source = 'bench_rec_photos'::regclass")
    cur.execute("DROP TABLE bench_rec_photos")
    started = time.monotonic()
    cur.execute("SELECT vision.embed_2d(model => %s, method => 'tsne', source => 'bench_rec')",
                (MODEL,))
    results["tsne_seconds_reported"] = cur.fetchone()[0]
    results["tsne_seconds_call"] = time.monotonic() - started
    cur.execute("SELECT vision.plot_map(model => %s, source => 'bench_rec')", (MODEL,))
    os.makedirs("out", exist_ok=True)
    with open("out/bench_map.png", "wb") as fh:
        fh.write(bytes(cur.fetchone()[0]))
    cur.execute("DROP TABLE bench_rec")

    r = results["recommender"]
    print_table(f"Recommender: precision@10, 5 simulated users per row, each liking one of "
                f"{GROUPS} groups", {v: r[v] for v in (5, 20, 40, 80)},
                r["random_precision_at_10"])
    h = results["harder"]
    print_table(f"Recommender on a harder catalog ({h['images']} images, 20 overlapping "
                f"groups), {panel} users each liking 2", h["recommender"],
                h["random_precision_at_10"])
    p = results["photos"]
    print_table(f"Recommender on {p['images']} photos ({p['photos']} photos in augmented "
                f"copies), {panel} simulated shoppers each liking 4 photos", p["recommender"],
                p["random_precision_at_10"])
    v = results["record_vote"]
    print(f"\nrecord_vote with {v['votes']} votes (refits the taste model): median "
          f"{v['median_ms']:.1f} ms, max {v['max_ms']:.1f} ms")
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
