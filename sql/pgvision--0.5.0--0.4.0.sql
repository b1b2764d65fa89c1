-- pgvision 0.5.0 → 0.4.0: remove what pgvision--0.4.0--0.5.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.4.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.5.0 to 0.4.0 (it drops what 0.5.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP FUNCTION vision.check_node(text, text, text);
DROP VIEW vision.features_export;
DROP FUNCTION vision.node_name();
DROP FUNCTION vision.similar_to_vector(real[], integer, text, text, regclass, bigint[], boolean);
DROP FUNCTION vision.extract_rows(regclass, name, name, text, integer, integer);
DROP FUNCTION vision.model_backends();
DROP FUNCTION vision.extract_features_with(bytea, text, text);
DROP FUNCTION vision.model_handle(text);
