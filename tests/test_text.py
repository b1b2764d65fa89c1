"""Words in images against the real server: the OCR model reads text drawn with Pillow, a
table's text lands in vision.image_text (a tsvector under a GIN index) and is kept current
like features, vision.search_text ranks images by it and feeds vision.similar, the source
table's privileges and row-level security hold, bad inputs are named."""

import io

import numpy as np
import psycopg2
import pytest
from PIL import Image
from psycopg2 import errors as pgerr
from skimage import data as photos

from conftest import PORT, SOCKET_DIR, label_image, query
from pgvision import ocr

TABLE = "text_products"
FAST = "mobilenet_v2"
WORDS = {1: "ORGANIC COFFEE 500g", 2: "GREEN TEA 250g", 3: "COFFEE FILTERS"}


def jpeg(img):
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


labelled = label_image


def words(text):
    return "".join(text.split()).lower()


@pytest.fixture(scope="module")
def shelf(db):
    """ids 1-3: labelled images (2 on a photo), 4: a photo without words, 5: not an image;
    their text read (pp_ocr_v6) and their mobilenet_v2 features extracted."""
    query(db, f"DROP TABLE IF EXISTS {TABLE}")
    query(db, f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, image bytea)")
    images = {1: labelled(WORDS[1])[0], 2: labelled(WORDS[2], "coffee")[0],
              3: labelled(WORDS[3])[0],
              4: jpeg(Image.fromarray(np.asarray(photos.chelsea())).convert("RGB")),
              5: b"not an image"}
    for image_id, data in images.items():
        query(db, f"INSERT INTO {TABLE} VALUES (%s, %s)", (image_id, psycopg2.Binary(data)))
    query(db, f"CALL vision.extract_table('{TABLE}', model => 'pp_ocr_v6')")
    query(db, f"CALL vision.extract_table('{TABLE}', model => '{FAST}')")
    yield images
    query(db, f"DROP TABLE {TABLE}")
    for table in ("image_text", "features", "extract_errors", "extract_jobs"):
        query(db, f"DELETE FROM vision.{table} WHERE source NOT IN (SELECT oid FROM pg_class)")


def found(db, text_query, k=10):
    return [r[0] for r in query(db, "SELECT image_id FROM vision.search_text(%s, %s, k => %s)",
                                (text_query, TABLE, k))]


def test_the_ocr_model_is_registered_like_the_networks(db):
    row = query(db, "SELECT dims, builtin, sha256, model_path FROM vision.models "
                    "WHERE name = 'pp_ocr_v6'")[0]
    assert row[:3] == (ocr.default_spec()["characters"], True, ocr.spec_sha256())
    assert row[3].endswith("pp_ocr_v6.json")


def test_read_text_gives_the_drawn_words_with_a_box_around_them(db):
    data, (left, top, right, bottom) = labelled("FRESH MILK 1L", at=(60, 50))
    lines = query(db, "SELECT line, text, confidence, box FROM vision.read_text(%s)",
                  (psycopg2.Binary(data),))
    assert [line[0] for line in lines] == list(range(1, len(lines) + 1))
    assert words(" ".join(line[1] for line in lines)) == words("FRESH MILK 1L")
    assert all(0.5 <= line[2] <= 1.0 for line in lines)
    xs = [v for line in lines for v in line[3][0::2]]
    ys = [v for line in lines for v in line[3][1::2]]
    # the detected box hugs the drawn text (a few pixels of margin either way)
    assert abs(min(xs) - left) <= 12 and abs(max(xs) - right) <= 12
    assert abs(min(ys) - top) <= 12 and abs(max(ys) - bottom) <= 12


def test_an_image_without_words_reads_no_lines(db):
    photo = jpeg(Image.fromarray(np.asarray(photos.chelsea())).convert("RGB"))
    assert query(db, "SELECT count(*) FROM vision.read_text(%s)",
                 (psycopg2.Binary(photo),)) == [(0,)]


