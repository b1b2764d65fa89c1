-- pgvision 0.16.0 → 0.17.0
-- * Features stored in half precision: the table vision.features becomes vision.stored_features
--   (a half bytea column beside feature real[]), read through the view vision.features,
--   which shows every row as real[] and writes through to the table. Rows already stored
--   stay single precision, and searches answer from them, until CALL
--   vision.compact_features(table) converts them (batch by batch, resumable); progress in
--   vision.feature_storage.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.17.0'" to load this file. \quit

-- Metadata only, however many rows: the table keeps its rows, triggers, policies and grants.
-- (Its name sorts after vision.feature_versions, as "features" did: pg_restore loads table
-- data in name order, and loading this table fires the triggers that write feature_versions.)
ALTER TABLE vision.features RENAME TO stored_features;
ALTER TABLE vision.stored_features RENAME CONSTRAINT features_pkey TO stored_features_pkey;
ALTER TABLE vision.stored_features RENAME CONSTRAINT features_model_fkey TO stored_features_model_fkey;
ALTER TABLE vision.stored_features ALTER COLUMN feature DROP NOT NULL;
ALTER TABLE vision.stored_features ADD COLUMN half bytea;
-- Compressed with lz4 where the server has it (pglz where not): features after a ReLU are
-- 25-65% zeros, and lz4 took the half bytes of inception_v3 from 4,096 to 2,454 bytes on
-- average, mixed6_grid's from 7,680 to 5,949 (60 sample photos); a 2048-d value under 3,992
-- bytes also fills exactly two TOAST chunks, which pack four to a page.
DO $$
BEGIN
  ALTER TABLE vision.stored_features ALTER COLUMN half SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  NULL;
END
$$;
-- Checking existing rows reads each heap tuple's null bitmap once, never the vectors in TOAST
-- (the whole upgrade took 0.02 s at 100k rows: make bench-compact), while the rename's lock
-- holds searches back.
ALTER TABLE vision.stored_features ADD CONSTRAINT stored_features_one_vector
  CHECK ((feature IS NULL) <> (half IS NULL));
COMMENT ON TABLE vision.stored_features IS
  'One feature vector per (model, source table, image id), written by vision.extract_table: half precision in half, or single precision in feature (values beyond half precision''s range, rows not yet compacted). Read it through vision.features.';

DROP TRIGGER touch_on_update ON vision.stored_features;
-- (A row converted to half precision, feature -> half, is not: vision.compact_features.)
CREATE TRIGGER touch_on_update BEFORE UPDATE OF feature, half ON vision.stored_features
  FOR EACH ROW WHEN (OLD.feature IS NULL OR NEW.feature IS NOT NULL OR NEW.half IS NULL)
  EXECUTE FUNCTION vision._touch_feature();

-- real[] <-> half precision, for the view below and its writers.
CREATE FUNCTION vision._half(feature real[]) RETURNS bytea
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import halfprecision, spi
return spi.call_no_spi(plpy, halfprecision.half_or_none, feature)
$$;
COMMENT ON FUNCTION vision._half IS
  'Internal: a vector as little-endian float16 bytes; NULL when a value is beyond half precision''s range or the vector has fewer than 256 values (it stays real[]).';

-- text, cast to real[] by the caller: float4in parses one string ~1.7x faster than PL/Python
-- converts a list to real[] (measured on 2048-d rows)
CREATE FUNCTION vision._half_text(half bytea) RETURNS text
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import halfprecision, spi
return spi.call_no_spi(plpy, halfprecision.half_text, half)
$$;
COMMENT ON FUNCTION vision._half_text IS 'Internal: little-endian float16 bytes as real[] text.';

CREATE VIEW vision.features WITH (security_invoker = true) AS
  SELECT f.model, f.source, f.image_id, coalesce(f.feature, vision._half_text(f.half)::real[]) AS feature,
         f.extracted_at
  FROM vision.stored_features f;
