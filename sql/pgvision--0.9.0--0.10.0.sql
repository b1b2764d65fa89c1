-- pgvision 0.9.0 → 0.10.0: pictures from SQL and what the server's Python holds.
-- vision.contact_sheet (new); vision.plot_map gains labels and moves to pgvision.pictures
-- (a palette distinct past 10 groups, a legend beside the map in natural order);
-- vision.environment (new, for `pgvision doctor`).

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.10.0'" to load this file. \quit

DROP FUNCTION vision.plot_map(text, text, regclass, boolean, name, name, integer);

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

CREATE FUNCTION vision.contact_sheet(
  image_id     bigint   DEFAULT NULL,
  image_ids    bigint[] DEFAULT NULL,
  k            integer  DEFAULT 8,
  source       regclass DEFAULT NULL,
  model        text     DEFAULT 'inception_v3',
  label_column name     DEFAULT NULL,
  image_column name     DEFAULT 'image',
  id_column    name     DEFAULT 'id',
  tile         integer  DEFAULT 160,
  columns      integer  DEFAULT 5
) RETURNS bytea
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import pictures, spi
return spi.call(plpy, GD, pictures.contact_sheet, image_id, image_ids, k, source, model,
                label_column, image_column, id_column, tile, columns)
$$;
COMMENT ON FUNCTION vision.contact_sheet IS
  'PNG of a stored image (framed, first) beside its k nearest neighbours, or of the images image_ids in order, captioned with ids, a label column and distances.';

CREATE FUNCTION vision.environment() RETURNS jsonb
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp AS $$
from pgvision import environment, spi
return spi.call(plpy, GD, environment.environment)
$$;
COMMENT ON FUNCTION vision.environment() IS
  'The server''s Python as a backend sees it: interpreter, pgvision package and path, package versions, model files, runtime and limits (pgvision doctor reads it).';
