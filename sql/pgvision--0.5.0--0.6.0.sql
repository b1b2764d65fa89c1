-- pgvision 0.5.0 → 0.6.0: what a shard serves so that classification and recommendation
-- scoring run on every shard (vision_cluster.train_classifier / classify_table / recommend).
-- Extraction now runs on ONNX Runtime by default (pgvision.runtime); that needs no SQL.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.6.0'" to load this file. \quit

CREATE FUNCTION vision._put_classifier(
  name text, model text, source regclass, method text, options jsonb, labels text[],
  dims integer, weights bytea, train_ids bigint[], train_targets integer[], metrics jsonb,
  trained_at timestamptz
) RETURNS text
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.put_classifier, name, model, source, method, options,
                       labels, dims, weights, train_ids, train_targets, metrics, trained_at)
$$;
COMMENT ON FUNCTION vision._put_classifier IS
  'Internal (vision_cluster): store a classifier trained on the coordinator, trained_at included.';

CREATE FUNCTION vision._score_images(
  model text, source regclass, k integer, exclude bigint[], strategy text, taste bytea,
  centre real[], popular_ids bigint[], popular_net real[]
) RETURNS TABLE (image_id bigint, score double precision)
LANGUAGE plpython3u STABLE AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.score_images, model, source, k, exclude, strategy,
                       taste, centre, popular_ids, popular_net)
$$;
COMMENT ON FUNCTION vision._score_images IS
  'Internal (vision_cluster): this node''s k best images for preferences computed on the coordinator.';

CREATE VIEW vision.predictions_export AS
  SELECT p.classifier, format('%I.%I', n.nspname, c.relname) AS source, p.image_id, p.label,
         p.probability, p.predicted_at
  FROM vision.predictions p
  JOIN pg_catalog.pg_class c ON c.oid = p.source
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
COMMENT ON VIEW vision.predictions_export IS
  'vision.predictions with the source table''s qualified name (read by coordinators over postgres_fdw).';
GRANT SELECT ON vision.predictions_export TO PUBLIC;

-- vision.model_backends also says which models each process holds, and on which runtime.
DROP FUNCTION vision.model_backends();
CREATE FUNCTION vision.model_backends()
RETURNS TABLE (slot integer, pid integer, rss_mb real, models text[])
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED AS $$
from pgvision import models
return models.model_backends()
$$;
COMMENT ON FUNCTION vision.model_backends IS
  'Backends (and parallel workers) of this cluster holding a model: resident memory, and each model with its runtime.';
