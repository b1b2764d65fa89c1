-- pgvision 0.14.0 → 0.15.0
-- * Near-duplicates: the built-in model perceptual_hash (pHash of the image and its mirror,
--   and a colour histogram, kept current like features), vision.duplicates and
--   vision.duplicates_of.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.15.0'" to load this file. \quit

-- The perceptual hash is registered like the installed networks (by its specification file).
SELECT vision._register_builtin_models();

-- duplicates: near-duplicate images from perceptual hashes, colours and features -----------

CREATE FUNCTION vision.duplicates(
  source            regclass,
  model             text    DEFAULT 'inception_v3_mixed6_grid',
  max_hash_distance integer DEFAULT 7,
  min_similarity    real    DEFAULT 0.82,
  neighbours        integer DEFAULT 10
) RETURNS TABLE (group_id bigint, image_id bigint, representative boolean,
                 hash_distance integer, cosine real, similarity real)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import duplicates, spi
return spi.call(plpy, GD, duplicates.duplicates, source, model, max_hash_distance,
                min_similarity, neighbours)
$$;
COMMENT ON FUNCTION vision.duplicates IS
  'Groups of near-duplicate images of a table (re-encoded, resized, cropped, mirrored): perceptual hashes (model perceptual_hash) through a binary index, confirmed by colours and the features of model (NULL: hashes alone); evidence against each group''s representative.';

CREATE FUNCTION vision.duplicates_of(
  image             bytea,
  source            regclass,
  model             text    DEFAULT 'inception_v3_mixed6_grid',
  max_hash_distance integer DEFAULT 7,
  min_similarity    real    DEFAULT 0.82
) RETURNS TABLE (image_id bigint, hash_distance integer, cosine real, similarity real)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import duplicates, spi
return spi.call(plpy, GD, duplicates.duplicates_of, image, source, model, max_hash_distance,
                min_similarity)
$$;
COMMENT ON FUNCTION vision.duplicates_of IS
  'The stored near-duplicates of new image bytes in a table, most similar first: what to check before loading an image.';

