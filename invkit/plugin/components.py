"""Base classes and records that define the contracts between invkit and its plugins.

Subclassing is optional (invkit only relies on the call signatures and attributes documented
here and in ``invkit.plugin.hookspecs``), but these classes state the contract in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class Transform:
    """A deterministic map from a batch of images to a list of views of it.

    ``transform(images)`` takes a float tensor ``(B, C, H, W)`` of pixels in [0, 1] and returns
    a list of tensors of the same shape, on the same device. ``num_views`` says how many.
    ``C`` is the model's channel count: 3 (RGB) or 1 (luminance). ``channels`` lists the
    counts the transform can act on (``None``: any); a study refuses a transform whose
    ``channels`` exclude a model's before that model's first forward pass.
    """

    name: str = ""
    channels: tuple[int, ...] | None = None

    @property
    def num_views(self) -> int:
        raise NotImplementedError

    @property
    def view_names(self) -> list[str]:
        """A short distinct name per view, as kept outputs name them (``rotation/90``);
        optional: the views' positions (``0``, ``1``, ...) by default."""
        return [str(i) for i in range(self.num_views)]

    def iter_views(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """The views one at a time (optional: ``iter(self(images))`` by default). A transform
        with many views that makes them lazily lets a pass hold only the chunk it runs
        (``run.max_views_per_forward``)."""
        return iter(self(images))

    @property
    def magnitudes(self) -> list[float] | None:
        """The magnitude of each view (rotation's angles, a blur's sigmas), when the views are
        magnitudes of one family; optional: ``None`` by default (flips, grayscale)."""
        return None

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class Measure:
    """A per-sample comparison of a model's softmax on an image and on one view of it.

    ``measure(original, view, labels=None)`` takes two ``(B, K)`` tensors of class
    probabilities (and, if ``needs_labels``, a ``(B,)`` tensor of class indices) and returns a
    ``(B,)`` tensor. ``reads`` declares how much of each row it reads: ``"softmax"`` (all of
    it), or ``"topK"`` (``"top1"``, ``"top5"``: the K largest probabilities). A ``topK``
    measure is given rows holding only those, the rest 0, so that a study can compute it
    from kept ``summary`` outputs exactly as in a pass. A measure with ``reads = "model"``
    reads the model itself: a pass calls ``measure.derivative(forward, images, tangent)``
    instead (``docs/hooks.md``), with the transform's ``generator(images)`` as the tangent.
    """

    name: str = ""
    higher_is_invariant: bool = True
    needs_labels: bool = False
    reads: str = "softmax"

    def __call__(
        self, original: torch.Tensor, view: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LayerAccumulator:
    """One model × dataset × transform × layer of a layer measure, accumulated batch by batch:
    ``update(original, views)`` with the layer's ``(B, ...)`` output on the originals and on
    each view, then ``result()``: ``(value, per_view)``, per_view a list of one value per view
    or ``None``. It keeps running sums, so memory does not grow with the images."""

    def update(self, original: torch.Tensor, views: Sequence[torch.Tensor]) -> None:
        raise NotImplementedError

    def result(self) -> tuple[float, list[float] | None]:
        raise NotImplementedError


class LayerMeasure:
    """How invariant a layer's features are to a transform, over a whole test set (not per
    image): ``accumulator()`` gives a fresh ``LayerAccumulator`` for each model × dataset ×
    transform × layer. ``higher_is_invariant`` as for ``Measure``."""

    name: str = ""
    higher_is_invariant: bool = True

    def accumulator(self) -> LayerAccumulator:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True)
class Estimate:
    """An estimate with what qualifies it, for an estimator that knows more than the number.

    ``flag``: why it should not be taken as it stands (its premise failed on this target, or
    a line fit read it outside the range of scores it was fitted on); the leaderboard ranks
    flagged estimates apart. ``fit_sets``: how many labeled test sets a fit used. ``detail``:
    what the estimate rests on, in a few words (a line's R², the fitted score range)."""

    value: float
    flag: str = ""
    fit_sets: int | None = None
    detail: str = ""


class Estimator:
    """A label-free accuracy estimate: ``estimator(model, target, study)`` gives a float in
    [0, 1], or an ``Estimate`` carrying a flag, the number of fit sets and a detail.

    ``study`` is an ``invkit.analysis.estimation.StudyData``; raise ``invkit.errors.EstimatorNeeds``
    when it lacks what the estimate needs (a source set, full logits, other models).
    ``reads`` says what it reads, for the docs and ``invkit list``.
    """

    name: str = ""
    reads: str = ""

    def __call__(self, model: str, target: str, study: Any) -> float | Estimate:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class Shift:
    """A synthetic distribution shift of one image, deterministic given a seed.

    ``shift(image, seed)`` takes a float tensor ``(C, H, W)`` in [0, 1] (at the model's input
    size, on the CPU) and an integer seed derived from the dataset's seed and the image's
    index, and returns the shifted image, same shape, in [0, 1].
    """

    name: str = ""

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: resize and crop, then normalize with ``mean`` and ``std``."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    num_classes: int | None = None
    class_names: Sequence[str] | None = field(default=None, repr=False)


@dataclass
class LoadedModel:
    """What a model loader returns: a module from normalized images to logits, and its input."""

    module: Any  # torch.nn.Module
    preprocessing: Preprocessing
    spec: str = ""
    random_weights: bool = False  # a random initialisation (timm pretrained = false): warned of
