-- pgvision 0.6.0 → 0.5.0: remove what pgvision--0.5.0--0.6.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.5.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.6.0 to 0.5.0 (it drops what 0.6.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP FUNCTION vision.model_backends();
CREATE FUNCTION vision.model_backends() RETURNS TABLE (slot integer, pid integer, rss_mb real)
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED AS $$
from pgvision import models
return [row[:3] for row in models.model_backends()]
$$;
COMMENT ON FUNCTION vision.model_backends IS
  'Backends (and parallel workers) of this cluster holding a model, with their resident memory.';
DROP VIEW vision.predictions_export;
DROP FUNCTION vision._score_images(text, regclass, integer, bigint[], text, bytea, real[],
                                   bigint[], real[]);
DROP FUNCTION vision._put_classifier(text, text, regclass, text, jsonb, text[], integer, bytea,
                                     bigint[], integer[], jsonb, timestamptz);
