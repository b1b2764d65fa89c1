-- pgvision 0.11.0 → 0.12.0
-- * vision.plot_map takes layout: 'grid' (each thumbnail in a cell of its own, placed by an
--   optimal assignment from the 2-D map; the default with thumbnails) or 'scatter'.
-- Without SQL changes: snapshot files carry a checksum per row (format 2; format 1 files are
-- rebuilt on first use), model handles are bound to their role and refused once their model
-- is dropped or replaced, and long calls report progress at most every 5 s.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.12.0'" to load this file. \quit

DROP FUNCTION vision.plot_map(text, text, regclass, boolean, name, name, integer, name);

CREATE FUNCTION vision.plot_map(
  model        text     DEFAULT 'inception_v3',
  color_by     text     DEFAULT 'cluster',
  source       regclass DEFAULT NULL,
  thumbnails   boolean  DEFAULT false,
  image_column name     DEFAULT 'image',
  id_column    name     DEFAULT 'id',
  size         integer  DEFAULT 800,
  labels       name     DEFAULT NULL,
  layout       text     DEFAULT NULL
) RETURNS bytea
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import pictures, spi
return spi.call(plpy, GD, pictures.plot_map, model, color_by, source, thumbnails,
                image_column, id_column, size, labels, layout)
$$;
COMMENT ON FUNCTION vision.plot_map IS
  'PNG map of the 2-D embedding, coloured by cluster or by a classifier''s predictions (legend beside it), optionally with thumbnails (in a grid, each in a cell of its own, or scattered: layout) and ids or a column''s text (labels).';
