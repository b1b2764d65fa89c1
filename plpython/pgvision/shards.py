"""Sharded pgvision: the coordinator (the ``pgvision_cluster`` extension), on which PL/Proxy
runs pgvision functions on every shard at once and postgres_fdw gives one table to read, and
the shard side's check that it runs what the coordinator runs.

Every shard is a full Postgres with pgvision and its slice of the images. The coordinator
holds a PL/Proxy cluster named ``pgvision`` over the shards, one postgres_fdw server per
shard (``pgvision_shard_<i>``), and the ``vision_cluster`` functions that fan calls out and
merge what comes back. Shards are addressed by libpq connection strings.
"""

import json

from . import __version__, featurestore, halfprecision, registry, snapshots, spi
from .classify import read_labels
from .extract import features_of
from .recommend import (POPULARITY, moments_of, payload_bytes, preferences,
                        validate_recommend)
from .shardlinks import (EXPORTS, FDW_PREFIX, PROXY_SERVER, USER_KEYS, fan_out, literal,
                         option_list, qualified_table, validate_shards)
from .errors import (DUPLICATE_OBJECT, INVALID_PARAMETER, OBJECT_IN_USE, UNDEFINED_OBJECT,
                     PgvisionError, require, require_int_range, require_not_null)

FN_SETUP = "vision_cluster.setup"
FN_DISTRIBUTE = "vision_cluster.distribute_table"
FN_SIMILAR = "vision_cluster.similar"
FN_SIMILAR_VECTOR = "vision_cluster.similar_to_vector"
FN_SIMILAR_IMAGE = "vision_cluster.similar_to_image"
FN_EXTRACT = "vision_cluster.extract"
FN_CREATE_INDEX = "vision_cluster.create_index"
FN_PUSH = "vision_cluster.push_model"
FN_TRAIN = "vision_cluster.train_classifier"
FN_CLASSIFY_TABLE = "vision_cluster.classify_table"
FN_VOTE = "vision_cluster.record_vote"
FN_RECOMMEND = "vision_cluster.recommend"
FN_SEARCH_TEXT = "vision_cluster.search_text"
# knn keeps its labelled images' ids and reads their features where it predicts.
CLUSTER_METHODS = ("softmax", "logistic", "sgd")


def setup(plpy, GD, shards, replace=False):
    """Create (or with ``replace``, re-create) the PL/Proxy cluster, the postgres_fdw servers
    and user mappings and the ``vision_cluster.features`` view; then refuse shards whose
    pgvision version differs from the coordinator's. Returns the number of shards."""
    fn = FN_SETUP
    parsed = validate_shards(fn, shards)
    require_not_null(fn, "replace", replace)
    existing = plpy.execute("SELECT srvname FROM pg_catalog.pg_foreign_server "
                            f"WHERE srvname = {literal(plpy, PROXY_SERVER)} "
                            f"OR srvname LIKE {literal(plpy, FDW_PREFIX + '%')}")
    if existing and not replace:
        raise PgvisionError(fn, f"a cluster is already set up ({len(existing) - 1} shards)",
                            DUPLICATE_OBJECT, hint="Pass replace => true to set it up anew.")
    for row in existing:
        plpy.execute(f"DROP SERVER {plpy.quote_ident(row['srvname'])} CASCADE")
    partitions = ", ".join(f"p{i} {literal(plpy, dsn)}" for i, dsn in enumerate(shards))
    plpy.execute(f"CREATE SERVER {PROXY_SERVER} FOREIGN DATA WRAPPER plproxy "
                 f"OPTIONS (connection_lifetime '1800', {partitions})")
    plpy.execute(f"CREATE USER MAPPING FOR PUBLIC SERVER {PROXY_SERVER}")
    selects = {view: [] for view in EXPORTS}
    for i, pairs in enumerate(parsed):
        server = f"{FDW_PREFIX}{i}"
        server_opts = {k: v for k, v in pairs.items() if k not in USER_KEYS}
        user_opts = {k: v for k, v in pairs.items() if k in USER_KEYS}
        plpy.execute(f"CREATE SERVER {server} FOREIGN DATA WRAPPER postgres_fdw "
                     f"OPTIONS ({option_list(plpy, server_opts)})")
        plpy.execute(f"CREATE USER MAPPING FOR PUBLIC SERVER {server}" +
                     (f" OPTIONS ({option_list(plpy, user_opts)})" if user_opts else ""))
        for view, (shard_view, columns) in EXPORTS.items():
            plpy.execute(f"CREATE FOREIGN TABLE vision_cluster.{view}_shard_{i} ({columns}) "
                         f"SERVER {server} OPTIONS (schema_name 'vision', "
                         f"table_name '{shard_view}')")
            selects[view].append(f"SELECT {i} AS shard, * FROM vision_cluster.{view}_shard_{i}")
    for view in EXPORTS:
        plpy.execute(f"CREATE VIEW vision_cluster.{view} AS " + " UNION ALL ".join(selects[view]))
        plpy.execute(f"COMMENT ON VIEW vision_cluster.{view} IS 'Every shard''s vision.{view} "
                     "(source as a qualified table name), read through postgres_fdw.'")
        plpy.execute(f"GRANT SELECT ON vision_cluster.{view} TO PUBLIC")
    nodes = fan_out(plpy, fn, "SELECT node, version FROM vision_cluster.nodes()", [], [])
    wrong = [f"{r['node']} runs {r['version']}" for r in nodes if r["version"] != __version__]
    if wrong:
        raise PgvisionError(fn, f"the coordinator runs pgvision {__version__}, but node "
                            + ", ".join(wrong), OBJECT_IN_USE,
                            hint="Install one pgvision version on every node.")
    return len(shards)


