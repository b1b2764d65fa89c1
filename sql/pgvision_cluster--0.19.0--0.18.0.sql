-- pgvision_cluster 0.19.0 → 0.18.0: the model defaults name inception_v3_mixed6_grid again.

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.18.0'" to load this file. \quit

-- Never backwards unasked (see pgvision--0.15.0--0.14.0.sql).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision_cluster: refusing to downgrade from 0.19.0 to 0.18.0 unasked'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION vision_cluster.extract(
  source       text,
  id_column    text    DEFAULT 'id',
  image_column text    DEFAULT 'image',
  model        text    DEFAULT 'inception_v3_mixed6_grid',
  batch_size   integer DEFAULT 32,
  max_rows     integer DEFAULT 1000
) RETURNS TABLE (node text, processed bigint, failed bigint, remaining bigint)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.extract, source, id_column, image_column, model,
                batch_size, max_rows)
$$;

CREATE OR REPLACE FUNCTION vision_cluster.similar_to_vector(
  feature real[],
  source  text,
  k       integer DEFAULT 10,
  model   text    DEFAULT 'inception_v3_mixed6_grid',
  metric  text    DEFAULT 'cosine'
) RETURNS TABLE (image_id bigint, distance real, rank integer, node text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.similar_to_vector, feature, source, k, model, metric)
$$;

CREATE OR REPLACE FUNCTION vision_cluster.similar(
  image_id bigint,
  source   text,
  k        integer DEFAULT 10,
  model    text    DEFAULT 'inception_v3_mixed6_grid',
  metric   text    DEFAULT 'cosine'
) RETURNS TABLE (image_id bigint, distance real, rank integer, node text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.similar, image_id, source, k, model, metric)
$$;

CREATE OR REPLACE FUNCTION vision_cluster.similar_to_image(
  image  bytea,
  source text,
  k      integer DEFAULT 10,
  model  text    DEFAULT 'inception_v3_mixed6_grid',
  metric text    DEFAULT 'cosine'
) RETURNS TABLE (image_id bigint, distance real, rank integer, node text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.similar_to_image, image, source, k, model, metric)
$$;

CREATE OR REPLACE FUNCTION vision_cluster.create_index(
  source          text,
  model           text    DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision_cluster.train_classifier(
  name    text,
  labels  regclass,
  source  text,
  model   text    DEFAULT 'inception_v3_mixed6_grid',
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

CREATE OR REPLACE FUNCTION vision_cluster.record_vote(
  user_id  text,
  image_id bigint,
  liked    boolean,
  source   text,
  model    text DEFAULT 'inception_v3_mixed6_grid'
) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.record_vote, user_id, image_id, liked, source, model)
$$;

CREATE OR REPLACE FUNCTION vision_cluster.recommend(
  user_id      text,
  source       text,
  k            integer DEFAULT 10,
  exclude_seen boolean DEFAULT true,
  model        text    DEFAULT 'inception_v3_mixed6_grid'
) RETURNS TABLE (image_id bigint, score real, strategy text, node text)
LANGUAGE plpython3u STABLE ROWS 10 AS $$
from pgvision import shards, spi
return spi.call(plpy, GD, shards.recommend, user_id, source, k, exclude_seen, model)
$$;
