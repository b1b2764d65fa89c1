#!/usr/bin/env python3
"""Words in images benchmark, in one run.

Text of one line (two product words and a weight, e.g. "Roast Vanilla 250g") is drawn by
Pillow onto the 12 scikit-image photos (640x480): capital letters 12, 16, 24, 32 and 48 px
high, four fonts (DejaVu Sans and Serif Bold, Liberation Sans and Mono), turned 0, +-8 and
+-15 degrees, in black or white by the photo's brightness under it with a 1-4 px outline of
the other colour, JPEG quality 90. Each line lies wholly inside its photo.

  accuracy    character accuracy (1 - edit distance / length of the drawn text) of the lines
              read inside the drawn text's region, left to right: vision.image_text as
              CALL vision.extract_table(model => 'pp_ocr_v6') stores it, and RapidOCR
              called directly with its own defaults (its detector sees the shorter side at
              736 px) as a reference; by height and angle
  throughput  images a second: the same CALL (model already loaded in the session) beside
              RapidOCR called directly in this process with pgvision's settings on the same
              bytes (decode included on both sides); ratio in-DB / direct

    make bench-text                     # 300 images
    make bench-text BENCH_ARGS=--quick  # 75 images
"""

import argparse
import io
import os
import random
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data as photos

from common import SOURCES, connect, load, write_results
from pgvision import images as pgimages
from pgvision import ocr

FONTS = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
         "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
         "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
         "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf"]
WORDS = ("Organic Coffee Arabica Roast Dark Medium Vanilla Almond Oat Milk Fresh Natural Green "
         "Tea Honey Cocoa Extra Fine Premium Classic").split()
HEIGHTS = (12, 16, 24, 32, 48)
ANGLES = (0, -8, 8, -15, 15)
TABLE = "bench_text"


def font_for(path, cap_height):
    """The font at the size whose capital H is ``cap_height`` pixels high (Pillow's own
    scalable font where the system lacks ``path``)."""
    size = cap_height
    while True:
        font = (ImageFont.truetype(path, size) if os.path.exists(path)
                else ImageFont.load_default(size=size))
        top, bottom = font.getbbox("H")[1::2]
        if bottom - top >= cap_height:
            return font
        size += 1


