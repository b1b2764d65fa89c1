-- pgvision 0.7.0 → 0.6.0: the wrappers of 0.6.0 (they call the 0.6.0 Python package), and
-- the 0.6.0 privileges without row-level security, owners or the pinned search_path. Votes
-- of several roles for the same user and image are merged (the newest wins).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.6.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.7.0 to 0.6.0 (it drops what 0.7.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP EVENT TRIGGER pgvision_guard_drop_extension;
DROP FUNCTION vision._guard_drop_extension();

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['features', 'extract_errors', 'extract_jobs', 'feature_versions',
      'neighbours', 'predictions', 'clusters', 'cluster_centroids', 'map_2d', 'indexes',
      'classifiers', 'votes', 'taste_models']
  LOOP
    EXECUTE format('DROP POLICY pgvision_read ON vision.%I', t);
    EXECUTE format('DROP POLICY pgvision_insert ON vision.%I', t);
    EXECUTE format('DROP POLICY pgvision_update ON vision.%I', t);
    EXECUTE format('DROP POLICY pgvision_delete ON vision.%I', t);
    EXECUTE format('ALTER TABLE vision.%I DISABLE ROW LEVEL SECURITY', t);
  END LOOP;
END
$$;
DROP FUNCTION vision._writing();
DROP PROCEDURE vision.maintain(regclass, jsonb);
DROP FUNCTION vision.keep_current(regclass, interval);
DROP FUNCTION vision.stop_keeping_current(regclass);
DROP FUNCTION vision.compare_classifiers(regclass, regclass, text, text[], text, integer, jsonb);
DROP FUNCTION vision._track_changes(regclass, name, name);
DROP FUNCTION vision._image_changed() CASCADE;  -- with the triggers on users' tables
DROP FUNCTION vision._forget_images(regclass, bigint[]);
DROP FUNCTION vision._admin_setting(text);

CREATE OR REPLACE FUNCTION vision.version() RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
import pgvision
return pgvision.__version__
$$;

CREATE OR REPLACE FUNCTION vision.register_model(
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

CREATE OR REPLACE FUNCTION vision.register_keras_application(
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

CREATE OR REPLACE FUNCTION vision.drop_model(name text, cascade boolean DEFAULT false) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, models
return errors.sql_call(plpy, GD, models.drop_model, name, cascade)
$$;

CREATE OR REPLACE FUNCTION vision._register_builtin_models() RETURNS integer
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import models
return models.register_builtin_models(plpy, GD)
$$;

CREATE OR REPLACE FUNCTION vision.loaded_models() RETURNS SETOF text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED AS $$
from pgvision import models
return models.cached_models(GD)
$$;

CREATE OR REPLACE FUNCTION vision.model_backends()
RETURNS TABLE (slot integer, pid integer, rss_mb real, models text[])
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED AS $$
from pgvision import models
return models.model_backends()
$$;

CREATE OR REPLACE FUNCTION vision.model_handle(model text DEFAULT 'inception_v3') RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
from pgvision import errors, models
return errors.sql_call(plpy, GD, models.model_handle, model)
$$;

CREATE OR REPLACE FUNCTION vision.extract_features(image bytea, model text DEFAULT 'inception_v3')
RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
from pgvision import errors, extract
return errors.sql_call(plpy, GD, extract.extract_features, image, model)
$$;

CREATE OR REPLACE PROCEDURE vision.extract_table(
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

CREATE OR REPLACE FUNCTION vision.extract_rows(
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

CREATE OR REPLACE FUNCTION vision.extract_features_with(
  image        bytea,
  model_handle text,
  on_error     text DEFAULT 'error'
) RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 100000 AS $$
from pgvision import errors, extract
return errors.sql_call_no_spi(plpy, extract.extract_features_with, GD, image, model_handle,
                              on_error)
$$;

CREATE OR REPLACE FUNCTION vision._bump_feature_versions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM vision.feature_versions;
    RETURN NULL;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO vision.feature_versions AS v (model, source)
      SELECT DISTINCT model, source FROM new_rows
      ON CONFLICT (model, source) DO UPDATE SET version = nextval('vision.feature_version_seq');
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    UPDATE vision.feature_versions v SET version = nextval('vision.feature_version_seq')
      FROM (SELECT DISTINCT model, source FROM old_rows) o
      WHERE v.model = o.model AND v.source = o.source;
    DELETE FROM vision.feature_versions v
      USING (SELECT DISTINCT model, source FROM old_rows) o
      WHERE v.model = o.model AND v.source = o.source
        AND NOT EXISTS (SELECT 1 FROM vision.features f
                        WHERE f.model = v.model AND f.source = v.source);
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION vision._touch_feature() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.extracted_at := clock_timestamp();
  RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION vision._forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION vision.similar(
  image_id    bigint,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10 AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.similar, image_id, k, model, metric, source,
                       candidates, approximate)
$$;

CREATE OR REPLACE FUNCTION vision.similar_many(
  image_ids   bigint[],
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (query_id bigint, image_id bigint, distance real, rank integer)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 100 AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.similar_many, image_ids, k, model, metric, source,
                       approximate)
$$;

CREATE OR REPLACE FUNCTION vision.similar_to_image(
  image       bytea,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10 AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.similar_to_image, image, k, model, metric, source,
                       candidates, approximate)
$$;

CREATE OR REPLACE FUNCTION vision.similar_to_vector(
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

CREATE OR REPLACE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40,
  pca_dims        integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.create_index, source, model, metric, m,
                       ef_construction, ef_search, pca_dims)
$$;

CREATE OR REPLACE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS text
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.refresh_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.drop_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS boolean
LANGUAGE sql VOLATILE AS $$
  WITH d AS (DELETE FROM vision.indexes i WHERE i.model = $2 AND i.source = $1 RETURNING 1)
  SELECT count(*) > 0 FROM d
$$;

CREATE OR REPLACE FUNCTION vision.refresh_neighbours(
  source regclass,
  model  text    DEFAULT 'inception_v3',
  k      integer DEFAULT 10,
  metric text    DEFAULT 'cosine'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, search
return errors.sql_call(plpy, GD, search.refresh_neighbours, source, model, k, metric)
$$;

CREATE OR REPLACE FUNCTION vision.train_classifier(
  name    text,
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3',
  method  text     DEFAULT 'softmax',
  options jsonb    DEFAULT '{}',
  folds   integer  DEFAULT 5,
  replace boolean  DEFAULT false
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.train_classifier, name, labels, source, model,
                       method, options, folds, replace)
$$;

CREATE OR REPLACE FUNCTION vision.classify(
  image_id   bigint,
  classifier text,
  top_k      integer  DEFAULT 3,
  source     regclass DEFAULT NULL
) RETURNS TABLE (label text, probability real)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3 AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.classify, image_id, classifier, top_k, source)
$$;

CREATE OR REPLACE FUNCTION vision.classify_image(image bytea, classifier text, top_k integer DEFAULT 3)
RETURNS TABLE (label text, probability real)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3 AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.classify_image, image, classifier, top_k)
$$;

CREATE OR REPLACE FUNCTION vision.classify_table(
  classifier text,
  source     regclass DEFAULT NULL,
  batch_size integer  DEFAULT 1000
) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.classify_table, classifier, source, batch_size)
$$;

CREATE OR REPLACE FUNCTION vision.compare_classifiers(
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3',
  methods text[]   DEFAULT NULL,
  rank_by text     DEFAULT 'roc_auc',
  folds   integer  DEFAULT 5
) RETURNS TABLE (method text, accuracy real, macro_f1 real, roc_auc real, cv_seconds real,
                 rank integer)
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.compare_classifiers, labels, source, model, methods,
                       rank_by, folds)
$$;

CREATE OR REPLACE FUNCTION vision.evaluate_classifier(classifier text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT c.metrics FROM vision.classifiers c WHERE c.name = $1
$$;

CREATE OR REPLACE FUNCTION vision._put_classifier(
  name text, model text, source regclass, method text, options jsonb, labels text[],
  dims integer, weights bytea, train_ids bigint[], train_targets integer[], metrics jsonb,
  trained_at timestamptz
) RETURNS text
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.put_classifier, name, model, source, method, options,
                       labels, dims, weights, train_ids, train_targets, metrics, trained_at)
$$;

CREATE OR REPLACE FUNCTION vision.record_vote(
  user_id  text,
  image_id bigint,
  liked    boolean,
  model    text     DEFAULT 'inception_v3',
  source   regclass DEFAULT NULL
) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.record_vote, user_id, image_id, liked, model, source)
$$;

CREATE OR REPLACE FUNCTION vision.recommend(
  user_id      text,
  k            integer  DEFAULT 10,
  exclude_seen boolean  DEFAULT true,
  model        text     DEFAULT 'inception_v3',
  source       regclass DEFAULT NULL
) RETURNS TABLE (image_id bigint, score real, strategy text)
LANGUAGE plpython3u STABLE ROWS 10 AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.recommend, user_id, k, exclude_seen, model, source)
$$;

