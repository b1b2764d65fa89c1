"""``pgvision load``: image files into a table with binary COPY, one committed batch at a
time, skipping what is already there (by SHA-256) and what is no image, with the reason.

A table made by ``--create`` has the columns the loader fills::

    id bigint (identity) | name text | size_bytes bigint | format text | sha256 text UNIQUE
    | image bytea | loaded_at timestamptz

An existing table needs ``image bytea`` and an id the table fills itself (identity, serial
or a default); ``name``, ``size_bytes``, ``format`` and ``sha256`` are filled where it has
them (without ``sha256`` duplicates are not detected).

With ``--skip-near-duplicates`` a file is also skipped when its perceptual hash (computed
here exactly as the server's ``perceptual_hash`` model computes it) is within a few bits of
an image's in the table or of a file loaded earlier in the run: re-encoded, resized and
mirrored copies. Cropped copies move the hash too far; ``vision.duplicates`` finds those.
"""

import glob
import hashlib
import io
import os
import stat
import struct
import warnings

import numpy as np
from PIL import Image

META_COLUMNS = ("name", "size_bytes", "format", "sha256")
CREATE = """CREATE TABLE {table} (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name       text NOT NULL,
  size_bytes bigint NOT NULL,
  format     text NOT NULL,
  sha256     text NOT NULL UNIQUE,
  image      bytea NOT NULL,
  loaded_at  timestamptz NOT NULL DEFAULT now()
)"""

MAX_FILE_MB = 256              # a file larger than this is never read (a bytea stops at 1 GB)
MAX_PIXELS = 89_478_485       # Pillow's bound, and pgvision.max_image_pixels' default

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)


def expand(paths):
    """Regular files named by ``paths`` (files, folders walked recursively, or globs), in
    sorted order without repeats; and the arguments that named nothing."""
    files, unmatched = [], []
    for path in paths:
        if os.path.isdir(path):
            found = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
        elif os.path.isfile(path):
            found = [path]
        else:
            found = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
        if not found:
            unmatched.append(path)
        files.extend(sorted(found))
    seen, ordered = set(), []
    for f in files:
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            ordered.append(f)
    return ordered, unmatched


def roots_of(paths):
    """The real paths a load may read under: each folder or file given, and the fixed part
    of each glob."""
    roots = []
    for path in paths:
        if not glob.has_magic(path):
            roots.append(os.path.realpath(path))
            continue
        fixed = path[:min(path.index(c) for c in "*?[" if c in path)]
        roots.append(os.path.realpath(os.path.dirname(fixed) or "."))
    return roots


def refusal(path, roots, follow_links=False, max_bytes=MAX_FILE_MB << 20):
    """Why ``path`` is not to be read at all, or None: only regular files (a FIFO would
    block, a device never ends), inside the folders given unless ``follow_links`` (a link
    to /dev/zero or another user's files is not an image to load), and not over
    ``max_bytes`` (a 2 GB sparse file is refused by its size, not read)."""
    try:
        info = os.stat(path)
    except OSError as err:
        return err.strerror
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "not a file")
        return f"not a regular file ({kind})"
    real = os.path.realpath(path)
    if not follow_links and not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep)
                                    for root in roots):
        return f"a link to {real}, outside the folders given (--follow-links reads it)"
    if info.st_size > max_bytes:
        return f"too large ({info.st_size >> 20} MB > {max_bytes >> 20} MB, --max-file-mb)"
    return None


def image_format(data, max_pixels=MAX_PIXELS):
    """Pillow's name of the image format of ``data`` ('JPEG', 'PNG', ...), or raise
    ValueError with the reason it is no image. Reads the header only: a truncated image is
    still loaded, and ``vision.extract_table`` records it as undecodable."""
    if not data:
        raise ValueError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(io.BytesIO(data)) as img:  # the header only: no pixels
                    width, height = img.size
                    if max_pixels and width * height > max_pixels:
                        raise ValueError(f"image too large ({width}×{height} > "
                                         f"{max_pixels} pixels)")
                    return img.format
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except ValueError:
        raise
    except Image.UnidentifiedImageError:
        raise ValueError("not an image (no format Pillow reads)") from None
    except Exception as err:  # Pillow raises many kinds; the reason is what matters
        raise ValueError(f"not an image ({err})") from None


def _field(value):
    if value is None:
        return struct.pack("!i", -1)
    if isinstance(value, int):
        return struct.pack("!iq", 8, value)
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!i", len(data)) + data


def copy_row(values):
    """One tuple of a binary COPY stream (text, bigint and bytea fields)."""
    return struct.pack("!h", len(values)) + b"".join(_field(v) for v in values)


class CopyStream:
    """A file-like object psycopg2's ``copy_expert`` reads a binary COPY from, pulling rows
    from an iterator as the server takes them (so the progress bar moves with the upload
    and at most one file is in memory)."""

    def __init__(self, rows, stop=lambda: False):
        self._rows = iter(rows)
        self._stop = stop
        self._buffer = bytearray(_HEADER)
        self._done = False
        self.interrupted = False  # psycopg2 turns an exception in read() into its own

    def read(self, size=65536):
        try:
            if self._stop():  # abandons the COPY: the server rolls the batch back
                raise KeyboardInterrupt
            return self._read(size)
        except KeyboardInterrupt:
            self.interrupted = True
            raise

    def _read(self, size):
        while len(self._buffer) < size and not self._done:
            row = next(self._rows, None)
            if row is None:
                self._buffer += _TRAILER
                self._done = True
            else:
                self._buffer += copy_row(row)
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    def readline(self, size=65536):
        return self.read(size)


