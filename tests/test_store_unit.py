"""Shared store files and the live view over them, without a server: files are written under
a temporary working directory (a backend's is the data directory)."""

import doctest
import hashlib
import os
import struct
import time

import numpy as np
import pytest

from pgvision import ann, float16, halfprecision, neighbours, sharedfiles, snapshots
from pgvision.featurestore import FeatureMatrix
from pgvision.snapshots import Live


@pytest.fixture(autouse=True)
def datadir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def matrix(n=50, dims=6, seed=0):
    rng = np.random.default_rng(seed)
    return np.arange(1, n + 1) * 10, rng.normal(size=(n, dims)).astype(np.float32)


def blocks(ids, vectors, size=7):
    for start in range(0, len(ids), size):
        yield ids[start:start + size], vectors[start:start + size]


def test_a_snapshot_round_trips_through_its_file():
    ids, vectors = matrix()
    sha, size, n = sharedfiles.write_snapshot(6, blocks(ids, vectors))
    path = sharedfiles.check(sha, "vec")
    assert n == 50 and os.path.getsize(path) == size
    snap = sharedfiles.Snapshot(path)
    np.testing.assert_array_equal(snap.ids, ids)
    np.testing.assert_array_equal(snap.vectors, vectors)
    np.testing.assert_allclose(snap.norms, np.linalg.norm(vectors, axis=1), rtol=1e-6)
    assert not snap.vectors.flags.writeable  # mapped read-only: shared, never copied
    assert sharedfiles.write_snapshot(6, blocks(ids, vectors))[0] == sha  # named by content


def test_an_empty_snapshot_and_unordered_ids():
    sha, _, n = sharedfiles.write_snapshot(4, iter([]))
    assert n == 0 and sharedfiles.Snapshot(sharedfiles.check(sha, "vec")).vectors.shape == (0, 4)
    with pytest.raises(ValueError, match="not strictly ascending"):
        sharedfiles.write_snapshot(2, iter([(np.array([2, 1]), np.zeros((2, 2)))]))
    assert not [f for f in os.listdir(sharedfiles.directory()) if f.startswith("incoming")]


def test_a_damaged_file_fails_its_check_and_is_removed():
    ids, vectors = matrix()
    sha, _, _ = sharedfiles.write_snapshot(6, blocks(ids, vectors))
    path = sharedfiles.path_of(sha, "vec")
    time.sleep(0.01)
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    assert sharedfiles.check(sha, "vec") is None and not os.path.exists(path)
    assert sharedfiles.check("0" * 64, "vec") is None  # never written


def test_every_row_carries_a_checksum_of_its_id_and_vector():
    ids, vectors = matrix()
    snap = sharedfiles.Snapshot(sharedfiles.check(sharedfiles.write_snapshot(6, blocks(ids, vectors))[0], "vec"))
    assert snap.sums.dtype == np.uint32 and len(snap.sums) == 50
    assert not len(snap.damaged()) and not len(snap.damaged([0, 49]))
    # the same vector under another id has another sum: a copied row is caught
    assert sharedfiles.row_sums(ids[:1], vectors[1:2])[0] != snap.sums[1]


