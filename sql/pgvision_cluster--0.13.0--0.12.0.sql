-- pgvision_cluster 0.13.0 → 0.12.0: 0.12.0's recommendation fan-out.

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.12.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision_cluster: refusing to downgrade from 0.13.0 to 0.12.0 (it drops what 0.13.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP FUNCTION vision_cluster._recommend(text, text, text, text, integer, bigint[], text, bytea, bigint[], real[]);

CREATE FUNCTION vision_cluster._recommend(
  version text, sha256 text, model text, source text, k integer, exclude bigint[],
  strategy text, taste bytea, centre real[], popular_ids bigint[], popular_net real[]
) RETURNS TABLE (node text, image_id bigint, score double precision)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, s.image_id, s.score
  FROM vision.check_node($1, $3, $2) AS n (node),
       LATERAL vision._score_images($3, CASE WHEN n.node IS NOT NULL THEN $4::regclass END,
                                    $5, $6, $7, $8, $9, $10, $11) AS s;
$$;

DROP FUNCTION vision_cluster._score_moments(text, text, text, text, bytea);
