-- pgvision 0.1.0: model registry and feature extraction.
-- Every function is a thin PL/Python wrapper around one function of the `pgvision` Python
-- package (plpython/pgvision), which must be importable by the server's Python.

\echo Use "CREATE EXTENSION pgvision CASCADE" to load this file. \quit

-- Created here (not named in the control file) so that DROP EXTENSION drops it too.
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

-- Models --------------------------------------------------------------------------------

CREATE TABLE vision.model_store (
  name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  model_bytes   bytea,
  model_path    text,
  sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  input_height  integer NOT NULL CHECK (input_height > 0),
  input_width   integer NOT NULL CHECK (input_width > 0),
  preprocessing text NOT NULL CHECK (preprocessing IN ('inception', 'caffe', 'torch', 'raw')),
  feature_layer text,
  pooling       text NOT NULL DEFAULT 'avg' CHECK (pooling IN ('avg', 'max', 'none')),
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

-- Features ------------------------------------------------------------------------------

CREATE TABLE vision.features (
  model        text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source       regclass NOT NULL,
  image_id     bigint NOT NULL,
  feature      real[] NOT NULL,
  extracted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, source, image_id)
);
COMMENT ON TABLE vision.features IS
  'One feature vector per (model, source table, image id), written by vision.extract_table.';
SELECT pg_catalog.pg_extension_config_dump('vision.features', '');

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

CREATE VIEW vision.extract_progress AS
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

-- Functions -----------------------------------------------------------------------------

CREATE FUNCTION vision.version() RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
import pgvision
return pgvision.__version__
$$;
COMMENT ON FUNCTION vision.version() IS
  'Version of the pgvision Python package the server loads (must equal the extension''s).';

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
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, models
return errors.sql_call(plpy, GD, models.register_model, name, model_bytes, model_path,
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
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, models
return errors.sql_call(plpy, GD, models.register_keras_application, name, application, weights,
                       replace)
$$;
COMMENT ON FUNCTION vision.register_keras_application IS
  'Register a keras.applications model (ImageNet weights need internet on the server; weights => NULL for random weights).';

CREATE FUNCTION vision.drop_model(name text, cascade boolean DEFAULT false) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, models
return errors.sql_call(plpy, GD, models.drop_model, name, cascade)
$$;
COMMENT ON FUNCTION vision.drop_model IS
  'Unregister a model; with cascade => true also delete its features. Returns the number of feature rows deleted.';

-- PARALLEL UNSAFE, like every function here that queries: PL/Python runs each query in a
-- subtransaction, which Postgres forbids during a parallel operation, so a parallel plan
-- would fail with "cannot start subtransactions during a parallel operation".
CREATE FUNCTION vision.extract_features(image bytea, model text DEFAULT 'inception_v3')
RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
from pgvision import errors, extract
return errors.sql_call(plpy, GD, extract.extract_features, image, model)
$$;
COMMENT ON FUNCTION vision.extract_features IS
  'Feature vector of one image (JPEG/PNG/GIF/BMP/WebP/TIFF bytes) under a registered model.';

CREATE PROCEDURE vision.extract_table(
  source        regclass,
  id_column     name    DEFAULT 'id',
  image_column  name    DEFAULT 'image',
  model         text    DEFAULT 'inception_v3',
  batch_size    integer DEFAULT 32,
  retry_failed  boolean DEFAULT false,
  parts         integer DEFAULT 1,
  part          integer DEFAULT 0,
  INOUT job_id  bigint  DEFAULT NULL,
  INOUT processed bigint DEFAULT NULL,
  INOUT failed  bigint  DEFAULT NULL
)
LANGUAGE plpython3u AS $$
from pgvision import errors, extract
return errors.sql_call(plpy, GD, extract.extract_table, source, id_column, image_column, model,
                       batch_size, retry_failed, parts, part)
$$;
COMMENT ON PROCEDURE vision.extract_table IS
  'Extract features for every row of a table that has none yet, batch by batch, committing each batch; bad rows go to vision.extract_errors.';

CREATE FUNCTION vision.loaded_models() RETURNS SETOF text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED AS $$
from pgvision import models
return models.cached_models(GD)
$$;
COMMENT ON FUNCTION vision.loaded_models() IS 'Models this backend holds in memory.';

CREATE FUNCTION vision._register_builtin_models() RETURNS integer
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import models
return models.register_builtin_models(plpy, GD)
$$;

-- The installed default model is usable right after CREATE EXTENSION.
SELECT vision._register_builtin_models();

-- Privileges: anyone may use models; only vision_admin (and the owner) may change them.
GRANT USAGE ON SCHEMA vision TO PUBLIC;
GRANT SELECT ON vision.model_store, vision.models TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON vision.model_store TO vision_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON vision.features, vision.extract_errors TO PUBLIC;
GRANT SELECT, INSERT, UPDATE ON vision.extract_jobs TO PUBLIC;
GRANT SELECT ON vision.extract_progress TO PUBLIC;
REVOKE ALL ON FUNCTION vision.register_model, vision.register_keras_application,
  vision.drop_model, vision._register_builtin_models() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vision.register_model, vision.register_keras_application,
  vision.drop_model TO vision_admin;
