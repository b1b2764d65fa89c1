-- pgvision 0.6.0 → 0.5.0: remove what pgvision--0.5.0--0.6.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.5.0'" to load this file. \quit

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
