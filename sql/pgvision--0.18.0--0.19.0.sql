-- pgvision 0.18.0 → 0.19.0
-- * A new default model, inception_v3_mixed6_grid_224: the default's cut (Inception-v3 at
--   mixed6, grid pooling) fed 224 px inputs instead of 299, as good on every labelled set of
--   make bench-quality and 1.6-2x as fast. Registered beside inception_v3_mixed6_grid, whose
--   features do not change; every model DEFAULT names the new one.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.19.0'" to load this file. \quit

-- The new default model is registered beside the others, whose features stay what they were.
SELECT vision._register_builtin_models();

CREATE OR REPLACE FUNCTION vision.model_handle(model text DEFAULT 'inception_v3_mixed6_grid_224') RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import handles, spi
return spi.call(plpy, GD, handles.model_handle, model)
$$;

CREATE OR REPLACE FUNCTION vision.extract_features(image bytea, model text DEFAULT 'inception_v3_mixed6_grid_224')
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

CREATE OR REPLACE FUNCTION vision.extract_rows(
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

CREATE OR REPLACE FUNCTION vision.similar(
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

CREATE OR REPLACE FUNCTION vision.similar_many(
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

CREATE OR REPLACE FUNCTION vision.similar_to_image(
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

CREATE OR REPLACE FUNCTION vision.similar_to_vector(
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

CREATE OR REPLACE FUNCTION vision.create_index(
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

CREATE OR REPLACE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3_mixed6_grid_224')
RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.refresh_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.drop_index(source regclass, model text DEFAULT 'inception_v3_mixed6_grid_224')
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.drop_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.refresh_neighbours(
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

CREATE OR REPLACE FUNCTION vision.duplicates(
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

CREATE OR REPLACE FUNCTION vision.duplicates_of(
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

CREATE OR REPLACE FUNCTION vision.train_classifier(
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

CREATE OR REPLACE FUNCTION vision.compare_classifiers(
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

CREATE OR REPLACE FUNCTION vision.fine_tune(
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

CREATE OR REPLACE FUNCTION vision.record_vote(
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

CREATE OR REPLACE FUNCTION vision.recommend(
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

CREATE OR REPLACE FUNCTION vision.bandit_next(
  user_id text,
  model   text     DEFAULT 'inception_v3_mixed6_grid_224',
  source  regclass DEFAULT NULL
) RETURNS TABLE (cluster integer, image_id bigint, draw real)
LANGUAGE plpython3u VOLATILE ROWS 1
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.bandit_next, user_id, model, source)
$$;

CREATE OR REPLACE FUNCTION vision.cluster(
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

CREATE OR REPLACE FUNCTION vision.embed_2d(
  model  text     DEFAULT 'inception_v3_mixed6_grid_224',
  method text     DEFAULT 'tsne',
  source regclass DEFAULT NULL
) RETURNS real
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import clusters, spi
return spi.call(plpy, GD, clusters.embed_2d, model, method, source)
$$;

CREATE OR REPLACE FUNCTION vision.plot_map(
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

CREATE OR REPLACE FUNCTION vision.contact_sheet(
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

-- A WARNING: PostgreSQL runs extension scripts with client_min_messages at WARNING or above,
-- so a NOTICE would reach no one (pgvision migrate prints the server's WARNINGs).
DO $$
BEGIN
  IF EXISTS (SELECT FROM vision.features WHERE model IN ('inception_v3', 'inception_v3_mixed6_grid')) THEN
    RAISE WARNING 'pgvision 0.19.0: the default model is now inception_v3_mixed6_grid_224 (the same cut fed 224 px images: as good in make bench-quality, 1.6-2x faster); functions called without model => use it. Your features of other models stay as they are: pass model => ''inception_v3_mixed6_grid'' to keep using them, or move a table with CALL vision.maintain(''your_table'', add_model => ''inception_v3_mixed6_grid_224'').';
  END IF;
END
$$;
