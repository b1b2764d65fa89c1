-- pgvision 0.4.0 → 0.3.0: remove what pgvision--0.3.0--0.4.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.3.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.4.0 to 0.3.0 (it drops what 0.4.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP FUNCTION vision.similar_many(bigint[], integer, text, text, regclass, boolean);
DROP FUNCTION vision.plot_map(text, text, regclass, boolean, name, name, integer);
DROP FUNCTION vision.embed_2d(text, text, regclass);
DROP FUNCTION vision.bandit_next(text, text, regclass);
DROP FUNCTION vision.cluster(text, integer, text, regclass);
DROP FUNCTION vision.recommend(text, integer, boolean, text, regclass);
DROP FUNCTION vision.record_vote(text, bigint, boolean, text, regclass);
DROP TABLE vision.map_2d, vision.bandit_state, vision.cluster_centroids, vision.clusters,
  vision.taste_models, vision.votes;

