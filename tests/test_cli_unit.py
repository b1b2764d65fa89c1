"""The command line's pure parts without a server: the binary COPY stream (decoded back by
the format's rules), file expansion, image detection, password redaction; and
pgvision.serverlog (fd-level capture, warnings as notices)."""

import io
import os
import struct
import warnings

import pytest
from PIL import Image

from conftest import image_bytes
from pgvision import serverlog
from pgvision_cli import connection, loading


def decode_copy(stream):
    """Rows of a binary COPY stream, read by the documented format (not by our writer)."""
    data = b"".join(iter(lambda: stream.read(7), b""))
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, extension = struct.unpack("!ii", data[11:19])
    assert (flags, extension) == (0, 0)
    pos, rows = 19, []
    while True:
        (count,) = struct.unpack("!h", data[pos:pos + 2])
        pos += 2
        if count == -1:
            assert pos == len(data)
            return rows
        row = []
        for _ in range(count):
            (size,) = struct.unpack("!i", data[pos:pos + 4])
            pos += 4
            row.append(None if size == -1 else data[pos:pos + size])
            pos += max(size, 0)
        rows.append(row)


def test_a_copy_stream_holds_every_row_and_field():
    rows = [["a.jpg", 3, "JPEG", b"\x00\xff\x01"], ["é.png", 2**40, None, b""]]
    decoded = decode_copy(loading.CopyStream(rows))
    assert decoded == [[b"a.jpg", struct.pack("!q", 3), b"JPEG", b"\x00\xff\x01"],
                       ["é.png".encode(), struct.pack("!q", 2**40), None, b""]]
    assert decode_copy(loading.CopyStream([])) == []


def test_expand_walks_folders_matches_globs_and_drops_repeats(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.jpg", "a/b/2.png", "a/b/3.txt", "4.jpg"):
        (tmp_path / name).write_bytes(b"x")
    files, unmatched = loading.expand([str(tmp_path / "a"), str(tmp_path / "**" / "*.jpg"),
                                       str(tmp_path / "nothing*")])
    names = [os.path.relpath(f, tmp_path) for f in files]
    assert names == ["a/1.jpg", "a/b/2.png", "a/b/3.txt", "4.jpg"]
    assert unmatched == [str(tmp_path / "nothing*")]


def test_image_format_names_the_format_or_the_reason():
    assert loading.image_format(image_bytes(1)) == "JPEG"
    assert loading.image_format(image_bytes(1, fmt="PNG")) == "PNG"
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "WEBP")
    assert loading.image_format(buf.getvalue()) == "WEBP"
    with pytest.raises(ValueError, match="empty file"):
        loading.image_format(b"")
    with pytest.raises(ValueError, match="not an image"):
        loading.image_format(b"%PDF-1.4 not a picture")


