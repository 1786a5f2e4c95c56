"""Smoke test of the benchmark entry point without etcd: the planner benchmark at --quick sizes, the report.

Nothing here asserts a wall-clock time; it checks that the figures come out and the report is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import __main__ as entry
from bench.report import BEGIN, END, Figure, render, write_report


def test_quick_planner_figures_have_targets() -> None:
    figures = entry.planner(True)
    assert [f.bench for f in figures] == ["planner"] * 3
    assert all(f.target and f.measured and f.passed is not None for f in figures[:2])


def test_report_replaces_its_own_section_and_keeps_the_rest(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Registry and engine\n\nhand-written\n")
    figure = Figure("x", "a figure", "<= 1 s", "2 s", False, "why")
    write_report(render([figure], command="python -m bench", seconds=60), doc)
    write_report(render([figure], command="python -m bench", seconds=90), doc)
    text = doc.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| x | a figure | <= 1 s | 2 s (why) | **FAIL** |" in text
    assert "1.5 min" in text and "1.0 min" not in text
    assert text.startswith("# Performance\n") and text.rstrip().endswith("hand-written")


def test_unknown_benchmark_is_refused() -> None:
    with pytest.raises(SystemExit) as stopped:
        entry.main(["no-such-bench"])
    assert stopped.value.code == 2
