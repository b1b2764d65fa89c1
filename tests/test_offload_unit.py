"""The child-process protocol of pgvision.offload without a server: results, errors named for
the SQL function, a child that dies, and a cancel that kills the child."""

import os

import pytest

from pgvision import offload
from pgvision.errors import PgvisionError
from conftest import installed_model

FN = "vision.register_model"


class Plpy:
    """Records NOTICEs; with ``cancel_on``, ``execute`` raises (as a query cancel does) once a
    NOTICE containing it was told."""

    def __init__(self, cancel_on=None):
        self.notices, self.cancel_on = [], cancel_on

    def notice(self, text):
        self.notices.append(text)

    def execute(self, query):
        if self.cancel_on and any(self.cancel_on in n for n in self.notices):
            raise KeyboardInterrupt("canceling statement due to user request")


def test_a_result_comes_back_as_sent():
    assert offload.run(Plpy(), FN, "echo", {"x": [1, "two"]}) == {"x": [1, "two"]}


def test_an_error_in_the_child_is_raised_for_the_sql_function():
    with pytest.raises(PgvisionError, match=r"^vision.register_model: cannot load model "
                                            r"\(ValueError: File not found") as err:
        offload.run(Plpy(), FN, "prepare_model", {
            "function": FN, "path": "/nonexistent/model.keras", "input_height": None,
            "input_width": None, "preprocessing": "raw", "feature_layer": None,
            "pooling": "avg", "threads": [1, 1], "onnx_target": None})
    assert err.value.sqlstate == "58000"


def test_a_child_that_dies_is_reported_with_its_last_words(monkeypatch, tmp_path):
    killed = tmp_path / "python"  # as the kernel's OOM killer would end it
    killed.write_text("#!/bin/sh\necho 'allocating 3 GB' >&2\nkill -9 $$\n")
    killed.chmod(0o755)
    monkeypatch.setattr(offload, "python_executable", lambda: str(killed))
    with pytest.raises(PgvisionError, match=r"worker process ended without a result \(exit "
                                            r"code -9; last step: starting\): allocating 3 GB"):
        offload.run(None, FN, "echo", {})


def test_a_cancel_kills_the_child(tmp_path):
    plpy = Plpy(cancel_on="loading the Keras model")
    target = tmp_path / "m.onnx"
    with pytest.raises(KeyboardInterrupt):
        offload.run(plpy, FN, "prepare_model", {
            "function": FN, "path": installed_model("mobilenet_v2"),
            "input_height": None, "input_width": None, "preprocessing": "inception",
            "feature_layer": "out_relu", "pooling": "avg", "threads": [1, 1],
            "onnx_target": str(target)})
    assert plpy.notices == [f"{FN}: loading the Keras model (safe mode) (0 s)"]
    assert not target.exists() and not list(tmp_path.iterdir())
    ps = os.popen("ps -eo args").read()
    assert "pgvision.offload prepare_model" not in ps
