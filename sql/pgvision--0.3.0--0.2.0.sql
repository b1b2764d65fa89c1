-- pgvision 0.3.0 → 0.2.0: remove what pgvision--0.2.0--0.3.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.2.0'" to load this file. \quit

DROP FUNCTION vision.evaluate_classifier(text);
DROP FUNCTION vision.compare_classifiers(regclass, regclass, text, text[], text, integer);
DROP FUNCTION vision.classify_table(text, regclass, integer);
DROP FUNCTION vision.classify_image(bytea, text, integer);
DROP FUNCTION vision.classify(bigint, text, integer, regclass);
DROP FUNCTION vision.train_classifier(text, regclass, regclass, text, text, jsonb, integer, boolean);
DROP TABLE vision.predictions;
DROP TABLE vision.classifiers;
