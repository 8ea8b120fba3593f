"""Progress for people: plain text bars redrawn in place on a terminal, one line per step otherwise.

::

    board = Board(sys.stdout)
    files = board.row("files uploaded", total=10)
    for path in paths:
        upload(path)
        files.advance()
        board.refresh()
    board.close()

On a terminal every row is a bar (``[########······] 5/10 files uploaded``) and the block is redrawn
in place; elsewhere (CI, a pipe) nothing is drawn while work goes on and each row prints a single line
when it finishes (``✓ 10/10 files uploaded (0.4 s)``), so logs stay short.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["Board", "Row", "render_bar"]


def render_bar(done: int, total: int | None, width: int = 24) -> str:
    """``[########················]``; an unknown total shows an empty bar."""
    if not total:
        return "[" + "·" * width + "]"
    filled = min(width, round(width * done / total))
    return "[" + "#" * filled + "·" * (width - filled) + "]"


@dataclass
class Row:
    """One step: a label, a count and, when known, a total."""

    label: str
    total: int | None = None
    done: int = 0
    note: str = ""
    finished: bool = False
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def advance(self, count: int = 1) -> None:
        self.done += count

    def set(self, done: int, total: int | None = None, note: str = "") -> None:
        self.done = done
        if total is not None:
            self.total = total
        self.note = note

    def finish(self, note: str | None = None) -> None:
        if note is not None:
            self.note = note
        if not self.finished:
            self.finished = True
            self.ended = time.monotonic()

    def count(self) -> str:
        if self.total is None:
            return f"{self.done}"
        digits = len(str(self.total))
        return f"{self.done:>{digits}}/{self.total}"

    def line(self, *, bar: bool) -> str:
        note = f" ({self.note})" if self.note else ""
        if bar:
            return f"   {render_bar(self.done, self.total)} {self.count()} {self.label}{note}"
        elapsed = (self.ended or time.monotonic()) - self.started
        mark = "✓" if self.finished else "…"
        return f"   {mark} {self.count()} {self.label}{note} ({elapsed:.1f} s)"


class Board:
    """Rows of progress written to ``stream``; ``tty`` defaults to ``stream.isatty()``."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.rows: list[Row] = []
        self._drawn = 0
        self._printed: set[int] = set()

    def row(self, label: str, total: int | None = None) -> Row:
        row = Row(label, total)
        self.rows.append(row)
        return row

    def refresh(self) -> None:
        if self.tty:
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F")
            for row in self.rows:
                self.stream.write("\x1b[2K" + row.line(bar=True) + "\n")
            self._drawn = len(self.rows)
        else:
            for index, row in enumerate(self.rows):
                if row.finished and index not in self._printed:
                    self.stream.write(row.line(bar=False) + "\n")
                    self._printed.add(index)
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state; rows that never finished are printed too."""
        if self.tty:
            self.refresh()
        else:
            for index, row in enumerate(self.rows):
                if index not in self._printed:
                    self.stream.write(row.line(bar=False) + "\n")
                    self._printed.add(index)
            self.stream.flush()
        self.rows.clear()
        self._drawn = 0
        self._printed.clear()
