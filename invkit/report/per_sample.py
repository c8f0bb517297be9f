"""Per-sample values as pandas DataFrames and as ``per_sample.parquet``: the store's
``samples`` table, one row per image of a cell, streamed in chunks so that millions of rows
never sit in memory at once."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invkit.paths import is_own, refuse_links, replacing
from invkit.results.store import Store

if TYPE_CHECKING:
    import pandas as pd

PARQUET_NAME = "per_sample.parquet"
PARQUET_KEY = "per_sample_parquet"  # store meta: what the file was written from, and its hash
CHUNK_ROWS = 1_000_000
# A DataFrame column may not share a name with a DataFrame attribute (``df.transform`` and
# ``df.mean`` are methods, ``df.index`` the row labels): the names that would, renamed.
FRAME_NAMES = {
    "transform": "transformation", "idx": "image", "mean": "normalize_mean",
    "std": "normalize_std",
}  # fmt: skip
SAMPLE_COLUMNS = ["model", "dataset", "transformation", "measure", "image", "value"]


def configured(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """The store columns a study's config selects: its models, datasets, transforms and
    measures (the store may hold cells of entries the config no longer names)."""
    return {
        column: [entry["name"] for entry in config[section]]
        for column, section in (("model", "models"), ("dataset", "datasets"),
                                ("transform", "transforms"), ("measure", "measures"))
    }  # fmt: skip


def sample_frames(
    store: Store, where: Mapping[str, Sequence[str]], rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The per-sample rows ``where`` selects, as DataFrames of exactly ``rows`` rows (the
    last one fewer), read one cell at a time."""
    import pandas as pd

    pending: list[pd.DataFrame] = []
    held = 0
    for key, samples in store.sample_cells(where):
        pending.append(_cell_frame(key, samples))
        held += len(samples)
        while held >= rows:
            joined = pd.concat(pending, ignore_index=True)
            yield joined.iloc[:rows].reset_index(drop=True)
            rest = joined.iloc[rows:].reset_index(drop=True)
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield pd.concat(pending, ignore_index=True)


def _cell_frame(
    key: tuple[str, str, str, str], samples: list[tuple[int, float | None]]
) -> pd.DataFrame:
    """One cell's per-sample rows: its keys repeated, image indices and values (NaN where the
    measure gave none)."""
    import numpy as np
    import pandas as pd

    count = len(samples)
    images = np.fromiter((i for i, _ in samples), dtype=np.int64, count=count)
    values = np.fromiter(
        (np.nan if v is None else v for _, v in samples), dtype=np.float64, count=count
    )
    columns = {name: [text] * count for name, text in zip(SAMPLE_COLUMNS[:4], key, strict=True)}
    return pd.DataFrame({**columns, "image": images, "value": values})


def _source_key(store: Store, where: Mapping[str, Sequence[str]]) -> str:
    """What the per-sample rows of the configured cells are made of: each cell with per-sample
    values, its fingerprint and when it was written (a recomputed cell changes it)."""
    from invkit.fingerprint import digest

    cells = store.cells().values()
    return digest(
        sorted(
            [*c.key, c.fingerprint, c.finished]
            for c in cells
            if c.per_sample and all(getattr(c, k) in v for k, v in where.items())
        )
    )


def write_parquet(out_dir: Path, store: Store, config: Mapping[str, Any]) -> Path | None:
    """Write ``per_sample.parquet`` from the store (skipped when the configured cells'
    per-sample values have not changed since invkit last wrote it, and the file is still
    the one it wrote); ``None`` when no cell has per-sample values. A file invkit did not
    write is never removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from invkit.fingerprint import file_sha256

    path = out_dir / PARQUET_NAME
    refuse_links(out_dir, [PARQUET_NAME])
    where = configured(config)
    key = _source_key(store, where)
    recorded = json.loads(store.get_meta(PARQUET_KEY) or "{}")
    if recorded.get("key") == key and is_own(path, recorded.get("sha256", "")):
        return path
    frames = sample_frames(store, where)
    first = next(frames, None)
    if first is None:
        if recorded and is_own(path, recorded.get("sha256", "")):
            path.unlink()
        store.set_meta(PARQUET_KEY, "{}")
        return None
    schema = pa.Schema.from_pandas(first, preserve_index=False)
    with replacing(path) as temporary, pq.ParquetWriter(temporary, schema) as writer:
        for frame in chain([first], frames):  # one chunk in memory at a time
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
    store.set_meta(PARQUET_KEY, json.dumps({"key": key, "sha256": file_sha256(path)}))
    return path
