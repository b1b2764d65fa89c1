-- pgvision 0.9.0 → 0.8.0: models fine_tune registered stay registered (0.8.0 extracts
-- with them like any other model); only the function goes.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.8.0'" to load this file. \quit

DROP FUNCTION vision.fine_tune(text, regclass, regclass, text, integer, integer, jsonb, boolean);
