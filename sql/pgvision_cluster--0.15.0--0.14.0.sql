-- pgvision_cluster 0.15.0 → 0.14.0: no change of its own (it follows pgvision's version).

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.14.0'" to load this file. \quit
