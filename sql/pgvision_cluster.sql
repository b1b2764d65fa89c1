-- pgvision_cluster: the coordinator of a sharded pgvision. The whole current API; `make install`
-- installs it as pgvision_cluster--<version>.sql (upgrades: pgvision_cluster--<from>--<to>.sql).
--
-- Each shard is a full Postgres with pgvision and its slice of the images. Calls fan out
-- through PL/Proxy (cluster 'pgvision', made by vision_cluster.setup) and run on every shard
-- concurrently; the coordinator merges. Every fan-out first runs vision.check_node on the
-- shard, so a shard with another pgvision version or another model refuses to answer.
-- The fan-out functions (_name) are PL/Proxy; the public ones are thin PL/Python wrappers
-- (pgvision.shards) that merge and, when a fan-out fails, name the shards that are down.
-- They run with search_path = pg_catalog, pg_temp, except the three that resolve a text
-- table name on the coordinator (train_classifier, record_vote, recommend): those resolve
-- it as the caller wrote it, then pin search_path themselves.

\echo Use "CREATE EXTENSION pgvision_cluster CASCADE" to load this file. \quit
CREATE SCHEMA vision_cluster;

COMMENT ON SCHEMA vision_cluster IS 'pgvision over shards: PL/Proxy fan-out, postgres_fdw reads';

GRANT USAGE ON SCHEMA vision_cluster TO PUBLIC;

CREATE FUNCTION vision_cluster.setup(shards text[], replace boolean DEFAULT false)
RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
import pgvision.shards  # not "from pgvision import shards": the argument is named shards
from pgvision import spi
return spi.call(plpy, GD, pgvision.shards.setup, shards, replace)
$$;

COMMENT ON FUNCTION vision_cluster.setup IS
  'Create the PL/Proxy cluster, postgres_fdw servers, user mappings and vision_cluster.features over shards given as libpq connection strings.';

CREATE FUNCTION vision_cluster.distribute_table(name text, id_column text DEFAULT 'id')
RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.distribute_table, name, id_column)
$$;

COMMENT ON FUNCTION vision_cluster.distribute_table IS
  'One coordinator table over a table that exists on every shard: hash-partitioned by id, partitions are the shards'' tables (postgres_fdw).';

CREATE FUNCTION vision_cluster.nodes() RETURNS TABLE (node text, version text)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT vision.node_name() AS node, vision.version() AS version;
$$;

COMMENT ON FUNCTION vision_cluster.nodes() IS 'Every shard''s name and pgvision version.';

-- Used to tell which shards are down when a fan-out fails.
CREATE FUNCTION vision_cluster._ping(part integer) RETURNS text
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON part;
  SELECT vision.node_name();
$$;

-- Extraction -----------------------------------------------------------------------------

CREATE FUNCTION vision_cluster._extract(
  version text, sha256 text, source text, id_column text, image_column text, model text,
  batch_size integer, max_rows integer
) RETURNS TABLE (node text, processed bigint, failed bigint, remaining bigint)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, r.processed, r.failed, r.remaining
  FROM vision.check_node($1, $6, $2) AS n (node),
       LATERAL vision.extract_rows(CASE WHEN n.node IS NOT NULL THEN $3::regclass END,
                                   $4::name, $5::name, $6, $7, $8) AS r;
$$;

CREATE FUNCTION vision_cluster.extract(
  source       text,
  id_column    text    DEFAULT 'id',
  image_column text    DEFAULT 'image',
  model        text    DEFAULT 'inception_v3_mixed6_grid_224',
  batch_size   integer DEFAULT 32,
  max_rows     integer DEFAULT 1000
) RETURNS TABLE (node text, processed bigint, failed bigint, remaining bigint)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.extract, source, id_column, image_column, model,
                batch_size, max_rows)
$$;

COMMENT ON FUNCTION vision_cluster.extract IS
  'vision.extract_rows on every shard at once (each on its own rows, in its own transaction); call again while any remaining > 0.';

-- Search ---------------------------------------------------------------------------------

-- PL/Proxy replaces every bare identifier that names an argument, column names included:
-- hence qualified columns in the bodies here.
CREATE FUNCTION vision_cluster._feature(model text, source text, image_id bigint)
RETURNS SETOF real[]
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT f.feature FROM vision.features AS f
  WHERE f.model = $1 AND f.source = to_regclass($2) AND f.image_id = $3;
$$;

CREATE FUNCTION vision_cluster._similar_to_vector(
  version text, sha256 text, feature real[], k integer, model text, metric text, source text
) RETURNS TABLE (node text, image_id bigint, distance real)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, s.image_id, s.distance
  FROM vision.check_node($1, $5, $2) AS n (node),
       LATERAL vision.similar_to_vector($3, $4, $5, $6,
                                        CASE WHEN n.node IS NOT NULL THEN $7::regclass END) AS s;
$$;