def drawn(base, text, font, angle, rng):
    """``base`` with ``text`` on it; the text's region (left, top, right, bottom) or None when
    it does not fit the photo."""
    outline = max(1, font.size // 14)
    left, top, right, bottom = font.getbbox(text, stroke_width=outline)
    size = (right - left + 8, bottom - top + 8)
    ink, halo = Image.new("L", size, 0), Image.new("L", size, 0)
    at = (4 - left, 4 - top)
    ImageDraw.Draw(halo).text(at, text, fill=255, font=font, stroke_width=outline)
    ImageDraw.Draw(ink).text(at, text, fill=255, font=font)
    ink = ink.rotate(angle, expand=True, resample=Image.BICUBIC)
    halo = halo.rotate(angle, expand=True, resample=Image.BICUBIC)
    if ink.width > base.width - 8 or ink.height > base.height - 8:
        return None
    x = rng.randrange(4, base.width - ink.width - 3)
    y = rng.randrange(4, base.height - ink.height - 3)
    under = np.asarray(base.crop((x, y, x + ink.width, y + ink.height)).convert("L")).mean()
    colour = (0, 0, 0) if under > 128 else (255, 255, 255)
    base.paste(Image.new("RGB", ink.size, tuple(255 - c for c in colour)), (x, y), halo)
    base.paste(Image.new("RGB", ink.size, colour), (x, y), ink)
    return (x, y, x + ink.width, y + ink.height)


def samples(per_cell, seed=0):
    """[(jpeg bytes, text, region, cap height, angle, font)], ``per_cell`` per (height,
    angle)."""
    rng = random.Random(seed)
    bases = [Image.fromarray(np.asarray(getattr(photos, s)())).convert("RGB").resize((640, 480))
             for s in SOURCES]
    out = []
    for height in HEIGHTS:
        for angle in ANGLES:
            made = 0
            while made < per_cell:
                path = FONTS[(made + height + angle) % len(FONTS)]
                text = " ".join(rng.sample(WORDS, 2)) + f" {rng.randint(10, 999)}g"
                base = bases[rng.randrange(len(bases))].copy()
                region = drawn(base, text, font_for(path, height), angle, rng)
                if region is None:
                    continue
                buf = io.BytesIO()
                base.save(buf, "JPEG", quality=90)
                out.append((buf.getvalue(), text, region, height, angle, os.path.basename(path)))
                made += 1
    return out


def edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def accuracy(text, lines, region):
    """Character accuracy of the lines whose centre lies in ``region``, read left to right."""
    left, top, right, bottom = region
    inside = []
    for line in lines:
        xs, ys = line["box"][0::2], line["box"][1::2]
        cx, cy = sum(xs) / 4, sum(ys) / 4
        if left <= cx <= right and top <= cy <= bottom:
            inside.append((cx, line["text"]))
    read = " ".join(t for _, t in sorted(inside))
    return max(0.0, 1.0 - edit_distance(read, text) / len(text)), read


def direct_lines(engine, data):
    out = engine(np.ascontiguousarray(np.asarray(pgimages.decode(data))[:, :, ::-1]))
    if out.boxes is None:
        return []
    return [{"text": t, "box": ocr.flat_box(b)} for b, t in zip(out.boxes, out.txts)]


def summary(rows, key):
    cells = {}
    for row in rows:
        cells.setdefault(row[key], []).append(row["accuracy"])
    return {str(k): round(float(np.mean(v)), 4) for k, v in sorted(cells.items())}


def main():
    parser = argparse.ArgumentParser(description="pgvision words-in-images benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="out/bench_text.json")
    args = parser.parse_args()
    from rapidocr import RapidOCR

    made = samples(3 if args.quick else 12)
    print(f"... {len(made)} photos with text drawn by Pillow", flush=True)
    conn = connect(args.dsn)
    cur = conn.cursor()
    load(cur, TABLE, [m[0] for m in made])
    # the model is loaded once per backend: load it before the clock starts
    cur.execute("SELECT count(*) FROM vision.read_text(%s)", (made[0][0],))
    started = time.monotonic()
    cur.execute(f"CALL vision.extract_table('{TABLE}', model => 'pp_ocr_v6')")
    in_db = time.monotonic() - started
    cur.execute("SELECT image_id, lines FROM vision.image_text WHERE source = %s::regclass",
                (TABLE,))
    stored = dict(cur.fetchall())

    reader = ocr.TextReader("bench", ocr.default_spec())  # pgvision's settings, in process
    direct_lines(reader.engine, made[0][0])
    started = time.monotonic()
    direct = [direct_lines(reader.engine, m[0]) for m in made]
    direct_seconds = time.monotonic() - started
    own = RapidOCR(params={"Global.log_level": "error"})  # RapidOCR's own defaults
    defaults = [direct_lines(own, m[0]) for m in made]

    rows = {"pgvision": [], "RapidOCR defaults": []}
    for i, (data, text, region, height, angle, font) in enumerate(made):
        for name, lines in (("pgvision", stored.get(i, [])), ("RapidOCR defaults", defaults[i])):
            score, read = accuracy(text, lines, region)
            rows[name].append({"height": height, "angle": angle, "font": font, "text": text,
                               "read": read, "accuracy": score})
    # the in-process engine reads what the server stores: same engine, same bytes
    same = sum(accuracy(m[1], d, m[2])[1] == r["read"]
               for m, d, r in zip(made, direct, rows["pgvision"]))
    results = {"images": len(made), "in_db_seconds": in_db, "direct_seconds": direct_seconds,
               "in_db_per_second": len(made) / in_db,
               "direct_per_second": len(made) / direct_seconds,
               "ratio": direct_seconds / in_db, "direct_reads_equal": same}
    for name, got in rows.items():
        big = [r["accuracy"] for r in got if r["height"] >= 16]
        results[name] = {"by_height": summary(got, "height"), "by_angle": summary(got, "angle"),
                         "by_font": summary(got, "font"), "at_least_16px": float(np.mean(big)),
                         "misread": [r for r in got if r["accuracy"] < 0.9 and r["height"] >= 16]}

    print(f"\nCharacter accuracy, {len(made)} photos (capital letters h px high):")
    print("  reader                    " + "  ".join(f"{h:>5}px" for h in HEIGHTS) +
          "   >= 16 px")
    for name in rows:
        r = results[name]
        print(f"  {name:<24}  " + "  ".join(f"{r['by_height'][str(h)]:7.3f}" for h in HEIGHTS) +
              f"   {r['at_least_16px']:8.3f}")
    print("  by angle (pgvision):     " + ", ".join(
        f"{a} deg {v:.3f}" for a, v in results["pgvision"]["by_angle"].items()))
    print("  by font (pgvision):      " + ", ".join(
        f"{f} {v:.3f}" for f, v in results["pgvision"]["by_font"].items()))
    for miss in results["pgvision"]["misread"][:8]:
        print(f"    misread at {miss['height']} px, {miss['angle']} deg: {miss['text']!r} -> "
              f"{miss['read']!r}")
    print("\nThroughput (pgvision's settings, model loaded, decode included):")
    print(f"  in the database, CALL vision.extract_table   {results['in_db_per_second']:6.2f} img/s")
    print(f"  RapidOCR called directly (same engine)       {results['direct_per_second']:6.2f} img/s")
    print(f"  ratio in-DB / direct                         {results['ratio']:6.2f}x  "
          f"(same text read for {same} of {len(made)} images)")
    write_results(args.json, results)
    cur.execute(f"DROP TABLE {TABLE}")


if __name__ == "__main__":
    main()
