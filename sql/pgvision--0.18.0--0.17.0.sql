-- pgvision 0.18.0 → 0.17.0: HNSW indexes only. Refused while a table has IVF lists (0.17.0
-- cannot read them): drop them, or build HNSW ones, first.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.17.0'" to load this file. \quit

-- Never backwards unasked (see pgvision--0.15.0--0.14.0.sql).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.18.0 to 0.17.0 unasked'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
  IF EXISTS (SELECT 1 FROM vision.indexes WHERE method <> 'hnsw') THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.18.0 to 0.17.0: % table(s) have IVF indexes, which 0.17.0 cannot read',
      (SELECT count(*) FROM vision.indexes WHERE method <> 'hnsw')
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Drop them (vision.drop_index) or build HNSW ones (vision.create_index(..., method => ''hnsw'')) first.';
  END IF;
END
$$;

DROP VIEW vision.index_status;
CREATE VIEW vision.index_status WITH (security_invoker = true) AS
  SELECT i.model, i.source, i.metric, i.m, i.ef_construction, i.ef_search, i.pca_dims, i.n,
         i.size_bytes, i.build_seconds, i.built_at, c.pending > 0 AS stale, i.storage,
         i.entries - i.n AS dead_entries, c.pending AS pending_changes
  FROM vision.indexes i
  CROSS JOIN LATERAL (
    SELECT count(DISTINCT f.image_id) AS pending FROM vision.feature_changes f
    WHERE f.model = i.model AND f.source = i.source
      AND f.xid >= pg_snapshot_xmin(i.snap) AND NOT pg_visible_in_snapshot(f.xid, i.snap)) c;
COMMENT ON VIEW vision.index_status IS
  'Indexes, their size and the changes since their build (searched exactly until vision.refresh_index).';
GRANT SELECT ON vision.index_status TO PUBLIC;

DROP FUNCTION vision.create_index(regclass, text, text, integer, integer, integer, integer, text,
                                  text, integer, integer);
CREATE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3_mixed6_grid',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40,
  pca_dims        integer DEFAULT NULL,
  storage         text    DEFAULT 'float32'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims, storage)
$$;
COMMENT ON FUNCTION vision.create_index IS
  'Build (or rebuild) the HNSW index over a table''s features; returns the number of vectors.';

ALTER TABLE vision.indexes DROP CONSTRAINT indexes_ivf_parameters,
  DROP COLUMN method, DROP COLUMN lists, DROP COLUMN probes;
COMMENT ON TABLE vision.indexes IS
  'HNSW indexes built by vision.create_index: parameters, entries'' image ids and the checksum of the faiss file.';
