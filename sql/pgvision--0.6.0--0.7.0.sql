-- pgvision 0.6.0 → 0.7.0
-- * The Python package is split into one module per concept (plpython/pgvision: spi,
--   registry, extractors, slots, handles, shards, catalog, ...): every wrapper is replaced
--   and now calls spi.call and the module that holds its function.
-- * Security for a shared database: every function runs with search_path = pg_catalog,
--   pg_temp; what pgvision stores about a table is visible only to roles that may SELECT it
--   and written only by pgvision's functions (row-level security); classifiers and indexes
--   have an owner, votes and taste models belong to the role that recorded them (votes
--   recorded before 0.7.0 belong to the role that runs this upgrade); vision.bandit_state is
--   now a view over votes and clusters; DROP EXTENSION pgvision needs CASCADE while it holds
--   users' data.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.7.0'" to load this file. \quit

-- owners ---------------------------------------------------------------------------------

ALTER TABLE vision.indexes ADD COLUMN owner name NOT NULL DEFAULT CURRENT_USER;
ALTER TABLE vision.classifiers ADD COLUMN owner name NOT NULL DEFAULT CURRENT_USER;
ALTER TABLE vision.votes ADD COLUMN owner name NOT NULL DEFAULT CURRENT_USER;
ALTER TABLE vision.votes DROP CONSTRAINT votes_pkey,
  ADD PRIMARY KEY (owner, user_id, model, source, image_id);
COMMENT ON COLUMN vision.votes.owner IS
  'The role that recorded the vote: user ids are that role''s own shoppers.';
ALTER TABLE vision.taste_models ADD COLUMN owner name NOT NULL DEFAULT CURRENT_USER;
ALTER TABLE vision.taste_models DROP CONSTRAINT taste_models_pkey,
  ADD PRIMARY KEY (owner, user_id, model, source);

-- Detached first: dropping a table leaves it in the extension's list of tables pg_dump dumps.
ALTER EXTENSION pgvision DROP TABLE vision.bandit_state;
DROP TABLE vision.bandit_state;
CREATE VIEW vision.bandit_state WITH (security_invoker = true) AS
  SELECT v.user_id, v.model, v.source, c.cluster,
         (1 + count(*) FILTER (WHERE v.liked))::integer AS alpha,
         (1 + count(*) FILTER (WHERE NOT v.liked))::integer AS beta,
         v.owner
  FROM vision.votes v
  JOIN vision.clusters c USING (model, source, image_id)
  GROUP BY v.owner, v.user_id, v.model, v.source, c.cluster;
COMMENT ON VIEW vision.bandit_state IS 'Beta(alpha, beta) per user and cluster, from votes.';

ALTER VIEW vision.extract_progress SET (security_invoker = true);
ALTER VIEW vision.index_status SET (security_invoker = true);
ALTER VIEW vision.features_export SET (security_invoker = true);
ALTER VIEW vision.predictions_export SET (security_invoker = true);

-- functions: new wrappers, pinned search_path ---------------------------------------------

-- compare_classifiers takes the options train_classifier takes
DROP FUNCTION vision.compare_classifiers(regclass, regclass, text, text[], text, integer);
CREATE OR REPLACE FUNCTION vision.version() RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
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
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import registry, spi
return spi.call(plpy, GD, registry.register_model, name, model_bytes, model_path,
                preprocessing, feature_layer, pooling, input_height, input_width,
                provenance, replace)
$$;

