-- pgvision 0.10.0 → 0.9.0: back to the 0.9.0 plot_map, without contact_sheet and environment.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.9.0'" to load this file. \quit

DROP FUNCTION vision.contact_sheet(bigint, bigint[], integer, regclass, text, name, name, name,
                                   integer, integer);
DROP FUNCTION vision.environment();
DROP FUNCTION vision.plot_map(text, text, regclass, boolean, name, name, integer, name);

CREATE FUNCTION vision.plot_map(
  model        text     DEFAULT 'inception_v3',
  color_by     text     DEFAULT 'cluster',
  source       regclass DEFAULT NULL,
  thumbnails   boolean  DEFAULT false,
  image_column name     DEFAULT 'image',
  id_column    name     DEFAULT 'id',
  size         integer  DEFAULT 800
) RETURNS bytea
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import catalog, spi
return spi.call(plpy, GD, catalog.plot_map, model, color_by, source, thumbnails,
                image_column, id_column, size)
$$;
COMMENT ON FUNCTION vision.plot_map IS
  'PNG scatter of the 2-D map, coloured by cluster or by a classifier''s predictions, optionally with thumbnails.';
