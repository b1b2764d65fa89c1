"""Approximate nearest neighbours: HNSW graphs or IVF lists (faiss) with float32, float16 or
int8 storage and optional PCA (HNSW), kept as store files every backend maps and, as the
truth, in ``vision.index_chunks``.

Which a table gets by default is decided by its size (:func:`default_method`): HNSW below
``IVF_FROM_ROWS`` images, IVF from there. Measured on 2048-d clustered vectors
(``make bench-serving``, docs/performance.md): at 1M an int8 HNSW graph (m 16) took 621 s
to build and reached recall@10 0.77 at ef 100, 0.90 at ef 800; int8 IVF lists (1,000 of
them) took 56 s and answered what exact search answers scanning 4 lists. At 100k both
reach 0.96+, HNSW answering faster (960 against 406 single calls a second).

An index is built over a feature snapshot; its entries are numbered in the order they were
added, ``vision.indexes.entry_ids`` maps them to image ids and ``dead`` marks replaced or
deleted ones. Images changed since the index's transaction snapshot are filtered out of its
answers (a faiss ID selector) and searched exactly beside it (:mod:`pgvision.search`), so an
answer is never stale.

Why faiss (measured against usearch, hnswlib and annoy, shared/FACTS.md): manylinux
wheels, HNSW with float32 / float16 / int8 storage and PCA behind one API, ID selectors for
filtered search, and ``IO_FLAG_MMAP_IFC``, which maps an index file without a private copy
(and searched 2-5x faster than usearch's mapped view here).
"""

import ctypes
import os

import numpy as np

from . import featurestore, float16, sharedfiles, spi

INDEX_CACHE = "pgvision.indexes"

STORAGES = ("float32", "float16", "int8")
METHODS = ("hnsw", "ivf")
IVF_FROM_ROWS = 500_000   # a table this large gets IVF lists by default, a smaller one HNSW
DEFAULT_PROBES = 8        # lists an IVF search scans (SET pgvision.probes to trade)
_MAX_LISTS = 1024         # k-means on _TRAIN_ROWS samples wants ~39 of them a list
CHUNK_BYTES = 64 << 20   # an index is stored in rows of this size: no 1 GB value ceiling
REBUILD_FRACTION = 0.2   # refresh rebuilds once this fraction of entries is out of date
_TRAIN_ROWS = 50_000
_ADD_ROWS = 16_384


def faiss_module():
    import faiss
    return faiss


def _prepare(vectors, metric):
    """Vectors as the index sees them (float32): unit length for cosine."""
    vectors = np.ascontiguousarray(float16.single(np.asarray(vectors)), dtype=np.float32)
    if metric == "cosine":
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)[:, None]
    return vectors


def default_method(n):
    """The index a table of ``n`` images gets when none is named.

    >>> default_method(10_000), default_method(100_000), default_method(1_000_000)
    ('hnsw', 'hnsw', 'ivf')
    """
    return "ivf" if n >= IVF_FROM_ROWS else "hnsw"


def default_lists(n):
    """IVF lists for ``n`` vectors: about sqrt(n), 16 to _MAX_LISTS.

    >>> default_lists(2_000), default_lists(1_000_000), default_lists(10 ** 8)
    (45, 1000, 1024)
    """
    return int(min(max(round(n ** 0.5), 16), _MAX_LISTS))


def _quantizer_kind(faiss, storage):
    return {"float16": faiss.ScalarQuantizer.QT_fp16,
            "int8": faiss.ScalarQuantizer.QT_8bit}[storage]


