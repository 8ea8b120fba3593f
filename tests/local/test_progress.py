"""Progress output: bars redrawn in place on a terminal, one line per finished step elsewhere."""

from __future__ import annotations

import io

import pytest

from local.progress import Board, render_bar

pytestmark = pytest.mark.unit


def test_bars() -> None:
    assert render_bar(0, 4, width=8) == "[········]"
    assert render_bar(2, 4, width=8) == "[####····]"
    assert render_bar(9, 4, width=8) == "[########]"
    assert render_bar(3, None, width=4) == "[····]"


def test_on_a_terminal_rows_are_redrawn_in_place() -> None:
    out = io.StringIO()
    board = Board(out, tty=True)
    files = board.row("files", total=2)
    board.row("jobs")
    board.refresh()
    files.advance()
    board.refresh()
    text = out.getvalue()
    assert text.count("\x1b[2F") == 1  # back up over the two rows once
    assert "[############············] 1/2 files" in text
    assert "[························] 0 jobs" in text


def test_without_a_terminal_each_step_prints_one_line_when_it_finishes() -> None:
    out = io.StringIO()
    board = Board(out, tty=False)
    files = board.row("files", total=2)
    jobs = board.row("jobs")
    for _ in range(2):
        files.advance()
        board.refresh()
    files.finish()
    board.refresh()
    board.refresh()
    jobs.set(3, 3, note="all COMPLETED")
    board.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("   ✓ 2/2 files (")
    assert lines[1].startswith("   … 3/3 jobs (all COMPLETED) (")
    assert "\x1b" not in out.getvalue()
