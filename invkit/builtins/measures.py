"""Built-in measures: Effective Invariance and the baselines it is compared with.

Each takes the softmax outputs on the original images and on one view, ``(B, K)`` each, and
returns a ``(B,)`` tensor; ``reads`` says how much of each row it reads (``ei`` and
``agreement`` only the top class: they can be computed from kept ``summary`` outputs).
``docs/measures.md`` gives each formula, direction and reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invkit.errors import InvkitError
from invkit.plugin.components import Measure
from invkit.plugin.hookspecs import hookimpl

if TYPE_CHECKING:  # torch loads when a component first runs, not when it is listed
    import torch


def _as_probabilities(original: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, ...]:
    import torch

    if original.shape != view.shape or original.ndim != 2:
        raise InvkitError(
            "a measure takes two softmax batches of the same shape (B, K); got "
            f"{tuple(original.shape)} and {tuple(view.shape)}"
        )
    # float64 math whatever comes in: divergences of near-identical distributions cancel
    # catastrophically in float32, and (B, K) elementwise work is negligible next to a forward.
    return original.to(torch.float64), view.to(torch.float64)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Σ p log(p/q) per row, with 0 log(0/q) = 0; +inf where q = 0 < p."""
    import torch

    terms = torch.where(p > 0, p * torch.log(p / q), torch.zeros_like(p))
    return terms.sum(dim=1)


class EffectiveInvariance(Measure):
    """Effective Invariance: sqrt(p̂·p̂ₜ) when the top-1 classes agree, else 0 (Deng et al. 2022)."""

    name = "ei"
    higher_is_invariant = True
    reads = "top1"

    def __call__(self, original, view, labels=None):
        import torch

        p, q = _as_probabilities(original, view)
        p_conf, p_class = p.max(dim=1)
        q_conf, q_class = q.max(dim=1)
        return torch.where(
            p_class == q_class, torch.sqrt(p_conf * q_conf), torch.zeros_like(p_conf)
        )


class Agreement(Measure):
    """Top-1 agreement: 1 when the view keeps the predicted class, else 0 (1 − flip rate)."""

    name = "agreement"
    higher_is_invariant = True
    reads = "top1"

    def __call__(self, original, view, labels=None):
        p, q = _as_probabilities(original, view)
        return (p.argmax(dim=1) == q.argmax(dim=1)).to(p.dtype)


class JensenShannon(Measure):
    """Jensen–Shannon divergence between the two softmax vectors (natural log; 0 to ln 2)."""

    name = "js"
    higher_is_invariant = False

    def __call__(self, original, view, labels=None):
        p, q = _as_probabilities(original, view)
        m = 0.5 * (p + q)
        return (0.5 * _kl(p, m) + 0.5 * _kl(q, m)).clamp_min(0.0)


class KullbackLeibler(Measure):
    """KL divergence KL(original ‖ view) of the view's softmax from the original's (natural log).

    Infinite when the view gives probability 0 to a class the original does not; ``eps`` > 0
    mixes both distributions with the uniform one, p ← (p + eps) / (1 + K·eps), to keep it finite.
    """

    name = "kl"
    higher_is_invariant = False

    def __init__(self, eps: float = 0.0):
        if eps < 0:
            raise InvkitError(f"kl eps must be >= 0; got {eps}")
        self.eps = eps

    def __call__(self, original, view, labels=None):
        p, q = _as_probabilities(original, view)
        if self.eps:
            k = p.shape[1]
            p, q = ((x + self.eps) / (1 + k * self.eps) for x in (p, q))
        return _kl(p, q).clamp_min(0.0)

    def __repr__(self) -> str:
        return f"KullbackLeibler(eps={self.eps!r})"


class L2Distance(Measure):
    """Euclidean distance between the two softmax vectors (0 to √2)."""

    name = "l2"
    higher_is_invariant = False

    def __call__(self, original, view, labels=None):
        import torch

        p, q = _as_probabilities(original, view)
        return torch.linalg.vector_norm(p - q, dim=1)


class CosineSimilarity(Measure):
    """Cosine similarity between the two softmax vectors (0 to 1 for probabilities)."""

    name = "cosine"
    higher_is_invariant = True

    def __call__(self, original, view, labels=None):
        import torch

        p, q = _as_probabilities(original, view)
        dot = (p * q).sum(dim=1)
        norms = torch.linalg.vector_norm(p, dim=1) * torch.linalg.vector_norm(q, dim=1)
        return dot / norms


class LieDerivative(Measure):
    """The Lie derivative (Gruver et al., ICLR 2023): local invariance, lower is more invariant.

    The mean over classes of |d/dt softmax(f(T_t x))| at t = 0, along the transform's
    generator, per unit of the transform's magnitude (a degree, a pixel, a factor).

    ``method``: ``auto`` (forward mode, else double backward), ``forward`` or
    ``double_backward``; both are exact Jacobian-vector products."""

    name = "lie_derivative"
    higher_is_invariant = False
    reads = "model"

    def __init__(self, method: str = "auto"):
        from invkit.run.derivatives import METHODS

        if method not in METHODS:
            raise InvkitError(
                f"lie_derivative method {method!r} is not one of {', '.join(METHODS)}"
            )
        self.method = method

    def derivative(self, forward, images, tangent):
        """Per image, from ``forward`` (pixels in [0, 1] → class probabilities), the images
        and their derivative along the transform (``Transform.generator``)."""
        import torch

        from invkit.run.derivatives import jvp

        change = jvp(forward, images, tangent, self.method)
        return change.abs().to(torch.float64).mean(dim=1)

    def __call__(self, original, view, labels=None):
        raise InvkitError(
            "lie_derivative reads the model itself, not two softmax batches: a study computes it "
            "in its pass (measure.derivative(forward, images, tangent))"
        )


@hookimpl
def register_measures(register):
    for measure in (
        EffectiveInvariance,
        Agreement,
        JensenShannon,
        KullbackLeibler,
        L2Distance,
        CosineSimilarity,
        LieDerivative,
    ):
        register(measure)
