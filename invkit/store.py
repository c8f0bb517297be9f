"""The results store: one SQLite file per study output directory, resumable and crash-safe.

Each model × dataset pass writes all its cells (and their per-sample rows) in one transaction,
so a killed study leaves either a whole pass or none of it. WAL journaling keeps the file
readable while a study writes. A cell carries the fingerprint of everything that determines
its value; a rerun skips cells whose fingerprint is unchanged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from invkit.errors import InvkitError

STORE_NAME = "results.sqlite"
SCHEMA_VERSION = "2"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    model TEXT NOT NULL, dataset TEXT NOT NULL, transform TEXT NOT NULL, measure TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    value REAL, low REAL, high REAL,
    accuracy REAL, images INTEGER NOT NULL, labeled INTEGER NOT NULL, skipped INTEGER NOT NULL,
    higher_is_invariant INTEGER, per_sample INTEGER NOT NULL,
    seconds REAL, finished TEXT NOT NULL,
    PRIMARY KEY (model, dataset, transform, measure)
);
CREATE TABLE IF NOT EXISTS samples (
    model TEXT NOT NULL, dataset TEXT NOT NULL, transform TEXT NOT NULL, measure TEXT NOT NULL,
    idx INTEGER NOT NULL, value REAL,
    PRIMARY KEY (model, dataset, transform, measure, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL, dataset TEXT NOT NULL, view TEXT NOT NULL, idx INTEGER NOT NULL,
    target INTEGER, prediction INTEGER, confidence REAL, correct INTEGER,
    PRIMARY KEY (model, dataset, view, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bad_images (
    model TEXT NOT NULL, dataset TEXT NOT NULL, idx INTEGER NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (model, dataset, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    model TEXT NOT NULL, dataset TEXT NOT NULL, error TEXT NOT NULL, traceback TEXT,
    finished TEXT NOT NULL,
    PRIMARY KEY (model, dataset)
);
"""


@dataclass(frozen=True)
class Cell:
    """One (model, dataset, transform, measure) result, as stored."""

    model: str
    dataset: str
    transform: str
    measure: str
    fingerprint: str
    value: float | None
    low: float | None
    high: float | None
    accuracy: float | None
    images: int
    labeled: int
    skipped: int
    higher_is_invariant: bool | None
    per_sample: bool
    seconds: float
    finished: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.dataset, self.transform, self.measure)


CELL_COLUMNS = [f.name for f in fields(Cell)]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """A study's SQLite results file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.connection = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
            self.connection.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            raise InvkitError(
                f"cannot open the results store {str(self.path)!r}: {error} (remove it, or run "
                "with --fresh, to start over)"
            ) from None
        stored = self.get_meta("schema_version")
        if stored is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif stored != SCHEMA_VERSION:
            raise InvkitError(
                f"{self.path} was written by an invkit with store schema {stored}; this one "
                f"reads schema {SCHEMA_VERSION}: use another output directory or --fresh"
            )

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def get_meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def cells(self) -> dict[tuple[str, str, str, str], Cell]:
        rows = self.connection.execute(f"SELECT {', '.join(CELL_COLUMNS)} FROM cells")
        result = {}
        for row in rows:
            values = dict(zip(CELL_COLUMNS, row, strict=True))
            values["per_sample"] = bool(values["per_sample"])
            if values["higher_is_invariant"] is not None:
                values["higher_is_invariant"] = bool(values["higher_is_invariant"])
            cell = Cell(**values)
            result[cell.key] = cell
        return result

    def write_pass(
        self,
        cells: Iterable[Cell],
        samples: dict[tuple[str, str, str, str], tuple[list[int], list[float]]],
        predictions: list[tuple[Any, ...]],
        bad_images: Sequence[tuple[int, str]] = (),
    ) -> None:
        """Write one model × dataset pass: cells, per-sample values, predictions, bad images."""
        cells = list(cells)
        finished = now()
        with self.transaction() as db:
            for cell in cells:
                db.execute(
                    "DELETE FROM samples WHERE model=? AND dataset=? AND transform=? AND measure=?",
                    cell.key,
                )
                row = (*astuple(cell)[:-1], finished)
                db.execute(
                    f"INSERT OR REPLACE INTO cells ({', '.join(CELL_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(CELL_COLUMNS))})",
                    row,
                )
            for key, (indices, values) in samples.items():
                db.executemany(
                    "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                    ((*key, i, v) for i, v in zip(indices, values, strict=True)),
                )
            if predictions:
                model, dataset = predictions[0][0], predictions[0][1]
                views = sorted({p[2] for p in predictions})
                db.executemany(
                    "DELETE FROM predictions WHERE model=? AND dataset=? AND view=?",
                    ((model, dataset, v) for v in views),
                )
                db.executemany(
                    "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", predictions
                )
            if cells:
                pair = (cells[0].model, cells[0].dataset)
                db.execute("DELETE FROM failures WHERE model=? AND dataset=?", pair)
                db.execute("DELETE FROM bad_images WHERE model=? AND dataset=?", pair)
                db.executemany(
                    "INSERT INTO bad_images VALUES (?, ?, ?, ?)",
                    ((*pair, index, error) for index, error in bad_images),
                )

    def record_failure(self, model: str, dataset: str, error: str, traceback: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)",
                (model, dataset, error, traceback, now()),
            )

    def failures(self) -> list[dict[str, Any]]:
        rows = self.connection.execute(
            "SELECT model, dataset, error, traceback, finished FROM failures "
            "ORDER BY model, dataset"
        )
        return [
            dict(zip(("model", "dataset", "error", "traceback", "finished"), r, strict=True))
            for r in rows
        ]

    def set_config(self, config: dict[str, Any]) -> None:
        self.set_meta("config", json.dumps(config, sort_keys=True))

    def config(self) -> dict[str, Any] | None:
        text = self.get_meta("config")
        return json.loads(text) if text else None
