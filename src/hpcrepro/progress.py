"""Progress of long work on stderr: rich bars on a terminal, a few plain lines elsewhere.

One place decides how progress looks, so `prep`, `prep verify --checksums`, `demo` and
`image build` behave alike: on a terminal (stderr is a TTY and TERM is not 'dumb') a rich live
display with a bar, counts, rate and ETA per task, and the commands' messages printed above it;
piped, into a Slurm log or with --json, no bars: the messages as plain lines, and a task's
progress at most once every PLAIN_INTERVAL_S (a job log gets a line a minute, not one per chunk).
rich is imported only when a terminal shows the bars, so importing this module costs nothing.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

PLAIN_INTERVAL_S = 60.0


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether live displays belong on `stream` (stderr by default)."""
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def rate(size: float, seconds: float) -> str:
    """Bytes over seconds, as people read a transfer rate."""
    return f"{size / max(seconds, 1e-9) / 2**20:.1f} MiB/s"


class Task:
    """One measured piece of work (a split being packed, checksums being read)."""

    def __init__(self, board: Progress, description: str, total: float | None, unit: str) -> None:
        self.board = board
        self.description = description
        self.total = total
        self.unit = unit
        self.started = time.monotonic()
        self.completed = 0.0
        self.last_plain = self.started
        self.ident: Any = None
        if board.live is not None:
            self.ident = board.live.add_task(description, total=total, detail="")

    def update(self, completed: float, detail: str = "") -> None:
        """Set the count done so far; `detail` is extra text such as '1.20 GiB, 85.0 MiB/s'."""
        self.completed = completed
        if self.board.live is not None:
            self.board.live.update(self.ident, completed=completed, detail=detail)
            return
        now = time.monotonic()
        if now - self.last_plain >= PLAIN_INTERVAL_S:
            self.last_plain = now
            extra = f", {detail}" if detail else ""
            self.board.line(f"{self.description}: {self._count()}{extra}")

    def _count(self) -> str:
        done = f"{self.completed:g}"
        counted = f"{done}/{self.total:g}" if self.total else done
        return f"{counted} {self.unit}".rstrip()

    def finish(self, detail: str = "") -> None:
        """Mark the task complete (a bar fills; plain output says nothing more)."""
        if self.board.live is not None:
            total = self.total if self.total is not None else self.completed
            self.board.live.update(self.ident, completed=total, total=total, detail=detail)


class Progress:
    """A context for the progress of one command: `task()` for bars, `line()` for messages.

    `enabled=None` shows bars when stderr is a terminal; False never (a --json command).
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = on_terminal() if enabled is None else enabled
        self.live: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.live = RichProgress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}", markup=False),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True, highlight=False),
                transient=False,
            )
            self.live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def task(self, description: str, total: float | None, unit: str = "") -> Task:
        return Task(self, description, total, unit)

    def line(self, text: str) -> None:
        """A message: above the bars on a terminal, a plain stderr line otherwise."""
        if self.live is not None:
            from rich.text import Text

            self.live.console.print(Text(text))
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


class Steps:
    """Numbered steps of work whose own tools print to the terminal (an image build).

    A live bar would fight with the builder's output on the same terminal, so each step is one
    header line, '[2/4] building ... (0:00:12)': bold on a terminal, plain otherwise.
    """

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.enabled = on_terminal() if enabled is None else enabled
        self.started = time.monotonic()

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def step(self, text: str) -> None:
        """Start the next top-level step."""
        self.done += 1
        self._say(f"[{self.done}/{self.total}] {text} ({self._elapsed()})")

    def sub(self, index: int, count: int, text: str) -> None:
        """A step inside the current one (a Dockerfile instruction being replayed)."""
        self._say(f"  [{index}/{count}] {text} ({self._elapsed()})")

    def _say(self, line: str) -> None:
        sys.stdout.flush()  # the builder's output and ours stay in order
        if self.enabled:
            from rich.console import Console
            from rich.text import Text

            console = Console(stderr=True, highlight=False, soft_wrap=True)  # never re-wrapped
            console.print(Text(line, style="bold cyan"))
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
