"""Built-in layer measures: how invariant a layer's features are, from running sums over a
pass (docs/layers.md).

Features are read per unit: a convolutional map ``(B, C, H, W)`` has C units, a vector
``(B, D)`` has D, a token sequence ``(B, N, D)`` has D (the tokens play the part of a map's
positions). A batch's statistics are computed in the features' precision (at least float32),
and accumulated over batches in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from invkit.errors import InvkitError
from invkit.plugin.components import LayerAccumulator, LayerMeasure
from invkit.plugin.hookspecs import hookimpl

if TYPE_CHECKING:  # torch loads with the first pass, not with `invkit list`
    import torch


def _by_unit(features: torch.Tensor) -> torch.Tensor:
    """``(B, units, positions)``: a map's positions (or a sequence's tokens) on the last axis,
    one position for a vector."""
    if features.dim() == 2:
        return features.unsqueeze(-1)
    if features.dim() == 3:  # (B, N, D): D features over N tokens
        return features.transpose(1, 2)
    return features.flatten(2)


def check_views(original: torch.Tensor, views: Sequence[torch.Tensor]) -> None:
    """Every view's features have the original's shape (else no unit can be compared)."""
    for view in views:
        if view.shape != original.shape:
            raise InvkitError(
                f"its output on a view has shape {tuple(view.shape[1:])}, on the original "
                f"{tuple(original.shape[1:])}: a transform that changes the image's shape "
                "(a 90° turn of a non-square image) cannot be compared unit by unit here; "
                "measure a layer after global pooling, or use square inputs"
            )


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator per unit, with tmeasures' conventions: 0 / 0 is 1 (a unit that
    varies with nothing), x / 0 is infinite."""
    import torch

    ratio = numerator / denominator.where(denominator > 0, torch.ones_like(denominator))
    ratio = ratio.where(denominator > 0, torch.full_like(ratio, float("inf")))
    return ratio.where((denominator > 0) | (numerator > 0), torch.ones_like(ratio))


class _VarianceSums(LayerAccumulator):
    """Per position of each unit: the sum over images of the standard deviation across the
    image's transformations (the original and each view), and, per transformation, Welford's
    running mean and sum of squares across images (Chan et al.'s merge of batches)."""

    def __init__(self) -> None:
        self.images = 0
        self.across_views: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None  # (T, units, positions)
        self.squares: torch.Tensor | None = None

    def update(self, original: torch.Tensor, views: Sequence[torch.Tensor]) -> None:
        import torch

        check_views(original, views)
        dtype = torch.promote_types(original.dtype, torch.float32)
        each = [_by_unit(f).to(dtype) for f in (original, *views)]  # T × (B, units, positions)
        batch = each[0].shape[0]
        centre = sum(each) / len(each)  # elementwise over the transformations: strided
        deviations = sum((f - centre).square_() for f in each)  # reductions were slow
        spread = deviations.div_(len(each) - 1).sqrt_().sum(dim=0).double()
        mean = torch.stack([f.mean(dim=0) for f in each])  # (T, units, positions)
        squares = torch.stack(
            [(f - m).square_().sum(dim=0) for f, m in zip(each, mean, strict=True)]
        )
        squares, mean = squares.double(), mean.double()
        if self.mean is None:
            self.across_views, self.mean, self.squares = spread, mean, squares
        else:
            total = self.images + batch
            delta = mean - self.mean
            self.squares = self.squares + squares + delta**2 * self.images * batch / total
            self.mean = self.mean + delta * batch / total
            self.across_views = self.across_views + spread
        self.images += batch

    def result(self) -> tuple[float, list[float] | None]:
        if self.images < 2 or self.mean is None:
            raise InvkitError("normalized_variance needs at least 2 images")
        across_views = (self.across_views / self.images).mean(dim=-1)  # per unit
        across_images = (self.squares / (self.images - 1)).sqrt().mean(dim=0).mean(dim=-1)
        return float(_ratio(across_views, across_images).mean()), None


class NormalizedVariance(LayerMeasure):
    """Normalized variance (Quiroga et al., "Measuring (in)variances in convolutional
    networks"; tmeasures): per unit, the spread across an image's transformations over the
    spread across images; lower is more invariant."""

    name = "normalized_variance"
    higher_is_invariant = False

    def accumulator(self) -> LayerAccumulator:
        return _VarianceSums()


def pooled(features: torch.Tensor) -> torch.Tensor:
    """``(B, units)``: each unit's mean over a map's positions (or a sequence's tokens)."""
    return _by_unit(features.double()).mean(dim=-1)


class _CrossProducts(LayerAccumulator):
    """Sums of the pooled features of the originals (x) and of each view (y): Σx, Σy, Σxxᵀ,
    Σyyᵀ and Σyxᵀ, from which the centred cross-covariances follow at the end."""

    def __init__(self) -> None:
        self.images = 0
        self.sums: dict[str, torch.Tensor] = {}

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def update(self, original: torch.Tensor, views: Sequence[torch.Tensor]) -> None:
        check_views(original, views)
        x = pooled(original)
        self._add("x", x.sum(dim=0))
        self._add("xx", x.T @ x)
        for v, view in enumerate(views):
            y = pooled(view)
            self._add(f"y{v}", y.sum(dim=0))
            self._add(f"yy{v}", y.T @ y)
            self._add(f"yx{v}", y.T @ x)
        self.views = len(views)
        self.images += x.shape[0]

    def _centred(self, product: str, left: str, right: str) -> torch.Tensor:
        import torch

        n = self.images
        return self.sums[product] - torch.outer(self.sums[left], self.sums[right]) / n

    def result(self) -> tuple[float, list[float] | None]:
        import torch

        if self.images < 2:
            raise InvkitError("cka needs at least 2 images")
        xx = torch.linalg.matrix_norm(self._centred("xx", "x", "x"))
        values = []
        for v in range(self.views):
            yx = torch.linalg.matrix_norm(self._centred(f"yx{v}", f"y{v}", "x")) ** 2
            yy = torch.linalg.matrix_norm(self._centred(f"yy{v}", f"y{v}", f"y{v}"))
            values.append(float(yx / (xx * yy)) if xx > 0 and yy > 0 else float("nan"))
        return sum(values) / len(values), values


class LinearCKA(LayerMeasure):
    """Linear CKA (Kornblith et al., ICML 2019) between a layer's pooled features on the
    originals and on each view, averaged over the views; 1 is identical up to rotation and
    scale, higher is more invariant."""

    name = "cka"
    higher_is_invariant = True

    def accumulator(self) -> LayerAccumulator:
        return _CrossProducts()


@hookimpl
def register_layer_measures(register):
    register(NormalizedVariance)
    register(LinearCKA)
