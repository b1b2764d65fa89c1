"""Files that every backend of a server maps read-only, so the page cache holds one copy of a
feature matrix or an index however many sessions search it.

The database stays the truth: a file is a copy of something stored in pgvision's tables,
named by the SHA-256 of its content (``<data directory>/pgvision/store/<database
oid>/<sha256>.<kind>``),
written to a temporary name and renamed (readers never see half a file), and checked
against the checksum the table holds before a backend first trusts it. A checked file gets
a ``.ok`` note of its size, inode and modification time, so later backends re-hash only a
file that was touched since; a missing or damaged file is rebuilt by the caller from the
tables. Files that no row names any more are removed by :func:`collect_garbage`, the
folders of dropped databases by :func:`collect_dropped_databases`.

Snapshot files (``.vec``) hold a feature matrix: the vectors (row-major, float32, or float16
where every value is held exactly, see :func:`write_snapshot`), the image ids (int64,
ascending), their L2 norms (float32) and a CRC-32 of each row (of its id and vector bytes),
each section aligned to 64 bytes, then a 64-byte trailer with the row count, dimension and
bytes per value. The trailer comes last so a snapshot is written in one pass, hashed as it goes,
without knowing its length in advance.

A companion file is derived from a store file and lives exactly as long as it:
``<owner sha256>.<own sha256>.<kind>``. An index's entry ids (``.ids``, int64, copied from
``vision.indexes.entry_ids``) are one, so every backend maps them rather than holding 8 MB
of its own per million images.

Damage is caught at three depths: a backend mapping a file re-hashes it whole unless its
``.ok`` note matches (size, inode, modification and change time: a write in place changes
the change time even when the modification time is set back); the rows a search answers
from, and every row a learner or a new snapshot reads, are checked against their CRC-32
(~4 GB/s, so a search pays microseconds), which also catches a file damaged after a backend
mapped it; ``vision.maintain`` re-hashes every file of its table whole.
"""

import hashlib
import json
import mmap
import os
import re
import shutil
import time
import zlib

import numpy as np

from . import float16
from .files import runtime_dir, sha256_file

MAGIC = b"PGVSNAP3"  # 1: no row checksums (such files are rebuilt)
_MAGIC_SINGLE = b"PGVSNAP2"  # float32 only, no precision in the trailer (0.8.0 - 0.17.0)
_VALUE_TYPES = {4: np.dtype("<f4"), 2: np.dtype("<f2")}
_TRAILER = 64
_ALIGN = 64
GRACE_SECONDS = 600  # an unnamed file younger than this may belong to an uncommitted build


_database = None


def bind(database_oid):
    """Keep this backend's files apart from other databases' of the same server (each
    database collects its own garbage)."""
    global _database
    _database = database_oid


def directory():
    path = runtime_dir("store", str(_database)) if _database is not None else runtime_dir("store")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(sha):
    """Whether ``sha`` is a SHA-256 in hex: the only names the store has (a value read from
    a table is never taken as a path, e.g. '../../global/pg_control')."""
    return isinstance(sha, str) and _SHA256.fullmatch(sha) is not None


def _well_named(sha, owner=None):
    """Whether ``sha``, and ``owner`` when given, are SHA-256s (the parts of a store path)."""
    return is_sha256(sha) and (owner is None or is_sha256(owner))


def path_of(sha, kind, owner=None):
    """``<sha256>.<kind>``, or for a file derived from the store file ``owner``,
    ``<owner>.<sha256>.<kind>``: a companion is named by its own content and kept exactly as
    long as its owner (:func:`collect_garbage` goes by a name's first part)."""
    if not _well_named(sha, owner):
        raise ValueError(f"not a SHA-256: {sha if not is_sha256(sha) else owner!r}")
    return os.path.join(directory(), f"{sha}.{kind}" if owner is None
                        else f"{owner}.{sha}.{kind}")


def _aligned(offset):
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN


def snapshot_layout(n, dims, value_bytes=4):
    """Byte offsets of (ids, norms, sums, trailer) in a snapshot file; its size."""
    ids = _aligned(value_bytes * n * dims)
    norms = _aligned(ids + 8 * n)
    sums = _aligned(norms + 4 * n)
    trailer = _aligned(sums + 4 * n)
    return ids, norms, sums, trailer, trailer + _TRAILER


def row_sums(ids, vectors):
    """CRC-32 of each row's id (int64) and vector bytes (float32 or float16, as stored): a
    copied, moved or overwritten row no longer matches its sum."""
    ids = np.asarray(ids, dtype="<i8")
    vectors = np.ascontiguousarray(vectors, dtype=vectors.dtype if vectors.dtype in
                                   _VALUE_TYPES.values() else "<f4")
    return np.fromiter((zlib.crc32(row, zlib.crc32(key)) for key, row in zip(ids, vectors)),
                       dtype=np.uint32, count=len(ids))


