-- pgvision_cluster 0.6.0 → 0.5.0: remove what pgvision_cluster--0.5.0--0.6.0.sql added.
-- (vision_cluster.predictions, made by setup(), stays until the next setup.)

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.5.0'" to load this file. \quit

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
