-- pgvision 0.16.0 → 0.15.0: without the words in images (the OCR model, vision.read_text,
-- vision.search_text and vision.image_text).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.15.0'" to load this file. \quit

-- Never backwards unasked (see pgvision--0.15.0--0.14.0.sql).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.16.0 to 0.15.0 (it drops what 0.16.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

-- What 0.16.0 stored about text goes with it (pgvision migrate counts those rows first and
-- refuses unless --allow-data-loss).
DROP FUNCTION vision.search_text(text, regclass, integer, text);
DROP FUNCTION vision.read_text(bytea, text);
-- detached first, so that pg_extension.extconfig forgets its config-dump entry
ALTER EXTENSION pgvision DROP TABLE vision.image_text;
DROP TABLE vision.image_text;

DELETE FROM vision.extract_errors WHERE model = 'pp_ocr_v6'
  AND model IN (SELECT name FROM vision.model_store WHERE builtin);
DELETE FROM vision.extract_jobs WHERE model = 'pp_ocr_v6'
  AND model IN (SELECT name FROM vision.model_store WHERE builtin);
DELETE FROM vision.model_store WHERE builtin AND name = 'pp_ocr_v6';

CREATE OR REPLACE FUNCTION vision._forget_images(source regclass, ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM vision.features f WHERE f.source = $1 AND ($2 IS NULL OR f.image_id = ANY ($2));
  DELETE FROM vision.extract_errors e
    WHERE e.source = $1 AND ($2 IS NULL OR e.image_id = ANY ($2));
  DELETE FROM vision.predictions p WHERE p.source = $1 AND ($2 IS NULL OR p.image_id = ANY ($2));
  DELETE FROM vision.map_2d m WHERE m.source = $1 AND ($2 IS NULL OR m.image_id = ANY ($2));
  DELETE FROM vision.clusters c WHERE c.source = $1 AND ($2 IS NULL OR c.image_id = ANY ($2));
  DELETE FROM vision.neighbours n
    WHERE n.source = $1 AND ($2 IS NULL OR n.image_id = ANY ($2) OR n.neighbour_ids && $2);
END
$$;

CREATE OR REPLACE FUNCTION vision._guard_drop_extension() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  held text;
BEGIN
  IF current_query() !~* '\mpgvision\M' OR current_query() ~* '\mcascade\M' THEN
    RETURN;
  END IF;
  SELECT string_agg(format('%s %s', n, what), ', ') INTO held FROM (
    SELECT count(*) AS n, 'feature rows' AS what FROM vision.features
    UNION ALL SELECT count(*), 'classifiers' FROM vision.classifiers
    UNION ALL SELECT count(*), 'votes' FROM vision.votes
    UNION ALL SELECT count(*), 'indexes' FROM vision.indexes) AS stored
  WHERE n > 0;
  IF held IS NOT NULL THEN
    RAISE EXCEPTION 'DROP EXTENSION pgvision would delete what users stored: %', held
      USING ERRCODE = 'dependent_objects_still_exist',
            HINT = 'pg_dump them first; DROP EXTENSION pgvision CASCADE drops them.';
  END IF;
END
$$;