CREATE OR REPLACE FUNCTION vision.register_keras_application(
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

CREATE OR REPLACE FUNCTION vision.drop_model(name text, cascade boolean DEFAULT false) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import registry, spi
return spi.call(plpy, GD, registry.drop_model, name, cascade)
$$;

CREATE OR REPLACE FUNCTION vision._register_builtin_models() RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import registry
return registry.register_builtin_models(plpy, GD)
$$;

CREATE OR REPLACE FUNCTION vision.loaded_models() RETURNS SETOF text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extractors
return extractors.cached_models(GD)
$$;

CREATE OR REPLACE FUNCTION vision.model_backends()
RETURNS TABLE (slot integer, pid integer, rss_mb real, models text[])
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import slots
return slots.model_backends()
$$;

CREATE OR REPLACE FUNCTION vision.model_handle(model text DEFAULT 'inception_v3') RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import handles, spi
return spi.call(plpy, GD, handles.model_handle, model)
$$;

CREATE OR REPLACE FUNCTION vision.extract_features(image bytea, model text DEFAULT 'inception_v3')
RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extract, spi
return spi.call(plpy, GD, extract.extract_features, image, model)
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
from pgvision import extract, spi
return spi.call(plpy, GD, extract.extract_table, source, id_column, image_column, model,
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
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extract, spi
return [spi.call(plpy, GD, extract.extract_rows, source, id_column, image_column, model,
                 batch_size, max_rows)]
$$;

CREATE OR REPLACE FUNCTION vision.extract_features_with(
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

CREATE OR REPLACE FUNCTION vision._bump_feature_versions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
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
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  NEW.extracted_at := clock_timestamp();
  RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION vision._forget_dropped_tables() RETURNS event_trigger
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

CREATE OR REPLACE FUNCTION vision.similar(
  image_id    bigint,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3',
  metric      text     DEFAULT 'cosine',
  source      regclass DEFAULT NULL,
  candidates  bigint[] DEFAULT NULL,
  approximate boolean  DEFAULT NULL
) RETURNS TABLE (image_id bigint, distance real, rank integer)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.similar, image_id, k, model, metric, source,
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
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 100
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.similar_many, image_ids, k, model, metric, source,
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
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.similar_to_image, image, k, model, metric, source,
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
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.similar_to_vector, feature, k, model, metric, source,
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
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims)
$$;

CREATE OR REPLACE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.refresh_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.drop_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.drop_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.refresh_neighbours(
  source regclass,
  model  text    DEFAULT 'inception_v3',
  k      integer DEFAULT 10,
  metric text    DEFAULT 'cosine'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.refresh_neighbours, source, model, k, metric)
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
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.train_classifier, name, labels, source, model,
                method, options, folds, replace)
$$;

CREATE OR REPLACE FUNCTION vision.classify(
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

CREATE OR REPLACE FUNCTION vision.classify_image(image bytea, classifier text, top_k integer DEFAULT 3)
RETURNS TABLE (label text, probability real)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.classify_image, image, classifier, top_k)
$$;

CREATE OR REPLACE FUNCTION vision.classify_table(
  classifier text,
  source     regclass DEFAULT NULL,
  batch_size integer  DEFAULT 1000
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.classify_table, classifier, source, batch_size)
$$;

CREATE OR REPLACE FUNCTION vision.compare_classifiers(
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3',
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

CREATE OR REPLACE FUNCTION vision.evaluate_classifier(classifier text) RETURNS jsonb
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.evaluate_classifier, classifier)
$$;

CREATE OR REPLACE FUNCTION vision._put_classifier(
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

CREATE OR REPLACE FUNCTION vision.record_vote(
  user_id  text,
  image_id bigint,
  liked    boolean,
  model    text     DEFAULT 'inception_v3',
  source   regclass DEFAULT NULL
) RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.record_vote, user_id, image_id, liked, model, source)
$$;

CREATE OR REPLACE FUNCTION vision.recommend(
  user_id      text,
  k            integer  DEFAULT 10,
  exclude_seen boolean  DEFAULT true,
  model        text     DEFAULT 'inception_v3',
  source       regclass DEFAULT NULL
) RETURNS TABLE (image_id bigint, score real, strategy text)
LANGUAGE plpython3u STABLE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.recommend, user_id, k, exclude_seen, model, source)
$$;

CREATE OR REPLACE FUNCTION vision.bandit_next(
  user_id text,
  model   text     DEFAULT 'inception_v3',
  source  regclass DEFAULT NULL
) RETURNS TABLE (cluster integer, image_id bigint, draw real)
LANGUAGE plpython3u VOLATILE ROWS 1
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.bandit_next, user_id, model, source)
$$;

CREATE OR REPLACE FUNCTION vision._score_images(
  model text, source regclass, k integer, exclude bigint[], strategy text, taste bytea,
  centre real[], popular_ids bigint[], popular_net real[]
) RETURNS TABLE (image_id bigint, score double precision)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.score_images, model, source, k, exclude, strategy,
                taste, centre, popular_ids, popular_net)
$$;

