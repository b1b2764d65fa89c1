-- pgvision 0.4.0 → 0.3.0: remove what pgvision--0.3.0--0.4.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.3.0'" to load this file. \quit

DROP FUNCTION vision.similar_many(bigint[], integer, text, text, regclass, boolean);
DROP FUNCTION vision.plot_map(text, text, regclass, boolean, name, name, integer);
DROP FUNCTION vision.embed_2d(text, text, regclass);
DROP FUNCTION vision.bandit_next(text, text, regclass);
DROP FUNCTION vision.cluster(text, integer, text, regclass);
DROP FUNCTION vision.recommend(text, integer, boolean, text, regclass);
DROP FUNCTION vision.record_vote(text, bigint, boolean, text, regclass);
DROP TABLE vision.map_2d, vision.bandit_state, vision.cluster_centroids, vision.clusters,
  vision.taste_models, vision.votes;

