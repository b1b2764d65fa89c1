-- pgvision 0.10.0 → 0.11.0
-- * Row-level security of a source table holds for what pgvision stores about it: a row of
--   features, errors, predictions, clusters, map points, neighbour lists, classifiers (by
--   their training images) and change logs is readable only where the caller's SELECT on
--   the table returns its images (vision._visible); pgvision's own shared reads pass
--   (vision._reading) and filter their answers themselves.
-- * The downgrade scripts refuse to run unless pgvision.allow_downgrade is on.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.11.0'" to load this file. \quit

-- True while pgvision's own code reads or writes its tables for everyone (shared snapshots,
-- change logs, its own writes): the source table's row-level security is then applied to
-- the answers by pgvision itself (pgvision.featurestore.visible), not to the rows it reads.
CREATE FUNCTION vision._reading() RETURNS boolean
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi
return spi.reading(GD)
$$;
COMMENT ON FUNCTION vision._reading() IS
  'Internal (row-level security): whether pgvision''s own code is reading or writing for everyone now.';

-- The id column of a source table: the one its change-tracking triggers name (installed by
-- vision.extract_table), else the one its last extraction used, else its one-column primary
-- key (features written by other means, e.g. copied from another server).
CREATE FUNCTION vision._id_column(source regclass) RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(
    (SELECT pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 1)::name
     FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = $1 AND t.tgname LIKE 'pgvision\_changed\_%'
     ORDER BY t.oid LIMIT 1),
    (SELECT j.id_column::name FROM vision.extract_jobs j
     WHERE j.source = $1 ORDER BY j.job_id DESC LIMIT 1),
    (SELECT a.attname FROM pg_catalog.pg_constraint k
     JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
     WHERE k.conrelid = $1 AND k.contype = 'p' AND pg_catalog.cardinality(k.conkey) = 1))
$$;
COMMENT ON FUNCTION vision._id_column IS
  'Internal (row-level security): the id column pgvision knows a source table by.';

-- Whether the caller's SELECT on the source table returns every one of these image ids (the
-- table's row-level security decides); false when pgvision does not know the id column.
CREATE FUNCTION vision._visible(source regclass, ids bigint[]) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  col name := vision._id_column(source);
  wanted bigint[] := ARRAY(SELECT DISTINCT i FROM pg_catalog.unnest(ids) AS i
                           WHERE i IS NOT NULL);
  seen bigint;
BEGIN
  IF pg_catalog.cardinality(wanted) = 0 THEN
    RETURN true;
  END IF;
  IF col IS NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('SELECT count(DISTINCT %1$I) FROM %2$s WHERE %1$I = ANY ($1)', col, source)
    INTO seen USING wanted;
  RETURN seen = pg_catalog.cardinality(wanted);
END
$$;
COMMENT ON FUNCTION vision._visible IS
  'Internal (row-level security): whether the caller''s SELECT on a table returns all these ids.';

-- A row about images of a table is for roles that may SELECT the table and, where the
-- table's row-level security applies to them, whose SELECT returns those images.
DO $$
DECLARE
  readable constant text := 'pg_catalog.has_table_privilege(source, ''SELECT'')';
  writable constant text :=
    '((SELECT vision._writing()) OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  mine constant text := '(owner = CURRENT_USER)';
  owned constant text :=
    '(owner = CURRENT_USER OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  -- CASE: the per-row check runs only where row-level security applies and pgvision itself
  -- is not reading for everyone
  seen constant text := 'CASE WHEN (SELECT vision._reading()) '
    'OR NOT pg_catalog.row_security_active(source) THEN true '
    'ELSE vision._visible(source, %s) END';
  t text;
  kind text;
  images text;
  reading text;
  adding text;
  changing text;
BEGIN
  FOR t, kind, images IN VALUES ('features', 'shared', 'ARRAY[image_id]'),
      ('extract_errors', 'shared', 'ARRAY[image_id]'), ('extract_jobs', 'shared', NULL),
      ('feature_versions', 'shared', NULL), ('neighbours', 'shared', 'image_id || neighbour_ids'),
      ('predictions', 'shared', 'ARRAY[image_id]'), ('clusters', 'shared', 'ARRAY[image_id]'),
      ('cluster_centroids', 'shared', 'ARRAY[medoid_image_id]'),
      ('map_2d', 'shared', 'ARRAY[image_id]'), ('feature_snapshots', 'shared', NULL),
      ('feature_changes', 'shared', 'ARRAY[image_id]'), ('index_chunks', 'shared', NULL),
      ('indexes', 'owned', NULL), ('classifiers', 'owned', 'train_ids'),
      ('votes', 'private', NULL), ('taste_models', 'private', NULL)
  LOOP
    reading := readable;
    IF images IS NOT NULL THEN
      reading := reading || ' AND ' || format(seen, images);
    END IF;
    adding := readable || ' AND ' || writable;
    changing := adding;
    IF kind = 'owned' THEN
      adding := adding || ' AND ' || mine;
      changing := changing || ' AND ' || owned;
    ELSIF kind = 'private' THEN
      reading := reading || ' AND ' || mine;
      adding := adding || ' AND ' || mine;
      changing := adding;
    END IF;
    EXECUTE format('ALTER POLICY pgvision_read ON vision.%I USING (%s)', t, reading);
  END LOOP;
END
$$;

-- A store file's name is its SHA-256: nothing else may stand there (a relative path set by a
-- vision_admin member made the next search delete that file as the server's OS user).
ALTER TABLE vision.feature_snapshots
  ADD CONSTRAINT feature_snapshots_sha256_check CHECK (sha256 ~ '^[0-9a-f]{64}$');
ALTER TABLE vision.indexes ADD CONSTRAINT indexes_sha256_check CHECK (sha256 ~ '^[0-9a-f]{64}$');
