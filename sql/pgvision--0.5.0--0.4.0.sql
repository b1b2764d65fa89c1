-- pgvision 0.5.0 → 0.4.0: remove what pgvision--0.4.0--0.5.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.4.0'" to load this file. \quit

DROP FUNCTION vision.check_node(text, text, text);
DROP VIEW vision.features_export;
DROP FUNCTION vision.node_name();
DROP FUNCTION vision.similar_to_vector(real[], integer, text, text, regclass, bigint[], boolean);
DROP FUNCTION vision.extract_rows(regclass, name, name, text, integer, integer);
DROP FUNCTION vision.model_backends();
DROP FUNCTION vision.extract_features_with(bytea, text, text);
DROP FUNCTION vision.model_handle(text);
