-- pgvision_cluster 0.15.0 → 0.16.0: vision_cluster.search_text, the words in images across
-- shards (each shard reads its own images' text: vision_cluster.extract(..., model =>
-- 'pp_ocr_v6')).

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.16.0'" to load this file. \quit

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
