"""The ``hf:`` dataset loader: Hugging Face ``datasets`` (the optional extra ``invkit[hf]``).

``hf:PATH`` reads a folder written by ``save_to_disk``, or a folder of data files (parquet,
csv, images) as ``datasets.load_dataset`` does; ``hf:NAME`` a hub dataset, from the local
cache (offline too) or downloaded where the hub is reachable. Class names come from the
label column's ``ClassLabel`` feature, so they match a model's classes by name or index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invkit.errors import InvkitError
from invkit.paths import resolve_path
from invkit.plugin.hookspecs import hookimpl

INSTALL = "pip install 'invkit[hf]' (the datasets library)"


def _resolve(rest: str, base_dir: Path) -> str:
    """A folder (relative to the config's) when one exists there; else a hub dataset name."""
    candidate = resolve_path(rest, base_dir)
    return candidate if Path(candidate).exists() else rest


def _is_saved(rest: str) -> bool:
    return any((Path(rest) / n).is_file() for n in ("dataset_dict.json", "state.json"))


def _data_files(rest: str) -> list[tuple[str, int, int]]:
    """The files a folder of data files reads, wherever its README's ``data_files`` point
    (outside the folder too): each resolved path, size and modification time."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(rest)
    except Exception as error:  # the library raises many kinds
        raise InvkitError(
            f"cannot open hf:{rest} ({type(error).__name__}: {error}); a folder must come from "
            "save_to_disk or hold data files (parquet, csv, images)"
        ) from None
    listed = []
    for files in (builder.config.data_files or {}).values():
        for name in files:
            path = Path(name).resolve()
            info = path.stat()
            listed.append((str(path), info.st_size, info.st_mtime_ns))
    return sorted(set(listed))


def _fingerprint(rest: str) -> Any:
    """A saved folder: its files' listing. A folder of data files: its listing and every file
    it reads, inside or outside it. A hub dataset: its name (pin ``revision`` to fix its
    version, which is then in the fingerprint through the parameters)."""
    from invkit.fingerprint import path_digest

    if not Path(rest).exists():
        return {"hub": rest}
    if _is_saved(rest):
        return path_digest(rest)
    return {"folder": path_digest(rest), "reads": _data_files(rest)}


def _arrow_cache(rest: str) -> str:
    """Where the Arrow copy of a folder of data files is built: invkit's cache, in a folder
    named by the digest of the files it reads, so an edited file is never served stale."""
    from invkit.fingerprint import digest
    from invkit.paths import cache_root

    return str(cache_root() / "hf" / digest(_fingerprint(rest))[:24])


def _check_labels(rest: str, column: str, feature: Any, labels: list[Any]) -> None:
    """Class indices only: a ClassLabel or whole numbers ≥ 0; a missing label, a fraction or
    text is refused, naming the column and the first offending row."""
    import datasets

    where = f"hf:{rest} label column {column!r}"
    unlabeled = 'label_column = "" for an unlabeled set'
    for row, label in enumerate(labels):
        if label is None:
            raise InvkitError(
                f"{where} has no label in row {row}; label every image, or {unlabeled}"
            )
        whole = isinstance(label, int) or (isinstance(label, float) and label.is_integer())
        if isinstance(label, bool) or not whole or label < 0:
            raise InvkitError(
                f"{where} holds {label!r} in row {row}, which is not a class index (a whole "
                f"number ≥ 0 or a ClassLabel name); fix the labels, or {unlabeled}"
            )
    if not isinstance(feature, datasets.ClassLabel | datasets.Value):
        raise InvkitError(f"{where} holds {feature}, not class indices; or {unlabeled}")


class HuggingFaceDataset:
    """A Hugging Face dataset: ``hf:path/to/saved`` (``save_to_disk``) or ``hf:NAME`` (the hub).

    ``split`` picks the part (needed when there are several); ``image_column`` and
    ``label_column`` name the columns (``label_column = ""``: unlabeled). Classes are the label
    column's ``ClassLabel`` names; plain integer labels are taken as class indices as given.
    ``revision`` pins a hub dataset's version.
    """

    name = "hf"
    resolve_spec = staticmethod(_resolve)
    spec_fingerprint = staticmethod(_fingerprint)

    def __init__(
        self,
        rest: str,
        split: str = "",
        image_column: str = "image",
        label_column: str = "label",
        revision: str = "",
    ):
        try:
            import datasets
        except ImportError:
            raise InvkitError(
                f"hf:{rest} needs the Hugging Face datasets library: {INSTALL}"
            ) from None
        if not rest:
            raise InvkitError(
                "an hf: spec names a saved folder or a hub dataset, e.g. hf:data/sketch"
            )
        local = Path(rest).exists()
        try:
            if local and _is_saved(rest):
                data = datasets.load_from_disk(rest)
            else:  # a hub name (from the hub's cache), or a folder of data files
                cache = _arrow_cache(rest) if local else None
                data = datasets.load_dataset(
                    rest, split=split or None, revision=revision or None, cache_dir=cache
                )
        except InvkitError:
            raise
        except Exception as error:  # the library raises many kinds: no network, no such set
            raise InvkitError(
                f"cannot open hf:{rest} ({type(error).__name__}: {error}); a hub dataset opens "
                "from the local cache or where the hub is reachable, a folder must come from "
                "save_to_disk"
            ) from None
        if isinstance(data, datasets.DatasetDict):
            if not split and len(data) == 1:
                split = next(iter(data))
            if split not in data:
                raise InvkitError(
                    f"hf:{rest} has the splits {', '.join(data)}; choose one with "
                    f'params = {{ split = "{next(iter(data))}" }}'
                )
            data = data[split]
        columns = list(data.column_names)
        for what, column in (("image_column", image_column), ("label_column", label_column)):
            if column and column not in columns:
                raise InvkitError(
                    f"hf:{rest} has no column {column!r} (its {what}); its columns: "
                    f"{', '.join(columns)}"
                )
        if image_column and not isinstance(data.features[image_column], datasets.Image):
            raise InvkitError(
                f"hf:{rest} column {image_column!r} holds {data.features[image_column]}, not "
                "images (paths in a CSV or parquet file stay text); for image files, use an "
                "image folder with a metadata.csv whose file_name column names them, or declare "
                "the column's dtype as image in the README's dataset_info features"
            )
        feature = data.features[label_column] if label_column else None
        if label_column:
            _check_labels(rest, label_column, feature, data[label_column])
        self.classes = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        self.data = data
        self.rest = rest
        self.image_column, self.label_column = image_column, label_column

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        row = self.data[index]
        label = int(row[self.label_column]) if self.label_column else -1
        return row[self.image_column], label

    def describe(self, index: int) -> str:
        return f"hf:{self.rest} row {index}"


@hookimpl
def register_datasets(register):
    register(HuggingFaceDataset)
