"""Near-duplicates against the real server: perceptual hashes extracted and kept current like
features, vision.duplicates groups re-encoded / resized / cropped / mirrored copies of the
scikit-image photos and nothing else, vision.duplicates_of checks new bytes, bad inputs are
named."""

import io

import numpy as np
import psycopg2
import pytest
from PIL import Image, ImageOps
from psycopg2 import errors as pgerr
from skimage import data as photos

from conftest import query
from pgvision import DEFAULT_MODEL, hashing

TABLE = "dup_products"
ORIGINALS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins"]


def jpeg(img, quality=90):
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photo(name):
    return Image.fromarray(np.asarray(getattr(photos, name)())).convert("RGB")


def copies(img):
    """What a reseller does to a product photo: re-encode, shrink, crop a little, mirror."""
    w, h = img.size
    return [jpeg(img, 40), jpeg(img.resize((w // 2, h // 2))),
            jpeg(img.crop((w // 12, h // 12, w - w // 12, h - h // 12))),
            jpeg(ImageOps.mirror(img))]


@pytest.fixture(scope="module")
def catalog(db):
    """ids 1-6: the originals; 11-14 copies of astronaut, 21-24 of coffee; hashes and
    default features of all."""
    query(db, f"DROP TABLE IF EXISTS {TABLE}")
    query(db, f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, image bytea)")
    rows = [(i, jpeg(photo(name))) for i, name in enumerate(ORIGINALS, start=1)]
    for base, name in ((10, "astronaut"), (20, "coffee")):
        rows += [(base + k, data) for k, data in enumerate(copies(photo(name)), start=1)]
    for image_id, data in rows:
        query(db, f"INSERT INTO {TABLE} VALUES (%s, %s)", (image_id, psycopg2.Binary(data)))
    query(db, f"CALL vision.extract_table('{TABLE}', model => 'perceptual_hash')")
    query(db, f"CALL vision.extract_table('{TABLE}')")
    yield dict(rows)
    query(db, f"DELETE FROM vision.features WHERE source = '{TABLE}'::regclass")
    query(db, f"DELETE FROM vision.extract_jobs WHERE source = '{TABLE}'::regclass")
    query(db, f"DROP TABLE {TABLE}")


def groups(rows):
    out = {}
    for group_id, image_id, *_ in rows:
        out.setdefault(group_id, set()).add(image_id)
    return sorted(out.values(), key=min)


def test_the_hash_model_is_builtin_and_its_features_are_imagehash_phash(db, catalog):
    name, dims, builtin = query(db, "SELECT name, dims, builtin FROM vision.models WHERE "
                                    "name = 'perceptual_hash'")[0]
    assert (dims, builtin) == (177, True)
    stored = query(db, "SELECT feature FROM vision.features WHERE model = 'perceptual_hash' "
                       f"AND source = '{TABLE}'::regclass AND image_id = 2")[0][0]
    import imagehash
    expected = imagehash.phash(Image.open(io.BytesIO(catalog[2])).convert("RGB")
                               .resize((256, 256), Image.BILINEAR))
    assert hashing.hex_digest(stored) == str(expected)
    assert abs(sum(stored[128:]) - 1.0) < 1e-5  # the colour histogram is a distribution


def test_copies_are_grouped_with_their_original_and_nothing_else(db, catalog):
    rows = query(db, f"SELECT * FROM vision.duplicates('{TABLE}')")
    assert groups(rows) == [{1, 11, 12, 13, 14}, {2, 21, 22, 23, 24}]
    for group_id, image_id, representative, distance, cosine, similarity in rows:
        assert group_id == min(next(g for g in groups(rows) if image_id in g))  # the first
        assert representative == (image_id == group_id)
        if representative:
            assert (distance, cosine, similarity) == (0, pytest.approx(1.0, abs=1e-5),
                                                      pytest.approx(1.0, abs=1e-5))
        else:
            assert 0 <= distance <= 64 and 0.5 < cosine <= 1.0 and 0.82 <= similarity <= 1.0
    mirrored = next(r for r in rows if r[1] == 14)
    assert mirrored[3] <= 7, "the mirrored copy's hash matches the original's mirrored hash"


def test_hashes_alone_find_the_re_encoded_and_resized_copies(db, catalog):
    rows = query(db, f"SELECT image_id, hash_distance, cosine, similarity FROM "
                     f"vision.duplicates('{TABLE}', model => NULL)")
    found = {image_id for image_id, *_ in rows}
    assert {1, 11, 12, 14, 2, 21, 22, 24} <= found <= {1, 11, 12, 13, 14, 2, 21, 22, 23, 24}
    assert all(cosine is None and similarity is None for _, _, cosine, similarity in rows)


def test_a_stricter_threshold_finds_fewer_pairs(db, catalog):
    loose = query(db, f"SELECT count(*) FROM vision.duplicates('{TABLE}')")[0][0]
    strict = query(db, f"SELECT count(*) FROM vision.duplicates('{TABLE}', "
                       "max_hash_distance => 0, min_similarity => 0.99)")[0][0]
    assert strict < loose


def test_duplicates_of_new_bytes(db, catalog):
    copy = psycopg2.Binary(jpeg(photo("chelsea").resize((200, 150)), 60))
    found = query(db, f"SELECT image_id, hash_distance, similarity FROM "
                      f"vision.duplicates_of(%s, '{TABLE}')", (copy,))
    assert [r[0] for r in found] == [3]
    assert found[0][2] >= 0.82
    other = psycopg2.Binary(jpeg(photo("horse")))
    assert query(db, f"SELECT * FROM vision.duplicates_of(%s, '{TABLE}')", (other,)) == []


def test_hashes_are_kept_current_like_features(db, catalog):
    """A copy replaced by another photo loses its hash at once and leaves its group once
    vision.maintain has hashed it again."""
    query(db, f"UPDATE {TABLE} SET image = %s WHERE id = 12",
          (psycopg2.Binary(jpeg(photo("horse"))),))
    try:
        assert query(db, "SELECT count(*) FROM vision.features WHERE model = 'perceptual_hash' "
                         f"AND source = '{TABLE}'::regclass AND image_id = 12") == [(0,)]
        report = query(db, f"CALL vision.maintain('{TABLE}')")[0][0]
        assert report["extracted"] == {DEFAULT_MODEL: 1, "perceptual_hash": 1}
        assert groups(query(db, f"SELECT * FROM vision.duplicates('{TABLE}')"))[0] == \
            {1, 11, 13, 14}
    finally:
        query(db, f"UPDATE {TABLE} SET image = %s WHERE id = 12",
              (psycopg2.Binary(catalog[12]),))
        query(db, f"CALL vision.maintain('{TABLE}')")


def test_a_deleted_copy_leaves_its_group_at_once(db, catalog):
    """Deleting rows removes their hashes and features in the same statement (the change
    triggers), so the next call answers without them, no maintain needed."""
    query(db, f"DELETE FROM {TABLE} WHERE id IN (21, 22, 23)")
    try:
        assert groups(query(db, f"SELECT * FROM vision.duplicates('{TABLE}')")) == \
            [{1, 11, 12, 13, 14}, {2, 24}]
    finally:
        for image_id in (21, 22, 23):
            query(db, f"INSERT INTO {TABLE} VALUES (%s, %s)",
                  (image_id, psycopg2.Binary(catalog[image_id])))
        query(db, f"CALL vision.maintain('{TABLE}')")


def test_an_image_over_the_pixel_limit_is_refused_by_name(db, catalog):
    query(db, "SET pgvision.max_image_pixels = 10000")
    try:
        with pytest.raises(pgerr.InvalidBinaryRepresentation, match=r"vision.duplicates_of: "
                           r"argument \"image\" is .*too large, over 10000 pixels"):
            query(db, f"SELECT * FROM vision.duplicates_of(%s, '{TABLE}')",
                  (psycopg2.Binary(catalog[1]),))
    finally:
        query(db, "RESET pgvision.max_image_pixels")


def test_a_table_without_hashes_is_a_named_error_with_the_fix(db, make_table):
    make_table("dup_unhashed", [(1, jpeg(photo("coins")))])
    query(db, "CALL vision.extract_table('dup_unhashed', model => 'mobilenet_v2')")
    with pytest.raises(pgerr.UndefinedObject, match=r"vision.duplicates: argument \"source\": "
                       r"table public.dup_unhashed has no perceptual_hash features") as err:
        query(db, "SELECT * FROM vision.duplicates('dup_unhashed')")
    assert "model => 'perceptual_hash'" in err.value.diag.message_hint
    query(db, "CALL vision.extract_table('dup_unhashed', model => 'perceptual_hash')")
    with pytest.raises(pgerr.UndefinedObject, match=r"argument \"model\": table "
                       rf"public.dup_unhashed has no {DEFAULT_MODEL} features"):
        query(db, "SELECT * FROM vision.duplicates('dup_unhashed')")
    assert query(db, "SELECT count(*) FROM vision.duplicates('dup_unhashed', "
                     "model => 'mobilenet_v2')") == [(0,)]


def test_one_call_stays_within_the_limits_that_protect_the_server(db, catalog):
    """The working memory is bounded before any work (PCA sample + per image), the rows
    after grouping; hashes alone need far less."""
    try:
        query(db, "SET pgvision.max_batch_memory_mb = 100")
        with pytest.raises(pgerr.ProgramLimitExceeded, match=r"vision.duplicates: working "
                           r"memory of 14 images \(MB\) = 129 is over "
                           r"pgvision.max_batch_memory_mb \(100\)"):
            query(db, f"SELECT * FROM vision.duplicates('{TABLE}')")
        assert len(query(db, f"SELECT * FROM vision.duplicates('{TABLE}', model => NULL)")) > 0
        query(db, "RESET pgvision.max_batch_memory_mb; SET pgvision.max_result_rows = 5")
        with pytest.raises(pgerr.ProgramLimitExceeded, match=r"rows \(images in groups\) = 10 "
                           r"is over pgvision.max_result_rows \(5\)"):
            query(db, f"SELECT * FROM vision.duplicates('{TABLE}')")
    finally:
        query(db, "RESET pgvision.max_batch_memory_mb; RESET pgvision.max_result_rows")


@pytest.mark.parametrize("call, error, message", [
    ("vision.duplicates(NULL)", pgerr.NullValueNotAllowed, r'argument "source" must not be NULL'),
    (f"vision.duplicates('{TABLE}', max_hash_distance => -1)", pgerr.InvalidParameterValue,
     r'argument "max_hash_distance" must be between 0 and 32, got -1'),
    (f"vision.duplicates('{TABLE}', max_hash_distance => 33)", pgerr.InvalidParameterValue,
     r'argument "max_hash_distance" must be between 0 and 32, got 33'),
    (f"vision.duplicates('{TABLE}', min_similarity => 0)", pgerr.InvalidParameterValue,
     r'argument "min_similarity" must be a number in \(0, 1\], got 0'),
    (f"vision.duplicates('{TABLE}', min_similarity => NULL)", pgerr.NullValueNotAllowed,
     r'argument "min_similarity" must not be NULL'),
    (f"vision.duplicates('{TABLE}', neighbours => 0)", pgerr.InvalidParameterValue,
     r'argument "neighbours" must be between 1 and 100, got 0'),
    (f"vision.duplicates('{TABLE}', model => 'perceptual_hash')", pgerr.InvalidParameterValue,
     r'argument "model" must be a network whose features confirm the hashes \(NULL: the '
     r"hashes alone\), got 'perceptual_hash'"),
    (f"vision.duplicates('{TABLE}', model => 'nope')", pgerr.UndefinedObject,
     r"argument \"model\" names no registered model: 'nope'"),
    (f"vision.duplicates_of(NULL, '{TABLE}')", pgerr.NullValueNotAllowed,
     r'vision.duplicates_of: argument "image" must not be NULL'),
    (f"vision.duplicates_of('not an image'::bytea, '{TABLE}')", pgerr.InvalidBinaryRepresentation,
     r'vision.duplicates_of: argument "image" is not a decodable image'),
    ("vision.duplicates_of('x'::bytea, NULL)", pgerr.NullValueNotAllowed,
     r'argument "source" must not be NULL'),
])
def test_bad_input_is_named(db, catalog, call, error, message):
    with pytest.raises(error, match=message):
        query(db, f"SELECT * FROM {call}")
