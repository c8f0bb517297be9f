"""Kept outputs: each model × dataset pass's per-image outputs, one safetensors file per pass.

A file holds, for every image the pass read (``indices``, ``targets``: the model's class index,
-1 when unlabeled) and every view (the original, then each transform's views), the top-k class
indices and their softmax probabilities, the log-sum-exp of the logits and the entropy of the
softmax; at the ``full`` level also the logits (float32, after any class subset: the values the
pass took the softmax of). safetensors runs no code when read, and its arrays are read here as
memory maps. ``docs/outputs.md`` says what each level can answer.

Files are written whole (a temporary name, then one rename); the store records each file's
SHA-256 and size, and a file is verified before its numbers are used again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat as stat_module
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from invkit.errors import InvkitError, unwritable_file
from invkit.fingerprint import file_sha256
from invkit.paths import (
    TEMPORARY_SUFFIX,
    create_own,
    is_own,
    link_error,
    refuse_links,
    replacing,
)
from invkit.plugin.passes import KeptOutputs

FORMAT = "invkit-outputs/1"
FOLDER = "outputs"
STAGING = "staging"  # where a worker writes a full file for the driver to adopt
DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}
CHUNK_BYTES = 16 * 2**20
GRAM_MAX_CLASSES = 4096  # PᵀP (K × K float64) is kept up to 128 MB: ImageNet-1k's is 8 MB
SUMMARY_FIELDS = ("top_indices", "top_probs", "logsumexp", "entropy")
STAGED_NAME = re.compile(r"^[0-9a-f]{32}(\.safetensors)?$")  # a worker's token (uuid4 hex)


def reads_top(measure: Any) -> int | None:
    """What a measure reads of each softmax row: the top-k (``k``) or all of it (``None``).

    A measure declares it with ``reads = "top1"`` / ``"top5"`` / ``"softmax"``; one that
    declares nothing reads the full softmax. A measure that reads the model itself
    (``reads = "model"``: a derivative) is computed in a pass, never from kept outputs."""
    reads = getattr(measure, "reads", "softmax")
    if reads in ("softmax", "model"):
        return None
    found = re.fullmatch(r"top([1-9][0-9]*)", str(reads))
    if not found:
        raise InvkitError(
            f"measure {measure!r} declares reads = {reads!r}; use 'softmax' (all of each "
            "softmax row), 'topK' such as 'top1' or 'top5' (its K largest probabilities), or "
            "'model' (a derivative through the model: docs/hooks.md)"
        )
    return int(found.group(1))


def reads_model(measure: Any) -> bool:
    """Whether a measure reads the model itself (``reads = "model"``), in a pass only."""
    return getattr(measure, "reads", "softmax") == "model"


@dataclass(frozen=True)
class OutputRecord:
    """What the store knows of one transform's kept outputs for one model × dataset: the file
    holding them (with the original's), what it determines, and how much it kept."""

    model: str
    dataset: str
    transform: str
    fingerprint: str
    file: str  # name inside the outputs folder
    sha256: str
    bytes: int
    level: str
    topk: int
    classes: int
    images: int

    def serves(self, top: int | None) -> bool:
        """Whether a measure reading ``top`` (``reads_top``) can be computed from this file."""
        if self.level == "full":
            return True
        return top is not None and self.topk >= min(top, self.classes)

    def covers(self, level: str, topk: int) -> bool:
        """Whether this file keeps at least what ``run.outputs`` (``summary`` or ``full``) and
        ``run.outputs_topk`` ask."""
        enough_top = self.topk >= min(topk, self.classes)
        return enough_top and (level == "summary" or self.level == "full")


@dataclass
class Spilled:
    """An array written row block by row block to a raw file (full logits: never all in
    memory); ``rows`` grows as blocks are appended."""

    path: Path
    dtype: np.dtype
    row_shape: tuple[int, ...]
    rows: int = 0

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise InvkitError(
                f"outputs {self.path.name}: rows of shape {block.shape[1:]} after rows of "
                f"shape {self.row_shape}"
            )
        try:
            with open(self.path, "ab") as handle:
                handle.write(block.tobytes())
        except OSError as error:
            raise unwritable_file(self.path, error) from None
        self.rows += block.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.row_shape)

    def blocks(self) -> Iterable[bytes]:
        with open(self.path, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk


def _blocks(array: np.ndarray | Spilled) -> Iterable[bytes]:
    if isinstance(array, Spilled):
        yield from array.blocks()
        return
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, CHUNK_BYTES):
        yield flat[start : start + CHUNK_BYTES].tobytes()