def damage_row(path, position, vector):
    before = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(4 * 6 * position)
        fh.write(np.asarray(vector, dtype="<f4").tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_row_overwritten_after_mapping_is_found_by_its_checksum():
    ids, vectors = matrix()
    sha = sharedfiles.write_snapshot(6, blocks(ids, vectors))[0]
    snap = sharedfiles.Snapshot(sharedfiles.check(sha, "vec"))
    damage_row(sharedfiles.path_of(sha, "vec"), 20, vectors[3])
    assert snap.vectors[20].tolist() == vectors[3].tolist()  # shared pages: seen at once
    np.testing.assert_array_equal(snap.damaged([3, 20, 21]), [20])
    np.testing.assert_array_equal(snap.damaged(), [20])
    view = Live({}, snap, np.empty(0, np.int64),
                FeatureMatrix(np.empty(0, np.int64), np.empty((0, 6), np.float32)))
    view.verify(ids[[0, 1]])  # sound rows answer
    with pytest.raises(snapshots.DamagedSnapshot) as caught:
        view.verify(ids[[0, 20]])
    assert caught.value.image_ids == [int(ids[20])] and caught.value.sha256 == sha
    with pytest.raises(snapshots.DamagedSnapshot):
        view.matrix()
    # a row changed since the snapshot is answered from the table: its damage is moot
    changed = Live({}, snap, ids[[20]], FeatureMatrix(ids[[20]], vectors[[20]]))
    changed.verify(ids[[0, 20]])


def test_a_write_in_place_with_the_old_mtime_is_rehashed_on_the_next_check():
    ids, vectors = matrix()
    sha = sharedfiles.write_snapshot(6, blocks(ids, vectors))[0]
    assert sharedfiles.check(sha, "vec")
    time.sleep(0.01)
    damage_row(sharedfiles.path_of(sha, "vec"), 5, vectors[6])
    assert sharedfiles.check(sha, "vec") is None  # the change time moved: hashed, found, removed
    assert sharedfiles.check_whole(sha, "vec") == "missing"
    sha = sharedfiles.write_snapshot(6, blocks(ids, vectors))[0]
    assert sharedfiles.check_whole(sha, "vec") == "sound"


def test_a_first_format_snapshot_is_not_read():
    ids, vectors = matrix()
    path = sharedfiles.check(sharedfiles.write_snapshot(6, blocks(ids, vectors))[0], "vec")
    with open(path, "r+b") as fh:
        fh.seek(-64, os.SEEK_END)
        fh.write(b"PGVSNAP1")
    with pytest.raises(ValueError, match="not a pgvision snapshot"):
        sharedfiles.Snapshot(path)


def test_only_unnamed_old_files_are_collected():
    ids, vectors = matrix()
    keep, _, _ = sharedfiles.write_snapshot(6, blocks(ids, vectors))
    gone, _, _ = sharedfiles.write_snapshot(6, blocks(ids[:5], vectors[:5]))
    fresh, _, _ = sharedfiles.write_snapshot(6, blocks(ids[:9], vectors[:9]))
    old = time.time() - 2 * sharedfiles.GRACE_SECONDS
    for sha in (keep, gone):
        for suffix in ("", ".ok"):
            os.utime(sharedfiles.path_of(sha, "vec") + suffix, (old, old))
    assert sharedfiles.collect_garbage({keep}) == 2  # the file and its note
    assert sharedfiles.check(keep, "vec") and sharedfiles.check(fresh, "vec")
    assert not os.path.exists(sharedfiles.path_of(gone, "vec"))


def live_view(ids, vectors, changed, delta_ids, delta_vectors):
    sha, _, _ = sharedfiles.write_snapshot(vectors.shape[1], blocks(ids, vectors))
    return Live({}, sharedfiles.Snapshot(sharedfiles.check(sha, "vec")), np.array(changed, np.int64),
                FeatureMatrix(np.array(delta_ids, np.int64), np.array(delta_vectors, np.float32)
                              .reshape(-1, vectors.shape[1])))


def test_the_live_view_answers_from_current_vectors_only():
    ids, vectors = matrix()
    moved = vectors[0] * -1
    # 10 changed, 20 deleted, 1000 added since the snapshot
    view = live_view(ids, vectors, [10, 20, 1000], [10, 1000], [moved, vectors[3]])
    current = view.matrix()
    assert 20 not in current.ids and 1000 in current.ids and len(current.ids) == 50
    np.testing.assert_array_equal(current.vectors[current.positions([10])[0]], moved)
    assert list(current.ids) == sorted(current.ids)
    got = view.vectors_of([10, 20, 30, 1000, 99999])
    assert got.ids.tolist() == [10, 30, 1000]
    np.testing.assert_array_equal(got.vectors[0], moved)
    # exact search over the view equals brute force over the current matrix
    q = vectors[3]
    found, dist = neighbours.exact_live(view, q, "cosine", 5, exclude=40)
    expected, _ = neighbours.exact(current, q, "cosine", 5, exclude=40)
    assert found.tolist() == expected.tolist()
    assert 20 not in neighbours.exact_live(view, vectors[1], "l2", 50)[0]


def test_the_live_view_without_changes_is_the_mapped_file_itself():
    ids, vectors = matrix()
    view = live_view(ids, vectors, [], [], [])
    shown = view.matrix().vectors
    assert not shown.flags.owndata and not shown.flags.writeable
    assert shown.base is not None and np.shares_memory(shown, view.snapshot.vectors)


def test_merged_blocks_write_the_current_rows_in_order():
    ids, vectors = matrix()
    view = live_view(ids, vectors, [10, 20, 15], [10, 15], [vectors[5], vectors[6]])
    sha, _, n = sharedfiles.write_snapshot(6, snapshots._merged_blocks(view, block=4))
    merged = sharedfiles.Snapshot(sharedfiles.check(sha, "vec"))
    expected = view.matrix()
    np.testing.assert_array_equal(merged.ids, expected.ids)
    np.testing.assert_array_equal(merged.vectors, expected.vectors)


def half_matrix(n=300, dims=300, seed=3):
    """Vectors that half precision holds exactly, as the rows stored since 0.17.0 are."""
    ids, vectors = matrix(n, dims, seed)
    return ids, vectors.astype(np.float16).astype(np.float32)


def test_a_half_precision_snapshot_holds_the_same_values_in_half_the_bytes():
    ids, vectors = half_matrix()
    sha1, size1, _ = sharedfiles.write_snapshot(300, blocks(ids, vectors, 64))
    sha2, size2, n = sharedfiles.write_snapshot(300, blocks(ids, vectors, 64), half=True)
    assert n == 300 and sha1 != sha2 and size2 < 0.52 * size1
    snap = sharedfiles.Snapshot(sharedfiles.check(sha2, "vec"))
    assert snap.vectors.dtype == np.float16 and not snap.vectors.flags.writeable
    np.testing.assert_array_equal(snap.vectors.astype(np.float32), vectors)
    np.testing.assert_allclose(snap.norms, np.linalg.norm(vectors, axis=1), rtol=1e-6)
    assert not len(snap.damaged()) and not len(snap.damaged([0, 299]))
    path = sharedfiles.path_of(sha2, "vec")
    with open(path, "r+b") as fh:  # one value of row 7 changed in place
        fh.seek((7 * 300 + 11) * 2)
        fh.write(b"\x00\x7b")
    assert sharedfiles.Snapshot(path).damaged().tolist() == [7]


def test_a_half_precision_snapshot_refuses_a_value_it_would_round():
    ids, vectors = half_matrix()
    vectors[150, 3] = 0.1  # not a float16: a row written before 0.17.0
    with pytest.raises(sharedfiles.NotHalf, match="not held exactly"):
        sharedfiles.write_snapshot(300, blocks(ids, vectors, 64), half=True)
    assert not [f for f in os.listdir(sharedfiles.directory()) if f.startswith("incoming")]


def test_a_single_precision_snapshot_of_an_earlier_release_is_still_read():
    ids, vectors = matrix()
    sha, _, _ = sharedfiles.write_snapshot(6, blocks(ids, vectors))
    path = sharedfiles.path_of(sha, "vec")
    with open(path, "r+b") as fh:  # 0.8.0 - 0.17.0 trailer: magic, n, dims, zeros
        fh.seek(-64, os.SEEK_END)
        fh.write(b"PGVSNAP2" + struct.pack("<qq", 50, 6) + b"\0" * 40)
    old = sharedfiles.Snapshot(path)
    assert old.vectors.dtype == np.float32
    np.testing.assert_array_equal(old.vectors, vectors)
    assert not len(old.damaged())


def test_searches_and_learners_see_a_half_precision_snapshot_in_single_precision():
    ids, vectors = half_matrix()
    sha, _, _ = sharedfiles.write_snapshot(300, blocks(ids, vectors, 64), half=True)
    base = sharedfiles.Snapshot(sharedfiles.check(sha, "vec"))
    moved = vectors[4] * -1
    for changed, delta_ids, delta in (([], [], []), ([20, 3000], [3000], [moved])):
        view = Live({}, base, np.array(changed, np.int64),
                    FeatureMatrix(np.array(delta_ids, np.int64),
                                  np.array(delta, np.float32).reshape(-1, 300)))
        current = view.matrix()
        assert current.vectors.dtype == np.float32
        reference = FeatureMatrix(current.ids, current.vectors.copy())
        assert view.vectors_of([10, 30, 3000]).vectors.dtype == np.float32
        for metric in ("cosine", "l2", "ip"):
            q = vectors[9] + 0.5
            found, dist = neighbours.exact_live(view, q, metric, 7)
            want, want_dist = neighbours.exact(reference, q, metric, 7)
            assert found.tolist() == want.tolist()
            np.testing.assert_allclose(dist, want_dist, rtol=1e-4, atol=1e-4)


def test_a_merged_snapshot_of_a_half_precision_one_keeps_every_value():
    ids, vectors = half_matrix()
    sha, _, _ = sharedfiles.write_snapshot(300, blocks(ids, vectors, 64), half=True)
    view = Live({}, sharedfiles.Snapshot(sharedfiles.check(sha, "vec")), np.array([10, 15]),
                FeatureMatrix(np.array([15]), vectors[6:7].copy()))
    sha2, _, _ = sharedfiles.write_snapshot(300, snapshots._merged_blocks(view, block=32),
                                            half=True)
    merged = sharedfiles.Snapshot(sharedfiles.check(sha2, "vec"))
    np.testing.assert_array_equal(merged.ids, view.matrix().ids)
    np.testing.assert_array_equal(merged.vectors.astype(np.float32), view.matrix().vectors)


def test_float16_dot_products_equal_single_precision_ones():
    rng = np.random.default_rng(5)
    half = rng.normal(size=(1000, 2048)).astype(np.float16)
    query = rng.normal(size=2048).astype(np.float32)
    np.testing.assert_allclose(float16.dots(half, query), half.astype(np.float32) @ query,
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(float16.single(half), half.astype(np.float32))
    assert float16.dots(half[:0], query).shape == (0,)
    assert float16.single(np.ones((2, 3), np.float32)).dtype == np.float32


@pytest.mark.parametrize("storage", ann.STORAGES)
def test_ivf_lists_find_the_neighbours_and_skip_dead_entries(storage):
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(20, 32)).astype(np.float32)
    vectors = (centres[rng.integers(0, 20, 2000)]
               + 0.1 * rng.normal(size=(2000, 32))).astype(np.float32)
    index = ann.build_index(vectors, "cosine", storage=storage, method="ivf",
                            lists=ann.default_lists(2000))
    assert index.nlist == 45 and index.ntotal == 2000
    unit = vectors / np.linalg.norm(vectors, axis=1)[:, None]
    hits = 0
    for q in range(0, 2000, 100):
        truth = set(np.argsort(-(unit @ unit[q]))[:10].tolist())
        hits += len(truth & set(ann.ann(index, vectors[q], "cosine", 10, 8)[0].tolist()))
    assert hits / 200 >= 0.9
    alive = np.ones(2000, bool)
    alive[[4, 5]] = False
    found = ann.ann(index, vectors[4], "cosine", 10, 8, np.packbits(alive, bitorder="little"))[0]
    assert 4 not in found and 5 not in found and len(found) == 10


@pytest.mark.parametrize("storage", ann.STORAGES)
def test_an_index_skips_dead_and_changed_entries(storage):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    index = ann.build_index(vectors, "cosine", storage=storage)
    entries = np.arange(300) + 1
    dead = np.zeros(300, bool)
    dead[4] = True  # entry of image 5
    idx = ann.MappedIndex(None, index, entries, np.packbits(dead, bitorder="little"))
    alive = idx.alive(np.array([6], np.int64))
    found = entries[ann.ann(index, vectors[4], "cosine", 10, 64, alive)[0]]
    assert 5 not in found and 6 not in found and len(found) == 10
    found = entries[ann.ann(index, vectors[4], "cosine", 1, 64)[0]]
    assert found.tolist() == [5]


@pytest.mark.parametrize("count", [8, 13, 300])
def test_an_index_with_no_dead_or_changed_entry_needs_no_filter(count):
    """The packed dead bits' padding (bits past the last entry) never counts as an entry."""
    entries = np.arange(count) + 1
    idx = ann.MappedIndex(None, None, entries, np.packbits(np.zeros(count, bool),
                                                           bitorder="little"))
    assert idx.alive(np.array([], np.int64)) is None
    assert idx.alive(np.array([count + 5], np.int64)) is None  # an image the index never had
    alive = idx.alive(np.array([count], np.int64))
    assert np.unpackbits(alive, count=count, bitorder="little").tolist() == [1] * (count - 1) + [0]


def test_a_companion_file_lives_and_is_checked_by_its_own_content(datadir):
    """An index's entry ids are stored as ``<index sha>.<ids sha>.ids``: kept while the
    index is named, checked against their own checksum."""
    owner = hashlib.sha256(b"index").hexdigest()
    ids = np.arange(1000, dtype="<i8")
    sha, size = sharedfiles.write_parts("ids", [ids.tobytes()], owner=owner)
    assert sha == hashlib.sha256(ids.tobytes()).hexdigest() and size == 8000
    path = sharedfiles.check(sha, "ids", owner=owner)
    assert os.path.basename(path) == f"{owner}.{sha}.ids"
    assert np.array_equal(np.memmap(path, dtype="<i8", mode="r"), ids)
    assert sharedfiles.check(sha, "ids") is None  # not a store file of its own
    # a garbage collection that names the owner keeps it; one that does not removes it
    assert sharedfiles.collect_garbage({owner}, grace_seconds=0) == 0
    assert sharedfiles.check(sha, "ids", owner=owner) == path
    with open(path, "r+b") as fh:
        fh.write(b"\1")
    assert sharedfiles.check(sha, "ids", owner=owner, whole=True) is None
    assert not os.path.exists(path)
    sharedfiles.write_parts("ids", [ids.tobytes()], owner=owner)
    assert sharedfiles.collect_garbage(set(), grace_seconds=0) == 2  # the file and its note
    assert sharedfiles.check(sha, "ids", owner=owner) is None


@pytest.mark.parametrize("name", ["../../global/pg_control", "/etc/passwd", "A" * 64, "", None])
def test_a_name_that_is_no_sha256_is_never_a_path(datadir, name):
    """A vision_admin member may write a snapshot's or index's sha256: the next search must
    not read or delete a file of the server's through it."""
    victim = datadir / "pg_control"
    victim.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="not a SHA-256"):
        sharedfiles.path_of(name, "vec")
    assert sharedfiles.check(name, "vec") is None
    sharedfiles.remove(name, "vec")
    sharedfiles.remove("../pg_control" if name is None else name, "")
    assert victim.read_bytes() == b"keep me"


