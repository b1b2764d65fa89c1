-- pgvision 0.7.0 → 0.8.0: search served from files every backend maps (one copy per
-- server): a shared snapshot of each table's features with a change log since, and HNSW
-- indexes stored in chunks (no size ceiling), with float16 / int8 storage. An index of 0.7.0
-- (one faiss value) cannot be mapped: the upgrade drops it; vision.create_index builds it
-- again.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.8.0'" to load this file. \quit

-- featurestore ---------------------------------------------------------------------------

CREATE SEQUENCE vision.feature_snapshot_seq;
SELECT pg_catalog.pg_extension_config_dump('vision.feature_snapshot_seq', '');

CREATE TABLE vision.feature_snapshots (
  model      text NOT NULL,
  source     regclass NOT NULL,
  generation bigint NOT NULL DEFAULT nextval('vision.feature_snapshot_seq'),
  snap       pg_snapshot NOT NULL,
  n          bigint NOT NULL,
  dims       integer NOT NULL,
  sha256     text NOT NULL,
  size_bytes bigint NOT NULL,
  built_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (model, source)
);
COMMENT ON TABLE vision.feature_snapshots IS
  'The shared snapshot file of each (model, source): its checksum and the transaction snapshot it holds.';
SELECT pg_catalog.pg_extension_config_dump('vision.feature_snapshots', '');