CREATE OR REPLACE FUNCTION vision.bandit_next(
  user_id text,
  model   text     DEFAULT 'inception_v3',
  source  regclass DEFAULT NULL
) RETURNS TABLE (cluster integer, image_id bigint, draw real)
LANGUAGE plpython3u VOLATILE ROWS 1 AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.bandit_next, user_id, model, source)
$$;

CREATE OR REPLACE FUNCTION vision._score_images(
  model text, source regclass, k integer, exclude bigint[], strategy text, taste bytea,
  centre real[], popular_ids bigint[], popular_net real[]
) RETURNS TABLE (image_id bigint, score double precision)
LANGUAGE plpython3u STABLE AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.score_images, model, source, k, exclude, strategy,
                       taste, centre, popular_ids, popular_net)
$$;

CREATE OR REPLACE FUNCTION vision.cluster(
  model  text     DEFAULT 'inception_v3',
  k      integer  DEFAULT 8,
  method text     DEFAULT 'kmeans',
  source regclass DEFAULT NULL
) RETURNS integer
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.cluster, model, k, method, source)
$$;

CREATE OR REPLACE FUNCTION vision.embed_2d(
  model  text     DEFAULT 'inception_v3',
  method text     DEFAULT 'tsne',
  source regclass DEFAULT NULL
) RETURNS real
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.embed_2d, model, method, source)
$$;

