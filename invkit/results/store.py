"""The results store: one SQLite file per study output directory, resumable and crash-safe.

Each model × dataset pass writes all its cells (and their per-sample rows) in one transaction,
so a killed study leaves either a whole pass or none of it. WAL journaling keeps the file
readable while a study writes. A cell carries the fingerprint of everything that determines
its value; a rerun skips cells whose fingerprint is unchanged.

The store knows when it is not whole: it is opened with SQLite's ``quick_check``; each cell row
carries a checksum of its values and its per-sample rows, verified before the cell is reused;
and the file's identity (device, inode) is checked after each write, so a store deleted or
replaced under a running study is an error, not a quiet loss. Any SQLite or file-system
failure is a ``StorageError`` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import astuple, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from invkit.errors import InvkitError, StorageError
from invkit.paths import refuse_links
from invkit.plugin.passes import Cell
from invkit.results.outputs import OutputRecord

STORE_NAME = "results.sqlite"
SCHEMA_VERSION = "4"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    model TEXT NOT NULL, dataset TEXT NOT NULL, transform TEXT NOT NULL, measure TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    value REAL, low REAL, high REAL,
    accuracy REAL, images INTEGER NOT NULL, labeled INTEGER NOT NULL, skipped INTEGER NOT NULL,
    higher_is_invariant INTEGER, per_sample INTEGER NOT NULL,
    seconds REAL, matching TEXT NOT NULL, finished TEXT NOT NULL, checksum TEXT NOT NULL,
    PRIMARY KEY (model, dataset, transform, measure)
);
CREATE TABLE IF NOT EXISTS samples (
    model TEXT NOT NULL, dataset TEXT NOT NULL, transform TEXT NOT NULL, measure TEXT NOT NULL,
    idx INTEGER NOT NULL, value REAL,
    PRIMARY KEY (model, dataset, transform, measure, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    model TEXT NOT NULL, dataset TEXT NOT NULL, transform TEXT NOT NULL,
    fingerprint TEXT NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
    level TEXT NOT NULL, topk INTEGER NOT NULL, classes INTEGER NOT NULL,
    images INTEGER NOT NULL, finished TEXT NOT NULL,
    PRIMARY KEY (model, dataset, transform)
);
CREATE TABLE IF NOT EXISTS view_values (
    model TEXT NOT NULL, dataset TEXT NOT NULL, transform TEXT NOT NULL, measure TEXT NOT NULL,
    position INTEGER NOT NULL, view TEXT NOT NULL, magnitude REAL, value REAL,
    checksum TEXT NOT NULL,
    PRIMARY KEY (model, dataset, transform, measure, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs_verified (
    file TEXT PRIMARY KEY, sha256 TEXT NOT NULL, stamp TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bad_images (
    model TEXT NOT NULL, dataset TEXT NOT NULL, idx INTEGER NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (model, dataset, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
    model TEXT PRIMARY KEY, preprocessing TEXT NOT NULL, finished TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    model TEXT NOT NULL, dataset TEXT NOT NULL, error TEXT NOT NULL, traceback TEXT,
    finished TEXT NOT NULL,
    PRIMARY KEY (model, dataset)
);
"""


CELL_COLUMNS = [f.name for f in fields(Cell)]
OUTPUT_COLUMNS = [f.name for f in fields(OutputRecord)]


