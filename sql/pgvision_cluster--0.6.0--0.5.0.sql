-- pgvision_cluster 0.6.0 → 0.5.0: remove what pgvision_cluster--0.5.0--0.6.0.sql added.
-- (vision_cluster.predictions, made by setup(), stays until the next setup.)

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.5.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision_cluster: refusing to downgrade from 0.6.0 to 0.5.0 (it drops what 0.6.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP FUNCTION vision_cluster.recommend(text, text, integer, boolean, text);
DROP FUNCTION vision_cluster._recommend(text, text, text, text, integer, bigint[], text, bytea,
                                        real[], bigint[], real[]);
DROP FUNCTION vision_cluster.record_vote(text, bigint, boolean, text, text);
DROP FUNCTION vision_cluster.classify_table(text, integer);
DROP FUNCTION vision_cluster._classify_table(text, text, text, text, timestamptz, integer);
DROP FUNCTION vision_cluster.train_classifier(text, regclass, text, text, text, jsonb, integer,
                                              boolean);
DROP FUNCTION vision_cluster._put_classifier(text, text, text, text, text, text, jsonb, text[],
                                             integer, bytea, bigint[], integer[], jsonb,
                                             timestamptz);
DROP FUNCTION vision_cluster._features(text, text, text, text, bigint[]);
