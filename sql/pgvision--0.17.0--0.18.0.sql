-- pgvision 0.17.0 → 0.18.0
-- * IVF lists beside HNSW graphs (#28): vision.create_index(..., method, lists, probes); by
--   default a table of 500,000 images or more gets IVF lists, a smaller one HNSW, as
--   before. vision.indexes and vision.index_status gain method, lists and probes; the
--   session setting pgvision.probes trades an IVF search's recall for speed.
-- * An indexed table's shared snapshot file holds half precision (no SQL changes).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.18.0'" to load this file. \quit

-- Existing indexes are HNSW graphs; adding columns with constant defaults rewrites nothing.
ALTER TABLE vision.indexes
  ADD COLUMN method text NOT NULL DEFAULT 'hnsw' CHECK (method IN ('hnsw', 'ivf')),
  ADD COLUMN lists integer CHECK (lists > 0),
  ADD COLUMN probes integer CHECK (probes > 0),
  ADD CONSTRAINT indexes_ivf_parameters CHECK ((method = 'ivf') = (lists IS NOT NULL AND probes IS NOT NULL));
COMMENT ON TABLE vision.indexes IS
  'Indexes built by vision.create_index (HNSW graphs or IVF lists): parameters, entries'' image ids and the checksum of the faiss file.';

CREATE OR REPLACE VIEW vision.index_status WITH (security_invoker = true) AS
  SELECT i.model, i.source, i.metric, i.m, i.ef_construction, i.ef_search, i.pca_dims, i.n,
         i.size_bytes, i.build_seconds, i.built_at, c.pending > 0 AS stale, i.storage,
         i.entries - i.n AS dead_entries, c.pending AS pending_changes, i.method, i.lists,
         i.probes
  FROM vision.indexes i
  CROSS JOIN LATERAL (
    SELECT count(DISTINCT f.image_id) AS pending FROM vision.feature_changes f
    WHERE f.model = i.model AND f.source = i.source
      AND f.xid >= pg_snapshot_xmin(i.snap) AND NOT pg_visible_in_snapshot(f.xid, i.snap)) c;

-- three arguments more: one function, not an overload beside the old one
DROP FUNCTION vision.create_index(regclass, text, text, integer, integer, integer, integer, text);
CREATE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3_mixed6_grid',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40,
  pca_dims        integer DEFAULT NULL,
  storage         text    DEFAULT 'float32',
  method          text    DEFAULT NULL,
  lists           integer DEFAULT NULL,
  probes          integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims, storage, method, lists, probes)
$$;
COMMENT ON FUNCTION vision.create_index IS
  'Build (or rebuild) the index over a table''s features: HNSW, or IVF lists (method; by default HNSW below 500,000 images, IVF from there); returns the number of vectors.';
