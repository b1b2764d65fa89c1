-- pgvision 0.3.0 → 0.4.0: votes, taste models, recommendations, clusters, bandit, 2-D maps.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.4.0'" to load this file. \quit

CREATE TABLE vision.votes (
  user_id  text NOT NULL,
  model    text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  liked    boolean NOT NULL,
  voted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (user_id, model, source, image_id)
);
COMMENT ON TABLE vision.votes IS 'Likes and dislikes, one per user and image (the last vote wins).';
SELECT pg_catalog.pg_extension_config_dump('vision.votes', '');

CREATE TABLE vision.taste_models (
  user_id    text NOT NULL,
  model      text NOT NULL,
  source     regclass NOT NULL,
  weights    bytea NOT NULL,            -- .npz: mean, scale, w, b (allow_pickle=False)
  votes      integer NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (user_id, model, source)
);
COMMENT ON TABLE vision.taste_models IS 'Per-user elastic-net logistic models on features.';
SELECT pg_catalog.pg_extension_config_dump('vision.taste_models', '');

CREATE TABLE vision.clusters (
  model    text NOT NULL,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  cluster  integer NOT NULL,
  PRIMARY KEY (model, source, image_id)
);
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
SELECT pg_catalog.pg_extension_config_dump('vision.clusters', '');
SELECT pg_catalog.pg_extension_config_dump('vision.cluster_centroids', '');
SELECT pg_catalog.pg_extension_config_dump('vision.bandit_state', '');
SELECT pg_catalog.pg_extension_config_dump('vision.map_2d', '');

CREATE FUNCTION vision.record_vote(
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
COMMENT ON FUNCTION vision.record_vote IS
  'Store a like/dislike (idempotent per user and image); updates the bandit and the user''s taste model. True if it changed anything.';

CREATE FUNCTION vision.recommend(
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
COMMENT ON FUNCTION vision.recommend IS
  'Images ranked by the user''s predicted like-probability (or a cold-start fallback, named in strategy).';

CREATE FUNCTION vision.cluster(
  model  text     DEFAULT 'inception_v3',
  k      integer  DEFAULT 8,
  method text     DEFAULT 'kmeans',
  source regclass DEFAULT NULL
) RETURNS integer
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.cluster, model, k, method, source)
$$;
COMMENT ON FUNCTION vision.cluster IS
  'K-means over a table''s features into vision.clusters and vision.cluster_centroids.';

CREATE FUNCTION vision.bandit_next(
  user_id text,
  model   text     DEFAULT 'inception_v3',
  source  regclass DEFAULT NULL
) RETURNS TABLE (cluster integer, image_id bigint, draw real)
LANGUAGE plpython3u VOLATILE ROWS 1 AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.bandit_next, user_id, model, source)
$$;
COMMENT ON FUNCTION vision.bandit_next IS
  'Thompson sampling over clusters: an image the user has not voted on, from the cluster with the highest Beta draw.';

CREATE FUNCTION vision.embed_2d(
  model  text     DEFAULT 'inception_v3',
  method text     DEFAULT 'tsne',
  source regclass DEFAULT NULL
) RETURNS real
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import errors, recommend
return errors.sql_call(plpy, GD, recommend.embed_2d, model, method, source)
$$;
COMMENT ON FUNCTION vision.embed_2d IS
  'Project a table''s features to 2-D (t-SNE or PCA) into vision.map_2d; returns seconds taken.';

CREATE FUNCTION vision.plot_map(
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
COMMENT ON FUNCTION vision.plot_map IS
  'PNG scatter of the 2-D map, coloured by cluster or by a classifier''s predictions, optionally with thumbnails.';

CREATE FUNCTION vision.similar_many(
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
COMMENT ON FUNCTION vision.similar_many IS
  'vision.similar for many stored images in one call: rows (query_id, image_id, distance, rank).';

GRANT SELECT, INSERT, UPDATE, DELETE ON vision.votes, vision.taste_models, vision.clusters,
  vision.cluster_centroids, vision.bandit_state, vision.map_2d TO PUBLIC;
