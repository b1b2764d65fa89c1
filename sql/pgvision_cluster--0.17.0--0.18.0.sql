-- pgvision_cluster 0.17.0 → 0.18.0: nothing of its own changes; it moves with pgvision, whose
-- indexes may now be IVF lists (vision_cluster's functions call vision.similar, which reads
-- either).

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.18.0'" to load this file. \quit