def distribute_table(plpy, GD, name, id_column="id"):
    """Give the coordinator one table over a table that exists on every shard: a table
    partitioned by hash of ``id_column`` whose partitions are the shards' tables (postgres_fdw
    foreign tables). Inserting into it routes each row to its shard; reading it reads all."""
    fn = FN_DISTRIBUTE
    require_not_null(fn, "name", name)
    require_not_null(fn, "id_column", id_column)
    parts = plpy.execute(f"SELECT pg_catalog.parse_ident({literal(plpy, name)}) AS p")[0]["p"]
    require(fn, "name", name, len(parts) in (1, 2), "a table name, optionally schema-qualified")
    schema, table = (["public"] + parts)[-2:]
    shards = plpy.execute(f"SELECT srvname FROM pg_catalog.pg_foreign_server WHERE srvname LIKE "
                          f"{literal(plpy, FDW_PREFIX + '%')} ORDER BY srvname")
    if not shards:
        raise PgvisionError(fn, "no cluster is set up", INVALID_PARAMETER,
                            hint="SELECT vision_cluster.setup(ARRAY['host=... dbname=...', ...])")
    staging = "vision_cluster_import"
    qi = plpy.quote_ident
    plpy.execute(f"CREATE SCHEMA {staging}")
    try:
        plpy.execute(f"IMPORT FOREIGN SCHEMA {qi(schema)} LIMIT TO ({qi(table)}) "
                     f"FROM SERVER {FDW_PREFIX}0 INTO {staging}")
        columns = plpy.execute(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = "
            f"pg_catalog.to_regclass({literal(plpy, staging + '.' + qi(table))}) AND attnum > 0")
        if not columns:
            raise PgvisionError(fn, f'argument "name": shard 0 has no table {schema}.{table}',
                                INVALID_PARAMETER, hint="Create it on every shard first.")
        require(fn, "id_column", id_column, id_column in [c["attname"] for c in columns],
                f"a column of {schema}.{table}")
        plpy.execute(f"CREATE TABLE {qi(schema)}.{qi(table)} (LIKE {staging}.{qi(table)}) "
                     f"PARTITION BY HASH ({qi(id_column)})")
    finally:
        plpy.execute(f"DROP SCHEMA {staging} CASCADE")
    count = len(shards)
    for i in range(count):
        plpy.execute(f"CREATE FOREIGN TABLE {qi(schema)}.{qi(f'{table}_shard_{i}')} PARTITION OF "
                     f"{qi(schema)}.{qi(table)} FOR VALUES WITH (MODULUS {count}, REMAINDER {i}) "
                     f"SERVER {FDW_PREFIX}{i} OPTIONS (schema_name {literal(plpy, schema)}, "
                     f"table_name {literal(plpy, table)})")
    return count