CREATE OR REPLACE FUNCTION vision.plot_map(
  model        text     DEFAULT 'inception_v3',
  color_by     text     DEFAULT 'cluster',
  source       regclass DEFAULT NULL,
  thumbnails   boolean  DEFAULT false,
  image_column name     DEFAULT 'image',
  id_column    name     DEFAULT 'id',
  size         integer  DEFAULT 800
) RETURNS bytea
LANGUAGE plpython3u STABLE AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.plot_map, model, color_by, source, thumbnails,
                       image_column, id_column, size)
$$;

CREATE OR REPLACE FUNCTION vision.node_name() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT format('%s/%s', coalesce(nullif(current_setting('cluster_name'), ''),
                                  'port ' || current_setting('port')), current_database())
$$;

CREATE OR REPLACE FUNCTION vision.check_node(version text, model text DEFAULT NULL, sha256 text DEFAULT NULL)
RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
from pgvision import errors, models
return errors.sql_call(plpy, GD, models.check_node, version, model, sha256)
$$;

ALTER VIEW vision.extract_progress RESET (security_invoker);
ALTER VIEW vision.index_status RESET (security_invoker);
ALTER VIEW vision.features_export RESET (security_invoker);
ALTER VIEW vision.predictions_export RESET (security_invoker);

DROP VIEW vision.bandit_state;
CREATE TABLE vision.bandit_state (
  user_id text NOT NULL,
  model   text NOT NULL,
  source  regclass NOT NULL,
  cluster integer NOT NULL,
  alpha   integer NOT NULL DEFAULT 1 CHECK (alpha >= 1),
  beta    integer NOT NULL DEFAULT 1 CHECK (beta >= 1),
  PRIMARY KEY (user_id, model, source, cluster)
);
COMMENT ON TABLE vision.bandit_state IS 'Beta(alpha, beta) per user and cluster, from votes.';
SELECT pg_catalog.pg_extension_config_dump('vision.bandit_state', '');
INSERT INTO vision.bandit_state (user_id, model, source, cluster, alpha, beta)
  SELECT v.user_id, v.model, v.source, c.cluster, 1 + count(*) FILTER (WHERE v.liked),
         1 + count(*) FILTER (WHERE NOT v.liked)
  FROM vision.votes v JOIN vision.clusters c USING (model, source, image_id)
  GROUP BY v.user_id, v.model, v.source, c.cluster;

DELETE FROM vision.votes v USING vision.votes w
  WHERE (v.user_id, v.model, v.source, v.image_id) = (w.user_id, w.model, w.source, w.image_id)
    AND (v.voted_at, v.owner) < (w.voted_at, w.owner);
ALTER TABLE vision.votes DROP CONSTRAINT votes_pkey,
  ADD PRIMARY KEY (user_id, model, source, image_id);
ALTER TABLE vision.votes DROP COLUMN owner;
DELETE FROM vision.taste_models t USING vision.taste_models u
  WHERE (t.user_id, t.model, t.source) = (u.user_id, u.model, u.source)
    AND (t.updated_at, t.owner) < (u.updated_at, u.owner);
ALTER TABLE vision.taste_models DROP CONSTRAINT taste_models_pkey,
  ADD PRIMARY KEY (user_id, model, source);
ALTER TABLE vision.taste_models DROP COLUMN owner;
ALTER TABLE vision.classifiers DROP COLUMN owner;
ALTER TABLE vision.indexes DROP COLUMN owner;

GRANT INSERT, UPDATE, DELETE ON vision.feature_versions TO PUBLIC;
GRANT USAGE ON SEQUENCE vision.feature_version_seq TO PUBLIC;
REVOKE DELETE ON vision.extract_jobs FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON vision.bandit_state TO PUBLIC;
REVOKE ALL ON FUNCTION vision._put_classifier FROM vision_admin;
GRANT EXECUTE ON FUNCTION vision._put_classifier TO PUBLIC;
COMMENT ON FUNCTION vision.compare_classifiers IS
  'Cross-validate methods on the same labelled set; ranked by accuracy, macro_f1 or roc_auc.';
