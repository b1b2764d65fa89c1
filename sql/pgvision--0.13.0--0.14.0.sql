-- pgvision 0.13.0 → 0.14.0
-- * A new default model, inception_v3_mixed6_grid (chosen by make bench-quality), registered
--   beside inception_v3, whose features do not change; every model DEFAULT names it.
-- * Pooling 'grid' and 'gem'; vision.evaluate_features; vision.maintain(add_model => ...).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.14.0'" to load this file. \quit

-- Models may pool a feature map as a grid (average + 2x2 quadrants) or by generalised mean.
ALTER TABLE vision.model_store DROP CONSTRAINT model_store_pooling_check,
  ADD CONSTRAINT model_store_pooling_check CHECK (pooling IN ('avg', 'max', 'gem', 'grid', 'none'));

-- The new default model, inception_v3_mixed6_grid, is registered beside inception_v3, whose
-- features stay what they were.
SELECT vision._register_builtin_models();

DROP PROCEDURE vision.maintain(regclass, jsonb);
CREATE PROCEDURE vision.maintain(source regclass, INOUT report jsonb DEFAULT NULL,
                                 add_model text DEFAULT NULL)
LANGUAGE plpython3u AS $$
from pgvision import spi, upkeep
return [spi.call(plpy, GD, upkeep.maintain, source, add_model)]
$$;
COMMENT ON PROCEDURE vision.maintain IS
  'Bring a table fully up to date: features of new and changed rows, stale indexes, cached neighbours, labels of classifiers that labelled it; add_model extracts one more model (move a table to a new default); returns a report.';

CREATE OR REPLACE PROCEDURE vision.extract_table(
  source        regclass,
  id_column     name    DEFAULT 'id',
  image_column  name    DEFAULT 'image',
  model         text    DEFAULT 'inception_v3_mixed6_grid',
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

-- A WARNING (a NOTICE until 0.19.0): extension scripts run with client_min_messages at
-- WARNING or above, so a NOTICE reached no one.
DO $$
BEGIN
  IF EXISTS (SELECT FROM vision.features WHERE model = 'inception_v3') THEN
    RAISE WARNING 'pgvision 0.14.0: the default model is now inception_v3_mixed6_grid (Inception-v3 cut at mixed6, grid pooling: better search and classification, 2-3x faster); functions called without model => use it. Your features of inception_v3 stay as they are: pass model => ''inception_v3'' to keep using them, or move a table with CALL vision.maintain(''your_table'', add_model => ''inception_v3_mixed6_grid'').';
  END IF;
END
$$;

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

CREATE OR REPLACE FUNCTION vision.model_handle(model text DEFAULT 'inception_v3_mixed6_grid') RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import handles, spi
return spi.call(plpy, GD, handles.model_handle, model)
$$;

CREATE OR REPLACE FUNCTION vision.extract_features(image bytea, model text DEFAULT 'inception_v3_mixed6_grid')
RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extract, spi
return spi.call(plpy, GD, extract.extract_features, image, model)
$$;

CREATE OR REPLACE FUNCTION vision.extract_rows(
  source       regclass,
  id_column    name    DEFAULT 'id',
  image_column name    DEFAULT 'image',
  model        text    DEFAULT 'inception_v3_mixed6_grid',
  batch_size   integer DEFAULT 32,
  max_rows     integer DEFAULT 1000
) RETURNS TABLE (job_id bigint, processed bigint, failed bigint, remaining bigint)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import extract, spi
return [spi.call(plpy, GD, extract.extract_rows, source, id_column, image_column, model,
                 batch_size, max_rows)]
$$;

CREATE OR REPLACE FUNCTION vision.refresh_neighbours(
  source regclass,
  model  text    DEFAULT 'inception_v3_mixed6_grid',
  k      integer DEFAULT 10,
  metric text    DEFAULT 'cosine'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.refresh_neighbours, source, model, k, metric)
$$;

CREATE OR REPLACE FUNCTION vision.cluster(
  model  text     DEFAULT 'inception_v3_mixed6_grid',
  k      integer  DEFAULT 8,
  method text     DEFAULT 'kmeans',
  source regclass DEFAULT NULL
) RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import clusters, spi
return spi.call(plpy, GD, clusters.cluster, model, k, method, source)
$$;

CREATE OR REPLACE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3_mixed6_grid')
RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.refresh_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3_mixed6_grid',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40,
  pca_dims        integer DEFAULT NULL,
  storage         text    DEFAULT 'float32'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims, storage)
$$;

CREATE OR REPLACE FUNCTION vision.similar(
  image_id    bigint,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision.similar_many(
  image_ids   bigint[],
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision.similar_to_image(
  image       bytea,
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision.similar_to_vector(
  feature     real[],
  k           integer  DEFAULT 10,
  model       text     DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision.drop_index(source regclass, model text DEFAULT 'inception_v3_mixed6_grid')
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.drop_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.train_classifier(
  name    text,
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision.compare_classifiers(
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision.fine_tune(
  name       text,
  labels     regclass,
  source     regclass,
  base_model text     DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision.record_vote(
  user_id  text,
  image_id bigint,
  liked    boolean,
  model    text     DEFAULT 'inception_v3_mixed6_grid',
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
  model        text     DEFAULT 'inception_v3_mixed6_grid',
  source       regclass DEFAULT NULL
) RETURNS TABLE (image_id bigint, score real, strategy text)
LANGUAGE plpython3u STABLE ROWS 10
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.recommend, user_id, k, exclude_seen, model, source)
$$;

CREATE OR REPLACE FUNCTION vision.bandit_next(
  user_id text,
  model   text     DEFAULT 'inception_v3_mixed6_grid',
  source  regclass DEFAULT NULL
) RETURNS TABLE (cluster integer, image_id bigint, draw real)
LANGUAGE plpython3u VOLATILE ROWS 1
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.bandit_next, user_id, model, source)
$$;

CREATE OR REPLACE FUNCTION vision.embed_2d(
  model  text     DEFAULT 'inception_v3_mixed6_grid',
  method text     DEFAULT 'tsne',
  source regclass DEFAULT NULL
) RETURNS real
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import clusters, spi
return spi.call(plpy, GD, clusters.embed_2d, model, method, source)
$$;

CREATE OR REPLACE FUNCTION vision.plot_map(
  model        text     DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision.contact_sheet(
  image_id     bigint   DEFAULT NULL,
  image_ids    bigint[] DEFAULT NULL,
  k            integer  DEFAULT 8,
  source       regclass DEFAULT NULL,
  model        text     DEFAULT 'inception_v3_mixed6_grid',
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
