-- pgvision 0.8.0 → 0.9.0: vision.fine_tune (transfer learning deeper than the last layer).
-- Model registration and conversion now run in a child process (no catalog change).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.9.0'" to load this file. \quit

CREATE FUNCTION vision.fine_tune(
  name       text,
  labels     regclass,
  source     regclass,
  base_model text     DEFAULT 'inception_v3',
  blocks     integer  DEFAULT 1,
  folds      integer  DEFAULT 3,
  options    jsonb    DEFAULT '{}',
  replace    boolean  DEFAULT false
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import finetune, spi
return spi.call(plpy, GD, finetune.fine_tune, name, labels, source, base_model, blocks, folds,
                options, replace)
$$;
COMMENT ON FUNCTION vision.fine_tune IS
  'Retrain the top block(s) of a model on labelled image bytes (CV, early stopping); registers the result as a new model.';

REVOKE ALL ON FUNCTION vision.fine_tune FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vision.fine_tune TO vision_admin;