def _version_and_sha(plpy, GD, fn, model):
    return __version__, registry.lookup(plpy, GD, fn, model, makes=None)["sha256"]


def extract(plpy, GD, source, id_column="id", image_column="image", model=None, batch_size=32,
            max_rows=1000):
    """``vision.extract_rows`` on every shard at once: rows (node, processed, failed,
    remaining), one per shard."""
    fn = FN_EXTRACT
    require_not_null(fn, "source", source)
    version, sha = _version_and_sha(plpy, GD, fn, model)
    rows = fan_out(plpy, fn, "SELECT * FROM vision_cluster._extract($1, $2, $3, $4, $5, $6, $7, "
                   "$8) ORDER BY node", ["text", "text", "text", "text", "text", "text", "int4",
                                         "int4"],
                   [version, sha, source, id_column, image_column, model, batch_size, max_rows])
    return [(r["node"], r["processed"], r["failed"], r["remaining"]) for r in rows]


def _top_k(plpy, fn, version, sha, feature, source, k, model, metric):
    """Each shard's exact top k for a feature vector, merged: the global top k. Rows
    (image_id, distance, rank, node)."""
    rows = fan_out(plpy, fn, "SELECT image_id, distance, node FROM vision_cluster."
                   "_similar_to_vector($1, $2, $3, $4, $5, $6, $7) ORDER BY distance, image_id "
                   "LIMIT $4", ["text", "text", "float4[]", "int4", "text", "text", "text"],
                   [version, sha, feature, k, model, metric, source])
    return [(r["image_id"], r["distance"], rank, r["node"])
            for rank, r in enumerate(rows, start=1)]


def _validate_search(fn, source, k, max_k=10_000):
    require_not_null(fn, "source", source)
    require_int_range(fn, "k", k, 1, max_k)


def similar_to_vector(plpy, GD, feature, source, k=10, model=None, metric="cosine"):
    """The global top k for a feature vector computed elsewhere."""
    fn = FN_SIMILAR_VECTOR
    require_not_null(fn, "feature", feature)
    _validate_search(fn, source, k)
    version, sha = _version_and_sha(plpy, GD, fn, model)
    return _top_k(plpy, fn, version, sha, feature, source, k, model, metric)


def similar(plpy, GD, image_id, source, k=10, model=None, metric="cosine"):
    """``vision.similar`` across shards: the query image's features come from whichever shard
    holds it, then every shard returns its exact top k + 1 and the best k (without the image
    itself) are the global answer."""
    fn = FN_SIMILAR
    require_not_null(fn, "image_id", image_id)
    _validate_search(fn, source, k, 9999)
    version, sha = _version_and_sha(plpy, GD, fn, model)
    found = fan_out(plpy, fn, "SELECT f FROM vision_cluster._feature($1, $2, $3) AS f LIMIT 1",
                    ["text", "text", "int8"], [model, source, image_id])
    if not found:
        raise PgvisionError(fn, f'argument "image_id": image {image_id} of {source} has no '
                            f"features for model {model!r} on any shard", UNDEFINED_OBJECT,
                            hint="SELECT * FROM vision_cluster.extract(...) extracts them.")
    rows = _top_k(plpy, fn, version, sha, found[0]["f"], source, k + 1, model, metric)
    rows = [r for r in rows if r[0] != image_id][:k]
    return [(i, d, rank, node) for rank, (i, d, _, node) in enumerate(rows, start=1)]


def similar_to_image(plpy, GD, image, source, k=10, model=None, metric="cosine"):
    """Features of new image bytes on the coordinator, then the global top k."""

    fn = FN_SIMILAR_IMAGE
    _validate_search(fn, source, k)
    row = registry.lookup(plpy, GD, fn, model)
    feature = features_of(plpy, GD, fn, image, row)
    return _top_k(plpy, fn, __version__, row["sha256"], feature, source, k, model, metric)


