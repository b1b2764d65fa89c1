-- pgvision 0.15.0 → 0.14.0: without near-duplicates, content classes and their models.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.14.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.15.0 to 0.14.0 (it drops what 0.15.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

-- 0.14.0 cannot compute perceptual hashes: refuse while any table holds them.
DO $$
BEGIN
  IF EXISTS (SELECT FROM vision.features f JOIN vision.model_store m ON m.name = f.model
             WHERE m.builtin AND m.name = 'perceptual_hash') THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade to 0.14.0: tables hold perceptual_hash features'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Drop them first (vision.drop_model(''perceptual_hash'', cascade => true)).';
  END IF;
END
$$;
-- nor feed a model as TF.js does: refuse while such a model holds features or is a user's.
DO $$
BEGIN
  IF EXISTS (SELECT FROM vision.model_store m WHERE m.preprocessing = 'tfjs'
             AND (NOT m.builtin OR EXISTS (SELECT FROM vision.features f WHERE f.model = m.name))) THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade to 0.14.0: models with preprocessing tfjs hold features or were registered by users'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Drop them first (vision.drop_model(name, cascade => true)).';
  END IF;
END
$$;
DELETE FROM vision.extract_errors WHERE model IN (SELECT name FROM vision.model_store
  WHERE builtin AND (name = 'perceptual_hash' OR preprocessing = 'tfjs'));
DELETE FROM vision.extract_jobs WHERE model IN (SELECT name FROM vision.model_store
  WHERE builtin AND (name = 'perceptual_hash' OR preprocessing = 'tfjs'));
DELETE FROM vision.model_store WHERE builtin AND (name = 'perceptual_hash' OR preprocessing = 'tfjs');
ALTER TABLE vision.model_store DROP CONSTRAINT model_store_preprocessing_check,
  ADD CONSTRAINT model_store_preprocessing_check
    CHECK (preprocessing IN ('inception', 'caffe', 'torch', 'raw'));

DROP VIEW vision.flagged_images;
DROP VIEW vision.content_scores;
DROP FUNCTION vision.moderate(bytea, text);

DROP FUNCTION vision.duplicates(regclass, text, integer, real, integer);
DROP FUNCTION vision.duplicates_of(bytea, regclass, text, integer, real);
