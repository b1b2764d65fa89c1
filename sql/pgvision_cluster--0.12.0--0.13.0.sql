-- pgvision_cluster 0.12.0 → 0.13.0: no change of its own (it shares pgvision's version).

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.13.0'" to load this file. \quit