def incoming():
    """A temporary path in the store, for a file being written."""
    return os.path.join(directory(), f"incoming-{os.getpid()}-{time.monotonic_ns()}.tmp")


def _install(path, sha, kind, owner=None):
    """Rename a finished, synced file to ``<sha256>.<kind>`` and note it as checked."""
    final = path_of(sha, kind, owner)
    os.replace(path, final)
    _note_checked(final, sha)


def adopt(path, kind):
    """Make a finished file at ``path`` (in the store directory) a store file: fsync, hash,
    rename to ``<sha256>.<kind>``; (sha256, size)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    sha = sha256_file(path)
    size = os.path.getsize(path)
    _install(path, sha, kind)
    return sha, size


class _HashingWriter:
    """Writes ``incoming-*.tmp`` and hashes what it writes; :meth:`commit` fsyncs, renames
    it to ``<sha256>.<kind>`` and returns the SHA-256."""

    def __init__(self, kind, owner=None):
        self.kind = kind
        self.owner = owner
        self.tmp = incoming()
        self.fh = open(self.tmp, "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data):
        data = memoryview(np.ascontiguousarray(data) if isinstance(data, np.ndarray)
                          else data).cast("B")
        self.digest.update(data)
        self.fh.write(data)
        self.size += len(data)

    def pad(self, to):
        self.write(b"\0" * (to - self.size))

    def commit(self):
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        sha = self.digest.hexdigest()
        _install(self.tmp, sha, self.kind, self.owner)
        return sha

    def abort(self):
        self.fh.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def write_parts(kind, parts, owner=None):
    """Write the byte strings/arrays ``parts`` one after another as one file (a companion of
    store file ``owner`` when given, see :func:`path_of`): (sha256, size)."""
    writer = _HashingWriter(kind, owner)
    try:
        for part in parts:
            writer.write(part)
        return writer.commit(), writer.size
    except BaseException:
        writer.abort()
        raise


class NotHalf(ValueError):
    """A row of a snapshot asked to be written in half precision has a value that half
    precision does not hold exactly."""


def write_snapshot(dims, blocks, half=False):
    """A snapshot file from ``blocks``, an iterable of (ids, vectors) in ascending id order
    (read once, so a matrix larger than memory streams through): (sha256, size, n).

    With ``half`` the vectors are written as float16, half the bytes; a value that float16
    does not hold exactly raises NotHalf (the caller writes float32 instead), so a snapshot
    never rounds what the table stores."""
    writer = _HashingWriter("vec")
    ids, norms, sums = [], [], []
    value_bytes = 2 if half else 4
    try:
        for block_ids, block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float32).reshape(-1, dims)
            ids.append(np.asarray(block_ids, dtype=np.int64))
            norms.append(np.linalg.norm(block, axis=1).astype(np.float32))
            if half:
                block = float16.exactly_half(block)
                if block is None:
                    raise NotHalf(f"a row of image ids {ids[-1][0]}..{ids[-1][-1]} is not "
                                  "held exactly in half precision")
            sums.append(row_sums(ids[-1], block))
            writer.write(block)
        ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
        norms = np.concatenate(norms) if norms else np.empty(0, np.float32)
        sums = np.concatenate(sums) if sums else np.empty(0, np.uint32)
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            raise ValueError("snapshot ids are not strictly ascending")
        at_ids, at_norms, at_sums, at_trailer, _ = snapshot_layout(len(ids), dims,
                                                                  value_bytes)
        writer.pad(at_ids)
        writer.write(ids)
        writer.pad(at_norms)
        writer.write(norms)
        writer.pad(at_sums)
        writer.write(sums)
        writer.pad(at_trailer)
        writer.write((MAGIC + np.array([len(ids), dims, value_bytes], dtype="<i8").tobytes())
                     .ljust(_TRAILER, b"\0"))
        return writer.commit(), writer.size, len(ids)
    except BaseException:
        writer.abort()
        raise


class Snapshot:
    """A mapped snapshot file: ``ids``, ``norms``, ``vectors`` (float32 or float16) are
    read-only numpy views of pages every backend shares."""

    def __init__(self, path):
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.seek(max(size - _TRAILER, 0))
            trailer = fh.read(_TRAILER)
        if len(trailer) < 32 or trailer[:8] not in (MAGIC, _MAGIC_SINGLE):
            raise ValueError("not a pgvision snapshot file")
        n, dims, value_bytes = (int(v) for v in np.frombuffer(trailer, dtype="<i8", count=3,
                                                               offset=8))
        if trailer[:8] == _MAGIC_SINGLE:
            value_bytes = 4
        if value_bytes not in _VALUE_TYPES:
            raise ValueError(f"has {value_bytes} bytes a value")
        at_ids, at_norms, at_sums, at_trailer, expected = snapshot_layout(n, dims, value_bytes)
        if size != expected:
            raise ValueError(f"has {size} bytes, expected {expected}")
        self.path = path
        self.dims = dims
        with open(path, "rb") as fh:
            # plain ndarrays over the mapping (np.memmap's subclass costs per indexing)
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.vectors = np.frombuffer(self._map, _VALUE_TYPES[value_bytes],
                                     n * dims).reshape(n, dims)
        self.ids = np.frombuffer(self._map, np.int64, n, at_ids)
        self.norms = np.frombuffer(self._map, np.float32, n, at_norms)
        self.sums = np.frombuffer(self._map, np.uint32, n, at_sums)
        self.sha256 = os.path.basename(path).split(".", 1)[0]
        self._whole_checked = False

    def damaged(self, positions=None):
        """Positions among ``positions`` (all rows when None) whose bytes no longer match
        their CRC-32; all rows are checked once per mapping, answered rows every time."""
        if positions is not None:
            positions = np.asarray(positions, np.int64)
            return positions[row_sums(self.ids[positions], self.vectors[positions])
                             != self.sums[positions]]
        if self._whole_checked:
            return np.empty(0, np.int64)
        bad = [start + np.flatnonzero(row_sums(self.ids[start:start + 4096],
                                               self.vectors[start:start + 4096])
                                      != self.sums[start:start + 4096])
               for start in range(0, len(self.ids), 4096)]  # slices: the pages, no copy
        bad = np.concatenate(bad) if bad else np.empty(0, np.int64)
        self._whole_checked = not len(bad)
        return bad


# --- checking ---------------------------------------------------------------------------

def _stat_key(path):
    st = os.stat(path)
    return {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def _note_checked(path, sha):
    note = {"sha256": sha, **_stat_key(path)}
    tmp = f"{path}.ok.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(note, fh)
    os.replace(tmp, path + ".ok")


def check(sha, kind, whole=False, owner=None):
    """The path of the file with content ``sha`` (a companion of ``owner`` when given) if it
    is there and intact, else None (a damaged file is removed). Hashes the file only when
    its ``.ok`` note does not match, or always with ``whole``."""
    if not _well_named(sha, owner):
        return None
    path = path_of(sha, kind, owner)
    if not os.path.exists(path):
        return None
    try:
        with open(path + ".ok", encoding="utf-8") as fh:
            note = json.load(fh)
        if note == {"sha256": sha, **_stat_key(path)} and not whole:
            return path
    except (OSError, ValueError):
        pass
    if sha256_file(path) == sha:
        _note_checked(path, sha)
        return path
    remove(sha, kind, owner)
    return None


def check_whole(sha, kind, owner=None):
    """'missing', 'sound' or 'damaged' (then removed): the file hashed whole, notes aside."""
    if not _well_named(sha, owner) or not os.path.exists(path_of(sha, kind, owner)):
        return "missing"
    return "sound" if check(sha, kind, whole=True, owner=owner) else "damaged"


def remove(sha, kind, owner=None):
    if not _well_named(sha, owner):
        return
    for path in (path_of(sha, kind, owner), path_of(sha, kind, owner) + ".ok"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def collect_garbage(named, grace_seconds=GRACE_SECONDS):
    """Remove files whose SHA-256 is not in ``named`` (and leftovers of interrupted writes),
    unless younger than ``grace_seconds``; the number removed."""
    removed = 0
    now = time.time()
    folder = directory()
    for entry in os.scandir(folder):
        sha = entry.name.split(".", 1)[0]
        if sha in named:
            continue
        try:
            if now - entry.stat().st_mtime < grace_seconds:
                continue
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def collect_dropped_databases(live_oids, grace_seconds=GRACE_SECONDS):
    """Remove the store folders of databases that no longer exist (``DROP DATABASE`` runs no
    code of pgvision's, so their files would stay on disk for good), unless touched within
    ``grace_seconds`` (a database being created); the number removed."""
    root = runtime_dir("store")
    if not os.path.isdir(root):
        return 0
    live = {str(oid) for oid in live_oids}
    if not live:  # a server always has databases: an empty list is a mistake, not a fact
        return 0
    removed = 0
    now = time.time()
    for entry in os.scandir(root):
        if not entry.is_dir(follow_symlinks=False) or not entry.name.isdigit() \
                or entry.name in live:
            continue
        try:
            if now - entry.stat().st_mtime < grace_seconds:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed
