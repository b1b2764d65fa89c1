-- pgvision: CNN image features, visual search, classification and recommendations in SQL.
--
-- The whole current API of the extension, in sections in the order of the Python modules
-- behind it (plpython/pgvision). `make install` installs this file as pgvision--<version>.sql;
-- the sql/pgvision--<from>--<to>.sql scripts upgrade older installations and hold only what
-- changed (tests/test_catalog.py proves both paths give the same catalog).
--
-- Every function is a thin PL/Python wrapper: `spi.call(plpy, GD, module.function, args...)`
-- with the SQL arguments in the order and under the names of the Python function's
-- parameters (tests/test_layout.py checks that they line up).

\echo Use "CREATE EXTENSION pgvision CASCADE" to load this file. \quit

CREATE SCHEMA vision;
COMMENT ON SCHEMA vision IS 'pgvision: CNN image features, visual search and classification';

-- Roles are per cluster, so a second database must not fail on an existing one.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vision_admin') THEN
    CREATE ROLE vision_admin NOLOGIN;
  END IF;
END
$$;

-- Postgres' LLVM JIT and the LLVM inside TensorFlow crash a backend that holds both
-- (signal 11 on the next JIT-compiled query; high function costs make JIT likely). New
-- sessions of this database get JIT off; pgvision also turns it off in a session before
-- loading TensorFlow.
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
END
$$;

-- registry: models ---------------------------------------------------------------------

CREATE TABLE vision.model_store (
  name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  model_bytes   bytea,
  model_path    text,
  sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  input_height  integer NOT NULL CHECK (input_height > 0),
  input_width   integer NOT NULL CHECK (input_width > 0),
  preprocessing text NOT NULL CHECK (preprocessing IN ('inception', 'caffe', 'torch', 'raw', 'tfjs')),
  feature_layer text,
  pooling       text NOT NULL DEFAULT 'avg' CHECK (pooling IN ('avg', 'max', 'gem', 'grid', 'none')),
  dims          integer NOT NULL CHECK (dims > 0),
  provenance    text NOT NULL DEFAULT '',
  builtin       boolean NOT NULL DEFAULT false,
  created_at    timestamptz NOT NULL DEFAULT now(),
  CHECK ((model_bytes IS NULL) <> (model_path IS NULL))
);
COMMENT ON TABLE vision.model_store IS
  'Registered Keras models (.keras bytes or a server file). Use vision.models to list them.';
ALTER TABLE vision.model_store ALTER COLUMN model_bytes SET STORAGE EXTERNAL;
-- Installed (builtin) models are re-registered by CREATE EXTENSION; dump only users' models.
SELECT pg_catalog.pg_extension_config_dump('vision.model_store', 'WHERE NOT builtin');

CREATE VIEW vision.models AS
  SELECT name, dims, input_height, input_width, preprocessing, feature_layer, pooling,
         CASE WHEN model_bytes IS NULL THEN 'file' ELSE 'database' END AS stored_in,
         coalesce(octet_length(model_bytes)::bigint, 0) AS stored_bytes,
         model_path, sha256, provenance, builtin, created_at
  FROM vision.model_store;
COMMENT ON VIEW vision.models IS 'The registered models, without their bytes.';

CREATE FUNCTION vision.version() RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
import pgvision
return pgvision.__version__
$$;
COMMENT ON FUNCTION vision.version() IS
  'Version of the pgvision Python package the server loads (must equal the extension''s).';

CREATE FUNCTION vision.environment() RETURNS jsonb
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import environment, spi
return spi.call(plpy, GD, environment.environment)
$$;
COMMENT ON FUNCTION vision.environment() IS
  'The server''s Python as a backend sees it: interpreter, pgvision package and path, package versions, model files, runtime and limits (pgvision doctor reads it).';

CREATE FUNCTION vision.register_model(
  name          text,
  model_bytes   bytea   DEFAULT NULL,
  model_path    text    DEFAULT NULL,
  preprocessing text    DEFAULT 'inception',
  feature_layer text    DEFAULT NULL,
  pooling       text    DEFAULT 'avg',
  input_height  integer DEFAULT NULL,
  input_width   integer DEFAULT NULL,
  provenance    text    DEFAULT '',
  replace       boolean DEFAULT false
) RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import registry, spi
return spi.call(plpy, GD, registry.register_model, name, model_bytes, model_path,
                preprocessing, feature_layer, pooling, input_height, input_width,
                provenance, replace)
$$;
COMMENT ON FUNCTION vision.register_model IS
  'Register a .keras model (bytes, or a server file path) after loading it in safe mode; returns its feature dimension.';

CREATE FUNCTION vision.register_keras_application(
  name        text,
  application text,
  weights     text    DEFAULT 'imagenet',
  replace     boolean DEFAULT false
) RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import registry, spi
return spi.call(plpy, GD, registry.register_keras_application, name, application, weights,
                replace)
$$;
COMMENT ON FUNCTION vision.register_keras_application IS
  'Register a keras.applications model (ImageNet weights need internet on the server; weights => NULL for random weights).';

CREATE FUNCTION vision.drop_model(name text, cascade boolean DEFAULT false) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import registry, spi
return spi.call(plpy, GD, registry.drop_model, name, cascade)
$$;
COMMENT ON FUNCTION vision.drop_model IS
  'Unregister a model; with cascade => true also delete its features. Returns the number of feature rows deleted.';

CREATE FUNCTION vision.evaluate_features(
  labels       regclass,
  source       regclass,
  models       text[]   DEFAULT NULL,
  id_column    text     DEFAULT 'id',
  image_column text     DEFAULT 'image',
  options      jsonb    DEFAULT '{}',
  max_images   integer  DEFAULT 2000
) RETURNS TABLE (model text, dims integer, images integer, precision_at_10 float8,
                 map_at_10 float8, accuracy float8, near_duplicate_recall_at_2 float8,
                 ms_per_image float8)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import evaluation, spi
return spi.call(plpy, GD, evaluation.evaluate_features, labels, source, models, id_column,
                image_column, options, max_images)
$$;
COMMENT ON FUNCTION vision.evaluate_features IS
  'Compare models on your own labelled images: kNN precision@10, mAP@10, linear-probe accuracy, near-duplicate recall@2 (with a group column) and time per image; extracts afresh, stores nothing.';

CREATE FUNCTION vision._register_builtin_models() RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import registry
return registry.register_builtin_models(plpy, GD)
$$;

-- The installed default model is usable right after CREATE EXTENSION.
SELECT vision._register_builtin_models();

-- extractors, slots and handles: models in memory --------------------------------------

CREATE FUNCTION vision.loaded_models() RETURNS SETOF text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extractors
return extractors.cached_models(GD)
$$;
COMMENT ON FUNCTION vision.loaded_models() IS 'Models this backend holds in memory.';

CREATE FUNCTION vision.model_backends()
RETURNS TABLE (slot integer, pid integer, rss_mb real, models text[])
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import slots
return slots.model_backends()
$$;
COMMENT ON FUNCTION vision.model_backends IS
  'Backends (and parallel workers) of this cluster holding a model: resident memory, and each model with its runtime.';

CREATE FUNCTION vision.model_handle(model text DEFAULT 'inception_v3_mixed6_grid_224') RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import handles, spi
return spi.call(plpy, GD, handles.model_handle, model)
$$;
COMMENT ON FUNCTION vision.model_handle IS
  'A registered model resolved for vision.extract_features_with (which runs in parallel workers).';

-- extract: features of images ----------------------------------------------------------

-- Features are stored in half precision (IEEE 754 binary16, little-endian, in `half`): half
-- the disk, WAL and backup of real[]; bench/serving.py measures what it costs search
-- (docs/performance.md). A vector with a value beyond binary16's range (±65504), or of fewer
-- than 256 values (class probabilities, hashes: read as values, and small), keeps single
-- precision in `feature`, as do rows written before 0.17.0 until CALL
-- vision.compact_features() converts them. Readers see every row as real[] in vision.features.
-- The name sorts after vision.feature_versions on purpose: pg_restore loads table data in
-- name order, and loading this table fires the triggers that write feature_versions.
CREATE TABLE vision.stored_features (
  model        text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source       regclass NOT NULL,
  image_id     bigint NOT NULL,
  feature      real[],
  extracted_at timestamptz NOT NULL DEFAULT now(),
  half         bytea,
  PRIMARY KEY (model, source, image_id),
  CONSTRAINT stored_features_one_vector CHECK ((feature IS NULL) <> (half IS NULL))
);
COMMENT ON TABLE vision.stored_features IS
  'One feature vector per (model, source table, image id), written by vision.extract_table: half precision in half, or single precision in feature (values beyond half precision''s range, rows not yet compacted). Read it through vision.features.';
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
SELECT pg_catalog.pg_extension_config_dump('vision.stored_features', '');

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

CREATE TABLE vision.extract_errors (
  model     text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source    regclass NOT NULL,
  image_id  bigint NOT NULL,
  error     text NOT NULL,
  failed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, source, image_id)
);
COMMENT ON TABLE vision.extract_errors IS
  'Rows vision.extract_table skipped, with the reason; cleared when a retry succeeds.';
SELECT pg_catalog.pg_extension_config_dump('vision.extract_errors', '');

CREATE TABLE vision.extract_jobs (
  job_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  source       regclass NOT NULL,
  model        text NOT NULL,
  id_column    text NOT NULL,
  image_column text NOT NULL,
  total        bigint NOT NULL,
  processed    bigint NOT NULL DEFAULT 0,
  failed       bigint NOT NULL DEFAULT 0,
  state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
  pid          integer NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE vision.extract_jobs IS 'One row per vision.extract_table call, updated per batch.';

CREATE VIEW vision.extract_progress WITH (security_invoker = true) AS
  SELECT j.job_id, j.source, j.model,
         CASE WHEN j.state = 'done' THEN 'done'
              WHEN a.pid IS NULL THEN 'interrupted'   -- cancelled, failed or its backend died
              ELSE 'running' END AS state,
         j.processed, j.failed, j.total,
         round(100.0 * (j.processed + j.failed) / nullif(j.total, 0), 1) AS percent,
         round(((j.processed + j.failed)
                / nullif(extract(epoch FROM j.updated_at - j.started_at), 0))::numeric, 2)
           AS images_per_second,
         j.started_at, j.updated_at
  FROM vision.extract_jobs j
  LEFT JOIN pg_catalog.pg_stat_activity a
         -- still running only while the CALL that started the job is the backend's statement
         ON a.pid = j.pid AND a.state = 'active' AND a.query_start <= j.started_at
        AND j.state = 'running';
COMMENT ON VIEW vision.extract_progress IS 'Progress of vision.extract_table calls, newest last.';

-- PARALLEL UNSAFE, like every function here that queries: PL/Python runs each query in a
-- subtransaction, which Postgres forbids during a parallel operation, so a parallel plan
-- would fail with "cannot start subtransactions during a parallel operation".
CREATE FUNCTION vision.extract_features(image bytea, model text DEFAULT 'inception_v3_mixed6_grid_224')
RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extract, spi
return spi.call(plpy, GD, extract.extract_features, image, model)
$$;
COMMENT ON FUNCTION vision.extract_features IS
  'Feature vector of one image (JPEG/PNG/GIF/BMP/WebP/TIFF bytes) under a registered model.';

CREATE PROCEDURE vision.extract_table(
  source        regclass,
  id_column     name    DEFAULT 'id',
  image_column  name    DEFAULT 'image',
  model         text    DEFAULT 'inception_v3_mixed6_grid_224',
  batch_size    integer DEFAULT 32,
  retry_failed  boolean DEFAULT false,
  parts         integer DEFAULT 1,
  part          integer DEFAULT 0,
  INOUT job_id  bigint  DEFAULT NULL,
  INOUT processed bigint DEFAULT NULL,
  INOUT failed  bigint  DEFAULT NULL
)
LANGUAGE plpython3u AS $$
from pgvision import extract, spi
return spi.call(plpy, GD, extract.extract_table, source, id_column, image_column, model,
                batch_size, retry_failed, parts, part)
$$;
COMMENT ON PROCEDURE vision.extract_table IS
  'Extract features for every row of a table that has none yet, batch by batch, committing each batch; bad rows go to vision.extract_errors.';

CREATE FUNCTION vision.extract_rows(
  source       regclass,
  id_column    name    DEFAULT 'id',
  image_column name    DEFAULT 'image',
  model        text    DEFAULT 'inception_v3_mixed6_grid_224',
  batch_size   integer DEFAULT 32,
  max_rows     integer DEFAULT 1000
) RETURNS TABLE (job_id bigint, processed bigint, failed bigint, remaining bigint)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extract, spi
return [spi.call(plpy, GD, extract.extract_rows, source, id_column, image_column, model,
                 batch_size, max_rows)]
$$;
COMMENT ON FUNCTION vision.extract_rows IS
  'Function form of vision.extract_table (for PL/Proxy and callers that cannot CALL): at most max_rows rows, in the caller''s transaction.';

-- PARALLEL SAFE because it never queries: everything it needs is in the handle. The cost
-- (~40 ms of CPU per image) tells the planner that splitting the scan pays.
CREATE FUNCTION vision.extract_features_with(
  image        bytea,
  model_handle text,
  on_error     text DEFAULT 'error'
) RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 100000
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extract, spi
return spi.call_no_spi(plpy, extract.extract_features_with, GD, image, model_handle,
                       on_error)
$$;
COMMENT ON FUNCTION vision.extract_features_with IS
  'vision.extract_features for parallel queries: the model comes from vision.model_handle().';

-- featurestore: versions of stored features --------------------------------------------

CREATE SEQUENCE vision.feature_version_seq;
SELECT pg_catalog.pg_extension_config_dump('vision.feature_version_seq', '');

CREATE TABLE vision.feature_versions (
  model   text NOT NULL,
  source  regclass NOT NULL,
  version bigint NOT NULL DEFAULT nextval('vision.feature_version_seq'),
  PRIMARY KEY (model, source)
);
COMMENT ON TABLE vision.feature_versions IS
  'One row per (model, source) that has features, with a version that changes on every change (triggers).';
SELECT pg_catalog.pg_extension_config_dump('vision.feature_versions', '');

-- Shared snapshots: every backend of the server maps one file per (model, source) (see
-- pgvision.sharedfiles), recorded here with the transaction snapshot it was read under; changes
-- since are logged in vision.feature_changes, so a backend reads only what changed.
CREATE SEQUENCE vision.feature_snapshot_seq;
SELECT pg_catalog.pg_extension_config_dump('vision.feature_snapshot_seq', '');

CREATE TABLE vision.feature_snapshots (
  model      text NOT NULL,
  source     regclass NOT NULL,
  generation bigint NOT NULL DEFAULT nextval('vision.feature_snapshot_seq'),
  snap       pg_snapshot NOT NULL,
  n          bigint NOT NULL,
  dims       integer NOT NULL,
  sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size_bytes bigint NOT NULL,
  built_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (model, source)
);
COMMENT ON TABLE vision.feature_snapshots IS
  'The shared snapshot file of each (model, source): its checksum and the transaction snapshot it holds.';
SELECT pg_catalog.pg_extension_config_dump('vision.feature_snapshots', '');

CREATE TABLE vision.feature_changes (
  model    text NOT NULL,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  xid      xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX feature_changes_since ON vision.feature_changes (model, source, xid);
COMMENT ON TABLE vision.feature_changes IS
  'Images whose features changed, by transaction; pruned once every snapshot holds them.';

-- Versions come from a sequence, never reused: a table emptied and refilled never looks
-- like the one a backend cached.
-- SECURITY DEFINER: feature versions are kept by pgvision, whoever changes features.
CREATE FUNCTION vision._bump_feature_versions() RETURNS trigger
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

CREATE TRIGGER bump_on_insert AFTER INSERT ON vision.stored_features
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION vision._bump_feature_versions();

CREATE TRIGGER bump_on_update AFTER UPDATE ON vision.stored_features
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION vision._bump_feature_versions();

CREATE TRIGGER bump_on_delete AFTER DELETE ON vision.stored_features
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
  EXECUTE FUNCTION vision._bump_feature_versions();

CREATE TRIGGER bump_on_truncate AFTER TRUNCATE ON vision.stored_features
  FOR EACH STATEMENT EXECUTE FUNCTION vision._bump_feature_versions();

-- A changed feature is a newly extracted one, whoever updates it.
CREATE FUNCTION vision._touch_feature() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  NEW.extracted_at := clock_timestamp();
  RETURN NEW;
END
$$;

-- (A row converted to half precision, feature -> half, is not: vision.compact_features.)
CREATE TRIGGER touch_on_update BEFORE UPDATE OF feature, half ON vision.stored_features
  FOR EACH ROW WHEN (OLD.feature IS NULL OR NEW.feature IS NOT NULL OR NEW.half IS NULL)
  EXECUTE FUNCTION vision._touch_feature();

-- Everything pgvision keeps about a dropped table goes with it: rows of every vision table
-- with a `source regclass` column (so later versions' tables are covered too).
-- SECURITY DEFINER: whoever drops a table, everything pgvision kept about it goes.
CREATE FUNCTION vision._forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  dropped oid[];
  keeper regclass;
BEGIN
  SELECT array_agg(objid) INTO dropped FROM pg_event_trigger_dropped_objects()
    WHERE object_type = 'table' AND schema_name <> 'vision';
  IF dropped IS NULL THEN
    RETURN;
  END IF;
  FOR keeper IN
    SELECT a.attrelid::regclass FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = 'vision'::regnamespace AND c.relkind = 'r'
      AND a.attname = 'source' AND a.atttypid = 'regclass'::regtype AND NOT a.attisdropped
  LOOP
    EXECUTE format('DELETE FROM %s WHERE source::oid = ANY ($1)', keeper) USING dropped;
  END LOOP;
END
$$;

CREATE EVENT TRIGGER pgvision_forget_dropped_tables ON sql_drop
  WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
  EXECUTE FUNCTION vision._forget_dropped_tables();

-- Change tracking on source tables (installed by vision.extract_table): a changed, deleted or
-- truncated image takes its features and everything derived from them along, in the same
-- transaction, so no result is ever computed from bytes a row no longer holds.

-- Everything pgvision keeps about some images of a table (ids NULL: all of them); cached
-- neighbour lists that name them go too (vision.refresh_neighbours makes them again).
CREATE FUNCTION vision._forget_images(source regclass, ids bigint[]) RETURNS void
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
COMMENT ON FUNCTION vision._forget_images IS
  'Internal (change tracking): delete what pgvision derived from some images of a table.';

CREATE FUNCTION vision._image_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ids bigint[];
  old_id bigint;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM vision._forget_images(TG_RELID, NULL);
  ELSIF TG_LEVEL = 'STATEMENT' THEN  -- DELETE: the ids in the transition table
    EXECUTE format('SELECT array_agg(o.%I::bigint) FROM old_rows o', TG_ARGV[0]) INTO ids;
    IF ids IS NOT NULL THEN
      PERFORM vision._forget_images(TG_RELID, ids);
    END IF;
  ELSE  -- UPDATE of one row's image or id (the trigger's WHEN clause said it changed)
    EXECUTE format('SELECT ($1).%I::bigint', TG_ARGV[0]) INTO old_id USING OLD;
    PERFORM vision._forget_images(TG_RELID, ARRAY[old_id]);
  END IF;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION vision._image_changed() IS
  'Internal (change tracking): the trigger function vision.extract_table installs on a table.';

-- Installs the triggers once per (table, id column, image column); refuses a direct call (it
-- runs as the extension's owner): only pgvision's own code, writing, may install them.
CREATE FUNCTION vision._track_changes(source regclass, id_column name, image_column name)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  tag text := substr(md5(id_column || '/' || image_column), 1, 8);
  kind "char";
BEGIN
  IF NOT (SELECT vision._writing()) THEN
    RAISE EXCEPTION 'vision._track_changes: only vision.extract_table installs change tracking'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = source;
  IF kind NOT IN ('r', 'p') THEN
    RETURN false;  -- views and foreign tables have no such triggers
  END IF;
  -- one session at a time per table: two first extractions must not both create them
  PERFORM pg_advisory_xact_lock(hashtextextended('pgvision track ' || source::oid, 0));
  IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = source
             AND t.tgname = 'pgvision_changed_' || tag) THEN
    RETURN true;
  END IF;
  EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %I ON %s FOR EACH ROW '
                 'WHEN (OLD.%I IS DISTINCT FROM NEW.%I) '
                 'EXECUTE FUNCTION vision._image_changed(%L, %L)',
                 'pgvision_changed_' || tag, image_column, source, image_column, image_column,
                 id_column, image_column);
  EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %I ON %s FOR EACH ROW '
                 'WHEN (OLD.%I IS DISTINCT FROM NEW.%I) '
                 'EXECUTE FUNCTION vision._image_changed(%L, %L)',
                 'pgvision_renumbered_' || tag, id_column, source, id_column, id_column,
                 id_column, image_column);
  IF NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = source
                 AND t.tgname = 'pgvision_deleted') THEN
    EXECUTE format('CREATE TRIGGER pgvision_deleted AFTER DELETE ON %s '
                   'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION vision._image_changed(%L, %L)',
                   source, id_column, image_column);
    EXECUTE format('CREATE TRIGGER pgvision_truncated AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION vision._image_changed()', source);
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION vision._track_changes IS
  'Internal: install the change-tracking triggers on a source table (called by vision.extract_table).';

-- search: nearest neighbours -----------------------------------------------------------

-- HNSW indexes (faiss), one per (model, source). The index file is stored in chunks (no
-- size ceiling) and mapped read-only by every backend; images changed since its snapshot
-- are searched exactly until vision.refresh_index folds them in.
CREATE SEQUENCE vision.index_generation_seq;
SELECT pg_catalog.pg_extension_config_dump('vision.index_generation_seq', '');

CREATE TABLE vision.indexes (
  model           text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE
                    ON DELETE CASCADE,
  source          regclass NOT NULL,
  metric          text NOT NULL CHECK (metric IN ('cosine', 'l2', 'ip')),
  m               integer NOT NULL,
  ef_construction integer NOT NULL,
  ef_search       integer NOT NULL,
  pca_dims        integer,
  storage         text NOT NULL DEFAULT 'float32'
                    CHECK (storage IN ('float32', 'float16', 'int8')),
  dims            integer NOT NULL,
  n               bigint NOT NULL,
  entries         bigint NOT NULL,
  generation      bigint NOT NULL DEFAULT nextval('vision.index_generation_seq'),
  snap            pg_snapshot NOT NULL,
  entry_ids       bytea NOT NULL,
  dead            bytea NOT NULL,
  sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size_bytes      bigint NOT NULL,
  build_seconds   double precision NOT NULL,
  built_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
  owner           name NOT NULL DEFAULT CURRENT_USER,
  method          text NOT NULL DEFAULT 'hnsw' CHECK (method IN ('hnsw', 'ivf')),
  lists           integer CHECK (lists > 0),
  probes          integer CHECK (probes > 0),
  PRIMARY KEY (model, source),
  CONSTRAINT indexes_ivf_parameters CHECK ((method = 'ivf') = (lists IS NOT NULL AND probes IS NOT NULL))
);
COMMENT ON TABLE vision.indexes IS
  'Indexes built by vision.create_index (HNSW graphs or IVF lists): parameters, entries'' image ids and the checksum of the faiss file.';
SELECT pg_catalog.pg_extension_config_dump('vision.indexes', '');

CREATE TABLE vision.index_chunks (
  model  text NOT NULL,
  source regclass NOT NULL,
  part   integer NOT NULL,
  data   bytea NOT NULL,
  PRIMARY KEY (model, source, part),
  FOREIGN KEY (model, source) REFERENCES vision.indexes (model, source)
    ON UPDATE CASCADE ON DELETE CASCADE
);
COMMENT ON TABLE vision.index_chunks IS
  'The bytes of each index file, in parts of 64 MiB (a missing or damaged file is written again from them).';
ALTER TABLE vision.index_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('vision.index_chunks', '');

CREATE VIEW vision.index_status WITH (security_invoker = true) AS
  SELECT i.model, i.source, i.metric, i.m, i.ef_construction, i.ef_search, i.pca_dims, i.n,
         i.size_bytes, i.build_seconds, i.built_at, c.pending > 0 AS stale, i.storage,
         i.entries - i.n AS dead_entries, c.pending AS pending_changes, i.method, i.lists,
         i.probes
  FROM vision.indexes i
  CROSS JOIN LATERAL (
    SELECT count(DISTINCT f.image_id) AS pending FROM vision.feature_changes f
    WHERE f.model = i.model AND f.source = i.source
      AND f.xid >= pg_snapshot_xmin(i.snap) AND NOT pg_visible_in_snapshot(f.xid, i.snap)) c;
COMMENT ON VIEW vision.index_status IS
  'Indexes, their size and the changes since their build (searched exactly until vision.refresh_index).';

-- Every file a snapshot or index of this database names; other store files are removed.
-- SECURITY DEFINER: file clean-up must see every table's rows, not just the caller's.
CREATE FUNCTION vision._store_files() RETURNS TABLE (sha256 text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT sha256 FROM vision.feature_snapshots UNION SELECT sha256 FROM vision.indexes
$$;
COMMENT ON FUNCTION vision._store_files() IS
  'Internal: the checksums of the store files this database still names.';

-- Cached neighbours: each image's k nearest, maintained by vision.refresh_neighbours.
CREATE TABLE vision.neighbours (
  model         text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE
                  ON DELETE CASCADE,
  source        regclass NOT NULL,
  image_id      bigint NOT NULL,
  k             integer NOT NULL,
  metric        text NOT NULL,
  neighbour_ids bigint[] NOT NULL,
  distances     real[] NOT NULL,
  refreshed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (model, source, image_id)
);
COMMENT ON TABLE vision.neighbours IS 'Each image''s k nearest neighbours, nearest first.';
SELECT pg_catalog.pg_extension_config_dump('vision.neighbours', '');

CREATE FUNCTION vision.similar(
  image_id    bigint,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3_mixed6_grid_224',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.similar, image_id, k, model, metric, source,
                candidates, approximate)
$$;
COMMENT ON FUNCTION vision.similar IS
  'The k stored images nearest to a stored image (itself excluded): exact, or through the HNSW index when one is fresh.';

CREATE FUNCTION vision.similar_many(
  image_ids   bigint[],
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3_mixed6_grid_224',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (query_id bigint, image_id bigint, distance real, rank integer)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE ROWS 100
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.similar_many, image_ids, k, model, metric, source,
                approximate)
$$;
COMMENT ON FUNCTION vision.similar_many IS
  'vision.similar for many stored images in one call: rows (query_id, image_id, distance, rank).';

CREATE FUNCTION vision.similar_to_image(
  image       bytea,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3_mixed6_grid_224',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.similar_to_image, image, k, model, metric, source,
                candidates, approximate)
$$;
COMMENT ON FUNCTION vision.similar_to_image IS
  'The k stored images nearest to new image bytes (features extracted on the fly).';

CREATE FUNCTION vision.similar_to_vector(
  feature     real[],
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3_mixed6_grid_224',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.similar_to_vector, feature, k, model, metric, source,
                candidates, approximate)
$$;
COMMENT ON FUNCTION vision.similar_to_vector IS
  'The k stored images nearest to a feature vector (e.g. one computed on another node).';

CREATE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3_mixed6_grid_224',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40,
  pca_dims        integer DEFAULT NULL,
  storage         text    DEFAULT 'float32',
  method          text    DEFAULT NULL,
  lists           integer DEFAULT NULL,
  probes          integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims, storage, method, lists, probes)
$$;
COMMENT ON FUNCTION vision.create_index IS
  'Build (or rebuild) the index over a table''s features: HNSW, or IVF lists (method; by default HNSW below 500,000 images, IVF from there); returns the number of vectors.';

CREATE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3_mixed6_grid_224')
RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.refresh_index, source, model)
$$;
COMMENT ON FUNCTION vision.refresh_index IS
  'Fold the changes since an index was built into it (or rebuild it when a fifth is out of date).';

CREATE FUNCTION vision.drop_index(source regclass, model text DEFAULT 'inception_v3_mixed6_grid_224')
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.drop_index, source, model)
$$;
COMMENT ON FUNCTION vision.drop_index IS 'Drop a table''s index; true if there was one.';

CREATE FUNCTION vision.refresh_neighbours(
  source regclass,
  model  text    DEFAULT 'inception_v3_mixed6_grid_224',
  k      integer DEFAULT 10,
  metric text    DEFAULT 'cosine'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.refresh_neighbours, source, model, k, metric)
$$;
COMMENT ON FUNCTION vision.refresh_neighbours IS
  'Materialise every image''s k nearest neighbours into vision.neighbours, incrementally; returns rows written.';

-- duplicates: near-duplicate images from perceptual hashes, colours and features -----------

CREATE FUNCTION vision.duplicates(
  source            regclass,
  model             text    DEFAULT 'inception_v3_mixed6_grid_224',
  max_hash_distance integer DEFAULT 7,
  min_similarity    real    DEFAULT 0.82,
  neighbours        integer DEFAULT 10
) RETURNS TABLE (group_id bigint, image_id bigint, representative boolean,
                 hash_distance integer, cosine real, similarity real)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import duplicates, spi
return spi.call(plpy, GD, duplicates.duplicates, source, model, max_hash_distance,
                min_similarity, neighbours)
$$;
COMMENT ON FUNCTION vision.duplicates IS
  'Groups of near-duplicate images of a table (re-encoded, resized, cropped, mirrored): perceptual hashes (model perceptual_hash) through a binary index, confirmed by colours and the features of model (NULL: hashes alone); evidence against each group''s representative.';

CREATE FUNCTION vision.duplicates_of(
  image             bytea,
  source            regclass,
  model             text    DEFAULT 'inception_v3_mixed6_grid_224',
  max_hash_distance integer DEFAULT 7,
  min_similarity    real    DEFAULT 0.82
) RETURNS TABLE (image_id bigint, hash_distance integer, cosine real, similarity real)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import duplicates, spi
return spi.call(plpy, GD, duplicates.duplicates_of, image, source, model, max_hash_distance,
                min_similarity)
$$;
COMMENT ON FUNCTION vision.duplicates_of IS
  'The stored near-duplicates of new image bytes in a table, most similar first: what to check before loading an image.';

-- moderation: the shipped network's own content classes -----------------------------------

CREATE FUNCTION vision.moderate(image bytea, model text DEFAULT 'nsfwjs_mobilenet_v2')
RETURNS TABLE (class text, probability real)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import moderation, spi
return spi.call(plpy, GD, moderation.moderate, image, model)
$$;
COMMENT ON FUNCTION vision.moderate IS
  'nsfwjs''s content classes (drawing, hentai, neutral, porn, sexy) of image bytes, most likely first: the source network''s scores, not pgvision''s judgement.';

-- The class scores of a table's images, kept current like features:
-- CALL vision.extract_table(t, model => 'nsfwjs_mobilenet_v2').
CREATE VIEW vision.content_scores WITH (security_invoker = true) AS
  SELECT f.source, f.image_id, f.model, f.feature[1] AS drawing, f.feature[2] AS hentai,
         f.feature[3] AS neutral, f.feature[4] AS porn, f.feature[5] AS sexy, f.extracted_at
  FROM vision.features f
  WHERE f.model OPERATOR(pg_catalog.=) 'nsfwjs_mobilenet_v2';
COMMENT ON VIEW vision.content_scores IS
  'Per image the content class probabilities of model nsfwjs_mobilenet_v2 (nsfwjs''s classes).';

-- Images whose not-safe share (porn + hentai + sexy) is at least pgvision.flag_threshold
-- (default 0.8), with the class that leads it.
CREATE VIEW vision.flagged_images WITH (security_invoker = true) AS
  SELECT c.source, c.image_id, c.model, c.porn + c.hentai + c.sexy AS score,
         CASE WHEN c.porn >= c.hentai AND c.porn >= c.sexy THEN 'porn'
              WHEN c.hentai >= c.sexy THEN 'hentai' ELSE 'sexy' END AS class,
         c.extracted_at
  FROM vision.content_scores c
  WHERE c.porn + c.hentai + c.sexy >= coalesce(
    NULLIF(pg_catalog.current_setting('pgvision.flag_threshold', true), '')::real,
    0.8);
COMMENT ON VIEW vision.flagged_images IS
  'Images whose porn + hentai + sexy probability is at least pgvision.flag_threshold (0.8), for human review.';
GRANT SELECT ON vision.content_scores, vision.flagged_images TO PUBLIC;

-- ocr: words in images ------------------------------------------------------------------

-- The text of a table's images, read by the OCR model (CALL vision.extract_table(t, model =>
-- 'pp_ocr_v6')), kept current like features (the change triggers delete a changed image's
-- row, vision.maintain reads it again). `document` uses the 'simple' configuration: no
-- stemming and no stop words, so brands, sizes and codes stay searchable in any language.
CREATE TABLE vision.image_text (
  model    text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  lines    jsonb NOT NULL,
  body     text NOT NULL,
  document tsvector GENERATED ALWAYS AS (pg_catalog.to_tsvector('pg_catalog.simple'::regconfig, body)) STORED,
  read_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, source, image_id)
);
CREATE INDEX image_text_document ON vision.image_text USING gin (document);
COMMENT ON TABLE vision.image_text IS
  'The text read in each image (lines with boxes and confidence, the text, its tsvector), written by vision.extract_table with the OCR model.';
SELECT pg_catalog.pg_extension_config_dump('vision.image_text', '');

CREATE FUNCTION vision.read_text(image bytea, model text DEFAULT 'pp_ocr_v6')
RETURNS TABLE (line integer, text text, confidence real, box integer[])
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi, words
return spi.call(plpy, GD, words.read_text, image, model)
$$;
COMMENT ON FUNCTION vision.read_text IS
  'The lines of text in image bytes, in reading order: text, recogniser confidence and box (four corners x1,y1..x4,y4, clockwise from top left).';

CREATE FUNCTION vision.search_text(
  query  text,
  source regclass,
  k      integer DEFAULT 10,
  model  text    DEFAULT 'pp_ocr_v6'
) RETURNS TABLE (image_id bigint, rank real, text text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi, words
return spi.call(plpy, GD, words.search_text, query, source, k, model)
$$;
COMMENT ON FUNCTION vision.search_text IS
  'The k images of a table whose text matches a web-search style query (words, "phrases", or, -word), best ts_rank first; feed the ids to vision.similar(candidates => ...) to rank them by looks.';
GRANT SELECT, INSERT, UPDATE, DELETE ON vision.image_text TO PUBLIC;

-- classify: classifiers on stored features ---------------------------------------------

CREATE TABLE vision.classifiers (
  name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  model         text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source        regclass NOT NULL,
  method        text NOT NULL CHECK (method IN ('knn', 'softmax', 'logistic', 'sgd')),
  options       jsonb NOT NULL,
  labels        text[] NOT NULL,
  dims          integer NOT NULL,
  weights       bytea NOT NULL,          -- .npz of float arrays, read with allow_pickle=False
  train_ids     bigint[] NOT NULL,
  train_targets integer[] NOT NULL,
  metrics       jsonb NOT NULL,          -- cross-validation results at training time
  trained_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  owner         name NOT NULL DEFAULT CURRENT_USER
);
COMMENT ON TABLE vision.classifiers IS
  'Trained classifiers: method, label set, weights (plain arrays) and cross-validated metrics.';
SELECT pg_catalog.pg_extension_config_dump('vision.classifiers', '');

CREATE TABLE vision.predictions (
  classifier   text NOT NULL REFERENCES vision.classifiers (name) ON DELETE CASCADE
                 ON UPDATE CASCADE,
  source       regclass NOT NULL,
  image_id     bigint NOT NULL,
  label        text NOT NULL,
  probability  real NOT NULL,
  predicted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (classifier, source, image_id)
);
COMMENT ON TABLE vision.predictions IS 'Labels written by vision.classify_table.';
SELECT pg_catalog.pg_extension_config_dump('vision.predictions', '');

CREATE FUNCTION vision.train_classifier(
  name    text,
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3_mixed6_grid_224',
  method  text     DEFAULT 'softmax',
  options jsonb    DEFAULT '{}',
  folds   integer  DEFAULT 5,
  replace boolean  DEFAULT false
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.train_classifier, name, labels, source, model,
                method, options, folds, replace)
$$;
COMMENT ON FUNCTION vision.train_classifier IS
  'Train a classifier on stored features of labelled images (k-fold CV first); returns the CV metrics.';

CREATE FUNCTION vision.classify(
  image_id   bigint,
  classifier text,
  top_k      integer  DEFAULT 3,
  source     regclass DEFAULT NULL
) RETURNS TABLE (label text, probability real)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.classify, image_id, classifier, top_k, source)
$$;
COMMENT ON FUNCTION vision.classify IS 'Most likely labels of a stored image.';

CREATE FUNCTION vision.classify_image(image bytea, classifier text, top_k integer DEFAULT 3)
RETURNS TABLE (label text, probability real)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.classify_image, image, classifier, top_k)
$$;
COMMENT ON FUNCTION vision.classify_image IS 'Most likely labels of new image bytes.';

