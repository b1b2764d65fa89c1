-- pgvision 0.1.0 → 0.2.0: visual search (exact and HNSW), cached neighbours.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.2.0'" to load this file. \quit

-- Feature versions: bumped by every change to vision.features, so backends know when their
-- cached feature matrices and indexes are stale (one primary-key lookup per search).
CREATE SEQUENCE vision.feature_version_seq;
CREATE TABLE vision.feature_versions (
  model   text NOT NULL,
  source  regclass NOT NULL,
  version bigint NOT NULL DEFAULT nextval('vision.feature_version_seq'),
  PRIMARY KEY (model, source)
);
COMMENT ON TABLE vision.feature_versions IS
  'One row per (model, source) that has features, with a version that changes on every change (triggers).';
INSERT INTO vision.feature_versions (model, source)
  SELECT DISTINCT model, source FROM vision.features;
SELECT pg_catalog.pg_extension_config_dump('vision.feature_versions', '');
SELECT pg_catalog.pg_extension_config_dump('vision.feature_version_seq', '');

-- Versions come from a sequence, never reused: a table emptied and refilled never looks
-- like the one a backend cached.
CREATE FUNCTION vision._bump_feature_versions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM vision.feature_versions;
    RETURN NULL;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO vision.feature_versions AS v (model, source)
      SELECT DISTINCT model, source FROM new_rows
      ON CONFLICT (model, source) DO UPDATE SET version = nextval('vision.feature_version_seq');
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    UPDATE vision.feature_versions v SET version = nextval('vision.feature_version_seq')
      FROM (SELECT DISTINCT model, source FROM old_rows) o
      WHERE v.model = o.model AND v.source = o.source;
    DELETE FROM vision.feature_versions v
      USING (SELECT DISTINCT model, source FROM old_rows) o
      WHERE v.model = o.model AND v.source = o.source
        AND NOT EXISTS (SELECT 1 FROM vision.features f
                        WHERE f.model = v.model AND f.source = v.source);
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER bump_on_insert AFTER INSERT ON vision.features
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION vision._bump_feature_versions();
CREATE TRIGGER bump_on_update AFTER UPDATE ON vision.features
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION vision._bump_feature_versions();
CREATE TRIGGER bump_on_delete AFTER DELETE ON vision.features
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
  EXECUTE FUNCTION vision._bump_feature_versions();
CREATE TRIGGER bump_on_truncate AFTER TRUNCATE ON vision.features
  FOR EACH STATEMENT EXECUTE FUNCTION vision._bump_feature_versions();
-- A changed feature is a newly extracted one, whoever updates it.
CREATE FUNCTION vision._touch_feature() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.extracted_at := clock_timestamp();
  RETURN NEW;
END
$$;
CREATE TRIGGER touch_on_update BEFORE UPDATE OF feature ON vision.features
  FOR EACH ROW EXECUTE FUNCTION vision._touch_feature();

