#!/usr/bin/env python3
"""Build pgvision's offline pretrained models from the npm package nsfwjs@4.4.0 (MIT).

nsfwjs ships a Keras-2.2.4 Inception-v3 and MobileNet-v2 as TF.js layers models with
uint8-quantised weights (lower blocks ImageNet weights, top blocks fine-tuned by nsfwjs for
5 classes). This fetches the package with `npm pack` (the npm registry is reachable where PyPI
is), checks its SHA-256, unwraps the JS-packaged shards with node, rebuilds each model in
Keras 3 (pgvision.tfjs) and saves ``.keras`` files plus ``models.json`` into
``<venv>/share/pgvision/models``. Idempotent: does nothing when the manifest is current.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile

from pgvision.files import sha256_file

PACKAGE = "nsfwjs@4.4.0"
TARBALL_SHA256 = "585cd178f3b994337c4d10a87b080d342fc52f8b9bf0085c4d1f345a3a1c5382"
CONVERTER = 1  # bump when the conversion changes, to rebuild installed models
HERE = os.path.dirname(os.path.abspath(__file__))

PROVENANCE = ("npm package nsfwjs@4.4.0 (MIT), dist/models/{src}: Keras 2.2.4 {arch} as a TF.js "
              "layers model, uint8-quantised weights (dequantised q*scale+min); lower blocks "
              "ImageNet weights, top blocks fine-tuned by nsfwjs for 5 classes; converted by "
              "pgvision.tfjs; features = {pooling} of layer {layer}")

MODELS = [
    {"name": "inception_v3", "src": "inception_v3", "arch": "Inception-v3",
     "input_height": 299, "input_width": 299, "preprocessing": "inception",
     "feature_layer": "mixed10", "pooling": "avg", "dims": 2048},
    {"name": "mobilenet_v2", "src": "mobilenet_v2", "arch": "MobileNet-v2",
     "input_height": 224, "input_width": 224, "preprocessing": "inception",
     "feature_layer": "out_relu", "pooling": "avg", "dims": 1280},
]
# Other cuts of a built network: the same .keras file, another feature layer and pooling.
# Chosen by measurement (make bench-quality, docs/extraction.md): a model's name keeps the
# features it means, so a better default is a new name, never a changed one.
VARIANTS = [
    {"name": "inception_v3_mixed6_grid", "variant_of": "inception_v3",
     "feature_layer": "mixed6", "pooling": "grid", "dims": 3840, "int8": True},
    # The same cut fed 224 px: as good on every labelled set, 1.9x as fast in the database
    # (0.19.0's default; make bench-quality, make bench-extract).
    {"name": "inception_v3_mixed6_grid_224", "variant_of": "inception_v3",
     "feature_layer": "mixed6", "pooling": "grid", "dims": 3840, "int8": True,
     "input_height": 224, "input_width": 224},
    # The network's own output, its 5-class softmax, fed as nsfwjs feeds it (preprocessing
    # "tfjs"): the content classes of vision.moderate, equal to nsfwjs's within 1e-3.
    {"name": "nsfwjs_mobilenet_v2", "variant_of": "mobilenet_v2", "feature_layer": "dense_3",
     "pooling": "none", "dims": 5, "preprocessing": "tfjs"},
]


def fetch_package(cache):
    """`npm pack` the pinned tarball into ``cache`` (once) and check its digest."""
    os.makedirs(cache, exist_ok=True)
    tarball = os.path.join(cache, "nsfwjs-4.4.0.tgz")
    if not os.path.isfile(tarball):
        print(f"==> npm pack {PACKAGE} (25 MB)", flush=True)
        subprocess.run(["npm", "pack", PACKAGE, "--pack-destination", cache, "--silent"],
                       check=True, stdout=subprocess.DEVNULL)
    digest = sha256_file(tarball)
    if digest != TARBALL_SHA256:
        os.unlink(tarball)
        sys.exit(f"import_nsfwjs: {tarball} has SHA-256 {digest}, expected {TARBALL_SHA256}")
    return tarball


POOLING_WORDS = {"avg": "global average pool", "max": "global max pool",
                 "gem": "generalised-mean (p = 3) pool",
                 "grid": "1x1 + 2x2 grid of average pools"}


CLASSES_PROVENANCE = ("npm package nsfwjs@4.4.0 (MIT), dist/models/{src}: Keras 2.2.4 {arch} as a "
                      "TF.js layers model, uint8-quantised weights (dequantised q*scale+min), "
                      "converted by pgvision.tfjs; output = the network's own softmax over "
                      "nsfwjs's 5 classes (drawing, hentai, neutral, porn, sexy), input scaled "
                      "to [0, 1] after a bilinear resize with aligned corners, as nsfwjs does")


def provenance(source, cut):
    """Where a model comes from (``source``: its MODELS spec) and how it is cut (``cut``)."""
    if cut["pooling"] == "none":
        return CLASSES_PROVENANCE.format(src=source["src"], arch=source["arch"])
    return PROVENANCE.format(src=source["src"], arch=source["arch"], layer=cut["feature_layer"],
                             pooling=POOLING_WORDS[cut["pooling"]])


def with_variants(entries):
    """``entries`` with every VARIANTS cut (re)derived from its base entry: the same file, so
    the base's file and SHA-256 stay as they are and its registrations hold."""
    variants = {variant["name"] for variant in VARIANTS}
    out = [entry for entry in entries if entry["name"] not in variants]
    for variant in VARIANTS:
        base = next((e for e in out if e["name"] == variant["variant_of"]), None)
        if base is None:
            continue
        source = next(spec for spec in MODELS if spec["name"] == variant["variant_of"])
        entry = {**base, **{k: v for k, v in variant.items() if k != "variant_of"}}
        entry["provenance"] = provenance(source, variant) + (
            f"; fed {entry['input_height']}x{entry['input_width']} px inputs (the network "
            f"was built for {base['input_height']}x{base['input_width']}: the same weights, "
            "fewer positions)" if (entry["input_height"], entry["input_width"]) !=
            (base["input_height"], base["input_width"]) else "") + (
            "; where the CPU has int8 dot products (pgvision.precision = auto) a statically "
            "quantised int8 copy runs, calibrated on tools/calibration" if entry.get("int8")
            else "")
        out.append(entry)
    return out


