"""Words in images: the built-in model ``pp_ocr_v6`` reads the lines of text in an image
(RapidOCR running PaddleOCR's PP-OCRv6 detector and recogniser, whose ONNX files ship inside
the ``rapidocr`` wheel, on the ONNX Runtime pgvision already uses).

It is registered like the networks (``vision.models``; its "file" is the small JSON
specification shipped with this package, which names the three ONNX files and their SHA-256,
checked before they are loaded), loaded once per backend and counted by
``pgvision.max_model_backends`` like them. ``vision.read_text`` reads one image;
``vision.extract_table(source, model => 'pp_ocr_v6')`` reads a whole table into
``vision.image_text`` (one row per image: its lines, their text, and a ``tsvector`` under a
GIN index), which the change triggers and ``vision.maintain`` keep current like features;
``vision.search_text`` ranks a table's images by ``ts_rank``.

The detector sees the image with its longer side at most ``det_limit_side_len`` (960) pixels,
PaddleOCR's own default: a larger image is shrunk before detection (so text must stay
legible at that scale), a smaller one is read as it is.

    >>> spec = default_spec()
    >>> spec["kind"], sorted(spec["files"])
    ('ocr', ['cls', 'det', 'rec'])
    >>> flat_box([[1.4, 2], [10, 2], [10, 9.6], [1, 9]])
    [1, 2, 10, 2, 10, 10, 1, 9]
"""

import os

import numpy as np
from PIL import Image

from .errors import EXTERNAL_ERROR, ImageError, PgvisionError
from .files import PackagedSpec, sha256_file
from .images import decode

MODEL = "pp_ocr_v6"
SPEC_FILE = "pp_ocr_v6.json"
PROVENANCE = ("RapidOCR 3.10.0 running PaddleOCR PP-OCRv6 small text detection and "
              "recognition (ONNX, shipped in the rapidocr wheel; Apache-2.0); not a feature "
              "network: it reads text into vision.image_text. dims: the characters its "
              "recogniser knows.")
# The tsvector of vision.image_text is made with this configuration: no stemming and no stop
# words, so brand names, sizes and codes ("500g", "XL") stay searchable in any language.
TEXT_SEARCH_CONFIG = "pg_catalog.simple"


_SHIPPED = PackagedSpec(SPEC_FILE, "ocr")


def spec_path():
    return _SHIPPED.path


def default_spec():
    """The specification shipped with this package (do not modify the dict)."""
    return _SHIPPED.spec()


def spec_sha256():
    return _SHIPPED.sha256()


def is_ocr_row(row):
    """Whether a registry row is this package's OCR specification (by content, so a network
    someone called pp_ocr_v6 stays a network)."""
    return row.get("sha256") == spec_sha256()


def builtin_entry():
    """The registry row of the built-in OCR model (a manifest entry's shape)."""
    spec = default_spec()
    side = spec["det_limit_side_len"]
    return {"name": MODEL, "file": spec_path(), "sha256": spec_sha256(), "input_height": side,
            "input_width": side, "preprocessing": "raw", "feature_layer": None,
            "pooling": "none", "dims": spec["characters"], "provenance": PROVENANCE}


def package_dir():
    """Where the ``rapidocr`` package (and so its ONNX files) is installed."""
    import importlib.util

    found = importlib.util.find_spec("rapidocr")
    if found is None or not found.submodule_search_locations:
        return None
    return list(found.submodule_search_locations)[0]


