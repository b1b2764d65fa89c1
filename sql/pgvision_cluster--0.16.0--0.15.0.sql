-- pgvision_cluster 0.16.0 → 0.15.0: without vision_cluster.search_text.

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.15.0'" to load this file. \quit

DROP FUNCTION vision_cluster.search_text(text, text, integer, text);
DROP FUNCTION vision_cluster._search_text(text, text, text, text, integer, text);
