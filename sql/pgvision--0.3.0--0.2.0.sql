-- pgvision 0.3.0 → 0.2.0: remove what pgvision--0.2.0--0.3.0.sql added.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.2.0'" to load this file. \quit

-- Never backwards unasked: a downgrade drops what later versions store, so it runs only with
-- pgvision.allow_downgrade on (pgvision migrate --to sets it after checking no rows are lost),
-- or within CREATE EXTENSION ... VERSION (a new extension, which holds nothing yet).
DO $$
BEGIN
  IF pg_catalog.current_setting('pgvision.allow_downgrade', true) IS DISTINCT FROM 'on'
     AND pg_catalog.current_query() !~* '^\s*create\s+extension\M' THEN
    RAISE EXCEPTION 'pgvision: refusing to downgrade from 0.3.0 to 0.2.0 (it drops what 0.3.0 stores)'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'pgvision migrate --to <revision> checks that no rows are lost first; by '
                   'hand: SET pgvision.allow_downgrade = on, after a pg_dump.';
  END IF;
END
$$;

DROP FUNCTION vision.evaluate_classifier(text);
DROP FUNCTION vision.compare_classifiers(regclass, regclass, text, text[], text, integer);
DROP FUNCTION vision.classify_table(text, regclass, integer);
DROP FUNCTION vision.classify_image(bytea, text, integer);
DROP FUNCTION vision.classify(bigint, text, integer, regclass);
DROP FUNCTION vision.train_classifier(text, regclass, regclass, text, text, jsonb, integer, boolean);
DROP TABLE vision.predictions;
DROP TABLE vision.classifiers;
