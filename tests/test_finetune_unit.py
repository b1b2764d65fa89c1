"""vision.fine_tune's choices without a server: which layer the trained part starts from, on
the layer names of the installed models, the softmax head started at the logistic
classifier's answers, and its options' validation."""

import json
import zipfile

import numpy as np
import pytest

from pgvision import finetune, learners
from pgvision.errors import PgvisionError
from conftest import installed_model


def layer_names(model):
    with zipfile.ZipFile(installed_model(model)) as archive:
        config = json.loads(archive.read("config.json"))
    return [layer["config"]["name"] for layer in config["config"]["layers"]]


@pytest.mark.parametrize("model, feature_layer, expected", [
    ("inception_v3", "mixed10", ["mixed9", "mixed8", "mixed7", "mixed6"]),
    # MobileNet-v2: block 16 with the final 1x1 convolution above it, then blocks 15, 14, 13
    ("mobilenet_v2", "out_relu", ["block_15_add", "block_14_add", "block_13_project_BN",
                                  "block_12_add"]),
])
def test_blocks_are_counted_down_from_the_feature_layer(model, feature_layer, expected):
    names = layer_names(model)
    assert [finetune.cut_layer_name(names, feature_layer, blocks)
            for blocks in range(1, 5)] == expected


def test_a_model_without_known_blocks_names_the_way_out():
    with pytest.raises(PgvisionError, match=r'"blocks": the model has 0 block\(s\) below '
                                            r"'dense'.*got 1") as err:
        finetune.cut_layer_name(["input", "conv", "dense"], "dense", 1)
    assert "from_layer" in err.value.hint


def test_the_head_starts_where_the_logistic_classifier_ends():
    import keras

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(60, 16))).astype(np.float32) + np.repeat(np.eye(3, 16), 20, 0)
    y = np.repeat(np.arange(3), 20)
    clf = learners.fit("logistic", X, y, {}, 3)
    normalise, dense, weights = finetune._head(keras, 3, clf)
    inputs = keras.Input((16,))
    net = keras.Model(inputs, dense(normalise(inputs)))
    dense.set_weights(weights)
    np.testing.assert_allclose(net.predict(X, verbose=0), clf.scores(X), atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ('{"epochs": 0}', '"options.epochs" must be between 1 and 500, got 0'),
    ('{"learning_rate": -1}', '"options.learning_rate" must be a number above 0.0'),
    ('{"validation_fraction": 0.9}', '"options.validation_fraction" must be a number above'),
    ('{"image_column": ""}', '"options.image_column" must be a column name'),
    ('{"lr": 0.1}', r"\['lr'\] are not options of fine_tune"),
    ('[1]', '"options" must be a JSON object'),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(PgvisionError, match=f"^vision.fine_tune: .*{message}"):
        finetune.check_options(options)
