-- Run once by the official entrypoint, on the first start with an empty data volume, as
-- POSTGRES_USER in POSTGRES_DB (psql -v ON_ERROR_STOP=1 -f this file).
CREATE EXTENSION IF NOT EXISTS pgvision CASCADE;
SELECT 'pgvision ' || vision.version() || ' ready in ' || current_database() AS pgvision;