def search_text(plpy, GD, query, source, k=10, model="pp_ocr_v6"):
    """``vision.search_text`` across shards: every shard ranks its own images' text, the best
    k of all win (``ts_rank`` depends on each document alone, so the merge is exact). Rows
    (image_id, rank, text, node)."""
    fn = FN_SEARCH_TEXT
    for argument, value in (("query", query), ("k", k)):
        require_not_null(fn, argument, value)
    _validate_search(fn, source, k)
    sha = registry.lookup(plpy, GD, fn, model, makes="text")["sha256"]
    rows = fan_out(plpy, fn, "SELECT image_id, rank, text, node FROM vision_cluster._search_text("
                   "$1, $2, $3, $4, $5, $6) ORDER BY rank DESC, image_id LIMIT $5",
                   ["text", "text", "text", "text", "int4", "text"],
                   [__version__, sha, query, source, k, model])
    return [(r["image_id"], r["rank"], r["text"], r["node"]) for r in rows]


def create_index(plpy, GD, source, model=None, metric="cosine", m=16, ef_construction=64,
                 ef_search=40):
    fn = FN_CREATE_INDEX
    require_not_null(fn, "source", source)
    version, sha = _version_and_sha(plpy, GD, fn, model)
    rows = fan_out(plpy, fn, "SELECT * FROM vision_cluster._create_index($1, $2, $3, $4, $5, $6, "
                   "$7, $8) ORDER BY node", ["text", "text", "text", "text", "text", "int4",
                                             "int4", "int4"],
                   [version, sha, source, model, metric, m, ef_construction, ef_search])
    return [(r["node"], r["vectors"]) for r in rows]


def push_model(plpy, GD, name):
    """Copy a model of the coordinator's registry to every shard whose copy differs."""
    fn = FN_PUSH
    registry.lookup(plpy, GD, fn, name, argument="name", makes=None)
    rows = fan_out(plpy, fn, """
        SELECT r.node, r.status FROM vision.model_store m,
          LATERAL vision_cluster._register_model(
            m.name, coalesce(m.model_bytes, pg_catalog.pg_read_binary_file(m.model_path)),
            m.sha256, m.preprocessing, m.feature_layer, m.pooling, m.input_height,
            m.input_width, m.provenance) AS r
        WHERE m.name = $1 ORDER BY r.node""", ["text"], [name])
    return [(r["node"], r["status"]) for r in rows]


# --- classification and recommendations: train on the coordinator, score on the shards ----
# The coordinator keeps, in its own vision.features, the features of the images it trains on
# (labelled or voted images), copied from their shards; the source there is the coordinator's
# distributed table. Training code is then pgvision's own, unchanged. What it produces (a
# classifier, a user's preferences) goes to the shards, where each scores its own images.

def _copy_features(plpy, GD, fn, version, sha, model, source, ids):
    """Copy the features of ``ids`` from whichever shards hold them into the coordinator's
    vision.stored_features; returns the ids found."""
    rows = fan_out(plpy, fn, "SELECT image_id, feature FROM vision_cluster._features($1, $2, $3, "
                   "$4, $5)", ["text", "text", "text", "text", "int8[]"],
                   [version, sha, model, source, list(ids)])
    save = spi.plan(plpy, GD, """
        INSERT INTO vision.stored_features (model, source, image_id, feature, half)
        VALUES ($1, $2::regclass, $3, $4::float4[], $5)
        ON CONFLICT (model, source, image_id) DO UPDATE SET feature = EXCLUDED.feature,
            half = EXCLUDED.half, extracted_at = pg_catalog.now()""",
        ["text", "text", "int8", "text", "bytea"])
    for r in rows:
        spi.write(plpy, GD, save, [model, source, r["image_id"],
                                   *halfprecision.stored(r["feature"])])
    return {r["image_id"] for r in rows}


def _labelled_ids(plpy, fn, labels, options):
    _, rows = read_labels(plpy, fn, labels, json.loads(options or "{}"))
    return sorted({r["id"] for r in rows if r["id"] is not None})


