"""Decoding and preprocessing (pure Python, no server)."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from pgvision.errors import ImageError
from pgvision.images import decode, load_batch, preprocess, to_array


def encode(img, fmt, **kwargs):
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("CMYK", "JPEG"), ("P", "GIF"),
                                      ("RGBA", "PNG"), ("LA", "PNG"), ("1", "BMP"),
                                      ("RGB", "WEBP"), ("RGB", "TIFF")])
def test_every_mode_becomes_rgb(mode, fmt):
    img = decode(encode(Image.new("RGB", (31, 17), (10, 200, 30)).convert(mode), fmt))
    assert img.mode == "RGB" and img.size == (31, 17)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    arr = np.full((8, 8), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    img = decode(encode(Image.fromarray(arr), "PNG"))
    assert abs(int(np.asarray(img)[0, 0, 0]) - 128) <= 1


def test_alpha_is_composited_on_white():
    img = decode(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"))
    assert np.asarray(img)[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    img = decode(encode(Image.new("RGB", (40, 10)), "JPEG", exif=exif.tobytes()))
    assert img.size == (10, 40)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty (0 bytes)"),
    (b"not an image", "not a decodable image (unknown format"),
])
def test_bad_bytes_name_the_reason(data, reason):
    with pytest.raises(ImageError, match=re.escape(reason)):
        decode(data)


def test_truncated_jpeg_is_named():
    data = encode(Image.new("RGB", (200, 200), (1, 2, 3)), "JPEG")
    with pytest.raises(ImageError, match=r"not a decodable image \(truncated JPEG\)"):
        decode(data[: len(data) // 2])


def test_decompression_bomb_is_refused():
    data = encode(Image.new("L", (1000, 1000)), "PNG")
    with pytest.raises(ImageError, match="too large, over 500000 pixels"):
        decode(data, max_pixels=500_000)
    assert Image.MAX_IMAGE_PIXELS != 500_000  # the global limit is restored


def test_jpeg_draft_keeps_at_least_the_target_size():
    data = encode(Image.new("RGB", (1600, 1200)), "JPEG")
    img = decode(data, draft_size=(299, 299))
    assert 299 <= img.size[0] < 1600 and 299 <= img.size[1]


def test_preprocessing_modes():
    batch = np.full((1, 2, 2, 3), 255.0, dtype=np.float32)
    assert preprocess(batch.copy(), "inception").max() == pytest.approx(1.0)
    assert preprocess(batch.copy(), "raw").max() == 255.0
    caffe = preprocess(np.zeros((1, 1, 1, 3), np.float32) + [[[[1, 2, 3]]]], "caffe")
    assert caffe[0, 0, 0].tolist() == pytest.approx([3 - 103.939, 2 - 116.779, 1 - 123.68])
    torch = preprocess(batch.copy(), "torch")
    assert torch[0, 0, 0, 0] == pytest.approx((1 - 0.485) / 0.229)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        preprocess(batch, "nope")


def test_load_batch_skips_bad_rows_and_keeps_order():
    good = encode(Image.new("RGB", (10, 10), (255, 0, 0)), "PNG")
    other = encode(Image.new("RGB", (10, 10), (0, 0, 255)), "PNG")
    batch, ok, errors = load_batch([good, b"junk", None, other], (8, 8), "raw")
    assert ok == [0, 3] and sorted(errors) == [1, 2]
    assert errors[2] == "NULL"
    assert batch.shape == (2, 8, 8, 3)
    assert batch[0, 0, 0].tolist() == [255, 0, 0] and batch[1, 0, 0].tolist() == [0, 0, 255]


def test_to_array_resizes_to_height_width():
    assert to_array(Image.new("RGB", (50, 20)), (30, 40)).shape == (30, 40, 3)
