"""The entry point every SQL wrapper goes through, prepared plans and settings
(server-free: tests/fakeplpy.py)."""

import pytest

import pgvision
from fakeplpy import FakePlpy, PlpyError
from pgvision import settings, spi
from pgvision.errors import OBJECT_IN_USE, UNDEFINED_OBJECT, PgvisionError

EXTVERSION = r"SELECT extversion, "


def test_a_pgvision_error_becomes_a_sql_error_with_its_sqlstate_and_hint():
    plpy = FakePlpy().on(EXTVERSION, [{"extversion": pgvision.__version__, "db": None}])

    def fails(plpy, GD):
        raise PgvisionError("vision.x", 'argument "y" is bad', UNDEFINED_OBJECT, hint="Do z.")

    with pytest.raises(PlpyError) as info:
        spi.call(plpy, {}, fails)
    assert (str(info.value), info.value.sqlstate, info.value.hint) == (
        'vision.x: argument "y" is bad', UNDEFINED_OBJECT, "Do z.")


def test_the_version_is_checked_once_per_backend():
    plpy = FakePlpy().on(EXTVERSION, [{"extversion": pgvision.__version__, "db": None}])
    GD = {}
    assert [spi.call(plpy, GD, lambda plpy, GD, x: x * 2, n) for n in (1, 2, 3)] == [2, 4, 6]
    assert [q for q, _ in plpy.queries if "extversion" in q] == [plpy.queries[0][0]]


def test_another_extension_version_is_refused():
    plpy = FakePlpy().on(EXTVERSION, [{"extversion": "0.0.1", "db": None}])
    with pytest.raises(PlpyError, match=r"pgvision: the database runs extension version 0\.0\.1, "
                                        rf"but the server's pgvision Python package is "
                                        rf"{pgvision.__version__}") as info:
        spi.call(plpy, {}, lambda plpy, GD: None)
    assert info.value.sqlstate == OBJECT_IN_USE


def test_plans_are_kept_per_query_text_and_types():
    plpy, GD = FakePlpy(), {}
    a = spi.plan(plpy, GD, "SELECT 1", ["text"])
    assert spi.plan(plpy, GD, "SELECT 1", ["text"]) is a
    assert spi.plan(plpy, GD, "SELECT 1", ["int4"]) is not a
    assert spi.plan(plpy, GD, "SELECT 2", ["text"]) is not a
    assert plpy.prepared == ["SELECT 1", "SELECT 1", "SELECT 2"]


@pytest.mark.parametrize("value,expected", [(None, 7), ("", 7), ("12", 12)])
def test_integer_settings(value, expected):
    plpy = FakePlpy().on(r"current_setting", [{"v": value}])
    assert settings.setting(plpy, {}, "pgvision.x", 7) == expected


def test_a_setting_that_is_not_an_integer_is_named():
    plpy = FakePlpy().on(r"current_setting", [{"v": "lots"}])
    with pytest.raises(PgvisionError, match=r'pgvision: setting "pgvision.x" must be an integer, '
                                            r"got 'lots'"):
        settings.setting(plpy, {}, "pgvision.x", 7)


def test_runtime_setting():
    plpy = FakePlpy().on(r"current_setting", [{"v": "tensorflow"}])
    assert settings.runtime_setting(plpy, {}) == "tensorflow"
    plpy = FakePlpy().on(r"current_setting", [{"v": "gpu"}])
    with pytest.raises(PgvisionError, match=r'setting "pgvision.runtime" must be one of auto, '
                                            r"onnx, tensorflow, got 'gpu'"):
        settings.runtime_setting(plpy, {})


@pytest.mark.parametrize("session,admin,is_admin,expected", [
    (None, None, False, 100),        # nothing set: the built-in default
    ("50", None, False, 50),         # a session may lower a limit
    ("500", None, False, 100),       # ... but not raise it above the default
    ("500", "1000", False, 500),     # an admin's server/database/role value is the ceiling
    ("5000", "1000", False, 1000),
    ("0", "1000", False, 1000),      # 0 (no limit) is a raise too
    ("5000", "1000", True, 5000),    # vision_admin (and superusers) may raise it
    ("5000", "0", False, 5000),      # the admin lifted the limit
])
def test_a_session_may_lower_a_limit_but_not_raise_it(session, admin, is_admin, expected):
    assert settings.capped("pgvision.x", session, admin, is_admin, 100) == expected


def test_writes_are_flagged_only_while_they_run():
    GD = {}
    seen = []
    plpy = FakePlpy().on(r"INSERT", lambda args: seen.append(spi.writing(GD)) or [])
    spi.write(plpy, GD, "INSERT INTO vision.features VALUES (1)")
    assert seen == [True] and not spi.writing(GD)
    plpy.on(r"INSERT", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        spi.write(plpy, GD, "INSERT INTO vision.features VALUES (1)")
    assert not spi.writing(GD)