@pytest.mark.parametrize("dsn,shown", [
    ("postgresql://ann:s3cret@db.example:5433/shop?sslmode=require",
     "postgresql://ann@db.example:5433/shop"),
    ("host=/run/pg dbname=shop user=ann password=s3cret", "postgresql://ann@/run/pg/shop"),
    ("postgresql://ann:s3cret@/shop?host=/run/pg", "postgresql://ann@/run/pg/shop"),
    ("not a dsn ===", "postgresql://(unparsable connection string)"),
])
def test_a_connection_is_shown_without_its_password(dsn, shown, monkeypatch):
    for variable in ("PGUSER", "PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(variable, raising=False)
    assert connection.redact(dsn) == shown
    assert "s3cret" not in connection.redact(dsn)


def test_the_connection_comes_from_the_option_then_database_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql:///from_env")
    assert connection.resolve("postgresql:///given") == "postgresql:///given"
    assert connection.resolve(None) == "postgresql:///from_env"
    monkeypatch.delenv("DATABASE_URL")
    assert connection.resolve(None) == ""  # libpq's PG* variables and defaults


def test_what_c_code_writes_to_stderr_becomes_one_prefixed_log_line():
    logged = []
    with serverlog.captured_stderr("tensorflow", logged.append):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog()\n")
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n\n")
    assert logged == ["pgvision: tensorflow: WARNING: All log messages before "
                      "absl::InitializeLog() | I0000 port.cc:153] oneDNN custom operations are on."]
    with serverlog.captured_stderr("tensorflow", logged.append):
        pass
    assert len(logged) == 1  # nothing said, nothing logged


def test_warnings_become_notices_and_deprecations_are_dropped():
    notices = []

    class ConvergenceWarning(UserWarning):
        pass

    with serverlog.relayed_warnings(notices.append):
        warnings.warn_explicit("Maximum number of iteration reached.\nIncrease max_iter.",
                               ConvergenceWarning, "/v/site-packages/sklearn/linear_model/x.py", 1)
        warnings.warn_explicit("Maximum number of iteration reached.\nIncrease max_iter.",
                               ConvergenceWarning, "/v/site-packages/sklearn/linear_model/x.py", 1)
        warnings.warn("l1_ratios will change", FutureWarning)
    assert notices == ["pgvision: scikit-learn: ConvergenceWarning: Maximum number of "
                       "iteration reached. | Increase max_iter."]


def test_every_subcommand_has_help():
    from click.testing import CliRunner

    from pgvision_cli.main import cli

    runner = CliRunner()
    paths = [[name] for name in cli.commands if name != "models"]
    paths += [["models", name] for name in cli.commands["models"].commands]
    assert {p[-1] for p in paths} >= {"load", "extract", "similar", "classify", "map",
                                      "contact-sheet", "migrate", "doctor", "list",
                                      "register", "drop"}
    for path in paths:
        done = runner.invoke(cli, [*path, "--help"])
        assert done.exit_code == 0 and "Usage: cli " + " ".join(path) in done.output, path
    top = runner.invoke(cli, ["--help"]).output
    assert "DATABASE_URL" in top and "130 interrupted" in top


def test_names_with_brackets_are_printed_as_they_are(tmp_path):
    """Rich reads [word] as markup: file names and server messages must not be."""
    from click.testing import CliRunner

    from pgvision_cli.main import cli

    done = CliRunner().invoke(cli, ["--dsn", "host=/nonexistent port=1", "load",
                                    str(tmp_path / "[red]nothing*"), "--table", "t"])
    assert "nothing matches" in done.output and "[red]nothing*" in done.output


class PsycopgLikeConnection:
    """Enough of a psycopg2 connection for ``Loader.load``: its cursor's copy_expert runs
    ``reads(stream)`` and, like psycopg2, turns any exception in it into its own error."""

    def __init__(self, reads):
        self.reads, self.commits = reads, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def cursor(self):
        return self

    def copy_expert(self, sql, stream):
        try:
            self.reads(stream)
        except BaseException:
            raise RuntimeError("COPY from stdin failed: error in .read() call") from None

    def commit(self):
        self.commits += 1


def test_ctrl_c_inside_copy_stays_an_interrupt():
    """psycopg2 turns an exception raised in the stream's read() into its own error ("COPY
    from stdin failed: error in .read() call"); the loader gives the interrupt back."""
    conn = PsycopgLikeConnection(lambda stream: stream.read(1 << 16))
    loader = loading.Loader(conn, "t", ["image"])

    def files():
        raise KeyboardInterrupt
        yield  # a generator: the interrupt comes while COPY reads

    with pytest.raises(KeyboardInterrupt):
        loader.load(files())
    assert conn.commits == 0
    stream = loading.CopyStream(iter([]))
    assert not stream.interrupted and stream.read(5) == b"PGCOP"


def test_ctrl_c_as_a_signal_abandons_the_batch_at_the_next_chunk():
    """The load's SIGINT handler only sets a flag (an exception raised wherever the signal
    lands inside psycopg2 could become its own error): the stream stops at its next chunk,
    the batch is not committed, and a second press raises at once."""
    chunks = []

    def reads(stream):
        chunks.append(stream.read(8))
        loader.request_stop()  # the signal arrives between two reads
        chunks.append(stream.read(8))

    conn = PsycopgLikeConnection(reads)
    loader = loading.Loader(conn, "t", ["image"])
    with pytest.raises(KeyboardInterrupt):
        loader.load([])
    assert chunks == [b"PGCOPY\n\xff"] and conn.commits == 0
    with pytest.raises(KeyboardInterrupt):
        loader.request_stop()


@pytest.mark.parametrize("dsn", [
    "postgresql://me:secretpw%zz@localhost/db",          # libpq: invalid percent-encoded token
    "host=localhost password='secretpw%zz' dbname=db port=notaport",
    "postgresql://me:secretpw@/db?host=/nonexistent-socket-dir"])
def test_a_connection_error_never_shows_the_password(dsn, monkeypatch):
    """libpq quotes a malformed connection string, password and all; doctor then ended in a
    traceback (exit 1) instead of exit 3."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["DATABASE_URL"] = dsn
    done = subprocess.run([sys.executable, "-m", "pgvision_cli.main", "doctor"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == connection.NO_CONNECTION, done.stderr
    assert "secretpw" not in done.stdout + done.stderr
    assert "cannot connect" in done.stderr and "Traceback" not in done.stderr
    assert "***" in connection.scrub(f'invalid token: "{dsn}"', dsn)


def test_a_password_on_the_command_line_is_warned_about():
    from click.testing import CliRunner

    from pgvision_cli.main import cli

    done = CliRunner().invoke(cli, ["--dsn", "postgresql://me:pw@/db", "doctor", "--help"])
    assert "a password in --dsn shows in the process list" in done.output
    assert "PGPASSWORD" in done.output
    quiet = CliRunner().invoke(cli, ["--dsn", "postgresql://me@/db", "doctor", "--help"])
    assert "process list" not in quiet.output


def png_header(width, height):
    """A PNG that is only its header: what `load` must judge without decoding pixels."""
    import zlib

    def chunk(kind, data):
        return (struct.pack("!I", len(data)) + kind + data
                + struct.pack("!I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 8, 2,
                                                             0, 0, 0)) + chunk(b"IEND", b""))


def test_a_huge_image_is_called_too_large_not_no_image():
    with pytest.raises(ValueError, match=r"image too large \(40000×40000 > 89478485 pixels\)"):
        loading.image_format(png_header(40000, 40000))
    assert loading.image_format(png_header(640, 480)) == "PNG"


def test_load_reads_regular_files_under_the_folders_given_only(tmp_path):
    folder, outside = tmp_path / "shots", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    (folder / "ok.jpg").write_bytes(image_bytes(1))
    (outside / "private.jpg").write_bytes(image_bytes(2))
    os.symlink(outside / "private.jpg", folder / "link-out.jpg")
    os.symlink(folder / "ok.jpg", folder / "link-in.jpg")
    os.symlink("/dev/zero", folder / "zero.jpg")
    os.mkfifo(folder / "pipe.jpg")
    with open(folder / "sparse.jpg", "wb") as fh:  # 2 GB on paper, no blocks on disk
        fh.truncate(2 << 30)
    roots = loading.roots_of([str(folder)])
    reasons = {name: loading.refusal(str(folder / name), roots)
               for name in ("ok.jpg", "link-in.jpg", "link-out.jpg", "zero.jpg", "pipe.jpg",
                            "sparse.jpg")}
    assert reasons["ok.jpg"] is None and reasons["link-in.jpg"] is None
    assert reasons["link-out.jpg"].startswith(f"a link to {outside / 'private.jpg'}, outside")
    assert reasons["zero.jpg"] == "not a regular file (a device)"
    assert reasons["pipe.jpg"] == "not a regular file (a FIFO)"
    assert reasons["sparse.jpg"] == "too large (2048 MB > 256 MB, --max-file-mb)"
    assert loading.refusal(str(folder / "link-out.jpg"), roots, follow_links=True) is None
    # what expand found, the loader skips with those reasons, reading none of them
    files, _ = loading.expand([str(folder)])
    skipped = []
    loader = loading.Loader.__new__(loading.Loader)
    loader.roots, loader.follow_links, loader.max_bytes = roots, False, 256 << 20
    loader.stored, loader.seen, loader.skipped, loader.batch_bytes = set(), {}, [], 1 << 30
    loader.loaded, loader.loaded_bytes, loader.columns = 0, 0, ["name", "image"]
    loader.on_file = lambda path, size, outcome: skipped.append((os.path.basename(path), outcome))
    rows = list(loader._rows(files))
    # ok.jpg once (expand keeps one of the two names of the same file)
    assert len(rows) == 1 and rows[0][1] == image_bytes(1)
    outcomes = dict(skipped)
    assert outcomes["zero.jpg"].startswith("not a regular file")
    assert outcomes["pipe.jpg"].startswith("not a regular file")
    assert outcomes["link-out.jpg"].startswith("a link to")
    assert outcomes["sparse.jpg"].startswith("too large")
    # a glob's fixed part is its root
    assert loading.roots_of([str(folder / "*.jpg")]) == [str(folder.resolve())]


def test_connection_options_may_follow_the_subcommand(tmp_path, monkeypatch):
    """`pgvision load DIR --table T --dsn D` (psql-style) connects where `--dsn D load ...`
    does: both fail on the same unreachable server, naming it."""
    from click.testing import CliRunner

    from pgvision_cli.main import cli

    monkeypatch.delenv("DATABASE_URL", raising=False)
    image = tmp_path / "a.png"
    image.write_bytes(png_header(8, 8))
    where = "host=/nonexistent-socket-dir port=1 dbname=late user=me"
    before = CliRunner().invoke(cli, ["--dsn", where, "load", str(image), "--table", "t"])
    after = CliRunner().invoke(cli, ["load", str(image), "--table", "t", "--dsn", where, "-q"])
    assert before.exit_code == after.exit_code == 3, (before.output, after.output)
    assert "nonexistent-socket-dir" in before.output and "nonexistent-socket-dir" in after.output
    nested = CliRunner().invoke(cli, ["models", "list", "--dsn", where])
    assert nested.exit_code == 3 and "nonexistent-socket-dir" in nested.output
    assert "--dsn URI" in CliRunner().invoke(cli, ["similar", "--help"]).output
    warned = CliRunner().invoke(cli, ["models", "list", "--dsn",
                                      "postgresql://me:pw@/db?host=/nonexistent-socket-dir"])
    assert "a password in --dsn shows in the process list" in warned.output
