-- pgvision_cluster 0.15.0 → 0.16.0: no change of its own (it follows pgvision's version);
-- vision.search_text runs on each shard's own tables.

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.16.0'" to load this file. \quit
