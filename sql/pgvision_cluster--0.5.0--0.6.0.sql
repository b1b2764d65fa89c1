-- pgvision_cluster 0.5.0 → 0.6.0: classification and recommendation scoring on every shard.
-- Train on the coordinator (features of the labelled or voted images are copied from their
-- shards into the coordinator's vision.features), push the classifier to every shard, and
-- let each shard score its own images. vision_cluster.setup(..., replace => true) also
-- creates the view vision_cluster.predictions.

\echo Use "ALTER EXTENSION pgvision_cluster UPDATE TO '0.6.0'" to load this file. \quit

CREATE FUNCTION vision_cluster._features(
  version text, sha256 text, model text, source text, ids bigint[]
) RETURNS TABLE (node text, image_id bigint, feature real[])
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, f.image_id, f.feature
  FROM vision.check_node($1, $3, $2) AS n (node)
  JOIN vision.features AS f ON f.model = $3 AND f.source = to_regclass($4)
   AND f.image_id = ANY($5);
$$;

CREATE FUNCTION vision_cluster._put_classifier(
  version text, sha256 text, name text, model text, source text, method text, options jsonb,
  labels text[], dims integer, weights bytea, train_ids bigint[], train_targets integer[],
  metrics jsonb, trained_at timestamptz
) RETURNS SETOF text
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT vision._put_classifier($3, $4, CASE WHEN n.node IS NOT NULL THEN $5::regclass END,
                                $6, $7, $8, $9, $10, $11, $12, $13, $14)
  FROM vision.check_node($1, $4, $2) AS n (node);
$$;

CREATE FUNCTION vision_cluster.train_classifier(
  name    text,
  labels  regclass,
  source  text,
  model   text    DEFAULT 'inception_v3',
  method  text    DEFAULT 'logistic',
  options jsonb   DEFAULT '{}',
  folds   integer DEFAULT 5,
  replace boolean DEFAULT false
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import cluster, errors
return errors.sql_call(plpy, GD, cluster.train_classifier, name, labels, source, model, method,
                       options, folds, replace)
$$;
COMMENT ON FUNCTION vision_cluster.train_classifier IS
  'vision.train_classifier on the coordinator over features copied from the shards, then the classifier is stored on every shard.';

CREATE FUNCTION vision_cluster._classify_table(
  version text, sha256 text, model text, classifier text, trained_at timestamptz,
  batch_size integer
) RETURNS TABLE (node text, labelled bigint)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node,
         CASE WHEN EXISTS (SELECT FROM vision.classifiers AS c
                           WHERE c.name = $4 AND c.trained_at = $5)
              THEN vision.classify_table($4, NULL, $6) END AS labelled
  FROM vision.check_node($1, $3, $2) AS n (node);
$$;

CREATE FUNCTION vision_cluster.classify_table(classifier text, batch_size integer DEFAULT 1000)
RETURNS TABLE (node text, labelled bigint)
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import cluster, errors
return errors.sql_call(plpy, GD, cluster.classify_table, classifier, batch_size)
$$;
COMMENT ON FUNCTION vision_cluster.classify_table IS
  'vision.classify_table on every shard at once, each labelling its own images; predictions stay on the shards (view vision_cluster.predictions).';

CREATE FUNCTION vision_cluster.record_vote(
  user_id  text,
  image_id bigint,
  liked    boolean,
  source   text,
  model    text DEFAULT 'inception_v3'
) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $$
from pgvision import cluster, errors
return errors.sql_call(plpy, GD, cluster.record_vote, user_id, image_id, liked, source, model)
$$;
COMMENT ON FUNCTION vision_cluster.record_vote IS
  'vision.record_vote on the coordinator, with the image''s features copied from its shard; the user''s taste model lives on the coordinator.';

CREATE FUNCTION vision_cluster._recommend(
  version text, sha256 text, model text, source text, k integer, exclude bigint[],
  strategy text, taste bytea, centre real[], popular_ids bigint[], popular_net real[]
) RETURNS TABLE (node text, image_id bigint, score double precision)
LANGUAGE plproxy AS $$
  CLUSTER 'pgvision';
  RUN ON ALL;
  SELECT n.node, s.image_id, s.score
  FROM vision.check_node($1, $3, $2) AS n (node),
       LATERAL vision._score_images($3, CASE WHEN n.node IS NOT NULL THEN $4::regclass END,
                                    $5, $6, $7, $8, $9, $10, $11) AS s;
$$;

CREATE FUNCTION vision_cluster.recommend(
  user_id      text,
  source       text,
  k            integer DEFAULT 10,
  exclude_seen boolean DEFAULT true,
  model        text    DEFAULT 'inception_v3'
) RETURNS TABLE (image_id bigint, score real, strategy text, node text)
LANGUAGE plpython3u STABLE ROWS 10 AS $$
from pgvision import cluster, errors
return errors.sql_call(plpy, GD, cluster.recommend, user_id, source, k, exclude_seen, model)
$$;
COMMENT ON FUNCTION vision_cluster.recommend IS
  'vision.recommend across shards: the user''s preferences from the coordinator, each shard scores its own images, the best k are merged.';

REVOKE ALL ON FUNCTION vision_cluster._put_classifier FROM PUBLIC;
