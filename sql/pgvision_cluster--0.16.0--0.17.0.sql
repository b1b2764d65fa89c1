-- pgvision_cluster 0.16.0 → 0.17.0: nothing of its own changes; it moves with pgvision, whose
-- features are now stored in half precision (vision_cluster's functions read the view
-- vision.features, which still shows real[]).

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.17.0'" to load this file. \quit
