"""``pgvision similar``, ``classify``, ``duplicates``, ``search-text``, ``read-text`` and
``moderate``: questions about images, answered as tables, JSON or an HTML page."""

import os

import click

from . import pages
from .common import MODEL_OPTION, JSON_OPTION, image_rows, out_console, quoted_table, run_sql, show


@click.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--id", "image_id", type=int, help="A stored image's id (instead of FILE).")
@click.option("--table", "-t", required=True, help="Table the images are in.")
@click.option("-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@MODEL_OPTION
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True),
              help="Also write one self-contained HTML page of the results.")
@JSON_OPTION
@click.pass_obj
def similar(session, file, image_id, table, k, model, html_out, as_json):
    """The K images of TABLE most like a stored image (--id N) or an image FILE.

    \b
      pgvision similar --id 42 --table products -k 5 --html similar.html
      pgvision similar new-shoe.jpg --table products
    """
    import psycopg2

    if (file is None) == (image_id is None):
        raise click.UsageError("give either FILE or --id N")
    qualified = quoted_table(session, table)
    if file:
        with open(file, "rb") as fh:
            query = {"id": None, "image": fh.read(), "name": os.path.basename(file)}
        rows = run_sql(session, "SELECT image_id, distance, rank FROM vision.similar_to_image("
                       "%s, k => %s, model => %s, source => %s::regclass)",
                       (psycopg2.Binary(query["image"]), k, model, qualified))
    else:
        rows = run_sql(session, "SELECT image_id, distance, rank FROM vision.similar(%s, k => %s, "
                       "model => %s, source => %s::regclass)", (image_id, k, model, qualified))
    stored = image_rows(session, qualified, [r[0] for r in rows] + ([image_id] if image_id else []))
    if image_id is not None:
        query = stored.get(image_id, {"id": image_id, "image": None, "name": None})
    neighbours = [dict(stored.get(i, {"id": i, "image": None, "name": None}), distance=d, rank=r)
                  for i, d, r in rows]
    if not as_json:
        out_console.print(f"nearest to {query['name'] or 'image ' + str(image_id)} "
                          f"({model}, cosine distance)", markup=False)
    show([{"rank": n["rank"], "id": n["id"], "name": n["name"],
           "distance": max(n["distance"], 0.0) if as_json  # no -0.0000 from rounding
           else f"{max(n['distance'], 0.0):.4f}"} for n in neighbours],
         as_json, right=("rank", "id", "distance"))
    if html_out:
        title = f"pgvision: {len(neighbours)} images of {qualified} nearest to " + (
            f"image {image_id}" if image_id is not None else query["name"])
        with open(html_out, "w", encoding="utf-8") as fh:
            fh.write(pages.similar_page(title, query, neighbours))
        session.say(f"wrote {html_out}")


@click.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--classifier", "-c", required=True, help="A trained classifier's name.")
@click.option("--table", "-t", help="With --id: the stored image's table; alone: label every "
              "row of the table into vision.predictions.")
@click.option("--id", "image_id", type=int, help="A stored image's id.")
@click.option("--top", default=3, show_default=True, type=click.IntRange(1, 100))
@JSON_OPTION
@click.pass_obj
def classify(session, files, classifier, table, image_id, top, as_json):
    """Most likely labels of image FILES, of a stored image (--id with --table), or of every
    row of a table (--table alone, stored in vision.predictions).

    \b
      pgvision classify -c product_type shoe.jpg bag.png
      pgvision classify -c product_type --table products
    """
    import psycopg2

    if image_id is not None and not table:
        raise click.UsageError("--id needs --table")
    if not files and not table:
        raise click.UsageError("give image FILES, --table T, or --id N --table T")
    records = []

    def add(image, label, p):
        records.append({"image": image, "label": label,
                        "probability": p if as_json else f"{p:.3f}"})

    if image_id is not None:
        for label, p in run_sql(session, "SELECT label, probability FROM vision.classify(%s, %s, "
                                "top_k => %s, source => %s::regclass)",
                                (image_id, classifier, top, quoted_table(session, table))):
            add(f"id {image_id}", label, p)
    elif table:
        n = run_sql(session, "SELECT vision.classify_table(%s, source => %s::regclass)",
                    (classifier, quoted_table(session, table)))[0][0]
        session.say(f"labelled {n} images of {table} with {classifier} (vision.predictions)")
    for path in files:
        with open(path, "rb") as fh:
            data = fh.read()
        for label, p in run_sql(session, "SELECT label, probability FROM vision.classify_image("
                                "%s, %s, top_k => %s)", (psycopg2.Binary(data), classifier, top)):
            add(os.path.basename(path), label, p)
    show(records, as_json, right=("probability",))


