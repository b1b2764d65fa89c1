-- pgvision_cluster 0.16.0 → 0.15.0: no change of its own (it follows pgvision's version).

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.15.0'" to load this file. \quit
