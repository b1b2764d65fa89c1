"""Content classes against the real server: the built-in nsfwjs_mobilenet_v2 gives nsfwjs's
own probabilities (checked against nsfwjs itself, run by node, within 1e-3) on a neutral
photo and drawn pictures; the scores of a table are kept current like features and read
through views that follow the table's privileges; bad inputs are named.

No explicit image is shipped or generated: the checks use photos of scikit-image and
pictures drawn here with Pillow."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import psycopg2
import pytest
from PIL import Image, ImageDraw
from psycopg2 import errors as pgerr
from skimage import data as photos

from conftest import query
from pgvision.images import decode
from pgvision.moderation import CLASSES

MODEL = "nsfwjs_mobilenet_v2"
TABLE = "mod_images"
CACHE = os.path.join(os.path.dirname(sys.prefix), "cache")  # where make install keeps nsfwjs
NSFWJS = """
const tf = require("@tensorflow/tfjs"); const fs = require("fs"); const nsfwjs = require("nsfwjs");
(async () => {
  const model = await nsfwjs.load("MobileNetV2");
  const out = [];
  for (const [file, h, w] of JSON.parse(process.argv[2])) {
    const raw = fs.readFileSync(file);
    const pixels = new Int32Array(raw.buffer, raw.byteOffset, raw.length / 4);
    const found = await model.classify(tf.tensor3d(pixels, [h, w, 3], "int32"), 5);
    out.push(Object.fromEntries(found.map((c) => [c.className.toLowerCase(), c.probability])));
  }
  console.log(JSON.stringify(out));
})().catch((err) => { console.error(err); process.exit(1); });
"""


def png(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def drawing(seed, size=(320, 240)):
    """A flat-coloured picture as a child or a clip-art tool draws it: a house under the sun
    on a lawn, with colours and places varied by ``seed``."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, (135, 206, 235))
    pen = ImageDraw.Draw(img)
    left = int(rng.integers(40, 140))
    pen.rectangle([0, 180, size[0], size[1]], fill=(34, 139, 34))
    pen.rectangle([left, 100, left + 120, 190], fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  outline=(0, 0, 0), width=3)
    pen.polygon([(left - 10, 100), (left + 60, 40), (left + 130, 100)], fill=(120, 60, 20),
                outline=(0, 0, 0))
    pen.ellipse([250, 20, 300, 70], fill=(255, 230, 0))
    pen.rectangle([left + 45, 140, left + 75, 190], fill=(90, 50, 20))
    return png(img)


IMAGES = {"coffee": png(Image.fromarray(photos.coffee())),
          "astronaut": png(Image.fromarray(photos.astronaut())),
          "house": drawing(1), "another house": drawing(2)}


def moderate(db, data):
    return dict(query(db, "SELECT class, probability FROM vision.moderate(%s)",
                      (psycopg2.Binary(data),)))


def test_the_model_is_builtin_with_the_network_s_own_output(db):
    dims, preprocessing, pooling, provenance = query(
        db, "SELECT dims, preprocessing, pooling, provenance FROM vision.models WHERE name = %s",
        (MODEL,))[0]
    assert (dims, preprocessing, pooling) == (5, "tfjs", "none")
    assert "nsfwjs@4.4.0" in provenance and "softmax" in provenance


def test_probabilities_are_ranked_and_a_drawing_looks_more_drawn_than_a_photo(db):
    rows = query(db, "SELECT class, probability FROM vision.moderate(%s)",
                 (psycopg2.Binary(IMAGES["coffee"]),))
    assert sorted(c for c, _ in rows) == sorted(CLASSES)
    assert [p for _, p in rows] == sorted((p for _, p in rows), reverse=True)
    assert sum(p for _, p in rows) == pytest.approx(1.0, abs=1e-4)
    assert rows[0][0] == "neutral"
    # nsfwjs's "drawing" means illustrations such as anime: clip art scores well below 1,
    # but far above a photograph
    assert moderate(db, IMAGES["house"])["drawing"] > 10 * dict(rows)["drawing"]


def test_equal_to_nsfwjs_run_by_node_within_1e_3(db, tmp_path):
    """nsfwjs's own code (its classify: /255, TF.js resizeBilinear with aligned corners, its
    bundled model) on the pixels pgvision decodes, against vision.moderate on the bytes."""
    tarball = os.path.join(CACHE, "nsfwjs-4.4.0.tgz")
    tfjs = os.path.join(CACHE, "node_modules", "@tensorflow", "tfjs")
    if shutil.which("node") is None or not (os.path.isfile(tarball) and os.path.isdir(tfjs)):
        pytest.skip("node, the nsfwjs tarball or @tensorflow/tfjs is missing (make install-dev)")
    modules = tmp_path / "node_modules"
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path)  # the pinned, checksummed tarball make install fetched
    modules.mkdir()
    (tmp_path / "package").rename(modules / "nsfwjs")
    inputs = []
    for name, data in IMAGES.items():
        pixels = np.asarray(decode(data), dtype=np.int32)
        path = tmp_path / f"{len(inputs)}.i32"
        pixels.tofile(path)
        inputs.append([str(path), *pixels.shape[:2]])
    script = tmp_path / "classify.js"
    script.write_text(NSFWJS)
    done = subprocess.run(["node", str(script), json.dumps(inputs)], capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, NODE_PATH=f"{CACHE}/node_modules:{modules}"))
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    for (name, data), expected in zip(IMAGES.items(), theirs):
        ours = moderate(db, data)
        gaps = {c: abs(ours[c] - expected[c]) for c in CLASSES}
        assert max(gaps.values()) <= 1e-3, (name, ours, expected)


