"""The documentation runs: every ```sql block of the README and the docs/ pages executes, in
the site's reading order, against the real server; every public SQL function of the extension
has a reference entry; and the site builds with no broken link (make docs)."""

import os
import re
import subprocess
import sys
import tempfile

from conftest import ROOT, SOCKET_DIR, documentation, image_bytes, query
from pgvision import DEFAULT_MODEL


def sql_blocks(text):
    return re.findall(r"^```sql\n(.*?)^```", text, flags=re.S | re.M)


def test_every_sql_example_of_the_docs_runs_after_the_demo(db, db_name, make_table):
    """In the state `make demo` leaves (its own table with features, a classifier, votes, a
    map), so every example must name what it works on."""
    demo = subprocess.run([sys.executable, os.path.join(ROOT, "demo", "demo.py"), "--dsn",
                           f"postgresql://postgres@/{db_name}?host={SOCKET_DIR}&port=5432",
                           "--out", os.path.join(tempfile.mkdtemp(), "demo.png")],
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    make_table("products", [(1, image_bytes(21, size=(320, 240))), (2, image_bytes(22)),
                            (3, image_bytes(23)), (4, image_bytes(24)), (5, b"not an image")])
    blocks = sql_blocks(documentation())
    assert len(blocks) >= 10
    registered = ("inception_v3_mixed9", "mobilenet_v2_160")  # and dropped again, by examples
    try:
        for block in blocks:
            query(db, block)  # raises on any error
    except Exception:  # leave no model of a half-run page to fail test_models after it
        query(db, "SELECT vision.drop_model(name, cascade => true) FROM vision.models "
                  "WHERE name = ANY(%s)", (list(registered),))
        raise
    finally:
        query(db, "DROP TABLE IF EXISTS product_labels, demo_images, demo_labels; "
                  "DELETE FROM vision.classifiers")
    assert query(db, "SELECT count(*) FROM vision.features WHERE source = 'products'::regclass "
                     "AND model = %s", (DEFAULT_MODEL,))[0][0] == 4
    assert not query(db, "SELECT 1 FROM vision.models WHERE name = ANY(%s)", (list(registered),))


def test_every_public_function_has_a_reference_entry(db):
    functions = {name for (name,) in query(db, """
        SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'vision' AND p.proname NOT LIKE '\\_%'""")}
    with open(os.path.join(ROOT, "docs", "reference.md"), encoding="utf-8") as fh:
        documented = set(re.findall(r"^#+ vision\.(\w+)", fh.read(), flags=re.M))
    assert functions and functions <= documented, functions - documented


def test_the_site_builds_with_no_broken_link(tmp_path):
    """What `make docs` runs: mkdocs --strict fails on a link to a missing page or anchor."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "reference" / "index.html").stat().st_size > 10_000


def test_every_module_is_in_the_development_page():
    """The layout the development page draws is the package's."""
    import pgvision
    import pkgutil

    with open(os.path.join(ROOT, "docs", "development.md"), encoding="utf-8") as fh:
        page = fh.read()
    for module in pkgutil.iter_modules(pgvision.__path__):
        assert re.search(rf"^{module.name}\.py ", page, flags=re.M), module.name
