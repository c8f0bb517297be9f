"""The evaluation loop: one dataset through one or more models that share its decoding, every
transform's views, every measure.

Per batch: pixels to the device (uint8 when the images are 8-bit) → float → each model's
forward pass over the originals → the transforms make their views there, a few at a time
(``run.max_views_per_forward``), once for all the models, and each chunk goes through every
model (its normalization, its forward pass) before the next is made → logits restricted to a
class subset → float64 softmax → each measure's per-sample values. Only per-sample scalars are
kept, never the dataset's outputs, and never more than one chunk of views.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from invkit.analysis.aggregate import view_labels, view_values
from invkit.config import VIEWS_PER_FORWARD
from invkit.errors import InvkitError
from invkit.inputs.data import as_float
from invkit.inputs.layers import find_layers
from invkit.plugin.components import LoadedModel
from invkit.results.outputs import reads_model, reads_top
from invkit.run.kept import Recorder, dense_top


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
class Evaluation:
    """What one model × dataset pass produced: per-sample measure values and accuracy."""

    values: dict[tuple[str, str], torch.Tensor]  # (transform, measure) → (V, N): view × image
    indices: torch.Tensor  # (N,) dataset indices, in order
    targets: torch.Tensor  # (N,) target class, -1 when unlabeled
    correct: torch.Tensor  # (N,) bool, original prediction == target
    skipped: list[tuple[int, str]]  # (dataset index, why) of images that could not be read
    upsampled: int  # images smaller than the model's input, enlarged to it
    images: int
    forward_images: int
    seconds: float
    recorder: Recorder | None = None  # the outputs it kept
    layers: dict[tuple[str, str], tuple[float, list[float] | None]] = field(default_factory=dict)
    # (transform, "measure@layer") → the layer measure's value and its value on each view

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


@dataclass
class ModelRun:
    """One model's share of a pass: its cells (transform name → (measure name, measure)
    pairs), the logits it keeps (a class subset) and how dataset labels map to them."""

    model: LoadedModel
    cells: Mapping[str, Sequence[tuple[str, Any]]]
    logit_index: Sequence[int] | None = None
    targets: Sequence[int] | None = None  # dataset label → target index; None: as given
    label: str = ""
    keep: Keep | None = None  # what to keep of the outputs; None: nothing
    layers: Mapping[str, Sequence[tuple[str, str, Any]]] = field(default_factory=dict)
    # transform name → (layer, cell label, layer measure) of its layer cells
    spec: str = ""  # the model's spec, to name in an error about its layers


@dataclass(frozen=True)
class Keep:
    """Kept outputs: ``summary`` or ``full``, the top-k, and (``full``) where logits spill."""

    level: str
    topk: int
    spill: Any = None  # pathlib.Path


class _ModelState:
    """What one model accumulates over a pass."""

    def __init__(self, run: ModelRun, device: torch.device, transforms: Mapping[str, Any]):
        self.run = run
        prep = run.model.preprocessing
        self.module = run.model.module.to(device).eval()
        for parameter in self.module.parameters():  # never trained here; a derivative measure's
            parameter.requires_grad_(False)  # product then tracks the inputs alone (2× faster)
        self.mean = torch.tensor(prep.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(prep.std, device=device).view(1, -1, 1, 1)
        self.columns = (
            torch.tensor(run.logit_index, device=device) if run.logit_index is not None else None
        )
        self.needed_outputs = max(run.logit_index) + 1 if run.logit_index is not None else 0
        self.lookup = (
            torch.tensor([*run.targets, -1], dtype=torch.long) if run.targets is not None else None
        )  # label -1 (unlabeled) indexes the last entry
        self.values: dict[tuple[str, str], list[torch.Tensor]] = {
            (t, m): [] for t, measures in run.cells.items() for m, _ in measures
        }
        groups = {t: [f"{t}/{name}" for name in view_labels(transforms[t])] for t in run.cells}
        self.view_names = ["original", *(view for group in groups.values() for view in group)]
        self.derivatives = {  # measures that read the model itself: a derivative per batch
            (t, m): measure
            for t, ms in run.cells.items()
            for m, measure in ms
            if reads_model(measure)
        }
        self.reads = {
            m: reads_top(measure)
            for ms in run.cells.values()
            for m, measure in ms
            if not reads_model(measure)
        }
        self.layer_modules = find_layers(
            self.module,
            list(dict.fromkeys(layer for cells in run.layers.values() for layer, _, _ in cells)),
            run.label,
            run.spec,
        )
        self.accumulators = {
            (t, label): measure.accumulator()
            for t, cells in run.layers.items()
            for _, label, measure in cells
        }
        self.capturing = False
        self.captured: dict[str, torch.Tensor] = {}
        self.hooks = [
            module.register_forward_hook(self._capture(name))
            for name, module in self.layer_modules.items()
        ]
        keep = run.keep
        self.top = max([keep.topk if keep else 1, *(k for k in self.reads.values() if k)])
        self.recorder = keep and Recorder(groups, keep.level, self.top, keep.spill)
        self.targets: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []
        self.forward_images = 0

    def _capture(self, layer: str) -> Any:
        """A forward hook keeping the layer's output of the forward pass under way (only in the
        pass's own forward passes: a derivative measure's are not captured)."""

        def hook(module: Any, inputs: Any, output: Any) -> None:
            if not self.capturing:
                return
            if not isinstance(output, torch.Tensor):
                raise InvkitError(
                    f"{self.run.label}: layer {layer!r} returns a {type(output).__name__}, not "
                    "a tensor, so its invariance cannot be measured; name one of its modules "
                    f"that returns a tensor (`invkit layers {self.run.spec}` lists them)"
                )
            self.captured[layer] = output.detach()

        return hook

    def release(self) -> None:
        """Remove the layer hooks: the model is used again after the pass."""
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def model_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return labels if self.lookup is None else self.lookup[labels]

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] → float64 class probabilities, as the pass computes them (the
        model's normalization, its class subset): the function a derivative measure reads."""
        logits = self.module((pixels - self.mean) / self.std)
        if self.columns is not None:
            logits = logits[:, self.columns]
        return logits.double().softmax(dim=1)


