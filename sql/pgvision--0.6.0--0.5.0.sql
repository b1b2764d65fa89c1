-- pgvision 0.6.0 → 0.5.0: remove what pgvision--0.5.0--0.6.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.5.0'" to load this file. \quit

DROP VIEW vision.predictions_export;
DROP FUNCTION vision._score_images(text, regclass, integer, bigint[], text, bytea, real[],
                                   bigint[], real[]);
DROP FUNCTION vision._put_classifier(text, text, regclass, text, jsonb, text[], integer, bytea,
                                     bigint[], integer[], jsonb, timestamptz);
