-- pgvision 0.6.0 → 0.7.0: the Python package is split into one module per concept
-- (plpython/pgvision: spi, registry, extractors, slots, handles, shards, catalog, ...);
-- every wrapper now calls spi.call and the module that holds its function.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.7.0'" to load this file. \quit

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
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import registry, spi
return spi.call(plpy, GD, registry.register_keras_application, name, application, weights,
                replace)
$$;

CREATE OR REPLACE FUNCTION vision.drop_model(name text, cascade boolean DEFAULT false) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import registry, spi
return spi.call(plpy, GD, registry.drop_model, name, cascade)
$$;

CREATE OR REPLACE FUNCTION vision._register_builtin_models() RETURNS integer
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import registry
return registry.register_builtin_models(plpy, GD)
$$;

CREATE OR REPLACE FUNCTION vision.loaded_models() RETURNS SETOF text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED AS $$
from pgvision import extractors
return extractors.cached_models(GD)
$$;

CREATE OR REPLACE FUNCTION vision.model_backends()
RETURNS TABLE (slot integer, pid integer, rss_mb real, models text[])
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED AS $$
from pgvision import slots
return slots.model_backends()
$$;

CREATE OR REPLACE FUNCTION vision.model_handle(model text DEFAULT 'inception_v3') RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
from pgvision import handles, spi
return spi.call(plpy, GD, handles.model_handle, model)
$$;

CREATE OR REPLACE FUNCTION vision.extract_features(image bytea, model text DEFAULT 'inception_v3')
RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
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
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE AS $$
from pgvision import extract, spi
return [spi.call(plpy, GD, extract.extract_rows, source, id_column, image_column, model,
                 batch_size, max_rows)]
$$;

CREATE OR REPLACE FUNCTION vision.extract_features_with(
  image        bytea,
  model_handle text,
  on_error     text DEFAULT 'error'
) RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 100000 AS $$
from pgvision import extract, spi
return spi.call_no_spi(plpy, extract.extract_features_with, GD, image, model_handle,
                       on_error)
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
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 100 AS $$
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
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10 AS $$
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
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 10 AS $$
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
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims)
$$;

CREATE OR REPLACE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS text
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.refresh_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.refresh_neighbours(
  source regclass,
  model  text    DEFAULT 'inception_v3',
  k      integer DEFAULT 10,
  metric text    DEFAULT 'cosine'
) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
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
LANGUAGE plpython3u VOLATILE AS $$
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
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3 AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.classify, image_id, classifier, top_k, source)
$$;

CREATE OR REPLACE FUNCTION vision.classify_image(image bytea, classifier text, top_k integer DEFAULT 3)
RETURNS TABLE (label text, probability real)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3 AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.classify_image, image, classifier, top_k)
$$;

CREATE OR REPLACE FUNCTION vision.classify_table(
  classifier text,
  source     regclass DEFAULT NULL,
  batch_size integer  DEFAULT 1000
) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, spi
return spi.call(plpy, GD, classify.classify_table, classifier, source, batch_size)
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
from pgvision import classify, spi
return spi.call(plpy, GD, classify.compare_classifiers, labels, source, model, methods,
                rank_by, folds)
$$;

CREATE OR REPLACE FUNCTION vision._put_classifier(
  name text, model text, source regclass, method text, options jsonb, labels text[],
  dims integer, weights bytea, train_ids bigint[], train_targets integer[], metrics jsonb,
  trained_at timestamptz
) RETURNS text
LANGUAGE plpython3u VOLATILE AS $$
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
LANGUAGE plpython3u VOLATILE AS $$
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
LANGUAGE plpython3u STABLE ROWS 10 AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.recommend, user_id, k, exclude_seen, model, source)
$$;

CREATE OR REPLACE FUNCTION vision.bandit_next(
  user_id text,
  model   text     DEFAULT 'inception_v3',
  source  regclass DEFAULT NULL
) RETURNS TABLE (cluster integer, image_id bigint, draw real)
LANGUAGE plpython3u VOLATILE ROWS 1 AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.bandit_next, user_id, model, source)
$$;

CREATE OR REPLACE FUNCTION vision._score_images(
  model text, source regclass, k integer, exclude bigint[], strategy text, taste bytea,
  centre real[], popular_ids bigint[], popular_net real[]
) RETURNS TABLE (image_id bigint, score double precision)
LANGUAGE plpython3u STABLE AS $$
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
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import catalog, spi
return spi.call(plpy, GD, catalog.cluster, model, k, method, source)
$$;

CREATE OR REPLACE FUNCTION vision.embed_2d(
  model  text     DEFAULT 'inception_v3',
  method text     DEFAULT 'tsne',
  source regclass DEFAULT NULL
) RETURNS real
LANGUAGE plpython3u VOLATILE AS $$
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
LANGUAGE plpython3u STABLE AS $$
from pgvision import catalog, spi
return spi.call(plpy, GD, catalog.plot_map, model, color_by, source, thumbnails,
                image_column, id_column, size)
$$;

CREATE OR REPLACE FUNCTION vision.check_node(version text, model text DEFAULT NULL, sha256 text DEFAULT NULL)
RETURNS text
LANGUAGE plpython3u STABLE PARALLEL UNSAFE AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.check_node, version, model, sha256)
$$;
