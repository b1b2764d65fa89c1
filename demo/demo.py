#!/usr/bin/env python3
"""`make demo`: sample photos into a table → Inception-v3 features in one SQL statement.

The images are the colour and grey photographs scikit-image ships (astronaut, coffee, cat,
rocket, ...; public domain or CC0 per skimage/data/README.txt), each stored three ways:
as is, mirrored, and cropped + re-encoded at JPEG quality 40, plus one truncated JPEG to show
how a bad row is recorded and skipped. Writes out/demo_neighbours.png: each photo's query and
its nearest stored neighbour (vision.similar, cosine distance of the features).
"""

import argparse
import io
import os
import time

import psycopg2
from PIL import Image, ImageDraw, ImageOps
from skimage import data as photos

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "logo", "hubble_deep_field",
          "retina", "immunohistochemistry", "colorwheel", "camera", "coins", "moon"]
TABLE = "demo_images"

NEAREST = """
SELECT q.id, s.image_id, 1 - s.distance AS cos
FROM demo_images q, vision.similar(q.id, k => 1, source => 'demo_images') s
WHERE q.id % 3 = 1 AND q.id < 37
ORDER BY q.id
"""


def encode(img, quality=90):
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variants(name):
    """(label, jpeg bytes) three ways: original, mirrored, cropped + low JPEG quality."""
    img = Image.fromarray(getattr(photos, name)())
    w, h = img.size
    cropped = img.crop((w // 10, h // 10, w - w // 12, h - h // 8))
    return [(name, encode(img)), (f"{name} (mirrored)", encode(ImageOps.mirror(img))),
            (f"{name} (cropped, q40)", encode(cropped, quality=40))]


def load(cur):
    for table in ("vision.features", "vision.extract_errors"):  # features of a previous run
        cur.execute(f"DELETE FROM {table} WHERE source = to_regclass(%s)", (TABLE,))
    cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
    cur.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, label text, image bytea)")
    rows = [v for name in PHOTOS for v in variants(name)]
    broken = rows[0][1][:5000]
    rows.append(("astronaut (truncated upload)", broken))
    for image_id, (label, data) in enumerate(rows, start=1):
        cur.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)",
                    (image_id, label, psycopg2.Binary(data)))
    return len(rows)