# --- half precision ------------------------------------------------------------------------

def test_halfprecision_doctests():
    assert doctest.testmod(halfprecision).failed == 0


def test_ann_doctests():
    assert doctest.testmod(ann).failed == 0


def test_float16_doctests():
    assert doctest.testmod(float16).failed == 0


def test_a_vector_is_stored_half_where_half_holds_it_and_single_where_not():
    rng = np.random.default_rng(1)
    vector = rng.normal(scale=100, size=2048).astype(np.float32)
    single, half = halfprecision.stored(vector)
    assert single is None and len(half) == 4096
    back = halfprecision.decode_row({"half": half, "single": None}, 2048)
    assert back.dtype == np.float32
    assert np.max(np.abs(back - vector) / np.abs(vector)) <= 2 ** -11  # binary16's rounding
    vector[9] = -7e4  # beyond ±65504
    single, half = halfprecision.stored(vector)
    assert half is None
    assert np.array_equal(np.array(single[1:-1].split(","), dtype=np.float32), vector)
    # NaN and infinities are values half precision holds
    special = np.array([np.nan, np.inf, -np.inf, 65504], np.float32)
    assert np.array_equal(halfprecision.from_half(halfprecision.to_half(special)), special,
                          equal_nan=True)


def test_a_stored_row_of_the_wrong_length_is_an_error_that_says_so():
    with pytest.raises(ValueError, match="has 6 bytes of half precision, expected 8"):
        halfprecision.decode_row({"half": b"\0" * 6, "single": None}, 4)
    with pytest.raises(ValueError, match="odd number of bytes"):
        halfprecision.decode_row({"half": b"\0" * 5, "single": None})
    single = struct.pack(">iiiii", 1, 0, 700, 3, 1) + b"".join(
        struct.pack(">if", 4, v) for v in (1.0, 2.0, 3.0))
    assert halfprecision.decode_row({"half": None, "single": single}).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="has 3 dimensions, expected 4"):
        halfprecision.decode_row({"half": None, "single": single}, 4)