def train_classifier(plpy, GD, name, labels, source, model=None, method="logistic",
                     options=None, folds=5, replace=False):
    """vision.train_classifier over features copied from the shards, then stored on every
    shard; returns the cross-validated metrics."""
    fn = FN_TRAIN
    for argument, value in (("name", name), ("labels", labels), ("source", source)):
        require_not_null(fn, argument, value)
    require(fn, "method", method, method in CLUSTER_METHODS,
            f"one of {', '.join(CLUSTER_METHODS)} (knn votes over its labelled images' "
            "features, which live on many shards)")
    require_not_null(fn, "replace", replace)
    if not replace and plpy.execute(plpy.prepare(
            "SELECT 1 FROM vision.classifiers WHERE name = $1", ["text"]), [name]):
        raise PgvisionError(fn, f'argument "name": a classifier named {name!r} exists',
                            DUPLICATE_OBJECT, hint="Pass replace => true to retrain it.")
    labels = qualified_table(plpy, fn, labels, "labels")
    source = qualified_table(plpy, fn, source)  # as the caller wrote it
    with spi.pinned_search_path(plpy):
        version, sha = _version_and_sha(plpy, GD, fn, model)
        # Errors of the training itself name vision.train_classifier, which runs it here.
        _copy_features(plpy, GD, fn, version, sha, model, source,
                       _labelled_ids(plpy, fn, labels, options))
        metrics = plpy.execute(plpy.prepare(
            "SELECT vision.train_classifier($1, $2, $3::regclass, $4, $5, $6, $7, $8) AS m",
            ["text", "regclass", "text", "text", "text", "jsonb", "int4", "bool"]),
            [name, labels, source, model, method, options, folds, replace])[0]["m"]
        fan_out(plpy, fn, """
            SELECT vision_cluster._put_classifier($1, $2, c.name, c.model, $3, c.method, c.options,
                     c.labels, c.dims, c.weights, c.train_ids, c.train_targets, c.metrics,
                     c.trained_at)
            FROM vision.classifiers c WHERE c.name = $4""", ["text", "text", "text", "text"],
            [version, sha, source, name])
        return metrics


def classify_table(plpy, GD, classifier, batch_size=1000):
    """vision.classify_table on every shard; rows (node, labelled)."""
    fn = FN_CLASSIFY_TABLE
    require_not_null(fn, "classifier", classifier)
    require_int_range(fn, "batch_size", batch_size, 1, 100_000)
    rows = plpy.execute(plpy.prepare("SELECT model, trained_at FROM vision.classifiers "
                                     "WHERE name = $1", ["text"]), [classifier])
    if not rows:
        raise PgvisionError(fn, f'argument "classifier" names no classifier of the coordinator: '
                            f"{classifier!r}", UNDEFINED_OBJECT,
                            hint="vision_cluster.train_classifier(...) trains one for the shards.")
    model, trained_at = rows[0]["model"], rows[0]["trained_at"]
    version, sha = _version_and_sha(plpy, GD, fn, model)
    done = fan_out(plpy, fn, "SELECT node, labelled FROM vision_cluster._classify_table($1, $2, "
                   "$3, $4, $5, $6) ORDER BY node", ["text", "text", "text", "text",
                                                     "timestamptz", "int4"],
                   [version, sha, model, classifier, trained_at, batch_size])
    stale = [r["node"] for r in done if r["labelled"] is None]
    if stale:
        raise PgvisionError(fn, f"classifier {classifier!r} on {', '.join(stale)} is not the "
                            f"coordinator's (trained {trained_at})", OBJECT_IN_USE,
                            hint="vision_cluster.train_classifier(..., replace => true) stores "
                            "it on every shard again; the other shards kept their labels.")
    return [(r["node"], r["labelled"]) for r in done]


