"""A third-party dataset shift: posterize, with seeded dither noise."""

import torch

from invkit import hookimpl
from invkit.plugin import Shift


class Posterize(Shift):
    """Keep ``bits`` bits per channel after adding seeded dither noise."""

    name = "posterize"

    def __init__(self, bits: int = 2, dither: float = 0.05):
        self.bits = bits
        self.dither = dither

    def __call__(self, image, seed):
        generator = torch.Generator().manual_seed(seed)
        noisy = (image + torch.randn(image.shape, generator=generator) * self.dither).clamp(0, 1)
        levels = 2**self.bits
        return torch.floor(noisy * (levels - 1e-6)) / (levels - 1)


@hookimpl
def register_shifts(register):
    register(Posterize)
