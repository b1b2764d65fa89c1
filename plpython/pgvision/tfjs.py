"""Import TF.js *layers* models (``model.json`` + weight shards) into Keras 3.

TF.js layers models are often Keras-2 functional models whose topology Keras 3 refuses to
deserialise (class ``Model``, Keras-2 initializer configs). This module rebuilds the graph
layer by layer with Keras 3 layers, keeping every layer's name, then copies the weights in,
dequantising TF.js quantised tensors (``value = q * scale + min``).

Only what is needed to build the graph is read from each layer config; initialisers,
regularisers and constraints are dropped because every weight is overwritten anyway.

Example::

    >>> model = load_layers_model("dist/iv3")            # doctest: +SKIP
    >>> model.get_layer("mixed10").output.shape           # doctest: +SKIP
    (None, 8, 8, 2048)
"""

import json
import os

import numpy as np

_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8,
           "uint16": np.uint16, "float16": np.float16, "bool": np.bool_}

# Config keys that shape the computation, per Keras-2 class name.
_LAYER_KEYS = {
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "data_format",
               "dilation_rate", "activation", "use_bias"),
    "DepthwiseConv2D": ("kernel_size", "strides", "padding", "data_format", "dilation_rate",
                        "depth_multiplier", "activation", "use_bias"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "Activation": ("activation",),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "MaxPooling2D": ("pool_size", "strides", "padding", "data_format"),
    "AveragePooling2D": ("pool_size", "strides", "padding", "data_format"),
    "GlobalAveragePooling2D": ("data_format",),
    "GlobalMaxPooling2D": ("data_format",),
    "ZeroPadding2D": ("padding", "data_format"),
    "Concatenate": ("axis",),
    "Add": (),
    "Multiply": (),
    "Dense": ("units", "activation", "use_bias"),
    "Dropout": ("rate",),
    "Flatten": ("data_format",),
    "Reshape": ("target_shape",),
}

# TF.js / Keras-2 weight short names that Keras 3 spells differently.
_WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}


class TfjsImportError(ValueError):
    """The TF.js model cannot be imported (unsupported layer, missing or extra weights)."""


def read_weights(manifest, read_shard):
    """Decode a TF.js weights manifest into ``{name: float32/int32 ndarray}``.

    ``read_shard(path)`` returns the bytes of one shard; shards of a group are concatenated
    in manifest order, as TF.js does.
    """
    weights = {}
    for group in manifest:
        buffer = b"".join(read_shard(path) for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = tuple(spec["shape"])
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            stored = _DTYPES[quant["dtype"] if quant else spec["dtype"]]
            nbytes = count * np.dtype(stored).itemsize
            if offset + nbytes > len(buffer):
                raise TfjsImportError(
                    f"weight {spec['name']!r} needs {nbytes} bytes at offset {offset}, "
                    f"but the shards hold only {len(buffer)}")
            raw = np.frombuffer(buffer, dtype=stored, count=count, offset=offset)
            offset += nbytes
            if quant and "scale" in quant:
                value = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
            else:
                value = raw.astype(_DTYPES[spec["dtype"]])
            weights[spec["name"]] = value.reshape(shape)
        if offset != len(buffer):
            raise TfjsImportError(f"weight shards hold {len(buffer) - offset} unread bytes")
    return weights


def _model_config(topology):
    config = topology.get("model_config", topology)
    if config.get("class_name") not in ("Model", "Functional"):
        raise TfjsImportError(
            f"only functional models are supported, not {config.get('class_name')!r}")
    return config["config"]


def _make_layer(keras, spec):
    cls_name = spec["class_name"]
    if cls_name not in _LAYER_KEYS:
        raise TfjsImportError(f"layer {spec['name']!r}: class {cls_name!r} is not supported")
    config = spec["config"]
    kwargs = {key: config[key] for key in _LAYER_KEYS[cls_name] if key in config}
    if cls_name == "Dropout":
        kwargs.pop("noise_shape", None)
    return getattr(keras.layers, cls_name)(name=spec["name"], **kwargs)


def build_model(topology):
    """Rebuild a Keras-2 functional topology (dict) as an untrained Keras 3 model."""
    import keras

    config = _model_config(topology)
    tensors = {}
    for spec in config["layers"]:
        name = spec["name"]
        if spec["class_name"] == "InputLayer":
            layer_cfg = spec["config"]
            shape = layer_cfg.get("batch_input_shape") or layer_cfg.get("batch_shape")
            tensors[name] = keras.Input(shape=tuple(shape[1:]), name=name,
                                        dtype=layer_cfg.get("dtype", "float32"))
            continue
        nodes = spec["inbound_nodes"]
        if len(nodes) != 1:
            raise TfjsImportError(f"layer {name!r} is shared ({len(nodes)} call sites); "
                                  "shared layers are not supported")
        inputs = [tensors[inbound[0]] for inbound in nodes[0]]
        layer = _make_layer(keras, spec)
        tensors[name] = layer(inputs if len(inputs) > 1 else inputs[0])
    outputs = [tensors[out[0]] for out in config["output_layers"]]
    inputs = [tensors[inp[0]] for inp in config["input_layers"]]
    return keras.Model(inputs=inputs if len(inputs) > 1 else inputs[0],
                       outputs=outputs if len(outputs) > 1 else outputs[0],
                       name=config.get("name") or "imported")


def assign_weights(model, weights):
    """Copy ``{"layer/short_name": array}`` into ``model``; every weight must match once."""
    unused = dict(weights)
    for layer in model.layers:
        for variable in layer.weights:
            short = variable.name.split("/")[-1]
            key = f"{layer.name}/{short}"
            if key not in unused:
                alias = next((k for k, v in _WEIGHT_ALIASES.items() if v == short), None)
                key = f"{layer.name}/{alias}" if alias else key
            if key not in unused:
                raise TfjsImportError(f"no weight {key!r} in the manifest for layer {layer.name!r}")
            value = unused.pop(key)
            if tuple(value.shape) != tuple(variable.shape):
                raise TfjsImportError(f"weight {key!r} has shape {value.shape}, "
                                      f"the layer expects {tuple(variable.shape)}")
            variable.assign(value)
    if unused:
        raise TfjsImportError(f"{len(unused)} weight(s) match no layer, e.g. {sorted(unused)[:3]}")


def load_layers_model(directory):
    """Read ``directory/model.json`` and its weight shards into a Keras 3 model."""
    with open(os.path.join(directory, "model.json"), encoding="utf-8") as fh:
        artifact = json.load(fh)
    topology = artifact["modelTopology"]

    def read_shard(path):
        with open(os.path.join(directory, path), "rb") as shard:
            return shard.read()

    model = build_model(topology)
    assign_weights(model, read_weights(artifact["weightsManifest"], read_shard))
    return model
