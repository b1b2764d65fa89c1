"""Image bytes → model input arrays. Pure Pillow + numpy; no TensorFlow, no server.

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("L", (40, 30), 128).save(buf, "PNG")
    >>> to_array(decode(buf.getvalue()), (299, 299)).shape
    (299, 299, 3)
"""

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

# Pillow's own default (about 89.5 Mpx): larger inputs are refused as decompression bombs.
DEFAULT_MAX_PIXELS = 89_478_485

# Pixel scaling expected by each family of Keras application models; "tfjs": [0, 1] after
# TF.js's bilinear resize with aligned corners of the full image, as nsfwjs feeds its networks.
PREPROCESSING = ("inception", "caffe", "torch", "raw", "tfjs")
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_FORMAT_NAMES = {b"\xff\xd8": "JPEG", b"\x89P": "PNG", b"GI": "GIF", b"BM": "BMP", b"RI": "WEBP"}


def _format_guess(data):
    return _FORMAT_NAMES.get(bytes(data[:2]), "")


def decode(data, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None, longest=None):
    """Decode image bytes to an RGB ``PIL.Image``, applying EXIF orientation.

    Grey, palette, CMYK, 16-bit and alpha images become RGB (alpha is composited on white).
    ``draft_size`` lets JPEG decoding shrink by a power of two while staying at least that
    large, which is far cheaper than decoding full size and resizing; ``longest`` does the
    same for a longer side of at least that many pixels, whatever the aspect.
    Raises :class:`ImageError` with the reason when the bytes are no usable image.
    """
    if data is None:
        raise ImageError("NULL")
    data = bytes(data)
    if not data:
        raise ImageError("empty (0 bytes)")
    with warnings.catch_warnings():
        # Pillow only warns between max_pixels and twice that; refuse the whole range.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels or None  # 0: no limit, as for every pgvision limit
        try:
            img = Image.open(io.BytesIO(data))
            if longest and img.format == "JPEG" and max(img.size) > longest:
                scale = longest / max(img.size)
                draft_size = (math.ceil(img.size[0] * scale), math.ceil(img.size[1] * scale))
            if draft_size and img.format == "JPEG":
                img.draft("RGB", draft_size)
            img.load()
            img = ImageOps.exif_transpose(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(f"too large, over {max_pixels} pixels ({err})") from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"not a decodable image (unknown format, {len(data)} bytes "
                             f"starting {data[:8].hex()})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            fmt = _format_guess(data)
            detail = "truncated " + fmt if "truncated" in str(err).lower() and fmt else str(err)
            raise ImageError(f"not a decodable image ({detail})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    return to_rgb(img)


def to_rgb(img):
    """Convert any Pillow mode to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer grey: scale the full range down to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = float(arr.max() - arr.min()) or 1.0
        img = Image.fromarray(((arr - arr.min()) * (255.0 / span)).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def to_array(img, size):
    """Resize an RGB image to ``size`` = (height, width) → float32 array in [0, 255]."""
    height, width = size
    if img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def resize_aligned(pixels, size):
    """TF.js's ``tf.image.resizeBilinear(x, size, alignCorners=true)`` of an ``(h, w, 3)``
    array → float32 ``size`` + (3,): corners map to corners, each output pixel interpolates
    its four source pixels (no antialiasing, unlike Pillow). Unchanged when the sizes match,
    as nsfwjs skips the resize then. Only the sampled pixels are converted to floats.

    >>> resize_aligned(np.array([[[0] * 3, [90] * 3]], np.uint8), (1, 4))[0, :, 0].tolist()
    [0.0, 30.0, 60.0, 90.0]
    """
    height, width = pixels.shape[:2]
    if (height, width) == tuple(size):
        return np.asarray(pixels, dtype=np.float32)

    def axis(old, new):
        place = np.arange(new) * ((old - 1) / (new - 1) if new > 1 else 0.0)
        low = np.floor(place).astype(np.int64)
        return low, np.minimum(low + 1, old - 1), (place - low).astype(np.float32)

    y0, y1, dy = axis(height, size[0])
    x0, x1, dx = axis(width, size[1])
    dx, dy = dx[None, :, None], dy[:, None, None]
    top, bottom = pixels[y0], pixels[y1]
    top = top[:, x0].astype(np.float32) + (top[:, x1].astype(np.float32)
                                           - top[:, x0].astype(np.float32)) * dx
    bottom = bottom[:, x0].astype(np.float32) + (bottom[:, x1].astype(np.float32)
                                                 - bottom[:, x0].astype(np.float32)) * dx
    return top + (bottom - top) * dy


def model_array(data, size, mode, max_pixels=DEFAULT_MAX_PIXELS):
    """Image bytes as a model of preprocessing ``mode`` sees them before scaling: ``size``
    (height, width) x 3 float32 in [0, 255]. Raises :class:`ImageError` for bad bytes."""
    if mode == "tfjs":  # the whole image, as a browser or node hands it to TF.js
        return resize_aligned(np.asarray(decode(data, max_pixels)), size)
    return to_array(decode(data, max_pixels, size[::-1]), size)


def preprocess(batch, mode):
    """Scale a float32 ``(n, h, w, 3)`` RGB batch in [0, 255] the way ``mode`` models expect.

    ``inception``: [-1, 1]; ``caffe``: BGR minus ImageNet mean; ``torch``: [0, 1] then
    ImageNet mean/std; ``tfjs``: [0, 1]; ``raw``: unchanged. Works in place and returns the
    batch.
    """
    if mode == "tfjs":
        batch /= 255.0
    elif mode == "inception":
        batch /= 127.5
        batch -= 1.0
    elif mode == "caffe":
        batch[:] = batch[..., ::-1] - _CAFFE_BGR_MEAN
    elif mode == "torch":
        batch /= 255.0
        batch -= _TORCH_MEAN
        batch /= _TORCH_STD
    elif mode != "raw":
        raise ValueError(f"unknown preprocessing {mode!r}")
    return batch


def load_batch(images, size, mode, max_pixels=DEFAULT_MAX_PIXELS):
    """Decode many images into one preprocessed batch.

    Returns ``(batch, ok, errors)``: ``batch`` holds one row per decodable image, ``ok`` their
    positions in ``images`` and ``errors`` maps each other position to its reason.
    """
    height, width = size
    batch = np.empty((len(images), height, width, 3), dtype=np.float32)
    ok, errors = [], {}
    for position, data in enumerate(images):
        try:
            batch[len(ok)] = model_array(data, size, mode, max_pixels)
        except ImageError as err:
            errors[position] = str(err)
            continue
        ok.append(position)
    return preprocess(batch[:len(ok)], mode), ok, errors
