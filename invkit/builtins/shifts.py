"""Built-in dataset shifts: the CIFAR-10-C recipes for Gaussian noise, Gaussian blur and
contrast, at severities 1 to 5, for dataset-centric studies.

Each acts on one image at the model's input size, in [0, 1]; noise is drawn from a generator
seeded per image, so the same image is shifted the same way in any batch or worker.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from invkit.errors import InvkitError
from invkit.plugin.components import Shift
from invkit.plugin.hookspecs import hookimpl

if TYPE_CHECKING:  # torch loads when a component first runs, not when it is listed
    import torch

NOISE_SIGMA = (0.04, 0.06, 0.08, 0.09, 0.10)  # CIFAR-10-C gaussian_noise
BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # CIFAR-10-C gaussian_blur, for 32-pixel images
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # CIFAR-10-C contrast


class _Severity(Shift):
    def __init__(self, severity: int = 1):
        if not 1 <= severity <= 5:
            raise InvkitError(f"{self.name} severity must be 1 to 5; got {severity}")
        self.severity = severity


class GaussianNoise(_Severity):
    """Add Gaussian noise (σ 0.04 to 0.10 by severity), clipped to [0, 1]."""

    name = "gaussian_noise"

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        import torch

        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(image.shape, generator=generator) * NOISE_SIGMA[self.severity - 1]
        return (image + noise).clamp(0, 1)


class GaussianBlur(_Severity):
    """Blur with a Gaussian (σ 0.4 to 1.0 pixels of a 32-pixel image, scaled to the width)."""

    name = "gaussian_blur"

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        sigma = BLUR_SIGMA[self.severity - 1] * image.shape[-1] / 32
        kernel = 2 * math.ceil(3 * sigma) + 1
        return F.gaussian_blur(image, [kernel, kernel], [sigma, sigma])


class Contrast(_Severity):
    """Pull pixels toward the image mean (contrast 0.75 to 0.15 by severity)."""

    name = "contrast"

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        mean = image.mean(dim=(-3, -2, -1), keepdim=True)
        return ((image - mean) * CONTRAST[self.severity - 1] + mean).clamp(0, 1)


@hookimpl
def register_shifts(register):
    register(GaussianNoise)
    register(GaussianBlur)
    register(Contrast)
