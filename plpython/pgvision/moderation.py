"""Content classes: the shipped MobileNet-v2's own output, the 5-way softmax nsfwjs trained
it for, per image.

The built-in model ``nsfwjs_mobilenet_v2`` is that network cut at its last layer and fed as
nsfwjs feeds it (preprocessing ``tfjs``: the whole image resized bilinearly with aligned
corners, scaled to [0, 1]), so its five "features" are nsfwjs's class probabilities, equal to
what nsfwjs computes in node within 1e-3 (tests/test_moderation.py). Stored in
``vision.features`` like any model's, they are extracted, kept current and secured the same
way; the views ``vision.content_scores`` and ``vision.flagged_images`` read them.

The scores are the source network's, not pgvision's judgement: see docs/moderation.md for
what the classes mean and a threshold recipe.
"""

import numpy as np

from . import extract, registry
from .errors import require

FN = "vision.moderate"
MODELS = ("nsfwjs_mobilenet_v2",)  # built-in models whose features are the class scores
CLASSES = ("drawing", "hentai", "neutral", "porn", "sexy")  # nsfwjs's NSFW_CLASSES, in order


def ranked(probabilities):
    """[(class, probability)] most likely first (ties in the classes' order).

    >>> ranked([0.1, 0.0, 0.7, 0.1, 0.1])[0]
    ('neutral', 0.7)
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")
    return [(CLASSES[i], round(float(probabilities[i]), 7)) for i in order]


def moderate(plpy, GD, image, model=MODELS[0]):
    """Rows (class, probability) of image bytes, most likely first."""
    row = registry.lookup(plpy, GD, FN, model)
    require(FN, "model", model, row["name"] in MODELS,
            "a content model (" + ", ".join(MODELS) + "), whose features are class scores")
    return ranked(extract.features_of(plpy, GD, FN, image, row))