CREATE FUNCTION vision.classify_table(
  classifier text,
  source     regclass DEFAULT NULL,
  batch_size integer  DEFAULT 1000
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.classify_table, classifier, source, batch_size)
$$;
COMMENT ON FUNCTION vision.classify_table IS
  'Write the top label of every image without a current prediction into vision.predictions.';

CREATE FUNCTION vision.compare_classifiers(
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3_mixed6_grid_224',
  methods text[]   DEFAULT NULL,
  rank_by text     DEFAULT 'roc_auc',
  folds   integer  DEFAULT 5,
  options jsonb    DEFAULT '{}'
) RETURNS TABLE (method text, accuracy real, macro_f1 real, roc_auc real, cv_seconds real,
                 rank integer)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.compare_classifiers, labels, source, model, methods,
                rank_by, folds, options)
$$;
COMMENT ON FUNCTION vision.compare_classifiers IS
  'Cross-validate methods on the same labelled set; ranked by accuracy, macro_f1 or roc_auc.';

CREATE FUNCTION vision.fine_tune(
  name       text,
  labels     regclass,
  source     regclass,
  base_model text     DEFAULT 'inception_v3_mixed6_grid_224',
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

CREATE FUNCTION vision.evaluate_classifier(classifier text) RETURNS jsonb
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.evaluate_classifier, classifier)
$$;
COMMENT ON FUNCTION vision.evaluate_classifier IS
  'The cross-validated metrics stored when the classifier was trained.';

CREATE FUNCTION vision._put_classifier(
  name text, model text, source regclass, method text, options jsonb, labels text[],
  dims integer, weights bytea, train_ids bigint[], train_targets integer[], metrics jsonb,
  trained_at timestamptz
) RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.put_classifier, name, model, source, method, options,
                labels, dims, weights, train_ids, train_targets, metrics, trained_at)
$$;
COMMENT ON FUNCTION vision._put_classifier IS
  'Internal (vision_cluster): store a classifier trained on the coordinator, trained_at included.';

-- recommend: votes, taste models, bandit -----------------------------------------------

CREATE TABLE vision.votes (
  user_id  text NOT NULL,
  model    text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  liked    boolean NOT NULL,
  voted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  owner    name NOT NULL DEFAULT CURRENT_USER,
  PRIMARY KEY (owner, user_id, model, source, image_id)
);
COMMENT ON TABLE vision.votes IS 'Likes and dislikes, one per user and image (the last vote wins).';
COMMENT ON COLUMN vision.votes.owner IS
  'The role that recorded the vote: user ids are that role''s own shoppers.';
SELECT pg_catalog.pg_extension_config_dump('vision.votes', '');

CREATE TABLE vision.taste_models (
  user_id    text NOT NULL,
  model      text NOT NULL,
  source     regclass NOT NULL,
  weights    bytea NOT NULL,            -- .npz: mean, scale, w, b (allow_pickle=False)
  votes      integer NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  owner      name NOT NULL DEFAULT CURRENT_USER,
  PRIMARY KEY (owner, user_id, model, source)
);
COMMENT ON TABLE vision.taste_models IS
  'Per-user logistic taste models (w, b) on unit-length features, refitted after each vote.';
SELECT pg_catalog.pg_extension_config_dump('vision.taste_models', '');

CREATE FUNCTION vision.record_vote(
  user_id  text,
  image_id bigint,
  liked    boolean,
  model    text     DEFAULT 'inception_v3_mixed6_grid_224',
  source   regclass DEFAULT NULL
) RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.record_vote, user_id, image_id, liked, model, source)
$$;
COMMENT ON FUNCTION vision.record_vote IS
  'Store a like/dislike (idempotent per user and image); updates the bandit and the user''s taste model. True if it changed anything.';

CREATE FUNCTION vision.recommend(
  user_id      text,
  k            integer  DEFAULT 10,
  exclude_seen boolean  DEFAULT true,
  model        text     DEFAULT 'inception_v3_mixed6_grid_224',
  source       regclass DEFAULT NULL
) RETURNS TABLE (image_id bigint, score real, strategy text)
LANGUAGE plpython3u STABLE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.recommend, user_id, k, exclude_seen, model, source)
$$;
COMMENT ON FUNCTION vision.recommend IS
  'Images ranked for a user by similarity to the nearest liked image (less half that to the nearest disliked) plus a logistic taste model; with likes only, the nearest liked; without, popularity (named in strategy).';

CREATE FUNCTION vision.bandit_next(
  user_id text,
  model   text     DEFAULT 'inception_v3_mixed6_grid_224',
  source  regclass DEFAULT NULL
) RETURNS TABLE (cluster integer, image_id bigint, draw real)
LANGUAGE plpython3u VOLATILE ROWS 1
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.bandit_next, user_id, model, source)
$$;
COMMENT ON FUNCTION vision.bandit_next IS
  'Thompson sampling over clusters: from the cluster with the highest Beta draw, the unseen image the user''s scorer ranks first.';

CREATE FUNCTION vision._score_images(
  model text, source regclass, k integer, exclude bigint[], strategy text, taste bytea,
  popular_ids bigint[], popular_net real[]
) RETURNS TABLE (image_id bigint, score double precision)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.score_images, model, source, k, exclude, strategy,
                taste, popular_ids, popular_net)
$$;
COMMENT ON FUNCTION vision._score_images IS
  'Internal (vision_cluster): this node''s k best images for preferences computed on the coordinator.';

CREATE FUNCTION vision._score_moments(model text, source regclass, taste bytea)
RETURNS double precision[]
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.score_moments, model, source, taste)
$$;
COMMENT ON FUNCTION vision._score_moments IS
  'Internal (vision_cluster): sums of this node''s scores, so every shard standardises them alike.';

-- clusters: K-means clusters and 2-D maps ----------------------------------------------

CREATE TABLE vision.clusters (
  model    text NOT NULL,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  cluster  integer NOT NULL,
  PRIMARY KEY (model, source, image_id)
);
SELECT pg_catalog.pg_extension_config_dump('vision.clusters', '');

CREATE TABLE vision.cluster_centroids (
  model           text NOT NULL,
  source          regclass NOT NULL,
  cluster         integer NOT NULL,
  size            integer NOT NULL,
  medoid_image_id bigint,
  centroid        real[] NOT NULL,
  PRIMARY KEY (model, source, cluster)
);
COMMENT ON TABLE vision.cluster_centroids IS 'K-means clusters: size, medoid image, centroid.';
SELECT pg_catalog.pg_extension_config_dump('vision.cluster_centroids', '');

CREATE TABLE vision.map_2d (
  model    text NOT NULL,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  method   text NOT NULL,
  x        real NOT NULL,
  y        real NOT NULL,
  PRIMARY KEY (model, source, image_id)
);
COMMENT ON TABLE vision.map_2d IS '2-D coordinates from vision.embed_2d.';

-- The bandit's Beta(alpha, beta) per (owner, user, cluster), counted from votes and the
-- current clusters, so it never goes stale when images are re-clustered.
CREATE VIEW vision.bandit_state WITH (security_invoker = true) AS
  SELECT v.user_id, v.model, v.source, c.cluster,
         (1 + count(*) FILTER (WHERE v.liked))::integer AS alpha,
         (1 + count(*) FILTER (WHERE NOT v.liked))::integer AS beta,
         v.owner
  FROM vision.votes v
  JOIN vision.clusters c USING (model, source, image_id)
  GROUP BY v.owner, v.user_id, v.model, v.source, c.cluster;
COMMENT ON VIEW vision.bandit_state IS 'Beta(alpha, beta) per user and cluster, from votes.';
SELECT pg_catalog.pg_extension_config_dump('vision.map_2d', '');