def write_file(
    path: Path, arrays: Mapping[str, np.ndarray | Spilled], metadata: Mapping[str, str]
) -> tuple[str, int]:
    """Write ``arrays`` as one safetensors file at ``path`` (created, never through a link);
    returns its SHA-256 and size. The header is laid out in ``arrays``' order, padded to 8
    bytes, as the format asks."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, array in arrays.items():
        dtype = np.dtype(array.dtype)
        if dtype not in CODES:
            raise InvkitError(f"outputs: {name} has dtype {dtype}, which is not kept")
        size = int(np.prod(array.shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {
            "dtype": CODES[dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    digest = hashlib.sha256()
    descriptor = create_own(path, os.O_EXCL | os.O_TRUNC)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for block in (struct.pack("<Q", len(text)), text):
                handle.write(block)
                digest.update(block)
            for array in arrays.values():
                for block in _blocks(array):
                    handle.write(block)
                    digest.update(block)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:  # nothing half-written is left behind
        path.unlink(missing_ok=True)
        raise unwritable_file(path, error) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), path.stat().st_size


def regular_file(path: Path) -> os.stat_result:
    """``path``'s status, once it is known to be a regular file (not a link, a FIFO that would
    block a reader, a device or a folder); else an ``InvkitError`` naming it."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise InvkitError(f"kept outputs {path} are missing") from None
    if stat_module.S_ISLNK(info.st_mode):
        raise link_error([path])
    if not stat_module.S_ISREG(info.st_mode):
        raise InvkitError(
            f"kept outputs {path} are not a regular file; invkit reads only its own files"
        )
    return info


