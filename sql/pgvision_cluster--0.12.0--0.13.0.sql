-- pgvision_cluster 0.12.0 → 0.13.0: recommendations send the scorers' payload (no centre)
-- and standardise the scores over every shard (vision_cluster._score_moments).

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.13.0'" to load this file. \quit

DROP FUNCTION vision_cluster._recommend(text, text, text, text, integer, bigint[], text, bytea, real[], bigint[], real[]);

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