CREATE FUNCTION vision.cluster(
  model  text     DEFAULT 'inception_v3_mixed6_grid_224',
  k      integer  DEFAULT 8,
  method text     DEFAULT 'kmeans',
  source regclass DEFAULT NULL
) RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import clusters, spi
return spi.call(plpy, GD, clusters.cluster, model, k, method, source)
$$;
COMMENT ON FUNCTION vision.cluster IS
  'K-means over a table''s features into vision.clusters and vision.cluster_centroids.';

CREATE FUNCTION vision.embed_2d(
  model  text     DEFAULT 'inception_v3_mixed6_grid_224',
  method text     DEFAULT 'tsne',
  source regclass DEFAULT NULL
) RETURNS real
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import clusters, spi
return spi.call(plpy, GD, clusters.embed_2d, model, method, source)
$$;
COMMENT ON FUNCTION vision.embed_2d IS
  'Project a table''s features to 2-D (t-SNE or PCA) into vision.map_2d; returns seconds taken.';

CREATE FUNCTION vision.plot_map(
  model        text     DEFAULT 'inception_v3_mixed6_grid_224',
  color_by     text     DEFAULT 'cluster',
  source       regclass DEFAULT NULL,
  thumbnails   boolean  DEFAULT false,
  image_column name     DEFAULT 'image',
  id_column    name     DEFAULT 'id',
  size         integer  DEFAULT 800,
  labels       name     DEFAULT NULL,
  layout       text     DEFAULT NULL
) RETURNS bytea
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import pictures, spi
return spi.call(plpy, GD, pictures.plot_map, model, color_by, source, thumbnails,
                image_column, id_column, size, labels, layout)
$$;
COMMENT ON FUNCTION vision.plot_map IS
  'PNG map of the 2-D embedding, coloured by cluster or by a classifier''s predictions (legend beside it), optionally with thumbnails (in a grid, each in a cell of its own, or scattered: layout) and ids or a column''s text (labels).';

CREATE FUNCTION vision.contact_sheet(
  image_id     bigint   DEFAULT NULL,
  image_ids    bigint[] DEFAULT NULL,
  k            integer  DEFAULT 8,
  source       regclass DEFAULT NULL,
  model        text     DEFAULT 'inception_v3_mixed6_grid_224',
  label_column name     DEFAULT NULL,
  image_column name     DEFAULT 'image',
  id_column    name     DEFAULT 'id',
  tile         integer  DEFAULT 160,
  columns      integer  DEFAULT 5
) RETURNS bytea
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import pictures, spi
return spi.call(plpy, GD, pictures.contact_sheet, image_id, image_ids, k, source, model,
                label_column, image_column, id_column, tile, columns)
$$;
COMMENT ON FUNCTION vision.contact_sheet IS
  'PNG of a stored image (framed, first) beside its k nearest neighbours, or of the images image_ids in order, captioned with ids, a label column and distances.';

-- upkeep: keeping a table current --------------------------------------------------------

-- A procedure, like vision.extract_table, so that extraction commits batch by batch.
CREATE PROCEDURE vision.maintain(source regclass, INOUT report jsonb DEFAULT NULL,
                                 add_model text DEFAULT NULL)
LANGUAGE plpython3u AS $$
from pgvision import spi, upkeep
return [spi.call(plpy, GD, upkeep.maintain, source, add_model)]
$$;
COMMENT ON PROCEDURE vision.maintain IS
  'Bring a table fully up to date: features of new and changed rows, stale indexes, cached neighbours, labels of classifiers that labelled it; add_model extracts one more model (move a table to a new default); returns a report.';

CREATE FUNCTION vision.keep_current(source regclass, every interval DEFAULT '1 minute')
RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi, upkeep
return spi.call(plpy, GD, upkeep.keep_current, source, every)
$$;
COMMENT ON FUNCTION vision.keep_current IS
  'Schedule CALL vision.maintain(source) with pg_cron, every minute by default, as the calling role; returns the cron job id.';

CREATE FUNCTION vision.stop_keeping_current(source regclass) RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi, upkeep
return spi.call(plpy, GD, upkeep.stop_keeping_current, source)
$$;
COMMENT ON FUNCTION vision.stop_keeping_current IS
  'Remove the calling role''s pg_cron schedule of vision.maintain for a table; true if there was one.';

-- shards: what a shard serves to a pgvision_cluster coordinator ------------------------

CREATE FUNCTION vision.node_name() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT format('%s/%s', coalesce(nullif(current_setting('cluster_name'), ''),
                                  'port ' || current_setting('port')), current_database())
$$;
COMMENT ON FUNCTION vision.node_name() IS
  'This node''s name in cluster messages: cluster_name (or port) / database.';

CREATE FUNCTION vision.check_node(version text, model text DEFAULT NULL, sha256 text DEFAULT NULL)
RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.check_node, version, model, sha256)
$$;
COMMENT ON FUNCTION vision.check_node IS
  'This node''s name, or an error when its pgvision version or model differs from the given ones (the coordinator''s).';

-- Other nodes read features through postgres_fdw; a source OID means nothing there, so this
-- view names the table (schema-qualified, whatever the reader's search_path).
CREATE VIEW vision.features_export WITH (security_invoker = true) AS
  SELECT f.model, format('%I.%I', n.nspname, c.relname) AS source, f.image_id, f.feature,
         f.extracted_at
  FROM vision.features f
  JOIN pg_catalog.pg_class c ON c.oid = f.source
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
COMMENT ON VIEW vision.features_export IS
  'vision.features with the source table''s qualified name (read by coordinators over postgres_fdw).';

CREATE VIEW vision.predictions_export WITH (security_invoker = true) AS
  SELECT p.classifier, format('%I.%I', n.nspname, c.relname) AS source, p.image_id, p.label,
         p.probability, p.predicted_at
  FROM vision.predictions p
  JOIN pg_catalog.pg_class c ON c.oid = p.source
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
COMMENT ON VIEW vision.predictions_export IS
  'vision.predictions with the source table''s qualified name (read by coordinators over postgres_fdw).';

-- security -----------------------------------------------------------------------------
-- Whatever pgvision keeps about a table is visible only to roles that may SELECT that table;
-- nobody writes pgvision's tables except pgvision's own functions (and vision_admin);
-- classifiers and indexes belong to the role that made them, votes and taste models to the
-- role that recorded them. The functions run as their caller (SECURITY INVOKER), so reading
-- a user's table honours its privileges and row-level security.

-- True only while pgvision's own code runs a write (pgvision.spi.write): the flag lives in
-- GD, which only superuser-created plpython3u functions reach.
CREATE FUNCTION vision._writing() RETURNS boolean
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi
return spi.writing(GD)
$$;
COMMENT ON FUNCTION vision._writing() IS
  'Internal (row-level security): whether pgvision''s own code is writing now.';

-- A limit as an admin set it (ALTER SYSTEM / postgresql.conf, ALTER DATABASE / ROLE ... SET),
-- whatever the session SET: a plain session may lower a limit, never raise it.
CREATE FUNCTION vision._admin_setting(setting text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE WHEN $1 LIKE 'pgvision.%' THEN coalesce(
    (SELECT substr(c, strpos(c, '=') + 1)
     FROM pg_db_role_setting s, unnest(s.setconfig) AS c
     WHERE split_part(c, '=', 1) = $1
       AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
       AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user))
     ORDER BY s.setrole <> 0 AND s.setdatabase <> 0 DESC, s.setrole <> 0 DESC
     LIMIT 1),
    (SELECT f.setting FROM pg_file_settings f WHERE f.name = $1 AND f.error IS NULL
     ORDER BY f.seqno DESC LIMIT 1)) END