-- Each shard returns its exact local top k; the k best of those are the global top k.
CREATE FUNCTION vision_cluster.similar_to_vector(
  feature real[],
  source  text,
  k       integer DEFAULT 10,
  model   text    DEFAULT 'inception_v3_mixed6_grid_224',
  metric  text    DEFAULT 'cosine'
) RETURNS TABLE (image_id bigint, distance real, rank integer, node text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.similar_to_vector, feature, source, k, model, metric)
$$;

COMMENT ON FUNCTION vision_cluster.similar_to_vector IS
  'The k images nearest to a feature vector across all shards (each shard''s top k, merged).';

CREATE FUNCTION vision_cluster.similar(
  image_id bigint,
  source   text,
  k        integer DEFAULT 10,
  model    text    DEFAULT 'inception_v3_mixed6_grid_224',
  metric   text    DEFAULT 'cosine'
) RETURNS TABLE (image_id bigint, distance real, rank integer, node text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.similar, image_id, source, k, model, metric)
$$;

COMMENT ON FUNCTION vision_cluster.similar IS
  'The k images nearest to a stored image (itself excluded) across all shards.';

CREATE FUNCTION vision_cluster.similar_to_image(
  image  bytea,
  source text,
  k      integer DEFAULT 10,
  model  text    DEFAULT 'inception_v3_mixed6_grid_224',
  metric text    DEFAULT 'cosine'
) RETURNS TABLE (image_id bigint, distance real, rank integer, node text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.similar_to_image, image, source, k, model, metric)
$$;

COMMENT ON FUNCTION vision_cluster.similar_to_image IS
  'The k images nearest to new image bytes across all shards (features extracted on the coordinator).';

-- Models and indexes ---------------------------------------------------------------------

CREATE FUNCTION vision_cluster._register_model(
  name text, model_bytes bytea, sha256 text, preprocessing text, feature_layer text,
  pooling text, input_height integer, input_width integer, provenance text
) RETURNS TABLE (node text, status text)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT vision.node_name() AS node,
         CASE WHEN EXISTS (SELECT FROM vision.model_store m WHERE m.name = $1 AND m.sha256 = $3)
              THEN 'unchanged'
              -- positional: PL/Proxy's parser does not know named arguments
              ELSE format('registered (%s dims)',
                          vision.register_model($1, $2, NULL, $4, $5, $6, $7, $8, $9, true))
         END AS status;
$$;

CREATE FUNCTION vision_cluster.push_model(name text) RETURNS TABLE (node text, status text)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.push_model, name)
$$;

COMMENT ON FUNCTION vision_cluster.push_model IS
  'Copy a model from the coordinator''s registry to every shard whose copy differs (by SHA-256).';

CREATE FUNCTION vision_cluster._create_index(
  version text, sha256 text, source text, model text, metric text, m integer,
  ef_construction integer, ef_search integer
) RETURNS TABLE (node text, vectors bigint)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, vision.create_index($3::regclass, $4, $5, $6, $7, $8) AS vectors
  FROM vision.check_node($1, $4, $2) AS n (node);
$$;

CREATE FUNCTION vision_cluster.create_index(
  source          text,
  model           text    DEFAULT 'inception_v3_mixed6_grid_224',
  metric          text    DEFAULT 'cosine',
  m               integer DEFAULT 16,
  ef_construction integer DEFAULT 64,
  ef_search       integer DEFAULT 40
) RETURNS TABLE (node text, vectors bigint)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.create_index, source, model, metric, m,
                ef_construction, ef_search)
$$;

COMMENT ON FUNCTION vision_cluster.create_index IS
  'vision.create_index on every shard at once (each indexes its own images).';

REVOKE ALL ON FUNCTION vision_cluster.setup, vision_cluster.distribute_table,
  vision_cluster.push_model, vision_cluster._register_model FROM PUBLIC;

-- Words in images ------------------------------------------------------------------------

CREATE FUNCTION vision_cluster._search_text(
  version text, sha256 text, query text, source text, k integer, model text
) RETURNS TABLE (node text, image_id bigint, rank real, text text)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, s.image_id, s.rank, s.text
  FROM vision.check_node($1, $6, $2) AS n (node),
       LATERAL vision.search_text($3, CASE WHEN n.node IS NOT NULL THEN $4::regclass END,
                                  $5, $6) AS s;
$$;

-- ts_rank weighs a document by its own words only (no statistics across documents), so each
-- shard's top k merged is the global top k.
CREATE FUNCTION vision_cluster.search_text(
  query  text,
  source text,
  k      integer DEFAULT 10,
  model  text    DEFAULT 'pp_ocr_v6'
) RETURNS TABLE (image_id bigint, rank real, text text, node text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.search_text, query, source, k, model)
$$;

COMMENT ON FUNCTION vision_cluster.search_text IS
  'vision.search_text across shards: the images whose text matches the query, each shard''s top k merged by ts_rank (read the text first with vision_cluster.extract(..., model => ''pp_ocr_v6'')).';

