-- pgvision 0.13.0 → 0.12.0: 0.12.0's wrappers, shard scoring and comments.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.12.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.13.0 to 0.12.0 (it drops what 0.13.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
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

CREATE OR REPLACE FUNCTION vision.refresh_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS text
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.refresh_index, source, model)
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
from pgvision import search, spi
return spi.call(plpy, GD, search.create_index, source, model, metric, m,
                ef_construction, ef_search, pca_dims, storage)
$$;

CREATE OR REPLACE FUNCTION vision.drop_index(source regclass, model text DEFAULT 'inception_v3')
RETURNS boolean
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import search, spi
return spi.call(plpy, GD, search.drop_index, source, model)
$$;

DROP FUNCTION vision._score_images(text, regclass, integer, bigint[], text, bytea, bigint[], real[]);

CREATE FUNCTION vision._score_images(
  model text, source regclass, k integer, exclude bigint[], strategy text, taste bytea,
  centre real[], popular_ids bigint[], popular_net real[]
) RETURNS TABLE (image_id bigint, score double precision)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import recommend, spi
return spi.call(plpy, GD, recommend.score_images, model, source, k, exclude, strategy,
                taste, centre, popular_ids, popular_net)
$$;

COMMENT ON FUNCTION vision._score_images IS
  'Internal (vision_cluster): this node''s k best images for preferences computed on the coordinator.';

DROP FUNCTION vision._score_moments(text, regclass, bytea);

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

COMMENT ON FUNCTION vision.recommend IS
  'Images ranked by the user''s predicted like-probability (or a cold-start fallback, named in strategy).';

COMMENT ON FUNCTION vision.bandit_next IS
  'Thompson sampling over clusters: an image the user has not voted on, from the cluster with the highest Beta draw.';

COMMENT ON TABLE vision.taste_models IS 'Per-user elastic-net logistic models on features.';
