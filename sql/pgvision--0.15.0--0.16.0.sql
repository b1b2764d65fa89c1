-- pgvision 0.15.0 → 0.16.0
-- * Words in images: the built-in OCR model pp_ocr_v6 (RapidOCR, PP-OCRv6), vision.read_text,
--   the kept-current table vision.image_text (tsvector under a GIN index) filled by
--   vision.extract_table(model => 'pp_ocr_v6'), and vision.search_text.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.16.0'" to load this file. \quit

-- The OCR model is registered like the installed networks.
SELECT vision._register_builtin_models();

-- ocr: words in images ------------------------------------------------------------------

-- The text of a table's images, read by the OCR model (CALL vision.extract_table(t, model =>
-- 'pp_ocr_v6')), kept current like features (the change triggers delete a changed image's
-- row, vision.maintain reads it again). `document` uses the 'simple' configuration: no
-- stemming and no stop words, so brands, sizes and codes stay searchable in any language.
CREATE TABLE vision.image_text (
  model    text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source   regclass NOT NULL,
  image_id bigint NOT NULL,
  lines    jsonb NOT NULL,
  body     text NOT NULL,
  document tsvector GENERATED ALWAYS AS (pg_catalog.to_tsvector('pg_catalog.simple'::regconfig, body)) STORED,
  read_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, source, image_id)
);
CREATE INDEX image_text_document ON vision.image_text USING gin (document);
COMMENT ON TABLE vision.image_text IS
  'The text read in each image (lines with boxes and confidence, the text, its tsvector), written by vision.extract_table with the OCR model.';
SELECT pg_catalog.pg_extension_config_dump('vision.image_text', '');

CREATE FUNCTION vision.read_text(image bytea, model text DEFAULT 'pp_ocr_v6')
RETURNS TABLE (line integer, text text, confidence real, box integer[])
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi, words
return spi.call(plpy, GD, words.read_text, image, model)
$$;
COMMENT ON FUNCTION vision.read_text IS
  'The lines of text in image bytes, in reading order: text, recogniser confidence and box (four corners x1,y1..x4,y4, clockwise from top left).';

CREATE FUNCTION vision.search_text(
  query  text,
  source regclass,
  k      integer DEFAULT 10,
  model  text    DEFAULT 'pp_ocr_v6'
) RETURNS TABLE (image_id bigint, rank real, text text)
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import spi, words
return spi.call(plpy, GD, words.search_text, query, source, k, model)
$$;
COMMENT ON FUNCTION vision.search_text IS
  'The k images of a table whose text matches a web-search style query (words, "phrases", or, -word), best ts_rank first; feed the ids to vision.similar(candidates => ...) to rank them by looks.';
GRANT SELECT, INSERT, UPDATE, DELETE ON vision.image_text TO PUBLIC;

-- Its rows follow the source table's privileges and row-level security, as vision.features'.
ALTER TABLE vision.image_text ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgvision_read ON vision.image_text FOR SELECT USING (
  pg_catalog.has_table_privilege(source, 'SELECT') AND CASE WHEN (SELECT vision._reading())
  OR NOT pg_catalog.row_security_active(source) THEN true
  ELSE vision._visible(source, ARRAY[image_id]) END);
CREATE POLICY pgvision_insert ON vision.image_text FOR INSERT WITH CHECK (
  pg_catalog.has_table_privilege(source, 'SELECT') AND ((SELECT vision._writing())
  OR pg_catalog.pg_has_role('vision_admin', 'MEMBER')));
CREATE POLICY pgvision_update ON vision.image_text FOR UPDATE USING (
  pg_catalog.has_table_privilege(source, 'SELECT') AND ((SELECT vision._writing())
  OR pg_catalog.pg_has_role('vision_admin', 'MEMBER')))
  WITH CHECK (pg_catalog.has_table_privilege(source, 'SELECT') AND ((SELECT vision._writing())
  OR pg_catalog.pg_has_role('vision_admin', 'MEMBER')));
CREATE POLICY pgvision_delete ON vision.image_text FOR DELETE USING (
  pg_catalog.has_table_privilege(source, 'SELECT') AND ((SELECT vision._writing())
  OR pg_catalog.pg_has_role('vision_admin', 'MEMBER')));

-- A changed image's text goes with its features.
CREATE OR REPLACE FUNCTION vision._forget_images(source regclass, ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM vision.features f WHERE f.source = $1 AND ($2 IS NULL OR f.image_id = ANY ($2));
  DELETE FROM vision.extract_errors e
    WHERE e.source = $1 AND ($2 IS NULL OR e.image_id = ANY ($2));
  DELETE FROM vision.image_text t WHERE t.source = $1 AND ($2 IS NULL OR t.image_id = ANY ($2));
  DELETE FROM vision.predictions p WHERE p.source = $1 AND ($2 IS NULL OR p.image_id = ANY ($2));
  DELETE FROM vision.map_2d m WHERE m.source = $1 AND ($2 IS NULL OR m.image_id = ANY ($2));
  DELETE FROM vision.clusters c WHERE c.source = $1 AND ($2 IS NULL OR c.image_id = ANY ($2));
  DELETE FROM vision.neighbours n
    WHERE n.source = $1 AND ($2 IS NULL OR n.image_id = ANY ($2) OR n.neighbour_ids && $2);
END
$$;

-- DROP EXTENSION without CASCADE also refuses while text is stored.
CREATE OR REPLACE FUNCTION vision._guard_drop_extension() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  held text;
BEGIN
  IF current_query() !~* '\mpgvision\M' OR current_query() ~* '\mcascade\M' THEN
    RETURN;
  END IF;
  SELECT string_agg(format('%s %s', n, what), ', ') INTO held FROM (
    SELECT count(*) AS n, 'feature rows' AS what FROM vision.features
    UNION ALL SELECT count(*), 'text rows' FROM vision.image_text
    UNION ALL SELECT count(*), 'classifiers' FROM vision.classifiers
    UNION ALL SELECT count(*), 'votes' FROM vision.votes
    UNION ALL SELECT count(*), 'indexes' FROM vision.indexes) AS stored
  WHERE n > 0;
  IF held IS NOT NULL THEN
    RAISE EXCEPTION 'DROP EXTENSION pgvision would delete what users stored: %', held
      USING ERRCODE = 'dependent_objects_still_exist',
            HINT = 'pg_dump them first; DROP EXTENSION pgvision CASCADE drops them.';
  END IF;
END
$$;