@pytest.fixture
def table(db):
    query(db, f"DROP TABLE IF EXISTS {TABLE}")
    query(db, f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, image bytea)")
    for i, data in enumerate(IMAGES.values(), start=1):
        query(db, f"INSERT INTO {TABLE} VALUES (%s, %s)", (i, psycopg2.Binary(data)))
    query(db, f"CALL vision.extract_table('{TABLE}', model => '{MODEL}')")
    yield TABLE
    query(db, f"DELETE FROM vision.features WHERE source = '{TABLE}'::regclass")
    query(db, f"DELETE FROM vision.extract_jobs WHERE source = '{TABLE}'::regclass")
    query(db, f"DROP TABLE {TABLE}")


def test_a_table_s_scores_are_kept_current_and_flagged_by_threshold(db, table):
    scores = {r[0]: r[1:] for r in query(db, "SELECT image_id, drawing, hentai, neutral, porn, "
                                             f"sexy FROM vision.content_scores WHERE source = "
                                             f"'{TABLE}'::regclass")}
    assert sorted(scores) == [1, 2, 3, 4]
    assert scores[1] == pytest.approx([moderate(db, IMAGES["coffee"])[c] for c in CLASSES],
                                      abs=1e-6)
    flagged = f"SELECT image_id FROM vision.flagged_images WHERE source = '{TABLE}'::regclass"
    assert query(db, flagged) == []  # photos and drawings: nothing over 0.8
    try:
        query(db, "SET pgvision.flag_threshold = 0")
        assert len(query(db, flagged)) == 4
    finally:
        query(db, "RESET pgvision.flag_threshold")
    query(db, f"UPDATE {TABLE} SET image = %s WHERE id = 1", (psycopg2.Binary(drawing(3)),))
    assert 1 not in {r[0] for r in query(db, "SELECT image_id FROM vision.content_scores "
                                             f"WHERE source = '{TABLE}'::regclass")}
    report = query(db, f"CALL vision.maintain('{TABLE}')")[0][0]
    assert report["extracted"] == {MODEL: 1}
    again = query(db, "SELECT drawing, hentai, neutral, porn, sexy FROM vision.content_scores "
                      f"WHERE source = '{TABLE}'::regclass AND image_id = 1")[0]
    assert again == pytest.approx([moderate(db, drawing(3))[c] for c in CLASSES], abs=1e-6)


def test_the_views_follow_the_table_s_privileges(db, table):
    query(db, "DROP ROLE IF EXISTS mod_nobody")
    query(db, "CREATE ROLE mod_nobody")
    try:
        query(db, "SET ROLE mod_nobody")
        assert query(db, "SELECT count(*) FROM vision.content_scores") == [(0,)]
        assert query(db, "SELECT count(*) FROM vision.flagged_images") == [(0,)]
    finally:
        query(db, "RESET ROLE")
        query(db, "DROP ROLE mod_nobody")


@pytest.mark.parametrize("call, error, message", [
    ("vision.moderate(NULL)", pgerr.NullValueNotAllowed,
     r'vision.moderate: argument "image" must not be NULL'),
    ("vision.moderate('not an image'::bytea)", pgerr.InvalidBinaryRepresentation,
     r'vision.moderate: argument "image" is not a decodable image'),
    ("vision.moderate(%(image)s, 'inception_v3')", pgerr.InvalidParameterValue,
     r'argument "model" must be a content model \(nsfwjs_mobilenet_v2\)'),
    ("vision.moderate(%(image)s, 'nope')", pgerr.UndefinedObject,
     r"argument \"model\" names no registered model: 'nope'"),
])
def test_bad_input_is_named(db, call, error, message):
    with pytest.raises(error, match=message):
        query(db, f"SELECT * FROM {call}", {"image": psycopg2.Binary(IMAGES["house"])})


def test_an_image_over_the_pixel_limit_is_refused_by_name(db):
    query(db, "SET pgvision.max_image_pixels = 10000")
    try:
        with pytest.raises(pgerr.InvalidBinaryRepresentation, match="vision.moderate: argument "
                           "\"image\" is .*too large, over 10000 pixels"):
            moderate(db, IMAGES["coffee"])
    finally:
        query(db, "RESET pgvision.max_image_pixels")