def test_the_view_writer_refuses_what_is_not_a_flat_array_of_numbers():
    with pytest.raises(halfprecision.PgvisionError, match='vision._half: argument "feature" '
                       "has NULL elements"):
        halfprecision.half_or_none([1.0, None])
    with pytest.raises(halfprecision.PgvisionError, match="not a one-dimensional array"):
        halfprecision.half_or_none([[1.0], [2.0]])
    assert halfprecision.half_or_none([1e9] * 300) is None
    assert halfprecision.half_or_none([0.5, 2.0]) is None  # short: stays single
    assert halfprecision.half_text(halfprecision.half_or_none([0.5, 2.0] * 150)) == \
        "{" + ",".join(["0.5,2"] * 150) + "}"


def test_the_folders_of_dropped_databases_are_removed():
    for oid in (5, 6, 7):
        sharedfiles.bind(oid)
        ids, vectors = matrix()
        sharedfiles.write_snapshot(6, blocks(ids, vectors))
    root = os.path.dirname(sharedfiles.directory())
    os.makedirs(os.path.join(root, "not-a-database"))
    old = time.time() - 2 * sharedfiles.GRACE_SECONDS
    for name in ("5", "6"):
        os.utime(os.path.join(root, name), (old, old))
    try:
        # 5 and 7 are dropped; 7 was touched within the grace period (being created)
        assert sharedfiles.collect_dropped_databases([6, 1]) == 1
        assert sorted(os.listdir(root)) == ["6", "7", "not-a-database"]
    finally:
        sharedfiles.bind(None)