-- Classification and recommendations ---------------------------------------------------
-- Train on the coordinator (features of the labelled or voted images are copied from their
-- shards into the coordinator's vision.features), push the classifier to every shard, and
-- let each shard score its own images. vision_cluster.setup(..., replace => true) also
-- creates the view vision_cluster.predictions.
CREATE FUNCTION vision_cluster._features(
  version text, sha256 text, model text, source text, ids bigint[]
) RETURNS TABLE (node text, image_id bigint, feature real[])
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, f.image_id, f.feature
  FROM vision.check_node($1, $3, $2) AS n (node)
  JOIN vision.features AS f ON f.model = $3 AND f.source = to_regclass($4)
   AND f.image_id = ANY($5);
$$;

CREATE FUNCTION vision_cluster._put_classifier(
  version text, sha256 text, name text, model text, source text, method text, options jsonb,
  labels text[], dims integer, weights bytea, train_ids bigint[], train_targets integer[],
  metrics jsonb, trained_at timestamptz
) RETURNS SETOF text
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT vision._put_classifier($3, $4, CASE WHEN n.node IS NOT NULL THEN $5::regclass END,
                                $6, $7, $8, $9, $10, $11, $12, $13, $14)
  FROM vision.check_node($1, $4, $2) AS n (node);
$$;

CREATE FUNCTION vision_cluster.train_classifier(
  name    text,
  labels  regclass,
  source  text,
  model   text    DEFAULT 'inception_v3_mixed6_grid_224',
  method  text    DEFAULT 'logistic',
  options jsonb   DEFAULT '{}',
  folds   integer DEFAULT 5,
  replace boolean DEFAULT false
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.train_classifier, name, labels, source, model, method,
                options, folds, replace)
$$;

COMMENT ON FUNCTION vision_cluster.train_classifier IS
  'vision.train_classifier on the coordinator over features copied from the shards, then the classifier is stored on every shard.';

CREATE FUNCTION vision_cluster._classify_table(
  version text, sha256 text, model text, classifier text, trained_at timestamptz,
  batch_size integer
) RETURNS TABLE (node text, labelled bigint)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node,
         CASE WHEN EXISTS (SELECT FROM vision.classifiers AS c
                           WHERE c.name = $4 AND c.trained_at = $5)
              THEN vision.classify_table($4, NULL, $6) END AS labelled
  FROM vision.check_node($1, $3, $2) AS n (node);
$$;

CREATE FUNCTION vision_cluster.classify_table(classifier text, batch_size integer DEFAULT 1000)
RETURNS TABLE (node text, labelled bigint)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.classify_table, classifier, batch_size)
$$;

COMMENT ON FUNCTION vision_cluster.classify_table IS
  'vision.classify_table on every shard at once, each labelling its own images; predictions stay on the shards (view vision_cluster.predictions).';

CREATE FUNCTION vision_cluster.record_vote(
  user_id  text,
  image_id bigint,
  liked    boolean,
  source   text,
  model    text DEFAULT 'inception_v3_mixed6_grid_224'
) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.record_vote, user_id, image_id, liked, source, model)
$$;

COMMENT ON FUNCTION vision_cluster.record_vote IS
  'vision.record_vote on the coordinator, with the image''s features copied from its shard; the user''s taste model lives on the coordinator.';

CREATE FUNCTION vision_cluster._recommend(
  version text, sha256 text, model text, source text, k integer, exclude bigint[],
  strategy text, taste bytea, popular_ids bigint[], popular_net real[]
) RETURNS TABLE (node text, image_id bigint, score double precision)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, s.image_id, s.score
  FROM vision.check_node($1, $3, $2) AS n (node),
       LATERAL vision._score_images($3, CASE WHEN n.node IS NOT NULL THEN $4::regclass END,
                                    $5, $6, $7, $8, $9, $10) AS s;
$$;

CREATE FUNCTION vision_cluster._score_moments(
  version text, sha256 text, model text, source text, taste bytea
) RETURNS TABLE (node text, moments double precision[])
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, vision._score_moments($3, CASE WHEN n.node IS NOT NULL THEN $4::regclass END,
                                       $5) AS moments
  FROM vision.check_node($1, $3, $2) AS n (node);
$$;

CREATE FUNCTION vision_cluster.recommend(
  user_id      text,
  source       text,
  k            integer DEFAULT 10,
  exclude_seen boolean DEFAULT true,
  model        text    DEFAULT 'inception_v3_mixed6_grid_224'
) RETURNS TABLE (image_id bigint, score real, strategy text, node text)
LANGUAGE plpython3u STABLE ROWS 10 AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.recommend, user_id, source, k, exclude_seen, model)
$$;

COMMENT ON FUNCTION vision_cluster.recommend IS
  'vision.recommend across shards: the user''s preferences from the coordinator, each shard scores its own images, the best k are merged.';

REVOKE ALL ON FUNCTION vision_cluster._put_classifier FROM PUBLIC;
