"""`make demo` keeps working: run demo/demo.py against the test database and check what a
new user would see (its output and the two pictures it writes)."""

import os
import subprocess
import sys

from PIL import Image

from conftest import SOCKET_DIR, query

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_end_to_end(db, db_name, tmp_path):
    out = tmp_path / "demo_neighbours.png"
    try:
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "demo", "demo.py"), "--dsn",
             f"postgresql://postgres@/{db_name}?host={SOCKET_DIR}&port=5432", "--out", str(out)],
            capture_output=True, text=True, timeout=600)
    finally:  # leave the shared test database as the other tests expect it
        query(db, "DROP TABLE IF EXISTS demo_images, demo_labels; "
                  "DELETE FROM vision.classifiers WHERE name = 'demo_photo'")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "36 rows -> 3840-d features, 1 skipped" in text
    assert "image 37 is not a decodable image (truncated JPEG)" in text
    assert "12/12 photos find one of their own variants first" in text
    assert "held-out cropped q40 copies labelled correctly" in text
    assert "(nearest liked + Rocchio)" in text and "bandit_next: explore cluster" in text
    picks = text.split("6. Recommendations")[1].split("bandit_next")[0].split("\n")[1:4]
    assert [p.split()[0] for p in picks] == ["1.", "2.", "3."], picks  # ranked
    assert all(p.split()[1] in ("chelsea", "coffee") for p in picks), picks  # what is liked
    scores = [p.split("score ")[1].split()[0] for p in picks]
    assert len(set(scores)) == 3, picks  # enough digits to tell them apart
    for picture in (out, tmp_path / "demo_map.png"):
        with Image.open(picture) as img:
            assert img.format == "PNG" and img.width >= 300
