"""The near-duplicate logic without a server: the hash model against imagehash, the binary
index against brute force, the mirror permutation against grid pooling of a mirrored map,
the decision rule and the grouping."""

import doctest

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data as photos

from pgvision import duplicates, hashing, pooling


def test_doctests():
    assert doctest.testmod(duplicates).failed == 0
    assert doctest.testmod(hashing).failed == 0


def test_the_hash_model_is_imagehash_phash_of_the_image_and_of_its_mirror():
    spec = hashing.default_spec()
    img = Image.fromarray(photos.coffee()).resize((spec["size"], spec["size"]))
    vector = hashing.HashExtractor(spec)(np.asarray(img, np.float32)[np.newaxis])[0]
    bits = spec["hash_size"] ** 2
    assert vector.shape == (hashing.layout(spec)[2],)
    assert np.array_equal(vector[:bits], imagehash.phash(img).hash.ravel())
    assert np.array_equal(vector[bits:2 * bits], imagehash.phash(ImageOps.mirror(img)).hash.ravel())
    assert vector[2 * bits:].sum() == pytest.approx(1.0) and (vector[2 * bits:] >= 0).all()
    assert hashing.hex_digest(vector) == str(imagehash.phash(img))


def test_the_colour_histogram_tells_dark_and_coloured_images_apart():
    spec = hashing.default_spec()
    black = np.zeros((8, 8, 3), np.uint8)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    args = tuple(spec["colour_bins"]), spec["dark_below"]
    assert hashing.colour_histogram(black, *args)[-1] == 1.0
    lit = hashing.colour_histogram(red, *args)
    assert lit[-1] == 0.0 and lit.max() == 1.0


def test_hamming_counts_differing_bits():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, (2, 50, 64)).astype(bool)
    assert np.array_equal(duplicates.hamming(np.packbits(a, axis=1), np.packbits(b, axis=1)),
                          (a != b).sum(axis=1))


def brute_force_pairs(bits, mirrored, radius):
    plain = (bits[:, None] != bits[None]).sum(-1)
    flipped = (bits[:, None] != mirrored[None]).sum(-1)
    close = (np.minimum(plain, flipped) <= radius) | (np.minimum(plain, flipped.T) <= radius)
    i, j = np.nonzero(np.triu(close, 1))
    return {(int(a), int(b)) for a, b in zip(i, j)}


@pytest.mark.parametrize("radius", [0, 3, 7, 8, 20])
def test_the_binary_index_finds_every_pair_brute_force_finds(radius):
    """Multi-index hashing up to 7 bits (exact by the pigeonhole principle), a scan beyond."""
    rng = np.random.default_rng(radius)
    bits = rng.integers(0, 2, (400, 64)).astype(bool)
    for k in range(0, 400, 4):  # planted copies with up to radius + 2 flipped bits
        bits[k + 1] = bits[k]
        bits[k + 1, rng.choice(64, rng.integers(0, radius + 3), replace=False)] ^= True
    mirrored = rng.integers(0, 2, (400, 64)).astype(bool)
    mirrored[10] = bits[20]  # image 10 is image 20 mirrored
    found = duplicates.hash_pairs(np.packbits(bits, axis=1), np.packbits(mirrored, axis=1),
                                  radius)
    assert {tuple(p) for p in found.tolist()} == brute_force_pairs(bits, mirrored, radius)
    assert (10, 20) in {tuple(p) for p in found.tolist()}


def test_a_mirrored_grid_vector_is_grid_pooling_of_the_mirrored_map():
    maps = np.random.default_rng(0).uniform(0, 1, (3, 7, 8, 6)).astype(np.float32)
    pooled = pooling.pool(maps, "grid")
    assert duplicates.mirrors(pooled.shape[1], "grid")
    assert np.allclose(pooling.pool(maps[:, :, ::-1], "grid"), duplicates.mirrored(pooled))
    # its own inverse, so a query can be mirrored in place of every stored vector
    assert np.array_equal(duplicates.mirrored(duplicates.mirrored(pooled)), pooled)
    assert np.allclose(duplicates.mirrored(pooled) @ pooled[0],
                       pooled @ duplicates.mirrored(pooled[:1])[0])
    assert not duplicates.mirrors(1280, "avg")


def test_feature_candidates_hold_every_near_copy():
    """The PCA projection keeps what near-duplicates share: each planted copy of a row (its
    vector with a little noise) is among the candidates of its original."""
    rng = np.random.default_rng(1)
    centres = rng.gamma(0.5, 1.0, (30, 300))
    vectors = np.maximum(centres[np.arange(300) % 30] + rng.normal(0, 0.3, (300, 300)), 0)
    vectors[150:] = vectors[:150] * rng.uniform(0.9, 1.1, (150, 300))
    pairs = {tuple(p) for p in duplicates.feature_pairs(vectors.astype(np.float32), False,
                                                        5).tolist()}
    assert all((k, k + 150) in pairs for k in range(150))


def test_the_rule_needs_features_to_confirm_a_hash_match():
    distance = np.array([0, 0, 20, 20, 5])
    sim = np.array([0.5, 0.75, 0.9, 0.8, np.nan])
    assert duplicates.is_duplicate(distance, sim, 8, 0.82).tolist() == \
        [False, True, True, False, True]


def test_similarity_is_one_for_the_same_image_and_low_for_unrelated_hashes():
    assert duplicates.similarity(np.array([0]), np.array([1.0]), np.array([1.0]))[0] == \
        pytest.approx(1.0)
    assert duplicates.similarity(np.array([40]), np.array([0.9]), np.array([0.9]))[0] == \
        pytest.approx((3.6 + 1.8) / 7)


def test_groups_are_connected_pairs_and_lone_images_are_left_out():
    bits = np.zeros((5, 177), np.float32)
    bits[:, 128:] = 1 / 49
    bits[2:, :128] = 1  # images 3, 4, 5 share a hash, unlike 1 and 2 ...
    bits[4, :20] = bits[4, 64:84] = 0  # ... and image 5 is 20 bits from them
    found, compared = duplicates.groups_of(np.array([1, 2, 3, 4, 5]), bits, None, False, 8, 0.82)
    assert [g.tolist() for g in found] == [[1, 2], [3, 4]]  # largest first, then by id
    assert compared == 2