CREATE TABLE vision.feature_changes (
  model    text NOT NULL,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  xid      xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX feature_changes_since ON vision.feature_changes (model, source, xid);
COMMENT ON TABLE vision.feature_changes IS
  'Images whose features changed, by transaction; pruned once every snapshot holds them.';

CREATE OR REPLACE FUNCTION vision._bump_feature_versions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM vision.feature_versions;
    DELETE FROM vision.feature_snapshots;
    DELETE FROM vision.feature_changes;
    RETURN NULL;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO vision.feature_versions AS v (model, source)
      SELECT DISTINCT model, source FROM new_rows
      ON CONFLICT (model, source) DO UPDATE SET version = nextval('vision.feature_version_seq');
    INSERT INTO vision.feature_changes (model, source, image_id)
      SELECT model, source, image_id FROM new_rows;
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    UPDATE vision.feature_versions v SET version = nextval('vision.feature_version_seq')
      FROM (SELECT DISTINCT model, source FROM old_rows) o
      WHERE v.model = o.model AND v.source = o.source;
    IF TG_OP = 'DELETE' THEN
      INSERT INTO vision.feature_changes (model, source, image_id)
        SELECT model, source, image_id FROM old_rows;
    END IF;
    DELETE FROM vision.feature_versions v
      USING (SELECT DISTINCT model, source FROM old_rows) o
      WHERE v.model = o.model AND v.source = o.source
        AND NOT EXISTS (SELECT 1 FROM vision.features f
                        WHERE f.model = v.model AND f.source = v.source);
    -- no features left: no snapshot to keep either
    DELETE FROM vision.feature_snapshots s
      WHERE NOT EXISTS (SELECT 1 FROM vision.feature_versions v
                        WHERE v.model = s.model AND v.source = s.source);
    DELETE FROM vision.feature_changes c
      USING (SELECT DISTINCT model, source FROM old_rows) o
      WHERE c.model = o.model AND c.source = o.source
        AND NOT EXISTS (SELECT 1 FROM vision.feature_versions v
                        WHERE v.model = o.model AND v.source = o.source);
  END IF;
  RETURN NULL;
END
$$;


-- search -----------------------------------------------------------------------------------

DO $$
DECLARE
  held text;
BEGIN
  SELECT string_agg(format('%s on %s', model, source), ', ') INTO held FROM vision.indexes;
  IF held IS NOT NULL THEN
    RAISE WARNING 'pgvision 0.8.0 stores indexes in a new format; dropped the indexes of %', held
      USING HINT = 'Build them again with vision.create_index.';
  END IF;
END
$$;
ALTER EXTENSION pgvision DROP VIEW vision.index_status;
DROP VIEW vision.index_status;
ALTER EXTENSION pgvision DROP TABLE vision.indexes;
DROP TABLE vision.indexes;

CREATE SEQUENCE vision.index_generation_seq;
SELECT pg_catalog.pg_extension_config_dump('vision.index_generation_seq', '');

CREATE TABLE vision.indexes (
  model           text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE
                    ON DELETE CASCADE,
  source          regclass NOT NULL,
  metric          text NOT NULL CHECK (metric IN ('cosine', 'l2', 'ip')),
  m               integer NOT NULL,
  ef_construction integer NOT NULL,
  ef_search       integer NOT NULL,
  pca_dims        integer,
  storage         text NOT NULL DEFAULT 'float32'
                    CHECK (storage IN ('float32', 'float16', 'int8')),
  dims            integer NOT NULL,
  n               bigint NOT NULL,
  entries         bigint NOT NULL,
  generation      bigint NOT NULL DEFAULT nextval('vision.index_generation_seq'),
  snap            pg_snapshot NOT NULL,
  entry_ids       bytea NOT NULL,
  dead            bytea NOT NULL,
  sha256          text NOT NULL,
  size_bytes      bigint NOT NULL,
  build_seconds   double precision NOT NULL,
  built_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
  owner           name NOT NULL DEFAULT CURRENT_USER,
  PRIMARY KEY (model, source)
);
COMMENT ON TABLE vision.indexes IS
  'HNSW indexes built by vision.create_index: parameters, entries'' image ids and the checksum of the faiss file.';
SELECT pg_catalog.pg_extension_config_dump('vision.indexes', '');

CREATE TABLE vision.index_chunks (
  model  text NOT NULL,
  source regclass NOT NULL,
  part   integer NOT NULL,
  data   bytea NOT NULL,
  PRIMARY KEY (model, source, part),
  FOREIGN KEY (model, source) REFERENCES vision.indexes (model, source)
    ON UPDATE CASCADE ON DELETE CASCADE
);
COMMENT ON TABLE vision.index_chunks IS
  'The bytes of each index file, in parts of 64 MiB (a missing or damaged file is written again from them).';
ALTER TABLE vision.index_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('vision.index_chunks', '');

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

-- Every file a snapshot or index of this database names; other store files are removed.
-- SECURITY DEFINER: file clean-up must see every table's rows, not just the caller's.
CREATE FUNCTION vision._store_files() RETURNS TABLE (sha256 text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT sha256 FROM vision.feature_snapshots UNION SELECT sha256 FROM vision.indexes
$$;
COMMENT ON FUNCTION vision._store_files() IS
  'Internal: the checksums of the store files this database still names.';

DROP FUNCTION vision.create_index(regclass, text, text, integer, integer, integer, integer);
CREATE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40,
  pca_dims        integer DEFAULT NULL,
  storage         text    DEFAULT 'float32'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims, storage)
$$;
COMMENT ON FUNCTION vision.create_index IS
  'Build (or rebuild) the HNSW index over a table''s features; returns the number of vectors.';

COMMENT ON FUNCTION vision.refresh_index IS
  'Fold the changes since an index was built into it (or rebuild it when a fifth is out of date).';

-- a search may record the shared snapshot it reads
ALTER FUNCTION vision.similar(bigint, integer, text, text, regclass, bigint[], boolean) VOLATILE;
ALTER FUNCTION vision.similar_many(bigint[], integer, text, text, regclass, boolean) VOLATILE;
ALTER FUNCTION vision.similar_to_image(bytea, integer, text, text, regclass, bigint[], boolean)
  VOLATILE;
ALTER FUNCTION vision.similar_to_vector(real[], integer, text, text, regclass, bigint[], boolean)
  VOLATILE;

-- security: the same policies as the other tables of their kind ----------------------------

DO $$
DECLARE
  readable constant text := 'pg_catalog.has_table_privilege(source, ''SELECT'')';
  writable constant text :=
    '((SELECT vision._writing()) OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  mine constant text := '(owner = CURRENT_USER)';
  owned constant text :=
    '(owner = CURRENT_USER OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  t text;
  kind text;
  adding text;
  changing text;
BEGIN
  FOR t, kind IN VALUES ('feature_snapshots', 'shared'), ('feature_changes', 'shared'),
      ('index_chunks', 'shared'), ('indexes', 'owned')
  LOOP
    adding := readable || ' AND ' || writable;
    changing := adding;
    IF kind = 'owned' THEN
      adding := adding || ' AND ' || mine;
      changing := changing || ' AND ' || owned;
    END IF;
    EXECUTE format('ALTER TABLE vision.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY pgvision_read ON vision.%I FOR SELECT USING (%s)', t, readable);
    EXECUTE format('CREATE POLICY pgvision_insert ON vision.%I FOR INSERT WITH CHECK (%s)',
                   t, adding);
    EXECUTE format('CREATE POLICY pgvision_update ON vision.%I FOR UPDATE USING (%s) '
                   'WITH CHECK (%s)', t, changing, changing);
    EXECUTE format('CREATE POLICY pgvision_delete ON vision.%I FOR DELETE USING (%s)',
                   t, changing);
  END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON vision.indexes, vision.feature_snapshots,
  vision.feature_changes, vision.index_chunks TO PUBLIC;
GRANT USAGE ON SEQUENCE vision.feature_snapshot_seq, vision.index_generation_seq TO PUBLIC;
GRANT SELECT ON vision.index_status TO PUBLIC;
