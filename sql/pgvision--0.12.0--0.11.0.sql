-- pgvision 0.12.0 → 0.11.0: plot_map without layout.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.11.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.12.0 to 0.11.0 (it drops what 0.12.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP FUNCTION vision.plot_map(text, text, regclass, boolean, name, name, integer, name, text);

CREATE FUNCTION vision.plot_map(
  model        text     DEFAULT 'inception_v3',
  color_by     text     DEFAULT 'cluster',
  source       regclass DEFAULT NULL,
  thumbnails   boolean  DEFAULT false,
  image_column name     DEFAULT 'image',
  id_column    name     DEFAULT 'id',
  size         integer  DEFAULT 800,
  labels       name     DEFAULT NULL
) RETURNS bytea
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import pictures, spi
return spi.call(plpy, GD, pictures.plot_map, model, color_by, source, thumbnails,
                image_column, id_column, size, labels)
$$;
COMMENT ON FUNCTION vision.plot_map IS
  'PNG map of the 2-D embedding, coloured by cluster or by a classifier''s predictions (legend beside it), optionally with thumbnails and ids or a column''s text (labels).';
