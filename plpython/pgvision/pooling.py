"""How a spatial feature map ``(n, h, w, c)`` becomes one vector per image.

``avg`` and ``max`` are global average and max pooling. ``gem`` is generalised-mean pooling
(``mean(x**3) ** (1/3)`` over the positions; between average and max, as in image retrieval).
``grid`` keeps the layout of centred product shots: the global average followed by the
averages of the four quadrants (1×1 + 2×2 cells, five times the channels).

The numpy functions here are the reference; :func:`keras_pooling` builds the same operation
into a Keras graph for extraction (and ONNX conversion), and the tests hold them equal.

    >>> import numpy as np
    >>> maps = np.ones((1, 4, 4, 2), dtype=np.float32)
    >>> pool(maps, "grid").shape
    (1, 10)
"""

import numpy as np

# "none": the layer's output as it is (flattened when it is still spatial)
POOLING = ("avg", "max", "gem", "grid", "none")
GEM_POWER = 3.0
GRID_CELLS = 5  # 1×1 + 2×2


def output_dims(channels, pooling):
    """Length of a pooled vector of a ``channels``-deep map."""
    return channels * GRID_CELLS if pooling == "grid" else channels


def _halves(size):
    """The two index ranges of a side of ``size`` cells; an odd middle row goes to both."""
    middle = size // 2
    return (0, middle + size % 2), (middle, size)


def pool(maps, pooling):
    """Reference pooling of ``maps`` (n, h, w, c) → (n, dims) float32."""
    maps = np.asarray(maps, dtype=np.float32)
    if pooling == "avg":
        return maps.mean(axis=(1, 2))
    if pooling == "max":
        return maps.max(axis=(1, 2))
    if pooling == "gem":
        cubed = np.maximum(maps, 0.0) ** GEM_POWER
        return cubed.mean(axis=(1, 2)) ** (1.0 / GEM_POWER)
    if pooling == "grid":
        cells = [maps.mean(axis=(1, 2))]
        for top, bottom in _halves(maps.shape[1]):
            for left, right in _halves(maps.shape[2]):
                cells.append(maps[:, top:bottom, left:right].mean(axis=(1, 2)))
        return np.concatenate(cells, axis=1)
    raise ValueError(f"unknown pooling {pooling!r}")


def keras_pooling(output, pooling):
    """Apply ``pooling`` to a Keras tensor ``(batch, h, w, c)`` with plain Keras ops (no
    Lambda layer, so the model stays loadable in safe mode and converts to ONNX)."""
    import keras

    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D()(output)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D()(output)
    if pooling == "gem":
        return _gem_layer()(output)
    if pooling == "grid":
        height, width = int(output.shape[1]), int(output.shape[2])
        cells = [keras.layers.GlobalAveragePooling2D()(output)]
        for top, bottom in _halves(height):
            for left, right in _halves(width):
                crop = keras.layers.Cropping2D(((top, height - bottom),
                                                (left, width - right)))(output)
                cells.append(keras.layers.GlobalAveragePooling2D()(crop))
        return keras.layers.Concatenate()(cells)
    raise ValueError(f"unknown pooling {pooling!r}")


_GEM = []


def _gem_layer():
    """A Keras layer doing :func:`pool`'s ``gem`` (the class is made once, on first use, so
    this module imports without Keras)."""
    if not _GEM:
        import keras

        class GeneralisedMeanPooling(keras.layers.Layer):
            def call(self, x):
                cubed = keras.ops.power(keras.ops.relu(x), GEM_POWER)
                mean = keras.ops.mean(cubed, axis=(1, 2))
                return keras.ops.power(keras.ops.maximum(mean, 1e-30), 1.0 / GEM_POWER)

        _GEM.append(GeneralisedMeanPooling)
    return _GEM[0]()
