"""The OCR model without a server: its specification names the very ONNX files the rapidocr
wheel ships (checksums, the recogniser's alphabet), a changed file is refused before it is
loaded, and the reader gives drawn words back in reading order with their boxes."""

import doctest
import hashlib
import io
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pgvision import errors, files, ocr, words


def test_doctests():
    for module in (ocr, words, files):
        assert doctest.testmod(module).failed == 0, module.__name__


def drawn(lines, size=(520, 200), font_size=34):
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    boxes = []
    for k, text in enumerate(lines):
        at = (20, 20 + k * (font_size + 30))
        boxes.append(draw.textbbox(at, text, font=font))
        draw.text(at, text, fill="black", font=font)
    return img, boxes


def hugs(box, drawn_box):
    """Whether a detected box (x1, y1, ... x4, y4) covers the drawn text's box (left, top,
    right, bottom) and reaches at most one text height beyond it."""
    left, top, right, bottom = drawn_box
    xs, ys = box[0::2], box[1::2]
    margin = bottom - top
    return (left - margin <= min(xs) <= left + 6 and right - 6 <= max(xs) <= right + margin
            and top - margin <= min(ys) <= top + 6 and bottom - 6 <= max(ys) <= bottom + margin)


@pytest.fixture(scope="module")
def reader():
    return ocr.TextReader("test", ocr.default_spec())


def test_the_specification_names_the_files_the_wheel_ships():
    spec = ocr.default_spec()
    paths = ocr.model_files("test", spec)
    for part, entry in spec["files"].items():
        with open(paths[part], "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == entry["sha256"], part
    from importlib.metadata import version
    assert version("rapidocr") == spec["package_version"]
    import onnxruntime
    session = onnxruntime.InferenceSession(paths["rec"], providers=["CPUExecutionProvider"])
    alphabet = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    assert len(alphabet) == spec["characters"]
    entry = ocr.builtin_entry()
    assert entry["dims"] == spec["characters"] and entry["sha256"] == ocr.spec_sha256()


def test_a_changed_or_missing_model_file_is_refused_before_loading(tmp_path):
    spec = ocr.default_spec()
    base = tmp_path / "rapidocr"
    shutil.copytree(ocr.package_dir() + "/models", base / "models")
    assert set(ocr.model_files("f", spec, str(base))) == {"det", "cls", "rec"}
    with open(base / spec["files"]["cls"]["path"], "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(errors.PgvisionError, match=r"f: model 'pp_ocr_v6': file .*cls.* is not "
                       r"the one this pgvision was built against \(SHA-256 differs\)"):
        ocr.model_files("f", spec, str(base))
    shutil.copy(ocr.package_dir() + "/" + spec["files"]["cls"]["path"],
                base / spec["files"]["cls"]["path"])
    (base / spec["files"]["det"]["path"]).unlink()
    with pytest.raises(errors.PgvisionError, match=r"file .*PP-OCRv6_det_small.onnx' is missing"):
        ocr.model_files("f", spec, str(base))


def test_the_reader_gives_lines_in_reading_order_with_boxes(reader):
    img, boxes = drawn(["SPARKLING WATER", "LEMON 330ml"])
    lines = reader.read(np.asarray(img))
    assert ["".join(line["text"].split()).lower() for line in lines] == \
        ["sparklingwater", "lemon330ml"]
    for line, drawn_box in zip(lines, boxes):
        assert hugs(line["box"], drawn_box), (line["box"], drawn_box)
        assert 0.5 <= line["confidence"] <= 1.0
    assert ocr.body(lines).count("\n") == 1


def test_a_batch_goes_on_past_bytes_that_do_not_decode(reader):
    img, _ = drawn(["BREAD"], size=(300, 100))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    lines, ok, failed = ocr.read_many(reader, [b"junk", buf.getvalue(), None], 10_000_000)
    assert ok == [1] and sorted(failed) == [0, 2]
    assert "".join(lines[0][0]["text"].split()).lower() == "bread"
    assert "not a decodable image" in failed[0] and failed[2] == "NULL"


def test_the_reader_makes_no_feature_vectors(reader):
    with pytest.raises(TypeError, match="reads text; it makes no feature vectors"):
        reader(np.zeros((1, 8, 8, 3), np.float32))


def test_a_registry_row_is_the_ocr_model_by_content_not_by_name():
    assert ocr.is_ocr_row({"name": "anything", "sha256": ocr.spec_sha256()})
    assert not ocr.is_ocr_row({"name": "pp_ocr_v6", "sha256": "0" * 64})


def test_a_large_image_is_read_at_most_2000_pixels_a_side_and_decoded_shrunk():
    spec = ocr.default_spec()
    img, _ = drawn(["BIG"], size=(4200, 1400), font_size=300)
    jpeg, png = io.BytesIO(), io.BytesIO()
    img.save(jpeg, "JPEG")
    img.save(png, "PNG")
    for data in (jpeg.getvalue(), png.getvalue()):
        assert ocr.pixels(data, 100_000_000, spec).shape == (667, 2000, 3)
    small, _ = drawn(["SMALL"], size=(300, 100))
    buf = io.BytesIO()
    small.save(buf, "PNG")
    assert ocr.pixels(buf.getvalue(), 100_000_000, spec).shape == (100, 300, 3)
    # the JPEG decoder shrinks by a power of two on the way (not the whole 4200 x 1400)
    from pgvision.images import decode
    assert decode(jpeg.getvalue(), longest=2000).size == (2100, 700)
    with pytest.raises(errors.ImageError, match="too large, over 1000000 pixels"):
        ocr.pixels(png.getvalue(), 1_000_000, spec)