def new_index(dims, metric, m=16, ef_construction=64, pca_dims=None, storage="float32",
              method="hnsw", lists=None):
    """An empty HNSW (or, with ``method='ivf'``, IVF) index (faiss); entries are numbered in
    the order they are added."""
    faiss = faiss_module()
    inner_metric = faiss.METRIC_INNER_PRODUCT if metric != "l2" and not (
        pca_dims and metric == "cosine") else faiss.METRIC_L2
    width = pca_dims or dims
    if method == "ivf":
        quantizer = faiss.IndexFlat(width, inner_metric)
        if storage == "float32":
            ivf = faiss.IndexIVFFlat(quantizer, width, lists, inner_metric)
        else:
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, width, lists,
                                                _quantizer_kind(faiss, storage), inner_metric)
        quantizer.this.disown()  # the IVF index frees its quantizer
        ivf.own_fields = True
        return ivf
    if storage == "float32":
        hnsw = faiss.IndexHNSWFlat(width, m, inner_metric)
    else:
        hnsw = faiss.IndexHNSWSQ(width, _quantizer_kind(faiss, storage), m, inner_metric)
    hnsw.hnsw.efConstruction = ef_construction
    if pca_dims:
        return faiss.IndexPreTransform(faiss.PCAMatrix(dims, pca_dims), hnsw)
    return hnsw


def add_vectors(index, vectors, metric, train=False):
    """Add rows (any array-like, e.g. a mapped snapshot) a block at a time, so a matrix
    larger than memory never needs a second copy; trains first when asked."""
    faiss = faiss_module()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    if train and not index.is_trained:
        step = max(1, len(vectors) // _TRAIN_ROWS)
        index.train(_prepare(vectors[::step], metric))
    for start in range(0, len(vectors), _ADD_ROWS):
        index.add(_prepare(vectors[start:start + _ADD_ROWS], metric))
    return index


def build_index(vectors, metric, m=16, ef_construction=64, pca_dims=None, storage="float32",
                method="hnsw", lists=None):
    return add_vectors(new_index(vectors.shape[1], metric, m, ef_construction, pca_dims,
                                 storage, method, lists), vectors, metric, train=True)


def ann(index, query, metric, k, effort, alive=None, scores=False):
    """Approximate candidates of each query: entry numbers, best first (-1 padding
    dropped), with faiss' scores when ``scores``. ``effort`` is HNSW's ef_search, or the
    lists an IVF index scans; ``alive`` is a packed bitmap of the entries that may be
    returned."""
    faiss = faiss_module()
    # One query has nothing to split across threads; waking an OpenMP team costs more
    # than the search itself.
    faiss.omp_set_num_threads(1)
    if isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(max(effort, 1), index.nlist)
    else:
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(effort, k)
    selector = None
    if alive is not None:
        selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(alive))
        params.sel = selector
    queries = _prepare(np.atleast_2d(query), metric)
    raw, found = index.search(queries, k, params=params)
    if scores:
        return [(row[row >= 0], score[row >= 0]) for row, score in zip(found, raw)]
    return [row[row >= 0] for row in found]


def index_distance(scores, metric):
    """faiss scores of an unreduced index → pgvision's distances."""
    if metric == "cosine":
        return 1.0 - scores
    if metric == "ip":
        return -scores
    return np.sqrt(np.maximum(scores, 0.0))


class MappedIndex:
    """A mapped index, its entries' image ids (mapped too) and which entries are dead."""

    def __init__(self, handle, faiss_index, entry_ids, dead_bits):
        self.handle = handle          # keeps the object faiss.read_index returned alive
        self.faiss = faiss_index
        self.entry_ids = entry_ids
        # packed, little bit order: an entry replaced or deleted since it was added
        self.dead_bits = dead_bits
        self._alive = {}

    def alive(self, changed):
        """Packed bitmap of entries that may answer (not dead, not changed since the build);
        None when all may (a search without a filter is faster)."""
        key = changed.tobytes()
        if key not in self._alive:
            ok = ~self.dead_bits
            if len(changed):
                ok &= ~np.packbits(np.isin(self.entry_ids, changed), bitorder="little")
            ok = _clear_padding(ok, len(self.entry_ids))
            everyone = int(np.bitwise_count(ok).sum()) == len(self.entry_ids)
            self._alive = {key: None if everyone else ok}
        return self._alive[key]