CREATE OR REPLACE FUNCTION vision.cluster(
  model  text     DEFAULT 'inception_v3',
  k      integer  DEFAULT 8,
  method text     DEFAULT 'kmeans',
  source regclass DEFAULT NULL
) RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import catalog, spi
return spi.call(plpy, GD, catalog.cluster, model, k, method, source)
$$;

CREATE OR REPLACE FUNCTION vision.embed_2d(
  model  text     DEFAULT 'inception_v3',
  method text     DEFAULT 'tsne',
  source regclass DEFAULT NULL
) RETURNS real
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import catalog, spi
return spi.call(plpy, GD, catalog.embed_2d, model, method, source)
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
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import catalog, spi
return spi.call(plpy, GD, catalog.plot_map, model, color_by, source, thumbnails,
                image_column, id_column, size)
$$;

CREATE OR REPLACE FUNCTION vision.node_name() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT format('%s/%s', coalesce(nullif(current_setting('cluster_name'), ''),
                                  'port ' || current_setting('port')), current_database())
$$;

CREATE OR REPLACE FUNCTION vision.check_node(version text, model text DEFAULT NULL, sha256 text DEFAULT NULL)
RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.check_node, version, model, sha256)
$$;

-- Change tracking on source tables (installed by vision.extract_table): a changed, deleted or
-- truncated image takes its features and everything derived from them along, in the same
-- transaction, so no result is ever computed from bytes a row no longer holds.

-- Everything pgvision keeps about some images of a table (ids NULL: all of them); cached
-- neighbour lists that name them go too (vision.refresh_neighbours makes them again).
CREATE FUNCTION vision._forget_images(source regclass, ids bigint[]) RETURNS void
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

-- upkeep: keeping a table current --------------------------------------------------------

-- A procedure, like vision.extract_table, so that extraction commits batch by batch.
CREATE PROCEDURE vision.maintain(source regclass, INOUT report jsonb DEFAULT NULL)
LANGUAGE plpython3u AS $$
from pgvision import spi, upkeep
return [spi.call(plpy, GD, upkeep.maintain, source)]
$$;
COMMENT ON PROCEDURE vision.maintain IS
  'Bring a table fully up to date: features of new and changed rows, stale indexes, cached neighbours, labels of classifiers that labelled it; returns a report.';

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

CREATE EVENT TRIGGER pgvision_guard_drop_extension ON ddl_command_start
  WHEN TAG IN ('DROP EXTENSION')
  EXECUTE FUNCTION vision._guard_drop_extension();

-- row-level security -----------------------------------------------------------------------

DO $$
DECLARE
  readable constant text := 'pg_catalog.has_table_privilege(source, ''SELECT'')';
  writable constant text :=
    '((SELECT vision._writing()) OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  mine constant text := '(owner = CURRENT_USER)';
  owned constant text :=
    '(owner = CURRENT_USER OR pg_catalog.pg_has_role(''vision_admin'', ''MEMBER''))';
  t text;
  kind text;
  reading text;
  adding text;
  changing text;
BEGIN
  FOR t, kind IN VALUES ('features', 'shared'), ('extract_errors', 'shared'),
      ('extract_jobs', 'shared'), ('feature_versions', 'shared'), ('neighbours', 'shared'),
      ('predictions', 'shared'), ('clusters', 'shared'), ('cluster_centroids', 'shared'),
      ('map_2d', 'shared'), ('indexes', 'owned'), ('classifiers', 'owned'),
      ('votes', 'private'), ('taste_models', 'private')
  LOOP
    reading := readable;
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

-- privileges ---------------------------------------------------------------------------

REVOKE INSERT, UPDATE, DELETE ON vision.feature_versions FROM PUBLIC;
REVOKE USAGE ON SEQUENCE vision.feature_version_seq FROM PUBLIC;
GRANT DELETE ON vision.extract_jobs TO PUBLIC;
GRANT SELECT ON vision.bandit_state TO PUBLIC;
REVOKE ALL ON FUNCTION vision._put_classifier, vision._forget_images FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vision._put_classifier TO vision_admin;
COMMENT ON FUNCTION vision.compare_classifiers IS
  'Cross-validate methods on the same labelled set; ranked by accuracy, macro_f1 or roc_auc.';
