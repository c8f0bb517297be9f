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


def _fingerprint(rest: str) -> Any:
    """A local folder: its files' listing. A hub dataset: its name (pin ``revision`` to fix
    its version, which is then in the fingerprint through the parameters)."""
    from invkit.fingerprint import path_digest

    return path_digest(rest) if Path(rest).exists() else {"hub": rest}


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
        try:
            saved = any((Path(rest) / n).is_file() for n in ("dataset_dict.json", "state.json"))
            if saved:
                data = datasets.load_from_disk(rest)
            else:  # a hub name, or a folder of data files (parquet, csv, images)
                data = datasets.load_dataset(rest, split=split or None, revision=revision or None)
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
        feature = data.features[label_column] if label_column else None
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
