"""Progress NOTICEs: at most one every few seconds, the last one always."""

import doctest

from pgvision import progress
from pgvision.progress import Progress


def test_reports_are_spaced_and_the_last_is_always_said():
    now = [0.0]
    said = []
    report = Progress(said.append, every=5.0, clock=lambda: now[0])
    for second in range(1, 13):  # a batch a second for 12 s
        now[0] = float(second)
        report.report(f"{second}/12")
    report.finish()
    assert said == ["5/12", "10/12", "12/12"]


def test_nothing_held_back_means_nothing_more_at_the_end():
    said = []
    report = Progress(said.append, every=0.0)
    report.report("1/1")
    report.finish()
    assert said == ["1/1"]


def test_the_module_example_holds():
    assert doctest.testmod(progress).failed == 0
