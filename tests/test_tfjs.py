"""TF.js layers import (no server): dequantisation, graph rebuild, weight matching.

The real nsfwjs conversion is checked against TF.js itself in tests/test_models.py.
"""

import numpy as np
import pytest

from pgvision import tfjs


def keras_topology(layers, inputs, outputs):
    return {"model_config": {"class_name": "Model", "config": {
        "name": "m", "layers": layers, "input_layers": [[inputs, 0, 0]],
        "output_layers": [[outputs, 0, 0]]}}}


def layer(cls, name, inbound, **config):
    return {"class_name": cls, "name": name, "config": {"name": name, **config},
            "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else []}


TINY = keras_topology([
    layer("InputLayer", "input_1", [], batch_input_shape=[None, 4, 4, 3], dtype="float32"),
    layer("Conv2D", "conv", ["input_1"], filters=2, kernel_size=[1, 1], strides=[1, 1],
          padding="valid", activation="linear", use_bias=True,
          kernel_initializer={"class_name": "VarianceScaling", "config": {}}),
    layer("GlobalAveragePooling2D", "pool", ["conv"]),
    layer("Dense", "dense", ["pool"], units=1, activation="linear", use_bias=False),
], "input_1", "dense")


def manifest(specs):
    """Quantise float arrays to uint8 the TF.js way; return (manifest, shard bytes)."""
    weights, chunks = [], []
    for name, value in specs:
        lo, hi = float(value.min()), float(value.max())
        scale = (hi - lo) / 255 or 1.0
        q = np.round((value - lo) / scale).astype(np.uint8)
        weights.append({"name": name, "shape": list(value.shape), "dtype": "float32",
                        "quantization": {"dtype": "uint8", "min": lo, "scale": scale}})
        chunks.append(q.tobytes())
    return [{"paths": ["shard1"], "weights": weights}], b"".join(chunks)


def test_uint8_weights_are_dequantised_as_q_times_scale_plus_min():
    value = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    spec, shard = manifest([("d/kernel", value)])
    out = tfjs.read_weights(spec, lambda path: shard)["d/kernel"]
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert np.abs(out - value).max() <= 2 / 255 / 2 + 1e-6


def test_short_shards_are_an_error():
    spec, shard = manifest([("d/kernel", np.ones((4, 4), np.float32))])
    with pytest.raises(tfjs.TfjsImportError, match="needs 16 bytes"):
        tfjs.read_weights(spec, lambda path: shard[:10])


def test_tiny_model_rebuilds_and_computes_with_its_weights():
    kernel = np.array([[[[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]]], np.float32)  # 1x1x3x2
    spec, shard = manifest([("conv/kernel", kernel), ("conv/bias", np.array([0.0, 1.0], np.float32)),
                            ("dense/kernel", np.array([[2.0], [1.0]], np.float32))])
    model = tfjs.build_model(TINY)
    tfjs.assign_weights(model, tfjs.read_weights(spec, lambda p: shard))
    x = np.zeros((1, 4, 4, 3), np.float32)
    x[..., 0] = 3.0
    # conv: [3, -3 + 1]; pool: same; dense: 2*3 + 1*(-2) = 4
    assert float(model(x)[0, 0]) == pytest.approx(4.0, abs=0.05)


def test_missing_and_extra_weights_are_reported():
    model = tfjs.build_model(TINY)
    spec, shard = manifest([("conv/kernel", np.ones((1, 1, 3, 2), np.float32))])
    with pytest.raises(tfjs.TfjsImportError, match="no weight 'conv/bias'"):
        tfjs.assign_weights(model, tfjs.read_weights(spec, lambda p: shard))
    extra = {w.path if hasattr(w, "path") else w.name: None for w in model.weights}
    weights = {"conv/kernel": np.ones((1, 1, 3, 2), np.float32),
               "conv/bias": np.zeros(2, np.float32), "dense/kernel": np.ones((2, 1), np.float32),
               "ghost/kernel": np.ones(1, np.float32)}
    assert extra  # the model has weights to fill
    with pytest.raises(tfjs.TfjsImportError, match="match no layer"):
        tfjs.assign_weights(tfjs.build_model(TINY), weights)


def test_unsupported_layers_are_named():
    topo = keras_topology([
        layer("InputLayer", "input_1", [], batch_input_shape=[None, 4], dtype="float32"),
        layer("Lambda", "evil", ["input_1"], function="..."),
    ], "input_1", "evil")
    with pytest.raises(tfjs.TfjsImportError, match="'evil': class 'Lambda' is not supported"):
        tfjs.build_model(topo)
