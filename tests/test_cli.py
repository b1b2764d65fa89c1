"""The `pgvision` command, run as users run it: the installed entry point in a subprocess,
against the real server; the page `similar --html` writes is opened in headless Chromium."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import ROOT, SOCKET_DIR, dsn, keras_bytes, query

COMMAND = os.path.join(sys.prefix, "bin", "pgvision")
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket"]
CHROMIUM = shutil.which("chromium")


def pgvision(*args, db_name=None, env=None, check=True):
    """Run the command; returns the CompletedProcess (stdout, stderr, returncode)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    environment.update({"DATABASE_URL": dsn(db_name)} if db_name else {})
    environment.update({"COLUMNS": "160", **(env or {})})
    done = subprocess.run([COMMAND, *args], capture_output=True, text=True, env=environment,
                          timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"pgvision {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


def browser(tmp_path):
    """Headless Chromium with a profile of the test's own (skips when it is not installed)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make install-dev installs it)")
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium'}"]


def pictures_decoded(page, tmp_path):
    """The ``data-loaded`` count a page sets once Chromium has loaded it (see pages.SCRIPT),
    or None when the page set none."""
    dom = subprocess.run([*browser(tmp_path), "--dump-dom", "--virtual-time-budget=5000",
                          page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<body data-loaded="(\d+)"', dom)
    return int(found.group(1)) if found else None


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """4 photos as JPEG, their mirror images as PNG in a sub-folder, a byte-identical copy,
    a text file and an empty file."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    (folder / "mirrored").mkdir()
    for name in PHOTOS:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        img.thumbnail((320, 320))
        img.save(folder / f"{name}.jpg", quality=90)
        ImageOps.mirror(img).save(folder / "mirrored" / f"{name}.png")
    shutil.copy(folder / "astronaut.jpg", folder / "mirrored" / "astronaut-copy.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


@pytest.fixture
def table(db, request):
    """A table name for the test; dropped with what pgvision stored about it afterwards."""
    name = f"cli_{request.node.name.split('[')[0][5:30]}"
    query(db, f"DROP TABLE IF EXISTS {name}")
    yield name
    if query(db, "SELECT to_regclass(%s)", (name,))[0][0]:
        for stored in ("features", "extract_errors", "map_2d", "clusters", "predictions"):
            query(db, f"DELETE FROM vision.{stored} WHERE source = %s::regclass", (name,))
        query(db, f"DROP TABLE {name}")


def test_load_stores_names_formats_and_hashes_and_skips_with_reasons(db, db_name, photo_dir,
                                                                     table):
    done = pgvision("load", str(photo_dir), "--table", table, "--create", "--batch-mb", "1",
                    db_name=db_name)
    rows = query(db, f"SELECT name, size_bytes, format, sha256, image FROM {table} ORDER BY id")
    files = sorted(p for p in photo_dir.rglob("*") if p.suffix in (".jpg", ".png")
                   and p.stat().st_size and p.name != "astronaut-copy.jpg")
    assert sorted(r[0] for r in rows) == sorted(p.name for p in files)
    for name, size, fmt, sha, image in rows:
        data = next(p for p in files if p.name == name).read_bytes()
        assert (size, sha, bytes(image)) == (len(data), hashlib.sha256(data).hexdigest(), data)
        assert fmt == ("JPEG" if name.endswith(".jpg") else "PNG")
    assert "loaded 8 images" in done.stderr
    assert "duplicate: astronaut-copy.jpg" in done.stderr
    assert "not an image: notes.txt" in done.stderr
    assert "empty file: empty.jpg" in done.stderr
    # Loading again (an interrupted load resumed) adds nothing and says why.
    again = pgvision("-v", "load", str(photo_dir), "--table", table, db_name=db_name)
    assert query(db, f"SELECT count(*) FROM {table}")[0][0] == 8
    assert "loaded 0 images" in again.stderr and "9 already in the table" in again.stderr


def test_load_resumes_where_a_load_stopped(db, db_name, photo_dir, table):
    pgvision("load", str(photo_dir / "astronaut.jpg"), "--table", table, "--create",
             db_name=db_name)
    done = pgvision("load", str(photo_dir / "**" / "*.png"), str(photo_dir / "*.jpg"),
                    "--table", table, db_name=db_name)
    assert "loaded 7 images" in done.stderr and "1 already in the table" in done.stderr
    assert query(db, f"SELECT count(*), count(DISTINCT sha256) FROM {table}")[0] == (8, 8)


def test_ctrl_c_during_a_load_keeps_whole_batches_and_a_rerun_finishes(db, db_name, table,
                                                                     tmp_path):
    from conftest import image_bytes

    base = image_bytes(1, (1600, 1200))  # ~0.9 MB of noise: 240 of them take seconds
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(240):  # distinct bytes: a JPEG comment segment after the header
        (folder / f"{i:04d}.jpg").write_bytes(base[:2] + b"\xff\xfe\x00\x06"
                                              + i.to_bytes(4, "big") + base[2:])
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    process = subprocess.Popen([COMMAND, "load", str(folder), "--table", table, "--create",
                                "--batch-mb", "8"], env={**environment,
                                                         "DATABASE_URL": dsn(db_name)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if query(db, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0] and \
                query(db, f"SELECT count(*) FROM {table}")[0][0] > 0:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted: the batches committed so far stay" in err
    kept = query(db, f"SELECT name, sha256, size_bytes FROM {table}")
    assert 0 < len(kept) < 240
    for name, sha, size in kept:  # every row whole: nothing of the cancelled batch
        data = (folder / name).read_bytes()
        assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    done = pgvision("load", str(folder), "--table", table, db_name=db_name)
    assert f"loaded {240 - len(kept)} images" in done.stderr
    assert query(db, f"SELECT count(*) FROM {table}")[0][0] == 240


def test_usage_and_connection_errors_have_their_exit_codes(db_name, photo_dir, table):
    missing = pgvision("load", str(photo_dir), "--table", table, db_name=db_name, check=False)
    assert missing.returncode == 1 and "does not exist; add --create" in missing.stderr
    usage = pgvision("similar", "--table", table, db_name=db_name, check=False)
    assert usage.returncode == 2 and "give either FILE or --id N" in usage.stderr
    secret = "s3cret-never-shown"
    nobody = pgvision("models", "list", env={
        "DATABASE_URL": f"postgresql://ann:{secret}@/none?host={SOCKET_DIR}&port=1"},
        check=False)
    assert nobody.returncode == 3 and "cannot connect to postgresql://ann@" in nobody.stderr
    assert secret not in nobody.stderr + nobody.stdout
    failing = pgvision("--dsn", dsn(db_name), "similar", "--id", "1", "--table", "pg_class",
                       check=False)
    assert failing.returncode == 1 and "vision.similar" in failing.stderr
    assert "Traceback" not in failing.stderr


def test_extract_then_similar_writes_a_page_a_browser_shows(db, db_name, photo_dir, table,
                                                              tmp_path):
    pgvision("load", str(photo_dir), "--table", table, "--create", db_name=db_name)
    done = pgvision("extract", "--table", table, "--workers", "2", db_name=db_name)
    assert "extracted 8 images" in done.stderr
    assert query(db, "SELECT count(*) FROM vision.features WHERE source = %s::regclass",
                 (table,))[0][0] == 8
    ids = dict(query(db, f"SELECT name, id FROM {table}"))
    page = tmp_path / "similar.html"
    done = pgvision("similar", "--id", str(ids["chelsea.jpg"]), "--table", table, "-k", "3",
                    "--html", str(page), db_name=db_name)
    listed = re.findall(r"│\s+(\d)\s+│\s+(\d+)\s+│\s+(\S+)\s+│\s+([\d.]+)\s+│", done.stdout)
    assert [r[0] for r in listed] == ["1", "2", "3"]
    assert listed[0][2] == "chelsea.png"  # its mirror image is the nearest
    expected = query(db, "SELECT image_id, distance FROM vision.similar(%s, k => 3, "
                         "source => %s)", (ids["chelsea.jpg"], table))
    assert [int(r[1]) for r in listed] == [r[0] for r in expected]
    as_json = json.loads(pgvision("similar", "--id", str(ids["chelsea.jpg"]), "--table", table,
                                  "-k", "3", "--json", db_name=db_name).stdout)
    assert [(r["rank"], r["id"]) for r in as_json] == [(i + 1, r[0]) for i, r in
                                                       enumerate(expected)]
    assert [r["distance"] for r in as_json] == pytest.approx([r[1] for r in expected])
    assert as_json[0]["name"] == "chelsea.png"
    assert 0 <= as_json[0]["distance"] < as_json[1]["distance"] / 2  # the mirror stands out
    html = page.read_text()
    assert "http" not in html.replace("http-equiv", "")  # self-contained: nothing to fetch
    assert html.count("<figure") == 4 and html.index('class="query"') < html.index("neighbour")
    new_file = pgvision("similar", str(photo_dir / "mirrored" / "coffee.png"), "--table", table,
                        "-k", "1", db_name=db_name)
    assert re.search(r"│\s+1\s+│\s+\d+\s+│\s+coffee.png\s+│\s+0.0000\s+│", new_file.stdout)
    assert pictures_decoded(page, tmp_path) == 4  # every picture decoded
    shot = tmp_path / "shot.png"
    subprocess.run([*browser(tmp_path), "--window-size=1200,700", f"--screenshot={shot}",
                    page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    orange = np.all(np.abs(pixels - (230, 126, 34)) < 16, axis=2)
    sides = np.nonzero(orange.sum(axis=0) > 150)[0]  # the query's frame: long orange lines
    edges = np.nonzero(orange.sum(axis=1) > 150)[0]
    assert len(sides) and len(edges), "no query frame on the screenshot"
    query_box = (sides.min(), edges.min(), sides.max(), edges.max())
    assert query_box[0] < 60 and query_box[2] < 300  # the first tile, at the left
    inside = pixels[query_box[1] + 8:query_box[1] + 200, query_box[0] + 8:query_box[2] - 8]
    picture = inside[~np.all(inside > 230, axis=2)]  # without the grey letterbox
    means = {name: np.asarray(Image.open(photo_dir / f"{name}.jpg").convert("RGB"))
             .reshape(-1, 3).mean(axis=0) for name in PHOTOS}
    shown = min(means, key=lambda name: np.abs(means[name] - picture.mean(axis=0)).sum())
    assert shown == "chelsea"  # the query's picture is in the framed tile
    neighbours = pixels[query_box[1] + 8:query_box[1] + 200, query_box[2] + 20:]
    assert neighbours.std() > 20  # pictures, not an empty page


def test_duplicates_hashes_the_table_and_groups_each_photo_with_its_mirror(
        db, db_name, photo_dir, table, tmp_path):
    pgvision("load", str(photo_dir), "--table", table, "--create", db_name=db_name)
    pgvision("extract", "--table", table, db_name=db_name)
    page = tmp_path / "duplicates.html"
    done = pgvision("duplicates", "--table", table, "--html", str(page), db_name=db_name)
    assert "hashing" in done.stderr and f"{len(PHOTOS)} groups of near-duplicates" in done.stdout
    names = dict(query(db, f"SELECT id, name FROM {table}"))
    as_json = json.loads(pgvision("duplicates", "--table", table, "--json",
                                  db_name=db_name).stdout)
    groups = {}
    for row in as_json:
        groups.setdefault(row["group"], set()).add(names[row["id"]])
    assert sorted(groups.values(), key=sorted) == sorted(
        ({f"{name}.jpg", f"{name}.png"} for name in PHOTOS), key=sorted)
    assert all(row["hash distance"] <= 7 for row in as_json)  # a mirror's hash is matched
    html = page.read_text()
    assert "http" not in html.replace("http-equiv", "")
    assert html.count("<figure") == 2 * len(PHOTOS) and html.count('class="group"') == len(PHOTOS)
    assert pictures_decoded(page, tmp_path) == 2 * len(PHOTOS)


def labels(directory):
    """Three product labels drawn with Pillow's own font, as files in ``directory``."""
    from conftest import label_image

    texts = {"coffee.jpg": "ORGANIC COFFEE", "tea.jpg": "GREEN TEA", "filters.jpg": "COFFEE FILTERS"}
    for name, text in texts.items():
        (directory / name).write_bytes(label_image(text)[0])
    return texts


def test_search_text_reads_the_table_first_and_finds_the_words(db, db_name, table, tmp_path):
    (tmp_path / "labels").mkdir()
    texts = labels(tmp_path / "labels")
    pgvision("load", str(tmp_path / "labels"), "--table", table, "--create", db_name=db_name)
    page = tmp_path / "coffee.html"
    done = pgvision("search-text", "coffee", "--table", table, "--html", str(page),
                    db_name=db_name)
    assert "reading the text" in done.stderr and "2 images" in done.stdout, done
    found = json.loads(pgvision("search-text", "coffee -filters", "--table", table, "--json",
                                db_name=db_name).stdout)
    assert [row["name"] for row in found] == ["coffee.jpg"]
    assert "".join(found[0]["text"].split()).lower() == "organiccoffee"
    lines = json.loads(pgvision("read-text", str(tmp_path / "labels" / "tea.jpg"), "--json",
                                db_name=db_name).stdout)
    assert "".join(" ".join(r["text"] for r in lines).split()).lower() == \
        "".join(texts["tea.jpg"].split()).lower()
    assert len(lines[0]["box"]) == 8
    html = page.read_text()
    assert html.count("<figure") == 2 and "COFFEE" in html.upper()
    assert pictures_decoded(page, tmp_path) == 2


def test_moderate_scores_files_and_a_table_and_lists_the_flagged(db, db_name, photo_dir, table):
    classes = ("drawing", "hentai", "neutral", "porn", "sexy")
    pgvision("load", str(photo_dir), "--table", table, "--create", db_name=db_name)
    done = pgvision("moderate", "--table", table, "--json", db_name=db_name)
    assert "scoring" in done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == query(db, f"SELECT count(*) FROM {table}")[0][0]
    for row in rows:
        assert abs(sum(row[c] for c in classes) - 1) < 1e-3
        assert row["class"] == max(classes, key=lambda c: row[c])
    unsafe = [row["hentai"] + row["porn"] + row["sexy"] for row in rows]
    assert unsafe == sorted(unsafe, reverse=True)  # most not-safe first
    chelsea = next(row for row in rows if row["name"] == "chelsea.jpg")
    by_file = json.loads(pgvision("moderate", str(photo_dir / "chelsea.jpg"), "--json",
                                  db_name=db_name).stdout)
    assert by_file[0]["file"] == "chelsea.jpg" and by_file[0]["class"] == chelsea["class"]
    assert abs(by_file[0]["neutral"] - chelsea["neutral"]) < 1e-5
    everything = json.loads(pgvision("moderate", "--table", table, "--flagged", "--threshold",
                                     "0", "--json", db_name=db_name).stdout)
    assert len(everything) == len(rows)
    flagged = json.loads(pgvision("moderate", "--table", table, "--flagged", "--json",
                                  db_name=db_name).stdout)
    assert [r["id"] for r in flagged] == [r["id"] for r, u in zip(rows, unsafe) if u >= 0.8]
    refused = pgvision("moderate", str(photo_dir / "chelsea.jpg"), "--table", table,
                       db_name=db_name, check=False)
    assert refused.returncode == 2 and "either FILES or --table" in refused.stderr


def test_load_skips_near_duplicates_of_the_run_and_of_the_table(db, db_name, photo_dir, table,
                                                                 tmp_path):
    done = pgvision("load", str(photo_dir), "--table", table, "--create",
                    "--skip-near-duplicates", db_name=db_name)
    assert query(db, f"SELECT count(*) FROM {table}") == [(len(PHOTOS),)]  # mirrors skipped
    assert done.stderr.count("near-duplicate of") == len(PHOTOS), done.stderr
    query(db, f"CALL vision.extract_table('{table}', model => 'perceptual_hash')")
    ids = dict(query(db, f"SELECT name, id FROM {table}"))
    from skimage import data
    small = Image.open(photo_dir / "chelsea.jpg")
    small.resize((small.width // 2, small.height // 2)).save(tmp_path / "small.jpg", quality=60)
    Image.fromarray(data.horse()).convert("RGB").save(tmp_path / "horse.png")
    done = pgvision("load", str(tmp_path / "small.jpg"), str(tmp_path / "horse.png"), "--table",
                    table, "--skip-near-duplicates", "-v", db_name=db_name)
    key = "chelsea.jpg" if "chelsea.jpg" in ids else "chelsea.png"
    assert f"small.jpg: near-duplicate of image {ids[key]}" in done.stderr, done.stderr
    assert {name for (name,) in query(db, f"SELECT name FROM {table}")} == {*ids, "horse.png"}


def test_ctrl_c_cancels_extraction_and_a_rerun_resumes(db, db_name, table):
    from conftest import image_bytes

    query(db, f"CREATE TABLE {table} (id bigint PRIMARY KEY, image bytea)")
    for i in range(1, 121):
        query(db, f"INSERT INTO {table} VALUES (%s, %s)", (i, image_bytes(i, (160, 120))))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    process = subprocess.Popen([COMMAND, "extract", "--table", table, "--batch-size", "4"],
                               env={**environment, "DATABASE_URL": dsn(db_name)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = query(db, "SELECT count(*) FROM vision.features WHERE source = %s::regclass",
                     (table,))[0][0]
        if done >= 8:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "cancelled" in err and "run the same command again" in err
    time.sleep(1)
    kept = query(db, "SELECT count(*) FROM vision.features WHERE source = %s::regclass",
                 (table,))[0][0]
    assert 8 <= kept < 120 and kept % 4 == 0  # whole batches only
    assert query(db, "SELECT state FROM vision.extract_progress WHERE source = %s::regclass "
                 "ORDER BY job_id DESC LIMIT 1", (table,))[0][0] == "interrupted"
    assert not query(db, "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'CALL vision.extract%%' "
                     "AND state = 'active' AND pid <> pg_backend_pid()")
    done = pgvision("extract", "--table", table, db_name=db_name)
    assert f"extracted {120 - kept} images" in done.stderr
    assert query(db, "SELECT count(*) FROM vision.features WHERE source = %s::regclass",
                 (table,))[0][0] == 120


def test_classify_map_and_contact_sheet(db, db_name, photo_dir, table, tmp_path):
    pgvision("load", str(photo_dir), "--table", table, "--create", db_name=db_name)
    pgvision("extract", "--table", table, db_name=db_name)
    labels = f"{table}_labels"
    query(db, f"DROP TABLE IF EXISTS {labels}")
    query(db, f"CREATE TABLE {labels} AS SELECT id AS image_id, split_part(name, '.', 1) AS label "
              f"FROM {table}")
    try:
        query(db, "SELECT vision.train_classifier('cli_photo', %s, %s, method => 'knn', "
                  "options => '{\"k\": 1}', folds => 2, replace => true)", (labels, table))
        done = pgvision("classify", "-c", "cli_photo", str(photo_dir / "rocket.jpg"),
                        "--top", "1", db_name=db_name)
        assert re.search(r"rocket\.jpg\s+│\s+rocket\s+│", done.stdout), done.stdout
        done = pgvision("classify", "-c", "cli_photo", "--table", table, db_name=db_name)
        assert "labelled 8 images" in done.stderr
        picture = tmp_path / "map.png"
        pgvision("map", "--table", table, "--out", str(picture), "--clusters", "3",
                 "--size", "600", "--labels", "id", db_name=db_name)
        img = Image.open(picture)
        assert img.format == "PNG" and img.size == (600 + 220, 600 + 30)
        colours = pgvision("map", "--table", table, "--out", str(picture), "--color-by",
                           "cli_photo", "--points", db_name=db_name)
        assert colours.returncode == 0
        sheet = tmp_path / "sheet.png"
        pgvision("contact-sheet", "--table", table, "--id", "1", "-k", "3", "--out", str(sheet),
                 db_name=db_name)
        assert Image.open(sheet).size == (10 + 4 * 170, 30 + 208 + 10)
    finally:
        query(db, "DELETE FROM vision.predictions WHERE classifier = 'cli_photo'")
        query(db, "DELETE FROM vision.classifiers WHERE name = 'cli_photo'")
        query(db, f"DROP TABLE {labels}")


def test_models_register_list_drop(db, db_name, tmp_path):
    model = tmp_path / "cli_tiny.keras"
    model.write_bytes(keras_bytes(tmp_path, "cli_tiny_src"))
    done = pgvision("models", "register", "cli_tiny", str(model), "--preprocessing", "raw",
                    db_name=db_name)
    assert "registered cli_tiny: 4-d features" in done.stderr
    listed = pgvision("models", "list", db_name=db_name).stdout
    assert {"name": "cli_tiny", "dims": 4, "input": "32x32", "preprocessing": "raw",
            "stored": "database", "provenance": "pgvision models register cli_tiny.keras"} in \
        json.loads(pgvision("models", "list", "--json", db_name=db_name).stdout)
    assert re.search(r"cli_tiny\s+│\s+4\s+│\s+32x32\s+│\s+raw", listed), listed
    again = pgvision("models", "register", "cli_tiny", str(model), db_name=db_name, check=False)
    assert again.returncode == 1 and "already" in again.stderr
    pgvision("models", "drop", "cli_tiny", db_name=db_name)
    assert not query(db, "SELECT 1 FROM vision.models WHERE name = 'cli_tiny'")


def test_compact_converts_rows_stored_before_0_17_and_migrate_points_to_it(db, db_name,
                                                                          table):
    query(db, f"CREATE TABLE {table} (id bigint PRIMARY KEY)")
    query(db, f"INSERT INTO {table} SELECT generate_series(1, 5)")
    # rows as 0.16.0 wrote them, real[] (the superuser writes the stored table itself)
    query(db, "INSERT INTO vision.stored_features (model, source, image_id, feature) "
              "SELECT 'mobilenet_v2', %s::regclass, g, array_fill(g::real / 7, ARRAY[1280]) "
              "FROM generate_series(1, 5) g", (table,))
    done = pgvision("migrate", db_name=db_name)
    assert re.search(r"\d+ feature rows of \d+ table\(s\) are stored as before 0\.17\.0.*"
                     r"`pgvision compact` halves their disk", done.stderr), done.stderr
    done = pgvision("compact", "--table", table, "--batch-rows", "2", db_name=db_name)
    assert f"{table}: 5 rows now in half precision" in done.stderr, done.stderr
    assert query(db, "SELECT half_precision, single_precision FROM vision.feature_storage "
                     "WHERE source = %s::regclass", (table,)) == [(5, 0)]
    assert np.float32(query(db, "SELECT feature[1280] FROM vision.features WHERE source = "
                            "%s::regclass AND image_id = 3", (table,))[0][0]) == \
        np.float32(np.float16(3 / 7))
    assert f"{table}: 0 rows now in half precision" in pgvision(
        "compact", "--table", table, db_name=db_name).stderr


def test_doctor_reports_each_check_and_its_fix(db, db_name):
    done = pgvision("doctor", db_name=db_name)
    for check in ("server", "plpython3u", "pgvision extension", "backend Python",
                  "onnxruntime", "models", "runtimes", "jit", "memory", "pg_cron"):
        assert re.search(rf"^\S+\s+{re.escape(check)}\b", done.stdout, re.M), check
    assert "PROBLEM" not in done.stdout
    python = query(db, "SELECT vision.environment() ->> 'pgvision_path'")[0][0]
    assert python in done.stdout
    query(db, f"ALTER DATABASE {db_name} SET jit = on")
    try:
        broken = pgvision("doctor", db_name=db_name, check=False)
        broken_json = pgvision("doctor", "--json", db_name=db_name, check=False)
    finally:
        query(db, f"ALTER DATABASE {db_name} SET jit = off")
    assert broken.returncode == broken_json.returncode == 4
    jit = next(c for c in json.loads(broken_json.stdout) if c["check"] == "jit")
    assert (jit["ok"], jit["found"]) == (False, "jit = on") and "ALTER DATABASE" in jit["fix"]
    assert re.search(r"PROBLEM\s+jit\s+jit = on\n\s+fix: ALTER DATABASE", broken.stdout)


def test_the_readme_quick_start_runs_with_the_command_alone(server, fresh_db, photo_dir):
    """The README's shell session, line by line (`$ ` lines), in a database without pgvision."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    session = readme.split("<!-- quick start -->", 2)[1]
    commands = [line[2:] for line in session.splitlines() if line.startswith("$ pgvision")]
    assert commands[0].startswith("pgvision migrate") and len(commands) >= 5
    workdir = photo_dir.parent / "quickstart"
    workdir.mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    environment.update(DATABASE_URL=dsn(fresh_db), PATH=os.path.dirname(COMMAND) + ":"
                       + environment["PATH"])
    for command in commands:
        command = command.replace("~/photos", str(photo_dir))
        done = subprocess.run(command, shell=True, cwd=workdir, env=environment,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    for written in re.findall(r"(?:--html|--out) (\S+)", "\n".join(commands)):
        assert (workdir / written).stat().st_size > 1000, written