def model_files(function, spec, base=None):
    """{"det"|"cls"|"rec": path} of the specification's ONNX files, each checked against its
    SHA-256: a changed or missing file is refused before ONNX Runtime opens it."""
    base = base or package_dir()
    if base is None:
        raise PgvisionError(function, f"model {MODEL!r} needs the Python package rapidocr "
                            f"{spec['package_version']}, which the server's Python lacks",
                            EXTERNAL_ERROR, hint="Re-run make install on the database server.")
    paths = {}
    for part, entry in sorted(spec["files"].items()):
        path = os.path.join(base, entry["path"])
        if not os.path.isfile(path):
            raise PgvisionError(function, f"model {MODEL!r}: file {path!r} is missing",
                                EXTERNAL_ERROR, hint="Re-run make install on the database server.")
        if sha256_file(path) != entry["sha256"]:
            raise PgvisionError(function, f"model {MODEL!r}: file {path!r} is not the one this "
                                "pgvision was built against (SHA-256 differs)", EXTERNAL_ERROR,
                                hint=f"Install rapidocr=={spec['package_version']} "
                                "(make install does).")
        paths[part] = path
    return paths


def flat_box(points):
    """A text line's four corners (clockwise from its top left, as the detector gives them)
    as eight rounded integers x1, y1, ... x4, y4."""
    return [int(round(float(v))) for point in points for v in point]


class TextReader:
    """One loaded OCR engine. ``read(pixels)`` of an ``(h, w, 3)`` uint8 RGB array →
    ``[{"text", "confidence", "box"}]`` in reading order (top to bottom, left to right)."""

    runtime = "onnx (RapidOCR)"
    precision = "fp32"

    def __init__(self, function, spec, threads=(0, 0)):
        from rapidocr import RapidOCR

        paths = model_files(function, spec)
        intra, inter = (t if t and t > 0 else -1 for t in threads)
        self.spec = spec
        self.engine = RapidOCR(params={
            "Global.log_level": "error", "Global.text_score": spec["text_score"],
            "Det.model_path": paths["det"], "Cls.model_path": paths["cls"],
            "Rec.model_path": paths["rec"], "Det.limit_type": spec["det_limit_type"],
            "Det.limit_side_len": spec["det_limit_side_len"],
            "Global.max_side_len": spec["max_side"],
            "EngineConfig.onnxruntime.intra_op_num_threads": intra,
            "EngineConfig.onnxruntime.inter_op_num_threads": inter})

    def __call__(self, batch):  # the feature extractors' interface: this model has none
        raise TypeError(f"model {MODEL!r} reads text; it makes no feature vectors")

    def read(self, pixels):
        # RapidOCR takes arrays as OpenCV's BGR
        out = self.engine(np.ascontiguousarray(np.asarray(pixels, np.uint8)[:, :, ::-1]))
        if out.boxes is None or out.txts is None:
            return []
        lines = [{"text": str(text), "confidence": round(float(score), 5), "box": flat_box(box)}
                 for box, text, score in zip(out.boxes, out.txts, out.scores) if str(text).strip()]
        return lines[:self.spec["max_lines"]]


def pixels(data, max_pixels, spec=None):
    """Image bytes as the reader takes them: an ``(h, w, 3)`` uint8 RGB array whose longer
    side is at most ``max_side`` (2000) pixels, as RapidOCR would shrink it anyway; a large
    JPEG is decoded shrunk, so the memory of a read stays bounded whatever the image's size.
    Raises :class:`ImageError` for bytes that are no image."""
    side = (spec or default_spec())["max_side"]
    img = decode(data, max_pixels, longest=side)
    if max(img.size) > side:
        img.thumbnail((side, side), Image.BILINEAR)
    return np.asarray(img)


def read_many(reader, images, max_pixels):
    """Read a batch of image bytes: ``(lines per readable image, their positions, {position:
    reason})``, the shape :func:`pgvision.images.load_batch` gives for networks."""
    outputs, ok, errors = [], [], {}
    for position, data in enumerate(images):
        try:
            array = pixels(data, max_pixels, reader.spec)
        except ImageError as err:
            errors[position] = str(err)
            continue
        outputs.append(reader.read(array))
        ok.append(position)
    return outputs, ok, errors


def body(lines):
    """The searchable text of an image: its lines, one per line."""
    return "\n".join(line["text"] for line in lines)

