"""The child-process protocol of pgvision.offload without a server: results, errors named for
the SQL function, a child that dies, and a cancel that kills the child."""

import os

import pytest

from pgvision import offload
from pgvision.errors import PgvisionError
from pgvision.files import default_model_dir

FN = "vision.register_model"


class Plpy:
    """Records NOTICEs; ``execute`` raises after ``cancel_after`` calls (a query cancel)."""

    def __init__(self, cancel_after=None):
        self.notices, self.calls, self.cancel_after = [], 0, cancel_after

    def notice(self, text):
        self.notices.append(text)

    def execute(self, query):
        self.calls += 1
        if self.cancel_after is not None and self.calls > self.cancel_after:
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
    plpy = Plpy(cancel_after=2)
    target = tmp_path / "m.onnx"
    with pytest.raises(KeyboardInterrupt):
        offload.run(plpy, FN, "prepare_model", {
            "function": FN, "path": os.path.join(default_model_dir(), "mobilenet_v2.keras"),
            "input_height": None, "input_width": None, "preprocessing": "inception",
            "feature_layer": "out_relu", "pooling": "avg", "threads": [1, 1],
            "onnx_target": str(target)})
    assert not target.exists() and not list(tmp_path.iterdir())
    ps = os.popen("ps -eo args").read()
    assert "pgvision.offload prepare_model" not in ps