@click.command()
@click.option("--table", "-t", required=True, help="Table the images are in.")
@MODEL_OPTION
@click.option("--hashes-only", is_flag=True, help="Judge by perceptual hashes alone.")
@click.option("--max-hash-distance", default=7, show_default=True, type=click.IntRange(0, 32))
@click.option("--min-similarity", default=0.82, show_default=True,
              type=click.FloatRange(0, 1, min_open=True))
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True),
              help="Also write one self-contained HTML page, a row per group.")
@JSON_OPTION
@click.pass_obj
def duplicates(session, table, model, hashes_only, max_hash_distance, min_similarity, html_out,
               as_json):
    """Groups of near-duplicate images of TABLE (vision.duplicates): re-encoded, resized,
    cropped or mirrored copies. A table with no perceptual hashes yet is hashed first
    (vision.maintain with add_model => 'perceptual_hash').

    \b
      pgvision duplicates --table products --html duplicates.html
    """
    qualified = quoted_table(session, table)
    hashed = run_sql(session, "SELECT count(*) FROM vision.features WHERE model = "
                     "'perceptual_hash' AND source = %s::regclass", (qualified,))[0][0]
    if not hashed:
        session.say(f"hashing {qualified} first (perceptual_hash)")
        run_sql(session, "CALL vision.maintain(%s::regclass, add_model => 'perceptual_hash')",
                (qualified,))
    rows = run_sql(session, "SELECT group_id, image_id, representative, hash_distance, cosine, "
                   "similarity FROM vision.duplicates(%s::regclass, model => %s, "
                   "max_hash_distance => %s, min_similarity => %s)",
                   (qualified, None if hashes_only else model, max_hash_distance,
                    min_similarity))
    stored = image_rows(session, qualified, [r[1] for r in rows])
    members = [dict(stored.get(i, {"id": i, "image": None, "name": None}), group=g,
                    representative=rep, hash_distance=h, cosine=c, similarity=s)
               for g, i, rep, h, c, s in rows]
    if not as_json:
        out_console.print(f"{len({m['group'] for m in members})} groups of near-duplicates in "
                          f"{qualified}" + ("" if rows else " (none found)"), markup=False)

    def number(value):
        return value if as_json or value is None else f"{value:.3f}"

    show([{"group": m["group"], "id": m["id"], "name": m["name"],
           "hash distance": m["hash_distance"], "cosine": number(m["cosine"]),
           "similarity": number(m["similarity"])} for m in members], as_json,
         right=("group", "id", "hash distance", "cosine", "similarity"))
    if html_out:
        with open(html_out, "w", encoding="utf-8") as fh:
            fh.write(pages.duplicates_page(f"pgvision: near-duplicates in {qualified}", members))
        session.say(f"wrote {html_out}")


def extracted_once(session, qualified, model, doing):
    """Extract ``model`` for a table (its id and image columns) unless that was ever done:
    from then on the change triggers and vision.maintain keep it current."""
    done = run_sql(session, "SELECT EXISTS (SELECT 1 FROM vision.extract_jobs WHERE model = %s "
                   "AND source = %s::regclass)", (model, qualified))[0][0]
    if not done:
        session.say(f"{doing} {qualified} first ({model})")
        run_sql(session, "CALL vision.extract_table(%s::regclass, model => %s)",
                (qualified, model))


@click.command("search-text")
@click.argument("words")
@click.option("--table", "-t", required=True, help="Table the images are in.")
@click.option("-k", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True),
              help="Also write one self-contained HTML page of the results.")
@JSON_OPTION
@click.pass_obj
def search_text(session, words, table, k, html_out, as_json):
    """The K images of TABLE whose text matches WORDS (vision.search_text: web-search syntax,
    "a phrase", or, -word), best first. A table whose text was never read is read first
    (vision.extract_table with model => 'pp_ocr_v6', on its id and image columns; the change
    triggers and vision.maintain keep it current from then on).

    \b
      pgvision search-text "organic coffee" --table products --html coffee.html
    """
    qualified = quoted_table(session, table)
    extracted_once(session, qualified, "pp_ocr_v6", "reading the text of")
    rows = run_sql(session, "SELECT image_id, rank, text FROM vision.search_text(%s, "
                   "%s::regclass, k => %s)", (words, qualified, k))
    stored = image_rows(session, qualified, [r[0] for r in rows])
    hits = [dict(stored.get(i, {"id": i, "image": None, "name": None}), rank=n, score=s, text=t)
            for n, (i, s, t) in enumerate(rows, start=1)]
    if not as_json:
        out_console.print(f"{len(hits)} images of {qualified} whose text matches {words!r}",
                          markup=False)
    show([{"rank": h["rank"], "id": h["id"], "name": h["name"],
           "score": h["score"] if as_json else f"{h['score']:.4f}",
           "text": h["text"] if as_json else " / ".join(h["text"].splitlines())}
          for h in hits], as_json, right=("rank", "id", "score"))
    if html_out:
        with open(html_out, "w", encoding="utf-8") as fh:
            fh.write(pages.text_page(f"pgvision: images of {qualified} whose text matches "
                                     f"“{words}”", hits))
        session.say(f"wrote {html_out}")