def _clear_padding(bits, count):
    """``bits`` with the bits past the ``count``-th of its last byte cleared."""
    if count % 8:
        bits = bits.copy()
        bits[-1] &= (1 << count % 8) - 1
    return bits


def entries(row):
    """An index row's entry image ids and dead flags, as stored by :func:`store_index`."""
    entry_ids = np.frombuffer(bytes(row["entry_ids"]), dtype="<i8")
    dead = np.unpackbits(np.frombuffer(bytes(row["dead"]), dtype=np.uint8),
                         count=len(entry_ids), bitorder="little").astype(bool)
    return entry_ids, dead


def _release_freed_memory():
    """Hand the heap freed after mapping an index back to the system: reading a faiss index
    and its row leaves ~8 MB of freed heap a backend would otherwise keep for good (glibc
    trims only the top of its heap), 8 MB more for every session a pool holds."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc: nothing to hand back this way
        pass


def write_index(index):
    """Write a faiss index as a store file: (sha256, size)."""
    tmp = sharedfiles.incoming()
    try:
        faiss_module().write_index(index, tmp)
        return sharedfiles.adopt(tmp, "faiss")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def map_index(sha, entry_ids, dead_bits):
    faiss = faiss_module()
    path = sharedfiles.check(sha, "faiss")
    if path is None:
        return None
    handle = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
    return MappedIndex(handle, faiss.downcast_index(handle), entry_ids, dead_bits)


_ROW = "FROM vision.indexes WHERE model = $1 AND source = $2 AND generation = $3"


def mapped(plpy, GD, fn, model, source, current):
    """The mapped index of (model, source), cached by generation; None (with a WARNING) when
    its stored bytes are damaged, or (silently) when it was replaced since ``current``."""
    cache = GD.setdefault(INDEX_CACHE, {})
    hit = cache.get((model, source))
    if hit is not None and hit[0] == current["index_generation"]:
        return hit[1]
    # the row is read by generation: one rebuilt since ``current`` is the next call's
    key = [model, source, current["index_generation"]]
    found = plpy.execute(spi.plan(
        plpy, GD, "SELECT pg_catalog.encode(pg_catalog.sha256(entry_ids), 'hex') AS ids_sha256,"
        " entries, dead " + _ROW, ["text", "oid", "int8"]), key)
    sha = current["index_sha"]
    entry_ids = _entry_ids(plpy, GD, key, sha, found[0]["ids_sha256"],
                           found[0]["entries"]) if found else None
    if entry_ids is None:
        return None
    dead_bits = np.frombuffer(bytes(found[0]["dead"]), dtype=np.uint8)
    index = map_index(sha, entry_ids, dead_bits)
    if index is None and restore(plpy, GD, model, source, sha):
        index = map_index(sha, entry_ids, dead_bits)
    if index is None:
        plpy.warning(f"{fn}: the stored index of model {model!r} is corrupted (checksum "
                     "mismatch); using exact search. Rebuild it with vision.create_index.")
    cache[(model, source)] = (current["index_generation"], index)
    _release_freed_memory()
    return index


def _entry_ids(plpy, GD, key, index_sha, ids_sha, count):
    """An index's entry ids, mapped from their store file: a companion of the index's,
    written from ``vision.indexes.entry_ids`` by the first backend that needs it. None when
    the row (``key``: model, source, generation) was replaced since ``ids_sha`` was read."""
    if not count:
        return np.zeros(0, dtype="<i8")
    path = sharedfiles.check(ids_sha, "ids", owner=index_sha)
    if path is None:
        stored = plpy.execute(spi.plan(plpy, GD, "SELECT entry_ids " + _ROW,
                                       ["text", "oid", "int8"]), key)
        if not stored:
            return None
        written, _ = sharedfiles.write_parts("ids", [stored[0]["entry_ids"]], owner=index_sha)
        del stored
        if written != ids_sha:
            sharedfiles.remove(written, "ids", owner=index_sha)
            return None
        path = sharedfiles.path_of(ids_sha, "ids", owner=index_sha)
    entry_ids = np.memmap(path, dtype="<i8", mode="r")
    return entry_ids if len(entry_ids) == count else None


def restore(plpy, GD, model, source, sha):
    """Write the index file again from its chunks in vision.index_chunks; whether they
    matched the index's checksum."""
    cursor = plpy.cursor(spi.plan(plpy, GD, "SELECT data FROM vision.index_chunks "
                                  "WHERE model = $1 AND source = $2 ORDER BY part",
                                  ["text", "oid"]), [model, source])

    def parts():
        while True:
            rows = cursor.fetch(1)
            if not rows:
                return
            yield bytes(rows[0]["data"])
    written, _ = sharedfiles.write_parts("faiss", parts())
    if written != sha:
        sharedfiles.remove(written, "faiss")
        return False
    return True


