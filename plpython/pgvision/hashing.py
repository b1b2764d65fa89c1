"""The perceptual hash "model": per image a 64-bit pHash (imagehash), the pHash of its mirror
image and a hue/saturation histogram, stored as the features of the built-in model
``perceptual_hash`` so that they are extracted, kept current and secured exactly like CNN
features (``vision.extract_table``, the change triggers, ``vision.maintain``).

:mod:`pgvision.duplicates` reads them: the hashes find candidate pairs through a binary index,
the colour histogram and the CNN features confirm them.

A vector of ``perceptual_hash`` is laid out as::

    [0, 64)     pHash bits of the image (0.0 / 1.0), imagehash's bit order
    [64, 128)   pHash bits of the image mirrored left to right
    [128, 177)  hue x saturation histogram (12 x 4 bins) of the pixels that are not dark,
                scaled by their share, then the share of dark pixels: sums to 1

What the hash sees is set by a small JSON specification shipped with this package
(``perceptual_hash.json``); it is the model "file" the registry checksums, so a changed
specification is noticed like a changed network.

    >>> import numpy as np
    >>> spec = default_spec()
    >>> batch = np.zeros((1, spec["size"], spec["size"], 3), np.float32)
    >>> HashExtractor(spec)(batch).shape
    (1, 177)
"""

import numpy as np

from .files import PackagedSpec

MODEL = "perceptual_hash"
SPEC_FILE = "perceptual_hash.json"
PROVENANCE = ("Perceptual hash (imagehash pHash, 64 bits) of the image and of its mirror, and "
              "a 12x4 hue/saturation histogram; not a network. Used by vision.duplicates.")

_SHIPPED = PackagedSpec(SPEC_FILE, MODEL)


def spec_path():
    return _SHIPPED.path


def read_spec(path):
    return _SHIPPED.read(path)


def default_spec():
    """The specification shipped with this package (do not modify the dict)."""
    return _SHIPPED.spec()


def spec_sha256():
    return _SHIPPED.sha256()


def is_hash_row(row):
    """Whether a registry row (or model handle) is this package's hash specification: by
    content, so a user's network that happens to be called perceptual_hash stays a network."""
    return row.get("sha256") == spec_sha256()


def layout(spec):
    """(hash bits, colour bins, dims) of a specification."""
    bits = spec["hash_size"] ** 2
    hue, saturation = spec["colour_bins"]
    colour = hue * saturation + 1
    return bits, colour, 2 * bits + colour


def builtin_entry():
    """The registry row of the built-in hash model (a manifest entry's shape)."""
    spec = default_spec()
    return {"name": MODEL, "file": spec_path(), "sha256": spec_sha256(),
            "input_height": spec["size"], "input_width": spec["size"], "preprocessing": "raw",
            "feature_layer": None, "pooling": "none", "dims": layout(spec)[2],
            "provenance": PROVENANCE}


def hash_bits(pixels, hash_size):
    """pHash of an ``(h, w, 3)`` uint8 image as 0/1 values (imagehash.phash)."""
    import imagehash
    from PIL import Image

    return imagehash.phash(Image.fromarray(pixels), hash_size=hash_size).hash.ravel()


def colour_histogram(pixels, bins, dark_below):
    """Hue x saturation histogram of the pixels whose value is at least ``dark_below`` (dark
    pixels have no reliable hue), scaled by their share, followed by the share of dark
    pixels. Brightness changes and crops move it little; another photo's colours do."""
    from PIL import Image

    hsv = np.asarray(Image.fromarray(pixels).convert("HSV"), dtype=np.float32).reshape(-1, 3)
    lit = hsv[:, 2] >= dark_below
    counts, _, _ = np.histogram2d(hsv[lit, 0], hsv[lit, 1], bins=bins,
                                  range=((0, 256), (0, 256)))
    dark = 1.0 - lit.mean()
    return np.r_[counts.ravel() / max(counts.sum(), 1.0) * (1.0 - dark), dark]


class HashExtractor:
    """Same interface as the networks' extractors: an ``(n, size, size, 3)`` batch of raw
    RGB values in [0, 255] → ``(n, dims)`` float32."""

    runtime = "imagehash"
    precision = "fp32"

    def __init__(self, spec):
        self.spec = spec
        self.input_size = (spec["size"], spec["size"])
        self.preprocessing = "raw"
        self.dims = layout(spec)[2]

    def __call__(self, batch):
        out = np.empty((len(batch), self.dims), dtype=np.float32)
        size, bins, dark = self.spec["hash_size"], tuple(self.spec["colour_bins"]), \
            self.spec["dark_below"]
        for i, image in enumerate(batch):
            pixels = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
            out[i] = np.concatenate([hash_bits(pixels, size),
                                     hash_bits(np.ascontiguousarray(pixels[:, ::-1]), size),
                                     colour_histogram(pixels, bins, dark)])
        return out


def split(vectors, spec=None):
    """(hash bits packed to uint8, mirrored hash bits packed, colour histograms) of stored
    ``perceptual_hash`` vectors ``(n, dims)``."""
    bits, _, dims = layout(spec or default_spec())
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[1] != dims:
        raise ValueError(f"a {MODEL} vector has {dims} values, not {vectors.shape[1]}")
    binary = vectors[:, :2 * bits] > 0.5
    return (np.packbits(binary[:, :bits], axis=1), np.packbits(binary[:, bits:], axis=1),
            vectors[:, 2 * bits:])


def hex_digest(vector, spec=None):
    """The image's pHash as imagehash prints it (16 hex digits for 64 bits)."""
    bits, _, _ = layout(spec or default_spec())
    return np.packbits(np.asarray(vector[:bits]) > 0.5).tobytes().hex()
