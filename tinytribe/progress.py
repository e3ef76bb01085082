"""What a running job of notebook steps shows (``tinytribe.pipeline.run_steps``).

On a terminal, one line per step redrawn every second: the step, the notebook's section (its last
markdown heading) and cell, the time in the step and the time so far. In a log, one line per step
and per section, no redraws.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tinytribe.pipeline import Step


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class StepProgress:
    """What one running step shows: its section (the last markdown heading), cell and times."""

    def __init__(self, display: Progress, index: int, step: Step):
        self.display, self.index, self.step = display, index, step
        self.started = time.monotonic()
        self.section, self.cell_index, self.cells = "", 0, 0

    def cell(self, cell, index: int | None, count: int) -> None:
        self.cell_index, self.cells = (index or 0) + 1, count
        heading = cell.source.strip().splitlines()[0] if cell.cell_type == "markdown" and cell.source.strip() else ""
        if heading.startswith("#"):
            self.section = heading.lstrip("#").strip()
            self.display.section(self)

    def line(self) -> str:
        where = f" · {self.section}" if self.section else ""
        cells = f" · cell {self.cell_index}/{self.cells}" if self.cells else ""
        return (f"[{self.index}/{self.display.total}] {self.step.title}{where}{cells} · "
                f"{clock(time.monotonic() - self.started)} · total {clock(self.display.elapsed())}")


class Progress:
    """The terminal display of :func:`run_steps`: on a terminal one line per step, redrawn every second
    (step, section, cell, time in the step, time so far); in a log one line per step and section."""

    refresh_s = 1.0

    def __init__(self, total: int, stream: TextIO):
        self.total, self.stream = total, stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _write(self, text: str, *, redraw: bool = False) -> None:
        with self._lock:
            if self.tty:
                width = shutil.get_terminal_size((120, 20)).columns - 1
                self.stream.write("\r\033[K" + text[:width] + ("" if redraw else "\n"))
            elif not redraw:
                self.stream.write(text + "\n")
            self.stream.flush()

    def reused(self, index: int, step: Step, rec: dict) -> None:
        self._write(f"[{index}/{self.total}] {step.title}: reused (ran {rec.get('finished', '?')} "
                    f"in {clock(rec.get('seconds', 0))}; --force redoes it)")

    def section(self, progress: StepProgress) -> None:
        if not self.tty:
            self._write(f"    {progress.section}")

    @contextlib.contextmanager
    def step(self, index: int, step: Step) -> Iterator[StepProgress]:
        progress = StepProgress(self, index, step)
        stop = threading.Event()
        if self.tty:
            def tick() -> None:
                while not stop.wait(self.refresh_s):
                    self._write(progress.line(), redraw=True)
            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
        else:
            self._write(f"[{index}/{self.total}] {step.title} ...")
        ok = False
        try:
            yield progress
            ok = True
        finally:
            stop.set()
            if self.tty:
                ticker.join()
            took = clock(time.monotonic() - progress.started)
            self._write(f"[{index}/{self.total}] {step.title}: {'done' if ok else 'FAILED'} in {took} "
                        f"(total {clock(self.elapsed())})")
