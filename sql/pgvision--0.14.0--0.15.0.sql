-- pgvision 0.14.0 → 0.15.0
-- * Near-duplicates: the built-in model perceptual_hash (pHash of the image and its mirror,
--   and a colour histogram, kept current like features), vision.duplicates and
--   vision.duplicates_of.
-- * Content classes: preprocessing 'tfjs', the built-in model nsfwjs_mobilenet_v2 (the
--   network's own softmax), vision.moderate, views vision.content_scores and
--   vision.flagged_images.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.15.0'" to load this file. \quit

-- Models fed as TF.js feeds them (nsfwjs's networks): [0, 1] after an aligned-corner resize.
ALTER TABLE vision.model_store DROP CONSTRAINT model_store_preprocessing_check,
  ADD CONSTRAINT model_store_preprocessing_check
    CHECK (preprocessing IN ('inception', 'caffe', 'torch', 'raw', 'tfjs'));

-- The perceptual hash and the content classes are registered like the installed networks.
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

-- moderation: the shipped network's own content classes -----------------------------------

CREATE FUNCTION vision.moderate(image bytea, model text DEFAULT 'nsfwjs_mobilenet_v2')
RETURNS TABLE (class text, probability real)
LANGUAGE plpython3u VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import moderation, spi
return spi.call(plpy, GD, moderation.moderate, image, model)
$$;
COMMENT ON FUNCTION vision.moderate IS
  'nsfwjs''s content classes (drawing, hentai, neutral, porn, sexy) of image bytes, most likely first: the source network''s scores, not pgvision''s judgement.';

-- The class scores of a table's images, kept current like features:
-- CALL vision.extract_table(t, model => 'nsfwjs_mobilenet_v2').
CREATE VIEW vision.content_scores WITH (security_invoker = true) AS
  SELECT f.source, f.image_id, f.model, f.feature[1] AS drawing, f.feature[2] AS hentai,
         f.feature[3] AS neutral, f.feature[4] AS porn, f.feature[5] AS sexy, f.extracted_at
  FROM vision.features f
  WHERE f.model OPERATOR(pg_catalog.=) 'nsfwjs_mobilenet_v2';
COMMENT ON VIEW vision.content_scores IS
  'Per image the content class probabilities of model nsfwjs_mobilenet_v2 (nsfwjs''s classes).';

-- Images whose not-safe share (porn + hentai + sexy) is at least pgvision.flag_threshold
-- (default 0.8), with the class that leads it.
CREATE VIEW vision.flagged_images WITH (security_invoker = true) AS
  SELECT c.source, c.image_id, c.model, c.porn + c.hentai + c.sexy AS score,
         CASE WHEN c.porn >= c.hentai AND c.porn >= c.sexy THEN 'porn'
              WHEN c.hentai >= c.sexy THEN 'hentai' ELSE 'sexy' END AS class,
         c.extracted_at
  FROM vision.content_scores c
  WHERE c.porn + c.hentai + c.sexy >= coalesce(
    NULLIF(pg_catalog.current_setting('pgvision.flag_threshold', true), '')::real,
    0.8);
COMMENT ON VIEW vision.flagged_images IS
  'Images whose porn + hentai + sexy probability is at least pgvision.flag_threshold (0.8), for human review.';
GRANT SELECT ON vision.content_scores, vision.flagged_images TO PUBLIC;

