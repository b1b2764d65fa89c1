"""float16 matrices at single-precision speed: a half-precision snapshot (see
:mod:`pgvision.sharedfiles`) is converted and multiplied a cache-sized block at a time,
through OpenCV's F16C conversion, ~10x numpy's ``astype`` on this machine kind.

>>> import numpy as np
>>> half = np.array([[0.5, -2.0], [1.0, 0.25]], np.float16)
>>> dots(half, np.array([1.0, 1.0], np.float32)).tolist()
[-1.5, 1.25]
>>> exactly_half(np.array([[0.1]], np.float32)) is None   # 0.1 is not a float16
True
"""

import numpy as np

# rows converted at a time: a block made single stays in the CPU's cache until it is used
# (128 rows: 53 ms for 100k x 2048 dot products against 80 ms with 2048-row blocks)
_BLOCK_ROWS = 128
_COPY_ROWS = 4096  # rows a whole-matrix copy converts at a time


def _opencv():
    """OpenCV, imported on first use (a search that never meets float16 never loads it);
    None where it is missing."""
    global _CV2
    if _CV2 is None:
        try:
            import cv2
            _CV2 = cv2
        except ImportError:  # OpenCV ships with pgvision's requirements; numpy still works
            _CV2 = False
    return _CV2 or None


_CV2 = None


def _convert(block, dtype, out=None):
    """``block`` (2-D) as ``dtype`` (into ``out`` when given) through OpenCV, whose F16C
    conversion is ~10x numpy's astype here; numpy where OpenCV is missing."""
    cv2 = _opencv()
    if cv2 is None or block.ndim != 2 or not block.size:
        converted = block.astype(dtype)
        if out is None:
            return converted
        out[...] = converted
        return out
    depth = cv2.CV_32F if dtype == np.float32 else cv2.CV_16F
    if out is None:
        return cv2.multiply(np.ascontiguousarray(block), 1.0, dtype=depth)
    cv2.multiply(np.ascontiguousarray(block), 1.0, dst=out, dtype=depth)
    return out


def single(vectors):
    """float32 copy of a float16 matrix, a block at a time; float32 input is returned as
    it is."""
    if vectors.dtype != np.float16:
        return vectors
    out = np.empty(vectors.shape, np.float32)
    for start in range(0, len(vectors), _COPY_ROWS):
        _convert(vectors[start:start + _COPY_ROWS], np.float32,
                 out[start:start + _COPY_ROWS])
    return out


def exactly_half(block):
    """``block`` (float32, 2-D) as float16 when every value converts back unchanged, else
    None."""
    half = _convert(block, np.float16)
    return half if np.array_equal(_convert(half, np.float32), block) else None


def dots(vectors, query):
    """``vectors @ query`` in single precision; a float16 matrix is made single a block at
    a time (numpy would first copy all of it through its slow conversion)."""
    if vectors.dtype != np.float16:
        return vectors @ query
    query = np.asarray(query, np.float32)
    out = np.empty(len(vectors), np.float32)
    buffer = np.empty((min(_BLOCK_ROWS, len(vectors)), vectors.shape[1]), np.float32)
    for start in range(0, len(vectors), _BLOCK_ROWS):
        block = vectors[start:start + _BLOCK_ROWS]
        np.dot(_convert(block, np.float32, buffer[:len(block)]), query,
               out=out[start:start + len(block)])
    return out
