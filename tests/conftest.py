"""Fixtures: one real Postgres 15 server (the cluster `make start` runs, reached through
pytest-postgresql's no-process factory), one test database with the extension for the whole
session, and one backend connection in it, so TensorFlow and each model load once.
"""

import io
import os
import re
import sys

import numpy as np
import psycopg2
import pytest
from PIL import Image
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

SOCKET_DIR = os.environ.get("PGVISION_SOCKET_DIR")
PORT = 5432
USER = "postgres"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def extension_dir():
    """Where the server finds extension files (``pg_config --sharedir``/extension)."""
    import subprocess

    pg_config = os.environ.get("PG_CONFIG", "pg_config")
    sharedir = subprocess.run([pg_config, "--sharedir"], check=True, capture_output=True,
                              text=True).stdout.strip()
    return os.path.join(sharedir, "extension")


def dsn(dbname):
    return f"host={SOCKET_DIR} port={PORT} user={USER} dbname={dbname}"


def _create_extension(host, port, user, dbname, **_):
    with psycopg2.connect(host=host, port=port, user=user, dbname=dbname) as conn:
        conn.cursor().execute("CREATE EXTENSION pgvision CASCADE")


postgresql_server = factories.postgresql_noproc(
    host=SOCKET_DIR, port=PORT, user=USER, dbname="pgvision_test", load=[_create_extension])


def pytest_collection_modifyitems(config, items):
    """Mark ``fast`` what needs neither the shared server nor an install of its own (the
    markers are declared in pytest.ini)."""
    skip = pytest.mark.skip(reason="PGVISION_SOCKET_DIR unset: run `make test`")
    for item in items:
        if "server" in item.fixturenames:
            if not SOCKET_DIR:
                item.add_marker(skip)
        elif item.get_closest_marker("install") is None:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def server(postgresql_server):
    """The no-process executor: host/port/user of the running server."""
    return postgresql_server


@pytest.fixture(scope="session")
def db_name(server):
    """A database cloned from the template that has pgvision created in it."""
    janitor = DatabaseJanitor(user=USER, host=SOCKET_DIR, port=PORT, dbname="pgvision_session",
                              template_dbname=server.template_dbname)
    janitor.drop()
    with janitor:
        yield "pgvision_session"


@pytest.fixture(scope="session")
def db(db_name):
    """One autocommit connection (one backend) shared by the whole session."""
    conn = psycopg2.connect(dsn(db_name))
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def connect(db_name):
    """Open extra connections (other backends) that close after the test."""
    opened = []

    def _connect(**kwargs):
        conn = psycopg2.connect(dsn(db_name), **kwargs)
        conn.autocommit = True
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def fresh_db(server):
    """An empty database (no extension) for tests that create or migrate it themselves."""
    name = "pgvision_fresh"
    janitor = DatabaseJanitor(user=USER, host=SOCKET_DIR, port=PORT, dbname=name)
    janitor.drop()
    with janitor:
        yield name


def doc_pages():
    """The documentation in reading order: README.md, then docs/ as mkdocs.yml's nav lists
    it (the site's order), then CHANGELOG.md."""
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as fh:
        nav = re.findall(r"^  - (?:[\w ]+: )?([\w-]+\.md)$", fh.read(), flags=re.M)
    where = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}
    return [os.path.join(ROOT, where.get(page, os.path.join("docs", page))) for page in nav]


def documentation():
    """Every page of :func:`doc_pages`, one after another."""
    texts = []
    for path in doc_pages():
        with open(path, encoding="utf-8") as fh:
            texts.append(fh.read())
    return "\n".join(texts)


def query(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def image_bytes(seed, size=(64, 48), fmt="JPEG", mode="RGB"):
    """A small synthetic image with structure (gradients + blocks), distinct per seed."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    freq = rng.uniform(0.05, 0.4, 3)
    pixels = np.stack([(base[c] + 100 * np.sin(freq[c] * (xx + c * yy))) % 256
                       for c in range(3)], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(buf, fmt)
    return buf.getvalue()


def label_image(text, background=None, at=(24, 40), size=36, fmt="JPEG"):
    """``text`` drawn in black with Pillow's own scalable font on a white 480x160 image, or in
    a white label plate on a scikit-image photo (``background``: its name); the image bytes
    and the drawn text's box (left, top, right, bottom)."""
    from PIL import ImageDraw, ImageFont

    if background is None:
        img = Image.new("RGB", (480, 160), "white")
    else:
        from skimage import data as photos
        img = Image.fromarray(np.asarray(getattr(photos, background)())).convert("RGB")
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(img)
    box = draw.textbbox(at, text, font=font)
    draw.rectangle((box[0] - 8, box[1] - 8, box[2] + 8, box[3] + 8), fill="white")
    draw.text(at, text, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue(), box


@pytest.fixture
def server_tmp(tmp_path_factory):
    """A directory the server's OS user can read (pytest's own tmp dirs are private)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="pgvision-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def make_table(db):
    """Create ``name(id bigint, image bytea)`` filled with rows; dropped after the test."""
    created = []

    def _make(name, rows, id_type="bigint", image_type="bytea"):
        query(db, f"DROP TABLE IF EXISTS {name}")
        query(db, f"CREATE TABLE {name} (id {id_type} PRIMARY KEY, image {image_type})")
        for image_id, data in rows:
            query(db, f"INSERT INTO {name} VALUES (%s, %s)",
                  (image_id, psycopg2.Binary(data) if data is not None else None))
        created.append(name)
        return name

    yield _make
    for name in created:
        query(db, f"DELETE FROM vision.features WHERE source = '{name}'::regclass")
        query(db, f"DELETE FROM vision.extract_errors WHERE source = '{name}'::regclass")
        query(db, f"DROP TABLE {name}")


def keras_bytes(tmp_path, name="tiny", filters=4, lambda_layer=False, seed=0):
    """A small real Keras CNN (32x32 RGB → filters-d), saved as .keras bytes."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(filters, 3, activation="relu", name="conv")(inputs)
    if lambda_layer:
        x = keras.layers.Lambda(lambda t: t * 2.0, name="code")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    path = tmp_path / f"{name}.keras"
    keras.Model(inputs, outputs).save(path)
    return path.read_bytes()


def installed_model(name):
    """The .keras file ``make install`` put in the venv that runs the tests (also where
    PYTHONPATH=plpython points the package elsewhere)."""
    return os.path.join(sys.prefix, "share", "pgvision", "models", f"{name}.keras")


def register(db, name, data, **kwargs):
    args = ", ".join(f"{k} => %({k})s" for k in kwargs)
    sql = f"SELECT vision.register_model(%(name)s, model_bytes => %(data)s{', ' + args if args else ''})"
    return query(db, sql, {"name": name, "data": psycopg2.Binary(data), **kwargs})[0][0]


def store_file(conn, sha, kind):
    """The path of a pgvision store file of the connection's database on the (local) server."""
    datadir, database = query(conn, "SELECT pg_catalog.current_setting('data_directory'), "
                                    "(SELECT oid FROM pg_database "
                                    "WHERE datname = current_database())")[0]
    return os.path.join(datadir, "pgvision", "store", str(database), f"{sha}.{kind}")