def test_a_table_s_text_is_stored_with_a_tsvector_and_bad_rows_recorded(db, shelf):
    rows = dict(query(db, "SELECT image_id, body FROM vision.image_text "
                          f"WHERE source = '{TABLE}'::regclass AND model = 'pp_ocr_v6'"))
    assert sorted(rows) == [1, 2, 3, 4]
    for image_id, text in WORDS.items():
        assert words(rows[image_id]) == words(text)
    assert rows[4] == ""
    assert query(db, "SELECT document @@ 'coffee'::tsquery, jsonb_array_length(lines) > 0 "
                     f"FROM vision.image_text WHERE source = '{TABLE}'::regclass "
                     "AND image_id = 1") == [(True, True)]
    errors = query(db, "SELECT image_id, error FROM vision.extract_errors "
                       f"WHERE source = '{TABLE}'::regclass AND model = 'pp_ocr_v6'")
    assert errors == [(5, "vision.extract_table: image 5 is not a decodable image (unknown "
                          "format, 12 bytes starting 6e6f7420616e2069)")]
    assert query(db, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'vision' AND "
                     "tablename = 'image_text' AND indexdef LIKE '%gin (document)%'")


def test_search_text_ranks_the_images_whose_words_match(db, shelf):
    assert sorted(found(db, "coffee")) == [1, 3]
    assert found(db, "Coffee 500g") == [1]
    assert found(db, '"green tea"') == [2]
    assert found(db, "coffee -filters") == [1]
    assert sorted(found(db, "tea or filters")) == [2, 3]
    assert found(db, "chocolate") == []
    assert len(found(db, "coffee", k=1)) == 1
    ranks = query(db, f"SELECT rank, text FROM vision.search_text('coffee', '{TABLE}')")
    assert all(r > 0 for r, _ in ranks) and ranks == sorted(ranks, key=lambda r: -r[0])


def test_text_filters_and_looks_rank(db, shelf):
    """vision.search_text picks the candidates, vision.similar orders them by looks."""
    rows = query(db, f"SELECT image_id, rank FROM vision.similar(2, k => 5, model => '{FAST}', "
                     f"source => '{TABLE}', candidates => ARRAY(SELECT image_id FROM "
                     f"vision.search_text('coffee', '{TABLE}')))")
    assert sorted(r[0] for r in rows) == [1, 3] and [r[1] for r in rows] == [1, 2]


def test_text_is_kept_current_like_features(db, shelf):
    query(db, f"UPDATE {TABLE} SET image = %s WHERE id = 3",
          (psycopg2.Binary(labelled("BLACK TEA")[0]),))
    assert found(db, "filters") == []  # the changed image's old words went with the change
    query(db, f"CALL vision.maintain('{TABLE}')")
    assert found(db, "black") == [3]
    query(db, f"DELETE FROM {TABLE} WHERE id = 2")
    assert found(db, "green") == []
    assert query(db, "SELECT count(*) FROM vision.image_text WHERE source = "
                     f"'{TABLE}'::regclass AND image_id = 2") == [(0,)]
    query(db, f"INSERT INTO {TABLE} VALUES (2, %s)", (psycopg2.Binary(shelf[2]),))
    query(db, f"CALL vision.maintain('{TABLE}')")
    assert found(db, "green") == [2]