def store_files(name: str = STORE_NAME) -> tuple[str, str, str]:
    """The store's file and SQLite's two beside it (write-ahead log, shared memory)."""
    return (name, f"{name}-wal", f"{name}-shm")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _checksum(row: Sequence[Any], samples: Iterable[tuple[int, float]]) -> str:
    """SHA-256 of a cell row (as SQLite stores it: booleans as 0/1) and its per-sample rows."""
    values = [int(v) if isinstance(v, bool) else v for v in row]
    text = json.dumps([values, list(samples)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


class Store:
    """A study's SQLite results file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        refuse_links(self.path.parent, store_files(self.path.name))
        try:
            self.connection = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            problems = [row[0] for row in self.connection.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError(f"integrity check failed: {'; '.join(problems[:3])}")
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
            self.connection.executescript(SCHEMA)
        except sqlite3.OperationalError as error:  # the disk or the folder, not the file
            raise StorageError(
                f"cannot open the results store {str(self.path)!r} ({error}); check the free "
                "space and the permissions of its folder"
            ) from None
        except sqlite3.DatabaseError as error:
            raise StorageError(
                f"the results store {str(self.path)!r} is damaged or unreadable ({error}); move "
                "it aside, or run with --fresh, to start over"
            ) from None
        self.identity = _identity(self.path)
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
        """One atomic write; a storage failure (disk full, read-only, folder gone) becomes a
        ``StorageError`` naming the file, and nothing of the transaction is kept. Writes made
        inside it (``write_pass`` several times) join it: one commit for all of them."""
        if self.connection.in_transaction:
            yield self.connection
            return
        try:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                if self.connection.in_transaction:
                    self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")
        except sqlite3.Error as error:
            raise StorageError(
                f"cannot write the results store {str(self.path)!r}: {error}; every pass stored "
                "before this one is kept: free space or fix the folder's permissions, then rerun "
                "to resume"
            ) from None
        self.check_identity()

    def check_identity(self) -> None:
        """Fail if the store file was deleted or replaced since it was opened: what this run
        wrote would otherwise be lost without a word."""
        if _identity(self.path) != self.identity:
            raise StorageError(
                f"the results store {str(self.path)!r} was deleted or replaced while the study "
                "ran; the results written since then are not in it. Rerun the study to compute "
                "them again"
            )

    def get_meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _samples(self, key: tuple[str, str, str, str]) -> list[tuple[int, float]]:
        return self.connection.execute(
            "SELECT idx, value FROM samples "
            "WHERE model=? AND dataset=? AND transform=? AND measure=? ORDER BY idx",
            key,
        ).fetchall()

    def sample_cells(
        self, where: Mapping[str, Sequence[str]]
    ) -> Iterator[tuple[tuple[str, str, str, str], list[tuple[int, float | None]]]]:
        """Each cell with per-sample values whose model, dataset, transform and measure are
        among ``where``'s (a column → its allowed values), in key order, with its rows
        (index, value) in index order: one cell's rows at a time, so millions stream through."""
        clauses, arguments = ["per_sample = 1"], []
        for column in ("model", "dataset", "transform", "measure"):
            if column in where:
                values = list(where[column])
                clauses.append(f"{column} IN ({', '.join('?' * len(values)) or 'NULL'})")
                arguments += values
        keys = self.connection.execute(
            f"SELECT model, dataset, transform, measure FROM cells WHERE {' AND '.join(clauses)}"
            " ORDER BY model, dataset, transform, measure",
            arguments,
        ).fetchall()
        for key in keys:
            yield tuple(key), self._samples(tuple(key))

    def damaged(self) -> list[tuple[str, str, str, str]]:
        """Keys of the cells whose row, per-sample values or per-view values no longer match
        their checksums."""
        rows = self.connection.execute(f"SELECT {', '.join(CELL_COLUMNS)}, checksum FROM cells")
        damaged = {
            tuple(row[:4])
            for row in rows
            if _checksum(row[:-1], self._samples(tuple(row[:4]))) != row[-1]
        }
        views = self.connection.execute("SELECT * FROM view_values")
        damaged |= {tuple(row[:4]) for row in views if _checksum(row[:-1], []) != row[-1]}
        return sorted(damaged)

    def view_values(self) -> dict[tuple[str, str, str, str], list[tuple[str, float | None, float]]]:
        """Each cell's value on each view, in view order: (view name, magnitude, value)."""
        rows = self.connection.execute(
            "SELECT model, dataset, transform, measure, view, magnitude, value FROM view_values "
            "ORDER BY model, dataset, transform, measure, position"
        )
        result: dict[tuple[str, str, str, str], list[tuple[str, float | None, float]]] = {}
        for row in rows:
            result.setdefault(tuple(row[:4]), []).append(tuple(row[4:]))
        return result

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
        outputs: Sequence[OutputRecord] = (),
        bad_images: Sequence[tuple[int, str]] = (),
        preprocessing: Mapping[str, Any] | None = None,
        views: Mapping[tuple[str, str, str, str], Sequence[tuple[str, float | None, float]]]
        | None = None,
    ) -> None:
        """Write one model × dataset pass: cells, each cell's value on each view, per-sample
        values, the record of its kept outputs file (written before), bad images, and the
        preprocessing the model used."""
        cells = list(cells)
        finished = now()
        with self.transaction() as db:
            if cells and preprocessing is not None:
                db.execute(
                    "INSERT OR REPLACE INTO models VALUES (?, ?, ?)",
                    (cells[0].model, json.dumps(dict(preprocessing), sort_keys=True), finished),
                )
            for cell in cells:
                for table in ("samples", "view_values"):
                    db.execute(
                        f"DELETE FROM {table} "
                        "WHERE model=? AND dataset=? AND transform=? AND measure=?",
                        cell.key,
                    )
                db.executemany(
                    "INSERT INTO view_values VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        (*cell.key, position, *row, _checksum([*cell.key, position, *row], []))
                        for position, row in enumerate((views or {}).get(cell.key, ()))
                    ),
                )
                row = (*astuple(cell)[:-1], finished)
                indices, values = samples.get(cell.key, ([], []))
                checksum = _checksum(row, sorted(zip(indices, values, strict=True)))
                db.execute(
                    f"INSERT OR REPLACE INTO cells ({', '.join(CELL_COLUMNS)}, checksum) "
                    f"VALUES ({', '.join('?' * (len(CELL_COLUMNS) + 1))})",
                    (*row, checksum),
                )
            for key, (indices, values) in samples.items():
                db.executemany(
                    "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                    ((*key, i, v) for i, v in zip(indices, values, strict=True)),
                )
            db.executemany(
                f"INSERT OR REPLACE INTO outputs ({', '.join(OUTPUT_COLUMNS)}, finished) "
                f"VALUES ({', '.join('?' * (len(OUTPUT_COLUMNS) + 1))})",
                ((*astuple(record), finished) for record in outputs),
            )
            if cells:
                pair = (cells[0].model, cells[0].dataset)
                db.execute("DELETE FROM failures WHERE model=? AND dataset=?", pair)
                db.execute("DELETE FROM bad_images WHERE model=? AND dataset=?", pair)
                db.executemany(
                    "INSERT INTO bad_images VALUES (?, ?, ?, ?)",
                    ((*pair, index, error) for index, error in bad_images),
                )

    def outputs(self) -> dict[tuple[str, str, str], OutputRecord]:
        """The kept outputs the store records, by (model, dataset, transform), oldest first."""
        columns = ", ".join(OUTPUT_COLUMNS)
        rows = self.connection.execute(f"SELECT {columns} FROM outputs ORDER BY rowid")
        records = (OutputRecord(*row) for row in rows)
        return {(r.model, r.dataset, r.transform): r for r in records}

    def forget_outputs(self, files: Iterable[str]) -> None:
        """Drop the records of these outputs files (missing or damaged ones)."""
        files = list(files)
        with self.transaction() as db:
            db.executemany("DELETE FROM outputs WHERE file = ?", ((name,) for name in files))
            db.executemany("DELETE FROM outputs_verified WHERE file = ?", ((f,) for f in files))

    def verified_stamps(self) -> dict[str, tuple[str, str]]:
        """Each outputs file whose bytes were last hashed whole: its SHA-256 then and its stamp
        (inode, size, modification and status-change times) at that moment."""
        rows = self.connection.execute("SELECT file, sha256, stamp FROM outputs_verified")
        return {file: (sha256, stamp) for file, sha256, stamp in rows}

    def remember_verified(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """Record (file, SHA-256, stamp) for files just hashed whole and found as recorded."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO outputs_verified VALUES (?, ?, ?)", entries)

    def record_failure(self, model: str, dataset: str, error: str, traceback: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)",
                (model, dataset, error, traceback, now()),
            )

    def bad_images(self) -> dict[tuple[str, str], list[str]]:
        """The unreadable images each pass skipped (why, naming the file), by model × dataset."""
        rows = self.connection.execute(
            "SELECT model, dataset, error FROM bad_images ORDER BY model, dataset, idx"
        )
        skipped: dict[tuple[str, str], list[str]] = {}
        for model, dataset, error in rows:
            skipped.setdefault((model, dataset), []).append(error)
        return skipped

    def failures(self) -> list[dict[str, Any]]:
        rows = self.connection.execute(
            "SELECT model, dataset, error, traceback, finished FROM failures "
            "ORDER BY model, dataset"
        )
        return [
            dict(zip(("model", "dataset", "error", "traceback", "finished"), r, strict=True))
            for r in rows
        ]

    def model_inputs(self) -> dict[str, dict[str, Any]]:
        """The preprocessing each model actually used, as its last pass recorded it."""
        rows = self.connection.execute("SELECT model, preprocessing FROM models ORDER BY model")
        return {model: json.loads(text) for model, text in rows}

    def set_config(self, config: dict[str, Any]) -> None:
        self.set_meta("config", json.dumps(config, sort_keys=True))

    def config(self) -> dict[str, Any] | None:
        text = self.get_meta("config")
        return json.loads(text) if text else None