@click.command("read-text")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@JSON_OPTION
@click.pass_obj
def read_text(session, file, as_json):
    """The lines of text in an image FILE (vision.read_text), in reading order.

    \b
      pgvision read-text label.jpg
    """
    import psycopg2

    with open(file, "rb") as fh:
        data = fh.read()
    rows = run_sql(session, "SELECT line, text, confidence, box FROM vision.read_text(%s)",
                   (psycopg2.Binary(data),))
    show([{"line": n, "text": t, "confidence": c if as_json else f"{c:.3f}",
           "box": b if as_json else " ".join(map(str, b))} for n, t, c, b in rows], as_json,
         right=("line", "confidence"))


CLASSES = ("drawing", "hentai", "neutral", "porn", "sexy")  # nsfwjs's, vision.content_scores'


@click.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--table", "-t", help="Score the images of a table instead of files.")
@click.option("--flagged", is_flag=True,
              help="With --table: only the images of vision.flagged_images.")
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="With --flagged: the not-safe share to flag from (pgvision.flag_threshold, "
                   "0.8 unless set).")
@JSON_OPTION
@click.pass_obj
def moderate(session, files, table, flagged, threshold, as_json):
    """nsfwjs's content classes (vision.moderate: drawing, hentai, neutral, porn, sexy) of
    image FILES, or of every image of a table (vision.content_scores; a table never scored is
    scored first with vision.extract_table, model => 'nsfwjs_mobilenet_v2', and kept current
    from then on). The scores are the source network's, not pgvision's judgement.

    \b
      pgvision moderate shot.jpg drawing.png
      pgvision moderate --table products --flagged --threshold 0.6
    """
    import psycopg2

    if bool(files) == bool(table):
        raise click.UsageError("give either FILES or --table T")
    if (flagged or threshold is not None) and not table:
        raise click.UsageError("--flagged and --threshold go with --table")
    if threshold is not None and not flagged:
        raise click.UsageError("--threshold goes with --flagged")
    records = []
    if files:
        for path in files:
            with open(path, "rb") as fh:
                rows = run_sql(session, "SELECT class, probability FROM vision.moderate(%s)",
                               (psycopg2.Binary(fh.read()),))
            scores = dict(rows)
            records.append({"file": os.path.basename(path), "class": rows[0][0],
                            **{c: scores[c] for c in CLASSES}})
    else:
        qualified = quoted_table(session, table)
        extracted_once(session, qualified, "nsfwjs_mobilenet_v2", "scoring")
        if threshold is not None:
            run_sql(session, "SELECT pg_catalog.set_config('pgvision.flag_threshold', %s, false)",
                    (str(threshold),))
        where = ("AND (c.source, c.image_id) IN (SELECT source, image_id FROM "
                 "vision.flagged_images)" if flagged else "")
        rows = run_sql(session, f"""
            SELECT c.image_id, {', '.join(f'c.{k}' for k in CLASSES)}
            FROM vision.content_scores c
            WHERE c.source = %s::regclass {where}
            ORDER BY c.porn + c.hentai + c.sexy DESC, c.image_id""", (qualified,))
        names = image_rows(session, qualified, [r[0] for r in rows])
        for image_id, *scores in rows:
            top = max(range(len(CLASSES)), key=lambda i: (scores[i], -i))
            records.append({"id": image_id, "name": names.get(image_id, {}).get("name"),
                            "class": CLASSES[top], **dict(zip(CLASSES, scores))})
        if not as_json:
            out_console.print(f"{len(records)} {'flagged ' if flagged else ''}images of "
                              f"{qualified}, most not-safe first (nsfwjs's classes, not "
                              "pgvision's judgement)", markup=False)
    show([r if as_json else {k: (f"{v:.3f}" if k in CLASSES else v) for k, v in r.items()}
          for r in records], as_json, right=("id",) + CLASSES)
