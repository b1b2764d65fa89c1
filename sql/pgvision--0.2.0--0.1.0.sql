-- pgvision 0.2.0 → 0.1.0: remove what pgvision--0.1.0--0.2.0.sql added, newest first.
-- (Run by ALTER EXTENSION pgvision UPDATE TO '0.1.0', e.g. through `make downgrade`.)

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.1.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.2.0 to 0.1.0 (it drops what 0.2.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP EVENT TRIGGER pgvision_forget_dropped_tables;
DROP FUNCTION vision._forget_dropped_tables();
DROP FUNCTION vision.refresh_neighbours(regclass, text, integer, text);
DROP FUNCTION vision.drop_index(regclass, text);
DROP FUNCTION vision.refresh_index(regclass, text);
DROP FUNCTION vision.create_index(regclass, text, text, integer, integer, integer, integer);
DROP FUNCTION vision.similar_to_image(bytea, integer, text, text, regclass, bigint[], boolean);
DROP FUNCTION vision.similar(bigint, integer, text, text, regclass, bigint[], boolean);
DROP TABLE vision.neighbours;
DROP VIEW vision.index_status;
DROP TABLE vision.indexes;
DROP TRIGGER touch_on_update ON vision.features;
DROP TRIGGER bump_on_truncate ON vision.features;
DROP TRIGGER bump_on_delete ON vision.features;
DROP TRIGGER bump_on_update ON vision.features;
DROP TRIGGER bump_on_insert ON vision.features;
DROP FUNCTION vision._touch_feature();
DROP FUNCTION vision._bump_feature_versions();
DROP TABLE vision.feature_versions;
DROP SEQUENCE vision.feature_version_seq;
