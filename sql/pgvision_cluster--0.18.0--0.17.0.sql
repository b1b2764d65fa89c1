-- pgvision_cluster 0.18.0 → 0.17.0: nothing of its own changes (it moves with pgvision).

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.17.0'" to load this file. \quit