def evaluate(
    runs: Sequence[ModelRun],
    loader: DataLoader,
    transforms: Mapping[str, Any],
    device: torch.device,
    amp: bool = False,
    max_views_per_forward: int = VIEWS_PER_FORWARD,
    label: str = "",
    progress: bool = True,
    channels_last: bool = False,
    compile: bool = False,
) -> list[Evaluation]:
    """Run every model of ``runs`` over ``loader``'s batches (decoded once for all of them);
    one ``Evaluation`` per model, each identical to running that model alone. Raises
    ``InvkitError`` naming the model and batch on NaN or infinite outputs."""
    from tqdm.auto import tqdm

    use_amp = autocast_enabled(amp, device)
    states = [_ModelState(run, device, transforms) for run in runs]
    for state in states:
        if channels_last:
            state.module = state.module.to(memory_format=torch.channels_last)
        if compile:
            state.module = torch.compile(state.module)
    needed = list(dict.fromkeys(t for state in states for t in state.run.cells))
    derived = list(dict.fromkeys(t for state in states for t, _ in state.derivatives))
    indices: list[torch.Tensor] = []
    skipped: list[tuple[int, str]] = []
    upsampled = 0
    started = time.perf_counter()
    bar = tqdm(
        total=len(loader.dataset),  # type: ignore[arg-type]
        desc=label,
        unit="img",
        disable=None if progress else True,  # None: off when stderr is not a terminal
        leave=False,
        dynamic_ncols=True,
    )
    with torch.inference_mode(), bar, _hooks_removed(states):
        batches = enumerate(_batches(loader))
        for batch_number, (pixels, labels, index, errors, enlarged) in batches:
            bar.update(len(index))
            upsampled += int(enlarged.sum())
            readable = torch.tensor([not e for e in errors])
            if not readable.all():
                skipped += [(int(i), e) for i, e in zip(index, errors, strict=True) if e]
                pixels, labels, index = pixels[readable], labels[readable], index[readable]
                if not len(index):
                    continue
            pixels = as_float(pixels.to(device, non_blocking=True))
            if channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            outputs, features, counts = _forward_views(
                states, pixels, transforms, needed, max_views_per_forward, use_amp
            )
            tangents = {t: transforms[t].generator(pixels) for t in derived}
            indices.append(index)
            for state, logits, views in zip(states, outputs, features, strict=True):
                _evaluate_batch(
                    state, logits, pixels, counts, tangents, labels, batch_number, index, use_amp
                )
                if state.accumulators:
                    _accumulate_layers(state, views, counts)
    if not indices:
        reason = (
            f"all {len(skipped)} images were unreadable, e.g. {skipped[0][1]}"
            if skipped
            else "the dataset is empty"
        )
        raise InvkitError(f"{label}: {reason}")
    seconds = time.perf_counter() - started
    all_indices = torch.cat(indices)
    return [_evaluation(state, all_indices, skipped, upsampled, seconds) for state in states]


