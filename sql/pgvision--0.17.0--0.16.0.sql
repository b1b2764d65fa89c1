-- pgvision 0.17.0 → 0.16.0: features in single precision again, in the table
-- vision.features (half-precision rows become real[] holding the same values).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.16.0'" to load this file. \quit

-- Never backwards unasked (see pgvision--0.15.0--0.14.0.sql).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.17.0 to 0.16.0 (it rewrites every feature row)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP VIEW vision.feature_storage;
DROP PROCEDURE vision.compact_features(regclass, integer, bigint, bigint);

-- Every row back in real[], holding the same values: no change to log, and its extraction
-- time kept (neither trigger runs while converting).
DROP TRIGGER touch_on_update ON vision.stored_features;
ALTER TABLE vision.stored_features DISABLE TRIGGER bump_on_update;
UPDATE vision.stored_features SET feature = vision._half_text(half)::real[], half = NULL
  WHERE half IS NOT NULL;
ALTER TABLE vision.stored_features ENABLE TRIGGER bump_on_update;

-- The table takes its name back; the views that read the view read it again.
ALTER VIEW vision.features RENAME TO _features_of_0_17;
ALTER TABLE vision.stored_features RENAME TO features;
ALTER TABLE vision.features RENAME CONSTRAINT stored_features_pkey TO features_pkey;
ALTER TABLE vision.features RENAME CONSTRAINT stored_features_model_fkey TO features_model_fkey;
COMMENT ON TABLE vision.features IS
  'One feature vector per (model, source table, image id), written by vision.extract_table.';
CREATE OR REPLACE VIEW vision.content_scores WITH (security_invoker = true) AS
  SELECT f.source, f.image_id, f.model, f.feature[1] AS drawing, f.feature[2] AS hentai,
         f.feature[3] AS neutral, f.feature[4] AS porn, f.feature[5] AS sexy, f.extracted_at
  FROM vision.features f
  WHERE f.model OPERATOR(pg_catalog.=) 'nsfwjs_mobilenet_v2';

CREATE OR REPLACE VIEW vision.features_export WITH (security_invoker = true) AS
  SELECT f.model, format('%I.%I', n.nspname, c.relname) AS source, f.image_id, f.feature,
         f.extracted_at
  FROM vision.features f
  JOIN pg_catalog.pg_class c ON c.oid = f.source
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;

DROP VIEW vision._features_of_0_17;
ALTER TABLE vision.features DROP CONSTRAINT stored_features_one_vector;
ALTER TABLE vision.features DROP COLUMN half;
ALTER TABLE vision.features ALTER COLUMN feature SET NOT NULL;
CREATE TRIGGER touch_on_update BEFORE UPDATE OF feature ON vision.features
  FOR EACH ROW EXECUTE FUNCTION vision._touch_feature();
DROP FUNCTION vision._write_features();
DROP FUNCTION vision._half(real[]);
DROP FUNCTION vision._half_text(bytea);

CREATE OR REPLACE FUNCTION vision._bump_feature_versions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM vision.feature_versions;
    DELETE FROM vision.feature_snapshots;
    DELETE FROM vision.feature_changes;
    RETURN NULL;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO vision.feature_versions AS v (model, source)
      SELECT DISTINCT model, source FROM new_rows
      ON CONFLICT (model, source) DO UPDATE SET version = nextval('vision.feature_version_seq');
    INSERT INTO vision.feature_changes (model, source, image_id)
      SELECT model, source, image_id FROM new_rows;
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    UPDATE vision.feature_versions v SET version = nextval('vision.feature_version_seq')
      FROM (SELECT DISTINCT model, source FROM old_rows) o
      WHERE v.model = o.model AND v.source = o.source;
    IF TG_OP = 'DELETE' THEN
      INSERT INTO vision.feature_changes (model, source, image_id)
        SELECT model, source, image_id FROM old_rows;
    END IF;
    DELETE FROM vision.feature_versions v
      USING (SELECT DISTINCT model, source FROM old_rows) o
      WHERE v.model = o.model AND v.source = o.source
        AND NOT EXISTS (SELECT 1 FROM vision.features f
                        WHERE f.model = v.model AND f.source = v.source);
    -- no features left: no snapshot to keep either
    DELETE FROM vision.feature_snapshots s
      WHERE NOT EXISTS (SELECT 1 FROM vision.feature_versions v
                        WHERE v.model = s.model AND v.source = s.source);
    DELETE FROM vision.feature_changes c
      USING (SELECT DISTINCT model, source FROM old_rows) o
      WHERE c.model = o.model AND c.source = o.source
        AND NOT EXISTS (SELECT 1 FROM vision.feature_versions v
                        WHERE v.model = o.model AND v.source = o.source);
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION vision._forget_images(source regclass, ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM vision.features f WHERE f.source = $1 AND ($2 IS NULL OR f.image_id = ANY ($2));
  DELETE FROM vision.extract_errors e
    WHERE e.source = $1 AND ($2 IS NULL OR e.image_id = ANY ($2));
  DELETE FROM vision.image_text t WHERE t.source = $1 AND ($2 IS NULL OR t.image_id = ANY ($2));
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
    UNION ALL SELECT count(*), 'text rows' FROM vision.image_text
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

