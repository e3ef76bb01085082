"""The CSV logs of a run: ``train_log.csv`` (a row per step) and ``val_log.csv`` (a row per validation)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tinytribe._io import read_csv_columns


class CSVLog:
    """Rows appended to a CSV file; a column first seen widens the header. On resume, rows past the
    resumed step (written after the last checkpoint by a session that was then killed) are dropped, so
    the log matches the weights.

    Args:
        path: the file.
        columns: the first columns.
        resume_step: keep the rows up to this step (None: start the file afresh).
    """

    def __init__(self, path: Path, columns: list[str], resume_step: int | None):
        self.path, self.columns = path, list(columns)
        rows: list[dict] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = [r for r in reader if int(float(r["step"])) <= resume_step]
                self.columns = list(dict.fromkeys([*(reader.fieldnames or []), *columns]))
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        new = [k for k in row if k not in self.columns]
        if new:   # a recipe's terms, validation metrics: rewrite with the wider header
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            self.columns += new
            self._rewrite(rows)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def read_log(path: str | Path) -> dict[str, np.ndarray]:
    """A ``train_log.csv`` / ``val_log.csv`` as columns of floats (empty cells NaN), for plots."""
    return read_csv_columns(path)