@contextmanager
def _hooks_removed(states: Sequence[_ModelState]) -> Iterator[None]:
    """The pass; then every layer hook is removed, whether it finished or failed."""
    try:
        yield
    finally:
        for state in states:
            state.release()


def views_of_batch(transform: Any, pixels: torch.Tensor) -> Iterator[torch.Tensor]:
    """A transform's views of a batch, one at a time when it can make them so
    (``iter_views``), so that only a chunk of them is ever held."""
    making = getattr(transform, "iter_views", None)
    return iter(making(pixels) if callable(making) else transform(pixels))


def _forward_views(
    states: Sequence[_ModelState],
    pixels: torch.Tensor,
    transforms: Mapping[str, Any],
    needed: Sequence[str],
    views_per_forward: int,
    amp: bool,
) -> tuple[list[torch.Tensor], list[list[dict[str, torch.Tensor]]], dict[str, int]]:
    """Each model's logits over the originals and every view of its transforms (in its cells'
    order), its measured layers' outputs on each of them in the same order (a dict per
    view), and each transform's view count. Views are made ``views_per_forward`` at a time
    (0: all at once), and each chunk runs through every model before the next is made."""
    size = pixels.shape[0]
    parts: list[dict[str, list[tuple[torch.Tensor, dict[str, torch.Tensor]]]]] = [
        {"": [(_model_forward(state, pixels, amp), state.captured)]} for state in states
    ]
    counts = dict.fromkeys(needed, 0)
    pending: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        for state, mine in zip(states, parts, strict=True):
            own = [(t, view) for t, view in pending if t in state.run.cells]
            if own:
                logits = _model_forward(state, torch.cat([view for _, view in own]), amp)
                layers = {name: f.split(size) for name, f in state.captured.items()}
                for i, ((t, _), block) in enumerate(zip(own, logits.split(size), strict=True)):
                    mine.setdefault(t, []).append((block, {n: b[i] for n, b in layers.items()}))
        pending.clear()

    for t in needed:
        for view in views_of_batch(transforms[t], pixels):
            pending.append((t, view))
            counts[t] += 1
            if len(pending) == views_per_forward:
                flush()
    flush()
    outputs, features = [], []
    for state, mine in zip(states, parts, strict=True):
        blocks = [part for t in ["", *state.run.cells] for part in mine.get(t, [])]
        outputs.append(torch.cat([logits for logits, _ in blocks]))
        features.append([layers for _, layers in blocks])
        state.forward_images += outputs[-1].shape[0]
    return outputs, features, counts


def _model_forward(state: _ModelState, pixels: torch.Tensor, amp: bool) -> torch.Tensor:
    """One model's logits over a block of pixels in [0, 1], after its normalization; its
    layers' outputs, when it measures some, in ``state.captured``."""
    normalized = (pixels - state.mean) / state.std
    state.captured = {}
    state.capturing = bool(state.layer_modules)
    try:
        with torch.autocast(device_type=pixels.device.type, dtype=torch.bfloat16, enabled=amp):
            return state.module(normalized).float()
    finally:
        state.capturing = False


