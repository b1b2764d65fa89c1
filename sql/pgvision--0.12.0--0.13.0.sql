-- pgvision 0.12.0 → 0.13.0
-- * Recommendations score with the nearest liked image (less half the nearest disliked) plus
--   a logistic taste model; vision._score_images takes the scorers' payload in taste (no
--   centre), and vision._score_moments lets every shard standardise the scores alike.
-- * The package's rooms renamed: the index functions call pgvision.indexes, the clusters and
--   2-D maps pgvision.clusters (was pgvision.catalog). Nothing stored changes; taste models
--   stored before are refitted from the votes.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.13.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION vision.cluster(
  model  text     DEFAULT 'inception_v3',
  k      integer  DEFAULT 8,
  method text     DEFAULT 'kmeans',
  source regclass DEFAULT NULL
) RETURNS integer
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import clusters, spi
return spi.call(plpy, GD, clusters.cluster, model, k, method, source)
$$;

CREATE OR REPLACE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.refresh_index, source, model)
$$;

CREATE OR REPLACE FUNCTION vision.create_index(
  source          regclass,
  model           text    DEFAULT 'inception_v3',
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

CREATE OR REPLACE FUNCTION vision.drop_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import indexes, spi
return spi.call(plpy, GD, indexes.drop_index, source, model)
$$;

DROP FUNCTION vision._score_images(text, regclass, integer, bigint[], text, bytea, real[], bigint[], real[]);

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

CREATE OR REPLACE FUNCTION vision.embed_2d(
  model  text     DEFAULT 'inception_v3',
  method text     DEFAULT 'tsne',
  source regclass DEFAULT NULL
) RETURNS real
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import clusters, spi
return spi.call(plpy, GD, clusters.embed_2d, model, method, source)
$$;

COMMENT ON FUNCTION vision.recommend IS
  'Images ranked for a user by similarity to the nearest liked image (less half that to the nearest disliked) plus a logistic taste model; with likes only, the nearest liked; without, popularity (named in strategy).';

COMMENT ON FUNCTION vision.bandit_next IS
  'Thompson sampling over clusters: from the cluster with the highest Beta draw, the unseen image the user''s scorer ranks first.';

COMMENT ON TABLE vision.taste_models IS
  'Per-user logistic taste models (w, b) on unit-length features, refitted after each vote.';
