-- pgvision 0.2.0 → 0.3.0: classification (knn, softmax head, logistic, sgd) with k-fold CV.

\echo Use "ALTER EXTENSION pgvision UPDATE TO '0.3.0'" to load this file. \quit

CREATE TABLE vision.classifiers (
  name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  model         text NOT NULL REFERENCES vision.model_store (name) ON UPDATE CASCADE,
  source        regclass NOT NULL,
  method        text NOT NULL CHECK (method IN ('knn', 'softmax', 'logistic', 'sgd')),
  options       jsonb NOT NULL,
  labels        text[] NOT NULL,
  dims          integer NOT NULL,
  weights       bytea NOT NULL,          -- .npz of float arrays, read with allow_pickle=False
  train_ids     bigint[] NOT NULL,
  train_targets integer[] NOT NULL,
  metrics       jsonb NOT NULL,          -- cross-validation results at training time
  trained_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE vision.classifiers IS
  'Trained classifiers: method, label set, weights (plain arrays) and cross-validated metrics.';
SELECT pg_catalog.pg_extension_config_dump('vision.classifiers', '');

CREATE TABLE vision.predictions (
  classifier   text NOT NULL REFERENCES vision.classifiers (name) ON DELETE CASCADE
                 ON UPDATE CASCADE,
  source       regclass NOT NULL,
  image_id     bigint NOT NULL,
  label        text NOT NULL,
  probability  real NOT NULL,
  predicted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (classifier, source, image_id)
);
COMMENT ON TABLE vision.predictions IS 'Labels written by vision.classify_table.';
SELECT pg_catalog.pg_extension_config_dump('vision.predictions', '');

CREATE FUNCTION vision.train_classifier(
  name    text,
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3',
  method  text     DEFAULT 'softmax',
  options jsonb    DEFAULT '{}',
  folds   integer  DEFAULT 5,
  replace boolean  DEFAULT false
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.train_classifier, name, labels, source, model,
                       method, options, folds, replace)
$$;
COMMENT ON FUNCTION vision.train_classifier IS
  'Train a classifier on stored features of labelled images (k-fold CV first); returns the CV metrics.';

CREATE FUNCTION vision.classify(
  image_id   bigint,
  classifier text,
  top_k      integer  DEFAULT 3,
  source     regclass DEFAULT NULL
) RETURNS TABLE (label text, probability real)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3 AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.classify, image_id, classifier, top_k, source)
$$;
COMMENT ON FUNCTION vision.classify IS 'Most likely labels of a stored image.';

CREATE FUNCTION vision.classify_image(image bytea, classifier text, top_k integer DEFAULT 3)
RETURNS TABLE (label text, probability real)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 3 AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.classify_image, image, classifier, top_k)
$$;
COMMENT ON FUNCTION vision.classify_image IS 'Most likely labels of new image bytes.';

CREATE FUNCTION vision.classify_table(
  classifier text,
  source     regclass DEFAULT NULL,
  batch_size integer  DEFAULT 1000
) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.classify_table, classifier, source, batch_size)
$$;
COMMENT ON FUNCTION vision.classify_table IS
  'Write the top label of every image without a current prediction into vision.predictions.';

CREATE FUNCTION vision.compare_classifiers(
  labels  regclass,
  source  regclass DEFAULT NULL,
  model   text     DEFAULT 'inception_v3',
  methods text[]   DEFAULT NULL,
  rank_by text     DEFAULT 'roc_auc',
  folds   integer  DEFAULT 5
) RETURNS TABLE (method text, accuracy real, macro_f1 real, roc_auc real, cv_seconds real,
                 rank integer)
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import classify, errors
return errors.sql_call(plpy, GD, classify.compare_classifiers, labels, source, model, methods,
                       rank_by, folds)
$$;
COMMENT ON FUNCTION vision.compare_classifiers IS
  'Cross-validate methods on the same labelled set; ranked by accuracy, macro_f1 or roc_auc.';

CREATE FUNCTION vision.evaluate_classifier(classifier text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT c.metrics FROM vision.classifiers c WHERE c.name = $1
$$;
COMMENT ON FUNCTION vision.evaluate_classifier IS
  'The cross-validated metrics stored when the classifier was trained.';

GRANT SELECT, INSERT, UPDATE, DELETE ON vision.classifiers, vision.predictions TO PUBLIC;