-- Everything pgvision keeps about a dropped table goes with it: rows of every vision table
-- with a `source regclass` column (so later versions' tables are covered too).
CREATE FUNCTION vision._forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  dropped oid[];
  keeper regclass;
BEGIN
  SELECT array_agg(objid) INTO dropped FROM pg_event_trigger_dropped_objects()
    WHERE object_type = 'table' AND schema_name <> 'vision';
  IF dropped IS NULL THEN
    RETURN;
  END IF;
  FOR keeper IN
    SELECT a.attrelid::regclass FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = 'vision'::regnamespace AND c.relkind = 'r'
      AND a.attname = 'source' AND a.atttypid = 'regclass'::regtype AND NOT a.attisdropped
  LOOP
    EXECUTE format('DELETE FROM %s WHERE source::oid = ANY ($1)', keeper) USING dropped;
  END LOOP;
END
$$;
CREATE EVENT TRIGGER pgvision_forget_dropped_tables ON sql_drop
  WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
  EXECUTE FUNCTION vision._forget_dropped_tables();

-- HNSW indexes (faiss), one per (model, source), stored so every backend can load them.
CREATE TABLE vision.indexes (
  model           text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE
                    ON DELETE CASCADE,
  source          regclass NOT NULL,
  metric          text NOT NULL CHECK (metric IN ('cosine', 'l2', 'ip')),
  m               integer NOT NULL,
  ef_construction integer NOT NULL,
  ef_search       integer NOT NULL,
  pca_dims        integer,
  dims            integer NOT NULL,
  n               bigint NOT NULL,
  built_version   bigint NOT NULL,
  index_bytes     bytea NOT NULL,
  sha256          text NOT NULL,
  build_seconds   double precision NOT NULL,
  built_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (model, source)
);
ALTER TABLE vision.indexes ALTER COLUMN index_bytes SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('vision.indexes', '');
COMMENT ON TABLE vision.indexes IS 'HNSW indexes built by vision.create_index (faiss bytes).';

CREATE VIEW vision.index_status AS
  SELECT i.model, i.source, i.metric, i.m, i.ef_construction, i.ef_search, i.pca_dims, i.n,
         octet_length(i.index_bytes) AS size_bytes, i.build_seconds, i.built_at,
         i.built_version <> coalesce(v.version, 0) AS stale
  FROM vision.indexes i
  LEFT JOIN vision.feature_versions v USING (model, source);
COMMENT ON VIEW vision.index_status IS
  'Indexes and whether they are stale (search then falls back to exact until refreshed).';

-- Cached neighbours: each image's k nearest, maintained by vision.refresh_neighbours.
CREATE TABLE vision.neighbours (
  model         text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE
                  ON DELETE CASCADE,
  source        regclass NOT NULL,
  image_id      bigint NOT NULL,
  k             integer NOT NULL,
  metric        text NOT NULL,
  neighbour_ids bigint[] NOT NULL,
  distances     real[] NOT NULL,
  refreshed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (model, source, image_id)
);
COMMENT ON TABLE vision.neighbours IS 'Each image''s k nearest neighbours, nearest first.';
SELECT pg_catalog.pg_extension_config_dump('vision.neighbours', '');

CREATE FUNCTION vision.similar(
  image_id    bigint,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10 AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.similar, image_id, k, model, metric, source,
                       candidates, approximate)
$$;
COMMENT ON FUNCTION vision.similar IS
  'The k stored images nearest to a stored image (itself excluded): exact, or through the HNSW index when one is fresh.';

CREATE FUNCTION vision.similar_to_image(
  image       bytea,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10 AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.similar_to_image, image, k, model, metric, source,
                       candidates, approximate)
$$;
COMMENT ON FUNCTION vision.similar_to_image IS
  'The k stored images nearest to new image bytes (features extracted on the fly).';

CREATE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40,
  pca_dims        integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.create_index, source, model, metric, m,
                       ef_construction, ef_search, pca_dims)
$$;
COMMENT ON FUNCTION vision.create_index IS
  'Build (or rebuild) the HNSW index over a table''s features; returns the number of vectors.';

CREATE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS text
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.refresh_index, source, model)
$$;
COMMENT ON FUNCTION vision.refresh_index IS
  'Bring an index up to date: adds new images, rebuilds if images changed or were deleted.';

CREATE FUNCTION vision.drop_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS boolean
LANGUAGE sql VOLATILE AS $$
  WITH d AS (DELETE FROM vision.indexes i WHERE i.model = $2 AND i.source = $1 RETURNING 1)
  SELECT count(*) > 0 FROM d
$$;
COMMENT ON FUNCTION vision.drop_index IS 'Drop a table''s index; true if there was one.';

CREATE FUNCTION vision.refresh_neighbours(
  source regclass,
  model  text    DEFAULT 'inception_v3',
  k      integer DEFAULT 10,
  metric text    DEFAULT 'cosine'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.refresh_neighbours, source, model, k, metric)
$$;
COMMENT ON FUNCTION vision.refresh_neighbours IS
  'Materialise every image''s k nearest neighbours into vision.neighbours, incrementally; returns rows written.';

GRANT SELECT, INSERT, UPDATE, DELETE ON vision.feature_versions TO PUBLIC;
GRANT USAGE ON SEQUENCE vision.feature_version_seq TO PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON vision.indexes, vision.neighbours TO PUBLIC;
GRANT SELECT ON vision.index_status TO PUBLIC;