COMMENT ON VIEW vision.features IS
  'One feature vector per (model, source table, image id) as real[], written by vision.extract_table (stored in vision.stored_features).';

-- Writing real[] through the view stores half precision where it holds the values. DELETE
-- needs no trigger: the view is updatable for it.
CREATE FUNCTION vision._write_features() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  packed bytea;
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.feature IS NOT DISTINCT FROM OLD.feature THEN
    UPDATE vision.stored_features f SET model = NEW.model, source = NEW.source,
        image_id = NEW.image_id, extracted_at = NEW.extracted_at
      WHERE f.model = OLD.model AND f.source = OLD.source AND f.image_id = OLD.image_id;
    -- a row that row-level security kept from the caller was not changed: not counted
    RETURN CASE WHEN FOUND THEN NEW END;
  END IF;
  IF NEW.feature IS NULL THEN
    RAISE EXCEPTION 'vision.features: argument "feature" is NULL for image % of %',
      NEW.image_id, NEW.source USING ERRCODE = 'not_null_violation';
  END IF;
  packed := vision._half(NEW.feature);
  IF TG_OP = 'INSERT' THEN
    INSERT INTO vision.stored_features (model, source, image_id, feature, half, extracted_at)
      VALUES (NEW.model, NEW.source, NEW.image_id,
              CASE WHEN packed IS NULL THEN NEW.feature END, packed,
              coalesce(NEW.extracted_at, clock_timestamp()));
  ELSE
    UPDATE vision.stored_features f SET model = NEW.model, source = NEW.source,
        image_id = NEW.image_id, feature = CASE WHEN packed IS NULL THEN NEW.feature END,
        half = packed, extracted_at = clock_timestamp()
      WHERE f.model = OLD.model AND f.source = OLD.source AND f.image_id = OLD.image_id;
    RETURN CASE WHEN FOUND THEN NEW END;
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER write_through INSTEAD OF INSERT OR UPDATE ON vision.features
  FOR EACH ROW EXECUTE FUNCTION vision._write_features();

-- Rows written before 0.17.0 hold single precision until converted, batch by batch (each
-- commits when CALLed on its own): resumable, and searches answer throughout.
CREATE PROCEDURE vision.compact_features(
  source        regclass,
  batch_rows    integer DEFAULT 2000,
  INOUT converted bigint DEFAULT NULL,
  INOUT single    bigint DEFAULT NULL
)
LANGUAGE plpython3u AS $$
from pgvision import halfprecision, spi
return spi.call(plpy, GD, halfprecision.compact_features, source, batch_rows)
$$;
COMMENT ON PROCEDURE vision.compact_features IS
  'Store a table''s single-precision feature rows (written before 0.17.0) in half precision, committing every batch_rows; returns the rows converted and those left single (values beyond half precision''s range).';

CREATE VIEW vision.feature_storage WITH (security_invoker = true) AS
  SELECT f.model, f.source, pg_catalog.count(*) AS images,
         pg_catalog.count(f.half) AS half_precision,
         pg_catalog.count(f.feature) AS single_precision,
         pg_catalog.sum(coalesce(pg_catalog.pg_column_size(f.half),
                                 pg_catalog.pg_column_size(f.feature))) AS vector_bytes
  FROM vision.stored_features f
  GROUP BY f.model, f.source;
COMMENT ON VIEW vision.feature_storage IS
  'Per (model, source): stored vectors in half and in single precision, and their bytes.';

-- What read the table now reads the stored rows, or the view.
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
        AND NOT EXISTS (SELECT 1 FROM vision.stored_features f
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
  DELETE FROM vision.stored_features f WHERE f.source = $1 AND ($2 IS NULL OR f.image_id = ANY ($2));
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
    SELECT count(*) AS n, 'feature rows' AS what FROM vision.stored_features
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

GRANT SELECT, INSERT, UPDATE, DELETE ON vision.features TO PUBLIC;
GRANT SELECT ON vision.feature_storage TO PUBLIC;