def contact_sheet(cur, pairs, path):
    thumb = 150
    sheet = Image.new("RGB", (2 * thumb + 30, len(pairs) * (thumb + 24) + 10), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (query_id, match_id, cos) in enumerate(pairs):
        y = 10 + row * (thumb + 24)
        for col, image_id in enumerate((query_id, match_id)):
            cur.execute(f"SELECT label, image FROM {TABLE} WHERE id = %s", (image_id,))
            label, data = cur.fetchone()
            img = Image.open(io.BytesIO(bytes(data))).convert("RGB")
            img.thumbnail((thumb, thumb))
            sheet.paste(img, (10 + col * (thumb + 10), y))
            caption = label if col == 0 else f"cos {cos:.2f} {label}"
            draw.text((10 + col * (thumb + 10), y + thumb + 2), caption[:30], fill="black")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sheet.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--out", default="out/demo_neighbours.png")
    args = parser.parse_args()
    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    cur = conn.cursor()
    conn.notices = []

    n = load(cur)
    print(f"\n1. Loaded {n} images into table {TABLE}(id, label, image bytea): "
          f"{len(PHOTOS)} scikit-image photos x 3 variants + 1 truncated JPEG.")

    print("\n2. Extracting Inception-v3 features inside Postgres:\n"
          f"     CALL vision.extract_table('{TABLE}');")
    started = time.monotonic()
    del conn.notices[:]  # only the extraction's own progress below
    cur.execute(f"CALL vision.extract_table('{TABLE}')")
    job_id, processed, failed = cur.fetchone()
    seconds = time.monotonic() - started
    for notice in conn.notices[-2:]:
        print("     " + notice.strip())
    cur.execute("SELECT array_length(feature, 1) FROM vision.features "
                "WHERE source = %s::regclass LIMIT 1", (TABLE,))
    dims = cur.fetchone()[0]
    print(f"   {processed} rows -> {dims}-d features, {failed} skipped, {seconds:.1f} s "
          f"({processed / seconds:.1f} img/s, including this backend's one-off model load)")
    cur.execute("SELECT image_id, error FROM vision.extract_errors WHERE source = %s::regclass",
                (TABLE,))
    for image_id, error in cur.fetchall():
        print(f"   recorded in vision.extract_errors: {error}")

    print("\n3. One image, one call:  SELECT vision.extract_features(image) FROM "
          f"{TABLE} WHERE id = 2;")
    started = time.monotonic()
    cur.execute(f"SELECT vision.extract_features(image) FROM {TABLE} WHERE id = 2")
    vector = cur.fetchone()[0]
    print(f"   {len(vector)} floats in {1000 * (time.monotonic() - started):.0f} ms "
          f"(model cached in this backend), first values {[round(v, 3) for v in vector[:4]]}")

    print("\n4. Nearest neighbour of each original photo:\n"
          "     SELECT s.* FROM vision.similar(1, k => 1, source => 'demo_images') s;")
    cur.execute(NEAREST)
    pairs = cur.fetchall()
    cur.execute(f"SELECT id, label FROM {TABLE}")
    labels = dict(cur.fetchall())
    hits = 0
    for query_id, match_id, cos in pairs:
        same = labels[match_id].split(" ")[0] == labels[query_id]
        hits += same
        print(f"   {labels[query_id]:<22} -> {labels[match_id]:<32} cos {cos:.3f}"
              f"{'' if same else '   (a different photo)'}")
    print(f"   {hits}/{len(pairs)} photos find one of their own variants first.")
    print("\n5. Classification: label the originals and mirrored copies by photo, train on "
          "their features, label the rest:")
    cur.execute("DROP TABLE IF EXISTS demo_labels")
    cur.execute(f"CREATE TABLE demo_labels AS SELECT id AS image_id, split_part(label, ' ', 1) "
                f"AS label FROM {TABLE} WHERE id % 3 <> 0 AND id < 37")
    cur.execute("SELECT vision.train_classifier('demo_photo', 'demo_labels', 'demo_images', "
                "method => 'logistic', folds => 2, replace => true)")
    metrics = cur.fetchone()[0]
    print(f"     SELECT vision.train_classifier('demo_photo', 'demo_labels', method => 'logistic');"
          f"\n   2-fold CV accuracy {metrics['accuracy']:.2f} (majority baseline "
          f"{metrics['majority_baseline']:.2f}), ROC AUC {metrics['roc_auc']:.2f}")
    cur.execute("SELECT vision.classify_table('demo_photo')")
    cur.execute(f"SELECT i.label, p.label, p.probability FROM vision.predictions p "
                f"JOIN {TABLE} i ON i.id = p.image_id WHERE p.classifier = 'demo_photo' "
                f"AND i.id % 3 = 0 ORDER BY i.id")
    held_out = cur.fetchall()
    right = sum(label.split(" ")[0] == predicted for label, predicted, _ in held_out)
    print(f"   held-out cropped q40 copies labelled correctly: {right}/{len(held_out)} "
          "(SELECT * FROM vision.classify(3, 'demo_photo'))")
    print("\n6. Recommendations: a shopper likes the cat and coffee shots, dislikes the moon "
          "and coins:")
    cur.execute(f"SELECT id, split_part(label, ' ', 1) FROM {TABLE} WHERE id < 37")
    kind = dict(cur.fetchall())
    for image_id, label in sorted(kind.items()):
        if label in ("chelsea", "coffee", "moon", "coins") and image_id % 3 == 1:
            cur.execute("SELECT vision.record_vote('demo_user', %s, %s, source => 'demo_images')",
                        (image_id, label in ("chelsea", "coffee")))
    cur.execute("SELECT image_id, score, strategy FROM vision.recommend('demo_user', 3, "
                "source => 'demo_images')")
    for rank, (image_id, score, strategy) in enumerate(cur.fetchall(), start=1):
        # four decimals: the top scores of a small catalog can agree to two
        print(f"   {rank}. {labels[image_id]:<29} score {score:.4f} ({strategy})")
    cur.execute("SELECT vision.cluster(k => 6, source => 'demo_images')")
    cur.execute("SELECT cluster, image_id FROM vision.bandit_next('demo_user', "
                "source => 'demo_images')")
    cluster_id, pick = cur.fetchone()
    print(f"   bandit_next: explore cluster {cluster_id} -> {labels[pick]}")

    contact_sheet(cur, pairs, args.out)
    cur.execute("SELECT vision.embed_2d(method => 'tsne', source => 'demo_images')")
    seconds = cur.fetchone()[0]
    cur.execute("SELECT vision.plot_map(source => 'demo_images', thumbnails => true)")
    map_path = os.path.join(os.path.dirname(args.out), "demo_map.png")
    with open(map_path, "wb") as fh:
        fh.write(bytes(cur.fetchone()[0]))
    print(f"\n7. Wrote {args.out} (each photo beside its nearest neighbour) and {map_path} "
          f"(t-SNE map in {seconds:.1f} s, thumbnails framed by cluster).")
    print("\nTry it yourself:  psql \"$(make -s dsn)\"  then  "
          f"SELECT id, label FROM {TABLE};  SELECT * FROM vision.models;")
    print(f"  or the command:  export DATABASE_URL=\"$(make -s dsn)\"; pgvision similar --id 4 "
          f"--table {TABLE} --html out/similar.html")


if __name__ == "__main__":
    main()
