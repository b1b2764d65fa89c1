-- pgvision 0.4.0 → 0.5.0: scale-out. Extraction in parallel workers (model handles), a
-- cluster-wide cap on model-holding backends, and the functions every shard of a sharded
-- cluster serves to the coordinator (see the pgvision_cluster extension).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.5.0'" to load this file. \quit

-- Postgres' LLVM JIT and the LLVM inside TensorFlow crash a backend that holds both
-- (signal 11 on the next JIT-compiled query; high function costs make JIT likely). New
-- sessions of this database get JIT off; pgvision also turns it off in a session before
-- loading TensorFlow.
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
END
$$;

CREATE FUNCTION vision.model_handle(model text DEFAULT 'inception_v3') RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
from pgvision import errors, models
return errors.sql_call(plpy, GD, models.model_handle, model)
$$;
COMMENT ON FUNCTION vision.model_handle IS
  'A registered model resolved for vision.extract_features_with (which runs in parallel workers).';

-- PARALLEL SAFE because it never queries: everything it needs is in the handle. The cost
-- (~40 ms of CPU per image) tells the planner that splitting the scan pays.
CREATE FUNCTION vision.extract_features_with(
  image        bytea,
  model_handle text,
  on_error     text DEFAULT 'error'
) RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 100000 AS $$
from pgvision import errors, extract
return errors.sql_call_no_spi(plpy, extract.extract_features_with, GD, image, model_handle,
                              on_error)
$$;
COMMENT ON FUNCTION vision.extract_features_with IS
  'vision.extract_features for parallel queries: the model comes from vision.model_handle().';

CREATE FUNCTION vision.model_backends() RETURNS TABLE (slot integer, pid integer, rss_mb real)
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED AS $$
from pgvision import models
return models.model_backends()
$$;
COMMENT ON FUNCTION vision.model_backends IS
  'Backends (and parallel workers) of this cluster holding a model, with their resident memory.';

CREATE FUNCTION vision.extract_rows(
  source       regclass,
  id_column    name    DEFAULT 'id',
  image_column name    DEFAULT 'image',
  model        text    DEFAULT 'inception_v3',
  batch_size   integer DEFAULT 32,
  max_rows     integer DEFAULT 1000
) RETURNS TABLE (job_id bigint, processed bigint, failed bigint, remaining bigint)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE AS $$
from pgvision import errors, extract
return [errors.sql_call(plpy, GD, extract.extract_rows, source, id_column, image_column, model,
                        batch_size, max_rows)]
$$;
COMMENT ON FUNCTION vision.extract_rows IS
  'Function form of vision.extract_table (for PL/Proxy and callers that cannot CALL): at most max_rows rows, in the caller''s transaction.';

CREATE FUNCTION vision.similar_to_vector(
  feature     real[],
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10 AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.similar_to_vector, feature, k, model, metric, source,
                       candidates, approximate)
$$;
COMMENT ON FUNCTION vision.similar_to_vector IS
  'The k stored images nearest to a feature vector (e.g. one computed on another node).';

CREATE FUNCTION vision.node_name() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT format('%s/%s', coalesce(nullif(current_setting('cluster_name'), ''),
                                  'port ' || current_setting('port')), current_database())
$$;
COMMENT ON FUNCTION vision.node_name() IS
  'This node''s name in cluster messages: cluster_name (or port) / database.';

-- Other nodes read features through postgres_fdw; a source OID means nothing there, so this
-- view names the table (schema-qualified, whatever the reader's search_path).
CREATE VIEW vision.features_export AS
  SELECT f.model, format('%I.%I', n.nspname, c.relname) AS source, f.image_id, f.feature,
         f.extracted_at
  FROM vision.features f
  JOIN pg_catalog.pg_class c ON c.oid = f.source
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
COMMENT ON VIEW vision.features_export IS
  'vision.features with the source table''s qualified name (read by coordinators over postgres_fdw).';
GRANT SELECT ON vision.features_export TO PUBLIC;

CREATE FUNCTION vision.check_node(version text, model text DEFAULT NULL, sha256 text DEFAULT NULL)
RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
from pgvision import errors, models
return errors.sql_call(plpy, GD, models.check_node, version, model, sha256)
$$;
COMMENT ON FUNCTION vision.check_node IS
  'This node''s name, or an error when its pgvision version or model differs from the given ones (the coordinator''s).';