$$;
COMMENT ON FUNCTION vision._admin_setting IS
  'Internal: a pgvision.* setting as the server, database or role configuration sets it (not the session).';

-- True while pgvision's own code reads or writes its tables for everyone (shared snapshots,
-- change logs, its own writes): the source table's row-level security is then applied to
-- the answers by pgvision itself (pgvision.featurestore.visible), not to the rows it reads.
CREATE FUNCTION vision._reading() RETURNS boolean
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi
return spi.reading(GD)
$$;
COMMENT ON FUNCTION vision._reading() IS
  'Internal (row-level security): whether pgvision''s own code is reading or writing for everyone now.';

-- The id column of a source table: the one its change-tracking triggers name (installed by
-- vision.extract_table), else the one its last extraction used, else its one-column primary
-- key (features written by other means, e.g. copied from another server).
CREATE FUNCTION vision._id_column(source regclass) RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(
    (SELECT pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 1)::name
     FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = $1 AND t.tgname LIKE 'pgvision\_changed\_%'
     ORDER BY t.oid LIMIT 1),
    (SELECT j.id_column::name FROM vision.extract_jobs j
     WHERE j.source = $1 ORDER BY j.job_id DESC LIMIT 1),
    (SELECT a.attname FROM pg_catalog.pg_constraint k
     JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
     WHERE k.conrelid = $1 AND k.contype = 'p' AND pg_catalog.cardinality(k.conkey) = 1))
$$;
COMMENT ON FUNCTION vision._id_column IS
  'Internal (row-level security): the id column pgvision knows a source table by.';

-- Whether the caller's SELECT on the source table returns every one of these image ids (the
-- table's row-level security decides); false when pgvision does not know the id column.
CREATE FUNCTION vision._visible(source regclass, ids bigint[]) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  col name := vision._id_column(source);
  wanted bigint[] := ARRAY(SELECT DISTINCT i FROM pg_catalog.unnest(ids) AS i
                           WHERE i IS NOT NULL);
  seen bigint;
BEGIN
  IF pg_catalog.cardinality(wanted) = 0 THEN
    RETURN true;
  END IF;
  IF col IS NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('SELECT count(DISTINCT %1$I) FROM %2$s WHERE %1$I = ANY ($1)', col, source)
    INTO seen USING wanted;
  RETURN seen = pg_catalog.cardinality(wanted);
END
$$;
COMMENT ON FUNCTION vision._visible IS
  'Internal (row-level security): whether the caller''s SELECT on a table returns all these ids.';

-- A row about images of a table is for roles that may SELECT the table and, where the
-- table's row-level security applies to them, whose SELECT returns those images.
DO $$
DECLARE
  readable constant text := 'pg_catalog.has_table_privilege(source, ''SELECT'')';
  writable constant text :=
    '((SELECT vision._writing()) OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  mine constant text := '(owner = CURRENT_USER)';
  owned constant text :=
    '(owner = CURRENT_USER OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  -- CASE: the per-row check runs only where row-level security applies and pgvision itself
  -- is not reading for everyone
  seen constant text := 'CASE WHEN (SELECT vision._reading()) '
    'OR NOT pg_catalog.row_security_active(source) THEN true '
    'ELSE vision._visible(source, %s) END';
  t text;
  kind text;
  images text;
  reading text;
  adding text;
  changing text;
BEGIN
  FOR t, kind, images IN VALUES ('stored_features', 'shared', 'ARRAY[image_id]'),
      ('extract_errors', 'shared', 'ARRAY[image_id]'), ('extract_jobs', 'shared', NULL),
      ('feature_versions', 'shared', NULL), ('neighbours', 'shared', 'image_id || neighbour_ids'),
      ('predictions', 'shared', 'ARRAY[image_id]'), ('clusters', 'shared', 'ARRAY[image_id]'),
      ('cluster_centroids', 'shared', 'ARRAY[medoid_image_id]'),
      ('map_2d', 'shared', 'ARRAY[image_id]'), ('image_text', 'shared', 'ARRAY[image_id]'),
      ('feature_snapshots', 'shared', NULL),
      ('feature_changes', 'shared', 'ARRAY[image_id]'), ('index_chunks', 'shared', NULL),
      ('indexes', 'owned', NULL), ('classifiers', 'owned', 'train_ids'),
      ('votes', 'private', NULL), ('taste_models', 'private', NULL)
  LOOP
    reading := readable;
    IF images IS NOT NULL THEN
      reading := reading || ' AND ' || format(seen, images);
    END IF;
    adding := readable || ' AND ' || writable;
    changing := adding;
    IF kind = 'owned' THEN
      adding := adding || ' AND ' || mine;
      changing := changing || ' AND ' || owned;
    ELSIF kind = 'private' THEN
      reading := reading || ' AND ' || mine;
      adding := adding || ' AND ' || mine;
      changing := adding;
    END IF;
    EXECUTE format('ALTER TABLE vision.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY pgvision_read ON vision.%I FOR SELECT USING (%s)', t, reading);
    EXECUTE format('CREATE POLICY pgvision_insert ON vision.%I FOR INSERT WITH CHECK (%s)',
                   t, adding);
    EXECUTE format('CREATE POLICY pgvision_update ON vision.%I FOR UPDATE USING (%s) '
                   'WITH CHECK (%s)', t, changing, changing);
    EXECUTE format('CREATE POLICY pgvision_delete ON vision.%I FOR DELETE USING (%s)',
                   t, changing);
  END LOOP;
END
$$;

-- DROP EXTENSION pgvision without CASCADE would silently delete users' features,
-- classifiers and votes (they live in the extension's tables): refuse it while it holds any.
CREATE FUNCTION vision._guard_drop_extension() RETURNS event_trigger
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
CREATE EVENT TRIGGER pgvision_guard_drop_extension ON ddl_command_start
  WHEN TAG IN ('DROP EXTENSION')
  EXECUTE FUNCTION vision._guard_drop_extension();

-- privileges ---------------------------------------------------------------------------

-- Anyone may use models and call the functions; only vision_admin (and the owner) may
-- change models. The stored tables are granted to PUBLIC, and row-level security above
-- decides which rows a role sees and that only pgvision's functions write them. TRUNCATE
-- (which row-level security does not cover) is granted to nobody.
GRANT USAGE ON SCHEMA vision TO PUBLIC;
GRANT SELECT ON vision.model_store, vision.models TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON vision.model_store TO vision_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON vision.stored_features, vision.features,
  vision.extract_errors,
  vision.extract_jobs, vision.indexes, vision.neighbours, vision.classifiers,
  vision.predictions, vision.votes, vision.taste_models, vision.clusters,
  vision.cluster_centroids, vision.map_2d, vision.feature_snapshots, vision.feature_changes,
  vision.index_chunks TO PUBLIC;
GRANT USAGE ON SEQUENCE vision.feature_snapshot_seq, vision.index_generation_seq TO PUBLIC;
GRANT SELECT ON vision.feature_versions, vision.feature_storage, vision.extract_progress,
  vision.index_status,
  vision.bandit_state, vision.features_export, vision.predictions_export TO PUBLIC;
REVOKE ALL ON FUNCTION vision.register_model, vision.register_keras_application,
  vision.drop_model, vision._register_builtin_models(), vision._put_classifier,
  vision._forget_images, vision.fine_tune FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vision.register_model, vision.register_keras_application,
  vision.drop_model, vision._put_classifier, vision.fine_tune TO vision_admin;
