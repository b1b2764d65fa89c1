-- pgvision 0.8.0 → 0.7.0: indexes back in one faiss value, search without shared files.
-- Indexes of 0.8.0 cannot be read by 0.7.0: the downgrade drops them (vision.create_index
-- builds them again); the store files under the data directory are left for an admin to
-- remove (<data directory>/pgvision/store).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.7.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.8.0 to 0.7.0 (it drops what 0.8.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

ALTER FUNCTION vision.similar(bigint, integer, text, text, regclass, bigint[], boolean) STABLE;
ALTER FUNCTION vision.similar_many(bigint[], integer, text, text, regclass, boolean) STABLE;
ALTER FUNCTION vision.similar_to_image(bytea, integer, text, text, regclass, bigint[], boolean)
  STABLE;
ALTER FUNCTION vision.similar_to_vector(real[], integer, text, text, regclass, bigint[], boolean)
  STABLE;

DROP FUNCTION vision.create_index(regclass, text, text, integer, integer, integer, integer, text);
CREATE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40,
  pca_dims        integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims)
$$;
COMMENT ON FUNCTION vision.create_index IS
  'Build (or rebuild) the HNSW index over a table''s features; returns the number of vectors.';

COMMENT ON FUNCTION vision.refresh_index IS
  'Bring an index up to date: adds new images, rebuilds if images changed or were deleted.';


DROP FUNCTION vision._store_files();
ALTER EXTENSION pgvision DROP VIEW vision.index_status;
DROP VIEW vision.index_status;
ALTER EXTENSION pgvision DROP TABLE vision.index_chunks;
DROP TABLE vision.index_chunks;
ALTER EXTENSION pgvision DROP TABLE vision.indexes;
DROP TABLE vision.indexes;
ALTER EXTENSION pgvision DROP SEQUENCE vision.index_generation_seq;
DROP SEQUENCE vision.index_generation_seq;
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
  owner           name NOT NULL DEFAULT CURRENT_USER,
  PRIMARY KEY (model, source)
);
COMMENT ON TABLE vision.indexes IS 'HNSW indexes built by vision.create_index (faiss bytes).';
ALTER TABLE vision.indexes ALTER COLUMN index_bytes SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('vision.indexes', '');

CREATE VIEW vision.index_status WITH (security_invoker = true) AS
  SELECT i.model, i.source, i.metric, i.m, i.ef_construction, i.ef_search, i.pca_dims, i.n,
         octet_length(i.index_bytes) AS size_bytes, i.build_seconds, i.built_at,
         i.built_version <> coalesce(v.version, 0) AS stale
  FROM vision.indexes i
  LEFT JOIN vision.feature_versions v USING (model, source);
COMMENT ON VIEW vision.index_status IS
  'Indexes and whether they are stale (search then falls back to exact until refreshed).';


CREATE OR REPLACE FUNCTION vision._bump_feature_versions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
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


ALTER EXTENSION pgvision DROP TABLE vision.feature_changes;
DROP TABLE vision.feature_changes;
ALTER EXTENSION pgvision DROP TABLE vision.feature_snapshots;
DROP TABLE vision.feature_snapshots;
ALTER EXTENSION pgvision DROP SEQUENCE vision.feature_snapshot_seq;
DROP SEQUENCE vision.feature_snapshot_seq;

DO $$
DECLARE
  readable constant text := 'pg_catalog.has_table_privilege(source, ''SELECT'')';
  writable constant text :=
    '((SELECT vision._writing()) OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  owned constant text :=
    '(owner = CURRENT_USER OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  adding constant text := readable || ' AND ' || writable;
BEGIN
  ALTER TABLE vision.indexes ENABLE ROW LEVEL SECURITY;
  EXECUTE format('CREATE POLICY pgvision_read ON vision.indexes FOR SELECT USING (%s)', readable);
  EXECUTE format('CREATE POLICY pgvision_insert ON vision.indexes FOR INSERT WITH CHECK (%s)',
                 adding || ' AND (owner = CURRENT_USER)');
  EXECUTE format('CREATE POLICY pgvision_update ON vision.indexes FOR UPDATE USING (%s) '
                 'WITH CHECK (%s)', adding || ' AND ' || owned, adding || ' AND ' || owned);
  EXECUTE format('CREATE POLICY pgvision_delete ON vision.indexes FOR DELETE USING (%s)',
                 adding || ' AND ' || owned);
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON vision.indexes TO PUBLIC;
GRANT SELECT ON vision.index_status TO PUBLIC;