def _malformed(path: Path, what: str) -> InvkitError:
    return InvkitError(
        f"kept outputs {path} are not a readable outputs file ({what}); `invkit study` on its "
        "folder keeps them anew"
    )


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (checked against the file's size) and where its data starts;
    anything malformed is an ``InvkitError`` naming the file, never a traceback."""
    size = regular_file(path).st_size
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        raw = handle.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < length <= min(size - 8, 100 * 2**20):
            raise _malformed(path, "its header is cut or too long")
        text = handle.read(length)
    try:
        header = json.loads(text)
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        end = max([_extent(name, entry) for name, entry in header.items()], default=0)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise _malformed(path, f"{type(error).__name__}: {error}") from None
    start = 8 + length
    if start + end != size:
        raise _malformed(path, f"it holds {size} bytes, its header describes {start + end}")
    return header, start


def _extent(name: str, entry: Any) -> int:
    """Where one array of a header ends, once its type, shape and offsets agree."""
    if name == "__metadata__":
        if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
            raise TypeError("__metadata__ is not a table of texts")
        return 0
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ValueError(f"{name} has the shape {shape!r}, not a list of whole numbers ≥ 0")
    if entry["dtype"] not in DTYPES:
        raise ValueError(f"{name} has the type {entry['dtype']!r}, which is not kept")
    begin, stop = offsets
    if not all(isinstance(n, int) and n >= 0 for n in (begin, stop)):
        raise ValueError(f"{name} has the offsets {offsets!r}")
    count = math.prod(shape)
    if stop - begin != count * DTYPES[entry["dtype"]]().itemsize:
        raise ValueError(f"{name} does not match its stated shape and type")
    return stop


@dataclass
class Outputs:
    """One model's kept outputs on one dataset, as numpy arrays (memory-mapped from the file).

    ``views`` names each view (``original``, then ``transform/view``); the arrays per view are
    keyed by those names. ``top_probs`` are float64 softmax probabilities, largest first;
    ``logits`` is empty unless the study kept ``full`` outputs."""

    model: str
    dataset: str
    level: str
    topk: int
    classes: int
    views: list[str]
    indices: np.ndarray
    targets: np.ndarray
    top_indices: dict[str, np.ndarray]
    top_probs: dict[str, np.ndarray]
    logsumexp: dict[str, np.ndarray]
    entropy: dict[str, np.ndarray]
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    gram: np.ndarray | None = None  # (K, K) PᵀP of the original's softmax matrix P (N × K)
    transforms: dict[str, list[str]] = field(default_factory=dict)  # transform → its views
    matching: str = ""  # how the dataset's classes were matched to the model's outputs
    skipped: list[tuple[int, str]] = field(default_factory=list)  # unreadable images: index, why
    bad_files: list[str] = field(default_factory=list)  # the same images, by path
    files: list[str] = field(default_factory=list)

    @classmethod
    def from_logits(
        cls, model: str, dataset: str, logits: Any, targets: Any, topk: int = 5
    ) -> Outputs:
        """Outputs at the ``full`` level from logits one already has (N × K, float) and the
        class index of each image (-1 when unlabeled): what a pass would have kept of them,
        so that the estimators can run on them (a notebook, a benchmark)."""
        import torch
        from scipy.special import entr, logsumexp, softmax

        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 2 or len(logits) != len(np.asarray(targets)):
            raise InvkitError(
                f"from_logits needs logits of shape (images, classes) and one target per image; "
                f"got {logits.shape} and {np.asarray(targets).shape}"
            )
        probs = softmax(logits.astype(np.float64), axis=1)
        k = min(topk, logits.shape[1])
        top = torch.from_numpy(probs).topk(k, dim=1).indices.numpy()  # as the pass picks them
        return cls(
            model=model, dataset=dataset, level="full", topk=k, classes=logits.shape[1],
            views=["original"], indices=np.arange(len(logits), dtype=np.int64),
            targets=np.asarray(targets, dtype=np.int64),
            top_indices={"original": top.astype(np.int32)},
            top_probs={"original": np.take_along_axis(probs, top, axis=1)},
            logsumexp={"original": logsumexp(logits.astype(np.float64), axis=1)},
            entropy={"original": entr(probs).sum(axis=1)},
            logits={"original": logits},
            gram=probs.T @ probs if logits.shape[1] <= GRAM_MAX_CLASSES else None,
        )  # fmt: skip

    @property
    def predictions(self) -> np.ndarray:
        """The top-1 class of each image on the original."""
        return self.top_indices["original"][:, 0]

    @property
    def nuclear_norm(self) -> float:
        """‖P‖*, the sum of the singular values of the original's N × K softmax matrix: the
        sum of the square roots of the eigenvalues of PᵀP, which the pass accumulated (for up
        to 4,096 classes), or from the logits of a ``full`` study."""
        if self.gram is None:
            if "original" in self.logits:
                logits = np.asarray(self.logits["original"], dtype=np.float64)
                probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                return float(np.linalg.norm(probs / probs.sum(axis=1, keepdims=True), "nuc"))
            raise InvkitError(
                f"kept outputs of {self.model!r} × {self.dataset!r} hold no PᵀP (kept for up to "
                "4,096 classes, and by this version of invkit); keep run.outputs = 'full'"
            )
        eigenvalues = np.linalg.eigvalsh(np.asarray(self.gram, dtype=np.float64))
        return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy on the labeled images (``None`` when there are none)."""
        labeled = self.targets >= 0
        if not labeled.any():
            return None
        return float((self.predictions[labeled] == self.targets[labeled]).mean())


def read_file(path: Path, model: str = "", dataset: str = "") -> Outputs:
    """An outputs file's arrays (memory maps) and what its metadata says of them; anything
    malformed is an ``InvkitError`` naming the file."""
    refuse_links(path.parent, [path.name])
    header, start = read_header(path)
    meta = header.get("__metadata__", {})
    if meta.get("format") != FORMAT:
        raise _malformed(path, f"not an invkit outputs file of format {FORMAT}")
    try:
        return _arrays(path, header, start, meta, model, dataset)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
        raise _malformed(path, f"{type(error).__name__}: {error}") from None


def _arrays(
    path: Path, header: dict[str, Any], start: int, meta: dict[str, str], model: str, dataset: str
) -> Outputs:

    raw = np.memmap(path, dtype=np.uint8, mode="r")  # one map; each array a view of it

    def array(name: str) -> np.ndarray:
        entry = header[name]
        dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
        return np.ndarray(shape, dtype, buffer=raw, offset=start + entry["data_offsets"][0])

    views = json.loads(meta["views"])
    if not isinstance(views, list) or not all(isinstance(v, str) for v in views):
        raise TypeError(f"its views {views!r} are not a list of names")
    images = header["indices"]["shape"]
    for name, entry in header.items():
        if name != "__metadata__" and name != "v0.gram" and entry["shape"][:1] != images[:1]:
            raise ValueError(f"{name} has {entry['shape'][:1]} rows, the indices {images[:1]}")
    per_view: dict[str, dict[str, np.ndarray]] = {name: {} for name in (*SUMMARY_FIELDS, "logits")}
    for j, view in enumerate(views):
        for name in per_view:
            if f"v{j}.{name}" in header:
                per_view[name][view] = array(f"v{j}.{name}")
    return Outputs(
        model=meta.get("model", model),
        dataset=meta.get("dataset", dataset),
        level=meta["level"],
        topk=int(meta["topk"]),
        classes=int(meta["classes"]),
        views=views,
        indices=array("indices"),
        targets=array("targets"),
        top_indices=per_view["top_indices"],
        top_probs=per_view["top_probs"],
        logsumexp=per_view["logsumexp"],
        entropy=per_view["entropy"],
        logits=per_view["logits"],
        gram=array("v0.gram") if "v0.gram" in header else None,
        transforms=json.loads(meta["transforms"]),
        matching=meta.get("matching", ""),
        skipped=[(int(index), why) for index, why in json.loads(meta.get("skipped", "[]"))],
        bad_files=json.loads(meta.get("bad_files", "[]")),
        files=[path.name],
    )


def folder(out_dir: Path) -> Path:
    """A study's outputs folder, never through a link (refused, naming it and its target)."""
    refuse_links(Path(out_dir), [FOLDER])
    return Path(out_dir) / FOLDER


def stamp(path: Path) -> str:
    """What changes whenever a file's bytes may have: inode, size, modification and
    status-change times (a write, a copy over it or a rename moves the last; no tool sets it)."""
    info = path.stat()
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def verified(out_dir: Path, record: OutputRecord, content: bool = True) -> Path:
    """The path of ``record``'s file, once it is checked against the store's record: its
    size, and (``content``) its SHA-256; an ``InvkitError`` naming the file when it is a link,
    missing or changed."""
    path = folder(out_dir) / record.file
    size = regular_file(path).st_size
    if size != record.bytes:
        raise InvkitError(
            f"kept outputs {path} hold {size} bytes, their record {record.bytes} (cut short or "
            "changed)"
        )
    if content and file_sha256(path) != record.sha256:
        raise InvkitError(f"kept outputs {path} do not match their recorded SHA-256 (damaged)")
    return path


def combined(parts: list[Outputs]) -> Outputs:
    """One model × dataset's outputs kept by several passes (each over some transforms): the
    original from the newest, each transform's views from the newest file holding them. The
    files must cover the same images."""
    newest = parts[-1]
    for part in parts[:-1]:
        if not np.array_equal(part.indices, newest.indices):
            raise InvkitError(
                f"kept outputs {part.files[0]} and {newest.files[0]} of {newest.model!r} × "
                f"{newest.dataset!r} cover different images; run the study with --fresh"
            )
    holder = {"original": newest}
    transforms: dict[str, list[str]] = {}
    for part in parts:
        for transform, views in part.transforms.items():
            transforms[transform] = views
            holder.update({view: part for view in views})
    views = ["original", *(view for group in transforms.values() for view in group)]
    arrays = {
        name: {v: getattr(holder[v], name)[v] for v in views if v in getattr(holder[v], name)}
        for name in (*SUMMARY_FIELDS, "logits")
    }
    return Outputs(
        **{
            **newest.__dict__,
            **arrays,
            "views": views,
            "transforms": transforms,
            "level": "full" if len(arrays["logits"]) == len(views) else "summary",
            "topk": min(part.topk for part in parts),
            "files": [name for part in parts for name in part.files],
        }
    )


def prepare_folder(out_dir: Path) -> Path:
    """The study's outputs folder and its staging folder, made (never through a link), with
    what a killed run of invkit left there removed: half-written files of its own names."""
    root = folder(out_dir)
    refuse_links(Path(out_dir), [FOLDER])
    root.mkdir(exist_ok=True)
    refuse_links(root, [STAGING])
    staging = root / STAGING
    staging.mkdir(exist_ok=True)
    for leftover in staging.iterdir():
        if STAGED_NAME.match(leftover.name) and not leftover.is_symlink():
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    for leftover in root.glob(f".*{TEMPORARY_SUFFIX}"):
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink()
    return root


def keep(out_dir: Path, kept: KeptOutputs, model: str, dataset: str) -> list[OutputRecord]:
    """Put a pass's kept outputs in place (the driver writes a summary's arrays; it adopts a
    staged full file once its SHA-256 is the one the pass reported) and return their records."""
    root = folder(out_dir)
    path = root / kept.file
    if kept.arrays is not None:
        with replacing(path) as temporary:
            kept.sha256, kept.bytes = write_file(temporary, kept.arrays, kept.metadata)
    else:
        staged = root / STAGING / kept.staged
        refuse_links(staged.parent, [staged.name])
        if file_sha256(staged) != kept.sha256:
            staged.unlink()
            raise InvkitError(
                f"the outputs file a worker wrote for {model!r} × {dataset!r} ({staged}) does "
                "not match the SHA-256 it reported; it is removed and the pass fails"
            )
        refuse_links(root, [kept.file])
        os.replace(staged, path)
    return [
        OutputRecord(
            model,
            dataset,
            transform,
            fingerprint,
            kept.file,
            kept.sha256,
            kept.bytes,
            kept.level,
            kept.topk,
            kept.classes,
            kept.images,
        )
        for transform, fingerprint in kept.views.items()
    ]


def remove_unused(
    out_dir: Path, before: Iterable[OutputRecord], now: Iterable[OutputRecord]
) -> None:
    """Remove the files ``before`` recorded that no record ``now`` names, where their bytes
    are still the ones invkit wrote (a file a user changed stays)."""
    used = {record.file for record in now}
    for record in {r.file: r for r in before if r.file not in used}.values():
        path = folder(out_dir) / record.file
        if is_own(path, record.sha256):
            path.unlink()
