-- pgvision 0.11.0 → 0.10.0: the read policies without the source table's row-level security.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.10.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.11.0 to 0.10.0 (it drops what 0.11.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

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

DROP FUNCTION vision._visible(regclass, bigint[]);
DROP FUNCTION vision._id_column(regclass);
DROP FUNCTION vision._reading();

ALTER TABLE vision.feature_snapshots DROP CONSTRAINT feature_snapshots_sha256_check;
ALTER TABLE vision.indexes DROP CONSTRAINT indexes_sha256_check;
