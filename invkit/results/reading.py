"""A finished study's kept outputs, read back: ``invkit.load_outputs`` and the accessor an
analysis that declares ``reads_outputs`` is given."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from invkit.errors import InvkitError
from invkit.results.outputs import (
    OutputRecord,
    Outputs,
    combined,
    folder,
    read_file,
    verified,
)
from invkit.results.store import STORE_NAME, Store


def _records(out_dir: Path) -> dict[tuple[str, str, str], OutputRecord]:
    path = Path(out_dir) / STORE_NAME
    if not path.is_file():
        raise InvkitError(f"{out_dir} holds no study ({STORE_NAME} is missing)")
    store = Store(path)
    try:
        return store.outputs()
    finally:
        store.close()


class StudyOutputs(Mapping[tuple[str, str], Outputs]):
    """Every model × dataset's kept outputs of a study, read (and verified) on first use:
    ``outputs[model, dataset]``, ``list(outputs)`` for the pairs kept."""

    def __init__(self, out_dir: str | Path, records: Mapping[tuple[str, str, str], OutputRecord]):
        self.out_dir = Path(out_dir)
        folder(self.out_dir)  # a link at outputs/ is refused before anything is read
        self.records = dict(records)
        self._read: dict[tuple[str, str], Outputs] = {}

    @classmethod
    def of(cls, out_dir: str | Path) -> StudyOutputs:
        return cls(out_dir, _records(Path(out_dir)))

    def _pairs(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((model, dataset) for model, dataset, _ in self.records))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs())

    def __len__(self) -> int:
        return len(self._pairs())

    def __getitem__(self, pair: tuple[str, str]) -> Outputs:
        if pair not in self._read:
            self._read[pair] = self._load(*pair)
        return self._read[pair]

    def _files(self, model: str, dataset: str) -> dict[str, OutputRecord]:
        """The files holding a model × dataset's kept outputs, oldest first (one record each)."""
        mine = [r for (m, d, _), r in self.records.items() if (m, d) == (model, dataset)]
        return {record.file: record for record in mine}

    def _load(self, model: str, dataset: str, check: bool = True) -> Outputs:
        files = self._files(model, dataset)
        if not files:
            kept = ", ".join(f"{m!r} × {d!r}" for m, d in self._pairs()) or "none"
            raise KeyError(
                f"the study in {self.out_dir} kept no outputs of {model!r} × {dataset!r} "
                f"(kept: {kept}); its run.outputs may be 'none'"
            )
        # oldest first: a transform kept by several passes is read from the newest
        try:
            parts = [
                read_file(verified(self.out_dir, r) if check else folder(self.out_dir) / r.file)
                for r in files.values()
            ]
        except InvkitError as error:
            raise InvkitError(f"{error}; `invkit study` on this folder keeps them anew") from None
        return parts[0] if len(parts) == 1 else combined(parts)

    def listing(self) -> list[dict[str, object]]:
        """What was kept, per model × dataset (read from the store and the files' headers,
        not their arrays): level, top-k, classes, images, views, transforms, bytes, files; or,
        for a file that cannot be read, ``error`` naming it."""
        rows: list[dict[str, object]] = []
        for model, dataset in self:
            files = self._files(model, dataset)
            try:
                outputs = self._load(model, dataset, check=False)
            except InvkitError as error:  # named, and the listing goes on
                rows.append({"model": model, "dataset": dataset, "error": str(error)})
                continue
            rows.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "level": outputs.level,
                    "topk": outputs.topk,
                    "classes": outputs.classes,
                    "images": len(outputs.indices),
                    "views": outputs.views,
                    "transforms": list(outputs.transforms),
                    "bytes": sum(r.bytes for r in files.values()),
                    "files": list(files),
                }
            )
        return rows

    def digest(self) -> list[tuple[str, ...]]:
        """What the kept outputs are, for a cache key: each record's file and SHA-256."""
        return sorted((*key, r.file, r.sha256) for key, r in self.records.items())


def load_per_view(out_dir: str | Path) -> list[dict[str, object]]:
    """Every cell's value on each view, from a study's store (``invkit.load_per_view``)."""
    path = Path(out_dir) / STORE_NAME
    if not path.is_file():
        raise InvkitError(f"{out_dir} holds no study ({STORE_NAME} is missing)")
    store = Store(path)
    try:
        views = store.view_values()
    finally:
        store.close()
    columns = ("model", "dataset", "transform", "measure")
    return [
        {**dict(zip(columns, key, strict=True)), "view": view, "magnitude": magnitude,
         "value": value}
        for key, rows in views.items()
        for view, magnitude, value in rows
    ]  # fmt: skip


def load_outputs(out_dir: str | Path, model: str, dataset: str) -> Outputs:
    """The outputs a study in ``out_dir`` kept of ``model`` on ``dataset`` (config labels), as
    numpy arrays memory-mapped from their file once its SHA-256 is verified."""
    try:
        return StudyOutputs.of(out_dir)[model, dataset]
    except KeyError as error:
        raise InvkitError(error.args[0]) from None
