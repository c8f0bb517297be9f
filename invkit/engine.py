"""The evaluation loop: one model over one dataset, every transform's views, every measure.

Per batch: pixels to the device → each transform makes its views there → the model's
normalization → one forward pass over the originals and all views together (chunked when
asked) → logits restricted to a class subset → float64 softmax → each measure's per-sample
values. Only per-sample scalars are kept, never the dataset's outputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from invkit.aggregate import view_average
from invkit.errors import InvkitError
from invkit.plugin.components import LoadedModel


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA GPU when there is one, else the CPU; ``cuda:N``; ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvkitError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvkitError(
            f"device {name!r} asked for, but torch sees no CUDA GPU; use --device cpu"
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise InvkitError(
            f"device {name!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s)"
        )
    return device


def autocast_enabled(amp: bool, device: torch.device) -> bool:
    """bfloat16 autocast is used only on CUDA: ``amp`` on the CPU changes nothing (and so is
    not part of a CPU run's fingerprints)."""
    return amp and device.type == "cuda"


@dataclass
class ViewRecord:
    """Per-sample predictions on one view (or the original), kept with ``per_sample``."""

    prediction: list[torch.Tensor] = field(default_factory=list)
    confidence: list[torch.Tensor] = field(default_factory=list)


@dataclass
class Evaluation:
    """What one model × dataset pass produced: per-sample measure values and accuracy."""

    values: dict[tuple[str, str], torch.Tensor]  # (transform, measure) → (N,) float64
    indices: torch.Tensor  # (N,) dataset indices, in order
    targets: torch.Tensor  # (N,) target class, -1 when unlabeled
    correct: torch.Tensor  # (N,) bool, original prediction == target
    views: dict[str, ViewRecord]
    skipped: list[tuple[int, str]]  # (dataset index, why) of images that could not be read
    upsampled: int  # images smaller than the model's input, enlarged to it
    images: int
    forward_images: int
    seconds: float

    @property
    def labeled(self) -> int:
        return int((self.targets >= 0).sum())

    @property
    def accuracy(self) -> float | None:
        labeled = self.targets >= 0
        return float(self.correct[labeled].double().mean()) if labeled.any() else None


def _batches(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches; an invkit error raised in a worker keeps its own message."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except InvkitError as error:  # re-raised by the DataLoader with the worker's traceback
            lines = [line for line in str(error).splitlines() if line.strip()]
            last = lines[-1] if lines else str(error)
            raise InvkitError(last.split("InvkitError: ", 1)[-1]) from None
        yield batch


def _forward(module: Any, pixels: torch.Tensor, chunk: int, amp: bool) -> torch.Tensor:
    outputs = []
    for start in range(0, pixels.shape[0], chunk):
        with torch.autocast(device_type=pixels.device.type, dtype=torch.bfloat16, enabled=amp):
            outputs.append(module(pixels[start : start + chunk]).float())
    return torch.cat(outputs)


def evaluate(
    model: LoadedModel,
    loader: DataLoader,
    transforms: Mapping[str, Any],
    cells: Mapping[str, Sequence[tuple[str, Any]]],
    device: torch.device,
    logit_index: Sequence[int] | None = None,
    amp: bool = False,
    max_views_per_forward: int = 0,
    per_sample: bool = False,
    label: str = "",
    progress: bool = True,
) -> Evaluation:
    """Run ``model`` over ``loader``; ``cells`` maps a transform name to its (measure name,
    measure) pairs. Raises ``InvkitError`` naming the batch on NaN or infinite outputs."""
    from tqdm.auto import tqdm

    module = model.module.to(device).eval()
    prep = model.preprocessing
    mean = torch.tensor(prep.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, -1, 1, 1)
    columns = torch.tensor(logit_index, device=device) if logit_index is not None else None
    needed_outputs = max(logit_index) + 1 if logit_index is not None else 0  # known on the CPU
    use_amp = autocast_enabled(amp, device)
    values: dict[tuple[str, str], list[torch.Tensor]] = {
        (t, m): [] for t, measures in cells.items() for m, _ in measures
    }
    view_names = ["original"] + [
        f"{t}/{i}" for t in cells for i in range(getattr(transforms[t], "num_views", 1))
    ]
    records = {name: ViewRecord() for name in view_names} if per_sample else {}
    indices, targets, correct = [], [], []
    skipped: list[tuple[int, str]] = []
    upsampled = 0
    forward_images = 0
    started = time.perf_counter()
    bar = tqdm(
        total=len(loader.dataset),  # type: ignore[arg-type]
        desc=label,
        unit="img",
        disable=None if progress else True,  # None: off when stderr is not a terminal
        leave=False,
        dynamic_ncols=True,
    )
    with torch.inference_mode(), bar:
        batches = enumerate(_batches(loader))
        for batch_number, (pixels, target, index, errors, enlarged) in batches:
            bar.update(len(index))
            upsampled += int(enlarged.sum())
            readable = torch.tensor([not e for e in errors])
            if not readable.all():
                skipped += [(int(i), e) for i, e in zip(index, errors, strict=True) if e]
                pixels, target, index = pixels[readable], target[readable], index[readable]
                if not len(index):
                    continue
            pixels = pixels.to(device, non_blocking=True)
            size = pixels.shape[0]
            views = {t: transforms[t](pixels) for t in cells}
            stacked = torch.cat([pixels, *(v for vs in views.values() for v in vs)])
            chunk = size * max_views_per_forward if max_views_per_forward else stacked.shape[0]
            logits = _forward(module, (stacked - mean) / std, chunk, use_amp)
            forward_images += stacked.shape[0]
            if not torch.isfinite(logits).all():
                raise InvkitError(
                    f"{label}: the model produced NaN or infinite outputs in batch {batch_number} "
                    f"(its first image is dataset index {int(index[0])}); "
                    "check the weights and inputs" + (", or run without --amp" if use_amp else "")
                )
            if columns is not None:
                if logits.shape[1] < needed_outputs:
                    raise InvkitError(
                        f"{label}: the class subset needs output {needed_outputs - 1}, but the "
                        f"model has {logits.shape[1]} outputs"
                    )
                logits = logits[:, columns]
            probs = logits.double().softmax(dim=1).split(size)
            original, view_probs = probs[0], probs[1:]
            if int(target.max()) >= probs[0].shape[1]:  # target is still on the CPU: no sync
                raise InvkitError(
                    f"{label}: label {int(target.max())} is outside the model's "
                    f"{probs[0].shape[1]} outputs; the model's classes do not match the dataset's"
                )
            indices.append(index)
            targets.append(target)
            all_labeled = bool((target >= 0).all())
            target = target.to(device, non_blocking=True)
            correct.append(original.argmax(dim=1) == target)
            labels = target if all_labeled else None
            offset = 0
            for t, measures in cells.items():
                count = len(views[t])
                these = view_probs[offset : offset + count]
                offset += count
                for m, measure in measures:
                    values[(t, m)].append(view_average(measure, original, these, labels))
            if per_sample:
                for name, p in zip(view_names, probs, strict=True):
                    conf, pred = p.max(dim=1)
                    records[name].prediction.append(pred)
                    records[name].confidence.append(conf.float())
    if not indices:
        reason = (
            f"all {len(skipped)} images were unreadable, e.g. {skipped[0][1]}"
            if skipped
            else "the dataset is empty"
        )
        raise InvkitError(f"{label}: {reason}")
    # per-sample results stayed on the device during the pass (no sync per batch); one copy now
    for record in records.values():
        record.prediction = [torch.cat(record.prediction).cpu()]
        record.confidence = [torch.cat(record.confidence).cpu()]
    return Evaluation(
        values={key: torch.cat(chunks).cpu() for key, chunks in values.items()},
        indices=torch.cat(indices),
        targets=torch.cat(targets),
        correct=torch.cat(correct).cpu(),
        views=records,
        skipped=skipped,
        upsampled=upsampled,
        images=sum(len(i) for i in indices),
        forward_images=forward_images,
        seconds=time.perf_counter() - started,
    )