def store_index(plpy, GD, model_row, source, snap, index, entry_ids, dead, seconds, params):
    """Write the index file, its chunks and its row (replacing any previous one)."""
    model = model_row["name"]
    sha, size = write_index(index)
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.indexes AS i (model, source, metric, m, ef_construction, ef_search,
            pca_dims, storage, dims, n, entries, snap, entry_ids, dead, sha256, size_bytes,
            build_seconds, method, lists, probes)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::pg_catalog.pg_snapshot, $13,
                $14, $15, $16, $17, $18, $19, $20)
        ON CONFLICT (model, source) DO UPDATE SET metric = EXCLUDED.metric, m = EXCLUDED.m,
            method = EXCLUDED.method, lists = EXCLUDED.lists, probes = EXCLUDED.probes,
            ef_construction = EXCLUDED.ef_construction, ef_search = EXCLUDED.ef_search,
            pca_dims = EXCLUDED.pca_dims, storage = EXCLUDED.storage, dims = EXCLUDED.dims,
            n = EXCLUDED.n, entries = EXCLUDED.entries, snap = EXCLUDED.snap,
            entry_ids = EXCLUDED.entry_ids, dead = EXCLUDED.dead, sha256 = EXCLUDED.sha256,
            size_bytes = EXCLUDED.size_bytes, build_seconds = EXCLUDED.build_seconds,
            generation = pg_catalog.nextval('vision.index_generation_seq'),
            built_at = pg_catalog.clock_timestamp()""",
        ["text", "oid", "text", "int4", "int4", "int4", "int4", "text", "int4", "int8", "int8",
         "text", "bytea", "bytea", "text", "int8", "float8", "text", "int4", "int4"]),
        [model, source, params["metric"], params["m"], params["ef_construction"],
         params["ef_search"], params["pca_dims"], params["storage"], model_row["dims"],
         int((~dead).sum()), len(entry_ids), snap, entry_ids.astype("<i8").tobytes(),
         np.packbits(dead, bitorder="little").tobytes(), sha, size, seconds,
         params["method"], params["lists"], params["probes"]])
    spi.write(plpy, GD, spi.plan(plpy, GD, "DELETE FROM vision.index_chunks "
                                 "WHERE model = $1 AND source = $2", ["text", "oid"]),
              [model, source])
    insert = spi.plan(plpy, GD, "INSERT INTO vision.index_chunks (model, source, part, data) "
                      "VALUES ($1, $2, $3, $4)", ["text", "oid", "int4", "bytea"])
    with open(sharedfiles.path_of(sha, "faiss"), "rb") as fh:
        for part, data in enumerate(iter(lambda: fh.read(CHUNK_BYTES), b"")):
            spi.write(plpy, GD, insert, [model, source, part, data])
    featurestore.forget_changes(plpy, GD, model, source)
    forget(GD, model, source)
    featurestore.collect_garbage(plpy, GD)


def forget(GD, model, source):
    """Drop this backend's mapping of the index of (model, source)."""
    GD.get(INDEX_CACHE, {}).pop((model, source), None)