class Loader:
    """Loads files into ``table`` (already quoted) over ``conn`` (not autocommit)."""

    near = None  # a NearCopies when near-copies are skipped too

    def __init__(self, conn, table, columns, batch_bytes=64 << 20, on_file=None, roots=None,
                 follow_links=False, max_bytes=MAX_FILE_MB << 20, near=None):
        self.conn, self.table, self.batch_bytes = conn, table, batch_bytes
        self.near = near
        self.roots, self.follow_links, self.max_bytes = roots, follow_links, max_bytes
        self.columns = [c for c in META_COLUMNS if c in columns] + ["image"]
        self.on_file = on_file or (lambda path, size, outcome: None)
        self.stored, self.seen = set(), {}  # hashes in the table; hash -> file of this run
        if "sha256" in columns:
            with conn.cursor("pgvision_known_hashes") as cur:
                cur.itersize = 100_000
                cur.execute(f"SELECT sha256 FROM {table}")
                self.stored = {row[0] for row in cur}
            conn.commit()
        self.loaded, self.loaded_bytes, self.skipped = 0, 0, []
        self.stop_requested = False

    def request_stop(self, *_signal):
        """A SIGINT handler: the batch being sent is abandoned at its next chunk and ``load``
        raises KeyboardInterrupt. Only a flag, because an exception raised at an arbitrary
        point inside psycopg2's COPY can surface as its own error; a second press raises."""
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def _rows(self, files):
        sent = 0
        for path in files:
            reason = None if self.roots is None else refusal(path, self.roots,
                                                             self.follow_links, self.max_bytes)
            if reason:
                self._skip(path, reason, 0)
                continue
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
                fmt = image_format(data)
            except (OSError, ValueError) as err:
                self._skip(path, err.strerror if isinstance(err, OSError) else str(err))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in self.stored:
                self._skip(path, "already in the table (same bytes)", len(data))
                continue
            if digest in self.seen:
                self._skip(path, f"duplicate (same bytes as {self.seen[digest]})", len(data))
                continue
            reason = self.near.check(data, path) if self.near is not None else None
            if reason:
                self._skip(path, reason, len(data))
                continue
            self.seen[digest] = path
            values = {"name": os.path.basename(path), "size_bytes": len(data), "format": fmt,
                      "sha256": digest, "image": data}
            yield [values[c] for c in self.columns]
            self.loaded += 1
            self.loaded_bytes += len(data)
            self.on_file(path, len(data), None)
            sent += len(data)
            if sent >= self.batch_bytes:
                return

    def _skip(self, path, reason, size=None):
        self.skipped.append((path, reason))
        self.on_file(path, os.path.getsize(path) if size is None and os.path.isfile(path)
                     else size or 0, reason)

    def load(self, files):
        """COPY ``files`` in batches of about ``batch_bytes``, committing each batch."""
        files = iter(files)
        pending = True
        while pending:
            before = self.loaded + len(self.skipped)
            stream = CopyStream(self._rows(files), lambda: self.stop_requested)
            try:
                with self.conn.cursor() as cur:
                    cur.copy_expert(f"COPY {self.table} ({', '.join(self.columns)}) FROM "
                                    "STDIN (FORMAT binary)", stream)
            except Exception:  # "COPY from stdin failed: error in .read() call"
                if stream.interrupted or self.stop_requested:  # Ctrl-C: say so
                    raise KeyboardInterrupt from None
                raise
            self.conn.commit()  # a batch that was whole when the stop came is kept
            if self.stop_requested:
                raise KeyboardInterrupt
            pending = self.loaded + len(self.skipped) > before
        return self


class NearCopies:
    """Perceptual hashes of what a table holds and of the files accepted so far in a run;
    :meth:`check` says why a file is a near-copy of one of them, or None (and remembers it)."""

    def __init__(self, stored, max_distance=7):
        """``stored``: (image id, perceptual_hash feature) rows of the table."""
        from pgvision import hashing

        self.max_distance = max_distance
        self.names = [f"image {image_id}" for image_id, _ in stored]
        self.extractor = hashing.HashExtractor(hashing.default_spec())
        vectors = np.array([feature for _, feature in stored], dtype=np.float32).reshape(
            len(stored), self.extractor.dims)
        # the table's and the run's hashes in arrays that grow by doubling: a check compares
        # against a view, never a copy of everything seen so far
        self.hashes, self.mirror_hashes, _ = hashing.split(vectors)
        self.count = len(stored)

    def vector(self, data):
        from pgvision.images import model_array

        size = self.extractor.input_size
        return self.extractor(model_array(data, size, self.extractor.preprocessing,
                                          MAX_PIXELS)[np.newaxis])

    def check(self, data, path):
        from pgvision import duplicates, hashing
        from pgvision.errors import ImageError

        try:
            own, own_mirror, _ = hashing.split(self.vector(data))
        except ImageError:
            return None  # the server will say what is wrong with it
        if self.count:
            distance = np.minimum(duplicates.hamming(self.hashes[:self.count], own),
                                  duplicates.hamming(self.mirror_hashes[:self.count], own))
            nearest = int(np.argmin(distance))
            if distance[nearest] <= self.max_distance:
                return (f"near-duplicate of {self.names[nearest]} (perceptual hash "
                        f"{int(distance[nearest])} bits apart)")
        if self.count == len(self.hashes):
            grown = max(16, 2 * self.count)
            self.hashes = np.resize(self.hashes, (grown, own.shape[1]))
            self.mirror_hashes = np.resize(self.mirror_hashes, (grown, own.shape[1]))
        self.hashes[self.count], self.mirror_hashes[self.count] = own[0], own_mirror[0]
        self.count += 1
        self.names.append(os.path.basename(path))
        return None