def record_vote(plpy, GD, user_id, image_id, liked, source, model=None):
    """vision.record_vote on the coordinator, after copying the image's features there."""
    fn = FN_VOTE
    for argument, value in (("user_id", user_id), ("image_id", image_id), ("liked", liked),
                            ("source", source)):
        require_not_null(fn, argument, value)
    source = qualified_table(plpy, fn, source)  # as the caller wrote it
    with spi.pinned_search_path(plpy):
        version, sha = _version_and_sha(plpy, GD, fn, model)
        if not _copy_features(plpy, GD, fn, version, sha, model, source, [image_id]):
            raise PgvisionError(fn, f'argument "image_id": image {image_id} of {source} has no '
                                f"features for model {model!r} on any shard", UNDEFINED_OBJECT,
                                hint="SELECT * FROM vision_cluster.extract(...) extracts them.")
        return plpy.execute(plpy.prepare(
            "SELECT vision.record_vote($1, $2, $3, $4, $5::regclass) AS changed",
            ["text", "int8", "bool", "text", "text"]),
            [user_id, image_id, liked, model, source])[0]["changed"]


def recommend(plpy, GD, user_id, source, k=10, exclude_seen=True, model=None):
    """vision.recommend across shards: the user's preferences (votes and taste model, kept on
    the coordinator) go to every shard, each returns its best k, the best k of all win."""
    fn = FN_RECOMMEND
    validate_recommend(fn, user_id, k, exclude_seen)
    require_not_null(fn, "source", source)
    source = qualified_table(plpy, fn, source)  # as the caller wrote it
    with spi.pinned_search_path(plpy):
        model_row = registry.lookup(plpy, GD, fn, model)
        source_oid = featurestore.resolve_source(plpy, GD, fn, model_row["name"], source)
        strategy, payload, seen = preferences(
            plpy, GD, user_id, model_row, source_oid,
            lambda: snapshots.load_for(plpy, GD, fn, model_row, source_oid))
        if strategy != POPULARITY:  # scores standardised over the whole catalog, as on a node
            raw = fan_out(plpy, fn, "SELECT moments FROM vision_cluster._score_moments("
                          "$1, $2, $3, $4, $5)", ["text", "text", "text", "text", "bytea"],
                          [__version__, model_row["sha256"], model, source,
                           payload_bytes(payload)])
            payload["moments"] = moments_of([r["moments"] for r in raw])
        taste = None if strategy == POPULARITY else payload_bytes(payload)
        popular = payload if strategy == POPULARITY else ([], [])
        rows = fan_out(plpy, fn, """
            SELECT image_id, score, node FROM vision_cluster._recommend($1, $2, $3, $4, $5, $6, $7,
                     $8, $9, $10) ORDER BY score DESC, image_id LIMIT $5""",
            ["text", "text", "text", "text", "int4", "int8[]", "text", "bytea", "int8[]",
             "float4[]"],
            [__version__, model_row["sha256"], model, source, k,
             [int(i) for i in seen] if exclude_seen else [], strategy, taste,
             [int(i) for i in popular[0]], [float(v) for v in popular[1]]])
        return [(r["image_id"], r["score"], strategy, r["node"]) for r in rows]


# --- the shard side: refuse to serve a coordinator that runs something else ---------------

FN_CHECK_NODE = "vision.check_node"


def check_node(plpy, GD, version, model, sha256):
    """Refuse to serve a cluster call when this node's pgvision or model differs from the
    coordinator's; return this node's name (cluster_name, port and database)."""
    node = plpy.execute(spi.plan(plpy, GD, "SELECT vision.node_name() AS node"))[0]["node"]
    if version != __version__:
        raise PgvisionError(FN_CHECK_NODE, f"node {node} runs pgvision {__version__}, the "
                            f"coordinator {version}", OBJECT_IN_USE,
                            hint="Install one pgvision version on every node.")
    if model is not None:
        if sha256 is None:
            raise PgvisionError(FN_CHECK_NODE, f"the coordinator has no model named {model!r}",
                                UNDEFINED_OBJECT)
        row = registry.lookup(plpy, GD, FN_CHECK_NODE, model, makes=None)
        if row["sha256"] != sha256:
            raise PgvisionError(FN_CHECK_NODE, f"node {node} has another model {model!r} "
                                f"(sha256 {row['sha256'][:12]}…, coordinator {str(sha256)[:12]}…)",
                                OBJECT_IN_USE,
                                hint=f"SELECT vision_cluster.push_model('{model}') copies the "
                                "coordinator's model to every shard.")
    return node