@pytest.fixture
def roles(db, shelf, db_name):
    """pv_text_reader may read the table but its row-level security shows only ids 1-2;
    pv_text_nobody may not read it at all."""
    names = ("pv_text_reader", "pv_text_nobody")
    for role in names:
        query(db, f"DROP ROLE IF EXISTS {role}")
        query(db, f"CREATE ROLE {role} LOGIN")
    query(db, f"GRANT SELECT ON {TABLE} TO pv_text_reader")
    query(db, f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY")
    query(db, f"CREATE POLICY first_two ON {TABLE} FOR SELECT TO pv_text_reader USING (id <= 2)")
    conns = [psycopg2.connect(host=SOCKET_DIR, port=PORT, user=role, dbname=db_name)
             for role in names]
    for conn in conns:
        conn.autocommit = True
    yield conns
    for conn in conns:
        conn.close()
    query(db, f"DROP POLICY first_two ON {TABLE}")
    query(db, f"ALTER TABLE {TABLE} DISABLE ROW LEVEL SECURITY")
    for role in names:
        query(db, f"DROP OWNED BY {role} CASCADE")
        query(db, f"DROP ROLE {role}")


def test_the_source_table_s_privileges_and_row_level_security_hold(db, roles):
    reader, nobody = roles
    with pytest.raises(pgerr.InsufficientPrivilege, match=r"vision.search_text: permission "
                       rf"denied for table public.{TABLE}: .* needs SELECT on it"):
        query(nobody, f"SELECT * FROM vision.search_text('coffee', '{TABLE}')")
    assert query(nobody, "SELECT count(*) FROM vision.image_text") == [(0,)]
    assert sorted(found(db, "coffee or tea")) == [1, 2, 3]
    assert sorted(found(reader, "coffee or tea")) == [1, 2]
    assert sorted(r[0] for r in query(reader, "SELECT image_id FROM vision.image_text")) == [1, 2]
    for change in ("UPDATE vision.image_text SET body = 'forged'", "DELETE FROM vision.image_text"):
        assert query(reader, f"WITH c AS ({change} RETURNING 1) SELECT count(*) FROM c") == [(0,)]


def test_an_image_over_the_pixel_limit_is_refused_by_name(db):
    query(db, "SET pgvision.max_image_pixels = 10000")
    try:
        with pytest.raises(pgerr.InvalidBinaryRepresentation, match=r"vision.read_text: "
                           r"argument \"image\" is .*too large, over 10000 pixels"):
            query(db, "SELECT * FROM vision.read_text(%s)", (psycopg2.Binary(labelled("X")[0]),))
    finally:
        query(db, "RESET pgvision.max_image_pixels")


@pytest.mark.parametrize("call, error, message", [
    ("vision.read_text(NULL)", pgerr.NullValueNotAllowed,
     r'vision.read_text: argument "image" must not be NULL'),
    ("vision.read_text('not an image'::bytea)", pgerr.InvalidBinaryRepresentation,
     r'vision.read_text: argument "image" is not a decodable image'),
    ("vision.read_text('x'::bytea, 'mobilenet_v2')", pgerr.InvalidParameterValue,
     r"vision.read_text: argument \"model\": model 'mobilenet_v2' makes feature vectors; it "
     r"reads no text"),
    ("vision.extract_features('x'::bytea, 'pp_ocr_v6')", pgerr.InvalidParameterValue,
     r"vision.extract_features: argument \"model\": model 'pp_ocr_v6' reads text"),
    (f"vision.similar(1, model => 'pp_ocr_v6', source => '{TABLE}')",
     pgerr.InvalidParameterValue, r"model 'pp_ocr_v6' reads text; it makes no feature vectors"),
    (f"vision.search_text('', '{TABLE}')", pgerr.InvalidParameterValue,
     r'vision.search_text: argument "query" must be some words to search for, got \'\''),
    (f"vision.search_text(' -- ?', '{TABLE}')", pgerr.InvalidParameterValue,
     r'argument "query" must be at least one word'),
    (f"vision.search_text(NULL, '{TABLE}')", pgerr.NullValueNotAllowed,
     r'argument "query" must not be NULL'),
    ("vision.search_text('coffee', NULL)", pgerr.NullValueNotAllowed,
     r'argument "source" must not be NULL'),
    (f"vision.search_text('coffee', '{TABLE}', k => 0)", pgerr.InvalidParameterValue,
     r'argument "k" must be between 1 and 10000, got 0'),
    (f"vision.search_text('coffee', '{TABLE}', model => 'nope')", pgerr.UndefinedObject,
     r"argument \"model\" names no registered model: 'nope'"),
])
def test_bad_input_is_named(db, shelf, call, error, message):
    with pytest.raises(error, match=message):
        query(db, f"SELECT * FROM {call}")


def test_a_table_never_read_is_a_named_error_with_the_fix(db, make_table):
    make_table("text_unread", [(1, labelled("SOAP")[0])])
    with pytest.raises(pgerr.UndefinedObject, match=r"vision.search_text: argument \"source\": "
                       r"the text of public.text_unread was never read") as err:
        query(db, "SELECT * FROM vision.search_text('soap', 'text_unread')")
    assert "model => 'pp_ocr_v6'" in err.value.diag.message_hint


def test_dropping_the_model_keeps_stored_text_unless_asked(db, shelf):
    with pytest.raises(pgerr.ObjectInUse, match=r"model 'pp_ocr_v6' has \d+ stored text rows"):
        query(db, "SELECT vision.drop_model('pp_ocr_v6')")
    assert query(db, "SELECT count(*) > 0 FROM vision.image_text") == [(True,)]