def write_manifest(manifest, entries):
    with open(manifest + ".tmp", "w", encoding="utf-8") as fh:
        json.dump({"converter": CONVERTER, "source": PACKAGE, "models": entries}, fh, indent=1)
    os.replace(manifest + ".tmp", manifest)


def convert(tarball, out_dir):
    from pgvision import tfjs

    entries = []
    with tempfile.TemporaryDirectory() as work:
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():  # Debian's Python 3.11.2 predates extraction filters
                target = os.path.realpath(os.path.join(work, member.name))
                if not (member.isfile() or member.isdir()) or not target.startswith(work + os.sep):
                    sys.exit(f"import_nsfwjs: unexpected tar member {member.name!r}")
            tar.extractall(work)
        for spec in MODELS:
            src = os.path.join(work, "package", "dist", "models", spec["src"])
            unwrapped = os.path.join(work, spec["name"])
            subprocess.run(["node", os.path.join(HERE, "unwrap_tfjs_js.js"), src, unwrapped],
                           check=True, stdout=subprocess.DEVNULL)
            model = tfjs.load_layers_model(unwrapped)
            filename = f"{spec['name']}.keras"
            model.save(os.path.join(out_dir, filename))
            entry = {k: v for k, v in spec.items() if k not in ("src", "arch")}
            entry.update(file=filename, sha256=sha256_file(os.path.join(out_dir, filename)),
                         provenance=provenance(spec, spec))
            entries.append(entry)
            print(f"==> built {filename} ({spec['dims']}-d features from {spec['feature_layer']})",
                  flush=True)
    return entries


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=sys.prefix)
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    args = parser.parse_args()
    out_dir = os.path.join(args.venv, "share", "pgvision", "models")
    manifest = os.path.join(out_dir, "models.json")
    if not args.force and os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as fh:
            current = json.load(fh)
        if current.get("converter") == CONVERTER and all(
                os.path.isfile(os.path.join(out_dir, m["file"])) for m in current["models"]):
            entries = with_variants(current["models"])
            if entries != current["models"]:
                write_manifest(manifest, entries)
                print("==> models.json: the installed networks' other cuts brought up to date",
                      flush=True)
            return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.makedirs(out_dir, exist_ok=True)
    tarball = fetch_package(os.path.join(os.path.dirname(args.venv), "cache"))
    write_manifest(manifest, with_variants(convert(tarball, out_dir)))


if __name__ == "__main__":
    main()