def _evaluate_batch(
    state: _ModelState,
    logits: torch.Tensor,
    pixels: torch.Tensor,
    counts: Mapping[str, int],
    tangents: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    batch_number: int,
    index: torch.Tensor,
    use_amp: bool,
) -> None:
    """One batch's logits of one model (originals, then its transforms' views) through its
    measures."""
    run = state.run
    size = pixels.shape[0]
    device = logits.device
    if not torch.isfinite(logits).all():
        raise InvkitError(
            f"{run.label}: the model produced NaN or infinite outputs in batch {batch_number} "
            f"(its first image is dataset index {int(index[0])}); "
            "check the weights and inputs" + (", or run without --amp" if use_amp else "")
        )
    if state.columns is not None:
        if logits.shape[1] < state.needed_outputs:
            raise InvkitError(
                f"{run.label}: the class subset needs output {state.needed_outputs - 1}, but the "
                f"model has {logits.shape[1]} outputs"
            )
        logits = logits[:, state.columns]
    probs = logits.double().softmax(dim=1)
    classes = probs.shape[1]
    top_probs, top_indices = probs.topk(min(state.top, classes), dim=1)
    inputs = {
        k: (probs if k is None else dense_top(top_indices, top_probs, classes, k)).split(size)
        for k in set(state.reads.values())
    }
    target = state.model_targets(labels)
    if int(target.max()) >= classes:  # target is still on the CPU: no sync
        raise InvkitError(
            f"{run.label}: label {int(target.max())} is outside the model's "
            f"{classes} outputs; the model's classes do not match the dataset's"
        )
    state.targets.append(target)
    all_labeled = bool((target >= 0).all())
    target = target.to(device, non_blocking=True)
    state.correct.append(top_indices[:size, 0] == target)
    known = target if all_labeled else None
    for t, views in _view_slices(run.cells, counts):
        for m, measure in run.cells[t]:
            if (t, m) in state.derivatives:
                derivative = measure.derivative(state.probabilities, pixels, tangents[t])
                state.values[(t, m)].append(derivative.unsqueeze(0))  # one "view": d/dt
                continue
            given = inputs[state.reads[m]]
            state.values[(t, m)].append(view_values(measure, given[0], given[views], known))
    if state.recorder:
        state.recorder.add(logits, probs, top_indices, top_probs, size)


def _view_slices(
    transforms: Iterable[str], counts: Mapping[str, int]
) -> Iterator[tuple[str, slice]]:
    """Each transform and where its views lie in a batch's outputs: after the originals
    (position 0), the transforms' views one after another, in order."""
    offset = 1
    for t in transforms:
        yield t, slice(offset, offset + counts[t])
        offset += counts[t]


def _accumulate_layers(
    state: _ModelState, views: Sequence[Mapping[str, torch.Tensor]], counts: Mapping[str, int]
) -> None:
    """One batch's layer outputs (originals, then each transform's views, in the logits'
    order) into the model's layer measures."""
    for t, these in _view_slices(state.run.cells, counts):
        for layer, label, _ in state.run.layers.get(t, ()):
            try:
                state.accumulators[(t, label)].update(
                    views[0][layer], [view[layer] for view in views[these]]
                )
            except InvkitError as error:
                where = f"{state.run.label}: layer {layer!r} under {t}"
                raise InvkitError(f"{where}: {error}") from None


def _evaluation(
    state: _ModelState,
    indices: torch.Tensor,
    skipped: list[tuple[int, str]],
    upsampled: int,
    seconds: float,
) -> Evaluation:
    # per-sample results stayed on the device during the pass (no sync per batch); one copy now
    return Evaluation(
        values={key: torch.cat(chunks, dim=1).cpu() for key, chunks in state.values.items()},
        indices=indices,
        targets=torch.cat(state.targets),
        correct=torch.cat(state.correct).cpu(),
        skipped=skipped,
        upsampled=upsampled,
        images=len(indices),
        forward_images=state.forward_images,
        seconds=seconds,
        recorder=state.recorder,
        layers=_layer_results(state),
    )


def _layer_results(state: _ModelState) -> dict[tuple[str, str], tuple[float, list[float] | None]]:
    results = {}
    for (t, label), accumulator in state.accumulators.items():
        try:
            results[(t, label)] = accumulator.result()
        except InvkitError as error:
            raise InvkitError(f"{state.run.label}: {label} under {t}: {error}") from None
    return results
