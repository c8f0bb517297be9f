"""Built-in transform families: each takes a list of magnitudes, and each magnitude is one view,
named by its value, so that invariance can be measured as a profile over magnitudes.

All act on float pixels in [0, 1] before the model's normalization, batched, on the batch's
device, and deterministically. ``docs/transforms.md`` gives each family's exact definition and
the direct computation its tests compare it with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from invkit.errors import InvkitError
from invkit.plugin.components import Transform

if TYPE_CHECKING:  # torch loads when a component first runs, not when it is listed
    import torch

PADDINGS = ("zeros", "border", "reflection")
INTERPOLATIONS = ("bilinear", "nearest")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as the grayscale transform


def check_batch(name: str, images: torch.Tensor) -> None:
    """Refuse what is not a float batch (B, C, H, W), naming the transform and the fix."""
    if images.ndim != 4:
        raise InvkitError(
            f"transform {name!r} takes a batch (B, C, H, W); got a tensor of shape "
            f"{tuple(images.shape)} (add a batch dimension with images.unsqueeze(0))"
        )
    if not images.is_floating_point():
        raise InvkitError(
            f"transform {name!r} takes float pixels in [0, 1]; got dtype {images.dtype} "
            "(convert with images.float() / 255)"
        )


def choice(name: str, key: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvkitError(f"{name} {key} {value!r} is not one of {', '.join(choices)}")
    return value


def magnitudes(
    name: str, key: str, values: Any, valid: Callable[[float], bool], rule: str
) -> tuple[float, ...]:
    """A family's magnitudes, each checked: ``rule`` says the valid range, for the message."""
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = (values,)
    if not values:
        raise InvkitError(f"{name} needs at least one value in params.{key}")
    checked = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not valid(value):
            raise InvkitError(
                f"{name} params.{key}: {value!r} is outside its range ({rule}); "
                "`invkit list transforms` shows the parameters"
            )
        checked.append(float(value))
    return tuple(checked)


def image_gradient(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """∂I/∂x and ∂I/∂y per pixel by central differences, (I(x + 1) − I(x − 1)) / 2, the border
    pixel repeated beyond the edge. A bilinear warp has two one-sided derivatives at t = 0,
    and this is their mean: the generator is the warp's symmetric derivative, exactly so for
    a warp that repeats the border (``padding = "border"``)."""
    import torch.nn.functional as F

    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    return dx, dy


def flow(images: torch.Tensor, vx: Any, vy: Any) -> torch.Tensor:
    """The image's derivative along a flow of the pixels' sources: ∂I/∂x · vx + ∂I/∂y · vy."""
    dx, dy = image_gradient(images)
    return dx * vx + dy * vy


def centred_grid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's x − cx and y − cy, the centre c = ((W − 1)/2, (H − 1)/2)."""
    import torch

    height, width = images.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=images.device, dtype=images.dtype) - (height - 1) / 2,
        torch.arange(width, device=images.device, dtype=images.dtype) - (width - 1) / 2,
        indexing="ij",
    )
    return xs, ys


class Family(Transform):
    """A transform with one view per magnitude: ``magnitudes`` lists them, ``view_names`` are
    their values, and ``apply(images, magnitude)`` makes one view."""

    values: tuple[float, ...] = ()

    @property
    def magnitudes(self) -> list[float]:
        return list(self.values)

    @property
    def num_views(self) -> int:
        return len(self.values)

    @property
    def view_names(self) -> list[str]:
        return [f"{value:g}" for value in self.values]

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.iter_views(images))

    def iter_views(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """The views one at a time, so that a pass holds only the chunk it runs."""
        check_batch(self.name, images)
        for value in self.values:
            yield self.apply(images, value)

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        raise NotImplementedError


def _affine(
    images: torch.Tensor, inverse: Callable[[Any, Any], tuple[Any, Any]], mode: str, padding: str
) -> torch.Tensor:
    """Each output pixel (x, y) reads the input at ``inverse(x, y)`` (pixel coordinates, x to
    the right, y down), sampled bilinearly or at the nearest pixel, with the padding given."""
    import torch
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=images.device, dtype=images.dtype),
        torch.arange(width, device=images.device, dtype=images.dtype),
        indexing="ij",
    )
    source_x, source_y = inverse(xs, ys)
    grid = torch.stack(  # align_corners=True: -1 and 1 are the centres of the edge pixels
        (2 * source_x / max(width - 1, 1) - 1, 2 * source_y / max(height - 1, 1) - 1), dim=-1
    )
    grid = grid.unsqueeze(0).expand(images.shape[0], -1, -1, -1)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding, align_corners=True)


class Translation(Family):
    """Shift by each number of pixels along x (to the right) or y (down).

    Whole-pixel shifts move pixels (exact); a fractional shift samples bilinearly. The pixels
    the shift uncovers are filled by ``padding``: zeros, the border's, or a reflection.
    """

    name = "translation"

    def __init__(
        self, shifts: float | Sequence[float] = (-4, 4), axis: str = "x", padding: str = "zeros"
    ):
        self.values = magnitudes(self.name, "shifts", shifts, math.isfinite, "finite pixels")
        self.axis = choice(self.name, "axis", axis, ("x", "y"))
        self.padding = choice(self.name, "padding", padding, PADDINGS)

    def generator(self, images: torch.Tensor) -> torch.Tensor:
        """d/dt of the shift by t pixels at t = 0: −∂I/∂x (or −∂I/∂y), per pixel."""
        dx, dy = image_gradient(images)
        return -dx if self.axis == "x" else -dy

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        if magnitude.is_integer():
            return self._whole(images, int(magnitude))
        dx, dy = (magnitude, 0.0) if self.axis == "x" else (0.0, magnitude)
        return _affine(images, lambda x, y: (x - dx, y - dy), "bilinear", self.padding)

    def _whole(self, images: torch.Tensor, shift: int) -> torch.Tensor:
        import torch.nn.functional as F

        dim = -1 if self.axis == "x" else -2
        size = images.shape[dim]
        if shift == 0:
            return images.clone()
        if abs(shift) >= size and self.padding == "reflection":
            raise InvkitError(
                f"translation by {shift} pixels with reflection padding needs an image wider "
                f"than the shift; this one is {size} pixels"
            )
        amount = min(abs(shift), size)
        pad = [0, 0, 0, 0]  # left, right, top, bottom
        side = (0 if shift > 0 else 1) + (0 if dim == -1 else 2)
        pad[side] = amount
        mode = {"zeros": "constant", "border": "replicate", "reflection": "reflect"}[self.padding]
        padded = F.pad(images, pad, mode=mode)
        start = 0 if shift > 0 else amount
        return padded.narrow(dim, start, size).contiguous()


class Scale(Family):
    """Zoom about the image centre by each factor (> 1 enlarges, < 1 shrinks).

    The size is kept; what the shrunk image no longer covers is filled by ``padding``."""

    name = "scale"

    def __init__(
        self,
        factors: float | Sequence[float] = (0.8, 1.25),
        interpolation: str = "bilinear",
        padding: str = "zeros",
    ):
        self.values = magnitudes(
            self.name, "factors", factors, lambda f: math.isfinite(f) and f > 0, "factors > 0"
        )
        self.interpolation = choice(self.name, "interpolation", interpolation, INTERPOLATIONS)
        self.padding = choice(self.name, "padding", padding, PADDINGS)

    def generator(self, images: torch.Tensor) -> torch.Tensor:
        """d/ds of the zoom by s at s = 1: the source flows by −(p − c), per unit of factor."""
        xs, ys = centred_grid(images)
        return flow(images, -xs, -ys)

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        if magnitude == 1:
            return images.clone()
        cx, cy = (images.shape[-1] - 1) / 2, (images.shape[-2] - 1) / 2

        def inverse(x: Any, y: Any) -> tuple[Any, Any]:
            return cx + (x - cx) / magnitude, cy + (y - cy) / magnitude

        return _affine(images, inverse, self.interpolation, self.padding)


class Flip(Transform):
    """Mirror the image, one view per direction: horizontal or vertical (exact).

    ``horizontal`` swaps left and right, ``vertical`` top and bottom."""

    name = "flip"

    def __init__(self, directions: str | Sequence[str] = ("horizontal",)):
        if isinstance(directions, str):
            directions = (directions,)
        if not directions:
            raise InvkitError("flip needs at least one direction: horizontal or vertical")
        self.directions = tuple(
            choice(self.name, "direction", d, ("horizontal", "vertical")) for d in directions
        )

    @property
    def num_views(self) -> int:
        return len(self.directions)

    @property
    def view_names(self) -> list[str]:
        return list(self.directions)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        import torch

        check_batch(self.name, images)
        return [torch.flip(images, (-1 if d == "horizontal" else -2,)) for d in self.directions]


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Y = 0.299 R + 0.587 G + 0.114 B per pixel, (B, 1, H, W); a 1-channel image is itself."""
    if images.shape[1] == 1:
        return images
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def blend(images: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """factor · images + (1 − factor) · other, clipped to [0, 1] (torchvision's rule)."""
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def _factors(name: str, factors: Any) -> tuple[float, ...]:
    return magnitudes(name, "factors", factors, lambda f: math.isfinite(f) and f >= 0, "≥ 0")


class Brightness(Family):
    """Multiply every pixel by each factor (0: black, 1: unchanged), clipped to [0, 1]."""

    name = "brightness"

    def __init__(self, factors: float | Sequence[float] = (0.5, 1.5)):
        self.values = _factors(self.name, factors)

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        return blend(images, images.new_zeros(()), magnitude)

    def generator(self, images: torch.Tensor) -> torch.Tensor:
        """d/df of f · x at f = 1 (before clipping): x."""
        return images.clone()


class Contrast(Family):
    """Scale the contrast by each factor (0: flat gray, 1: unchanged), clipped to [0, 1].

    Each image is blended with the mean of its luminance."""

    name = "contrast"

    def __init__(self, factors: float | Sequence[float] = (0.5, 1.5)):
        self.values = _factors(self.name, factors)

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        return blend(images, self._mean(images), magnitude)

    def generator(self, images: torch.Tensor) -> torch.Tensor:
        """d/df at f = 1 (before clipping): x − the mean luminance."""
        return images - self._mean(images)

    @staticmethod
    def _mean(images: torch.Tensor) -> torch.Tensor:
        return luminance(images).mean(dim=(-3, -2, -1), keepdim=True)


class Saturation(Family):
    """Scale the saturation by each factor (0: gray, 1: unchanged), clipped to [0, 1].

    Each pixel is blended with its luminance."""

    name = "saturation"
    channels = (3,)

    def __init__(self, factors: float | Sequence[float] = (0.0, 0.5, 2.0)):
        self.values = _factors(self.name, factors)

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        return blend(images, luminance(images), magnitude)

    def generator(self, images: torch.Tensor) -> torch.Tensor:
        """d/df at f = 1 (before clipping): x − its luminance."""
        return images - luminance(images)


class Hue(Family):
    """Turn every pixel's hue by each shift, a fraction of the hue circle in [-0.5, 0.5].

    HSV, as torchvision's ``adjust_hue``, through kornia's ``adjust_hue``."""

    name = "hue"
    channels = (3,)

    def __init__(self, shifts: float | Sequence[float] = (-0.1, 0.1)):
        self.values = magnitudes(
            self.name, "shifts", shifts, lambda h: -0.5 <= h <= 0.5, "-0.5 to 0.5"
        )

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        import kornia

        if magnitude == 0:
            return images.clone()
        return kornia.enhance.adjust_hue(images, magnitude * 2 * math.pi).clamp(0, 1)


def blur_kernel_size(sigma: float) -> int:
    """The Gaussian kernel's width: 2 · ⌈3σ⌉ + 1, enough for 99.7% of its mass."""
    return 2 * math.ceil(3 * sigma) + 1


class GaussianBlur(Family):
    """Blur with a Gaussian of each standard deviation σ in pixels (0: unchanged).

    A kernel of 2⌈3σ⌉ + 1 pixels, the border reflected (kornia's ``gaussian_blur2d``)."""

    name = "gaussian_blur"

    def __init__(self, sigmas: float | Sequence[float] = (0.5, 1.0, 2.0)):
        self.values = magnitudes(
            self.name, "sigmas", sigmas, lambda s: math.isfinite(s) and s >= 0, "σ ≥ 0 pixels"
        )

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        import kornia

        if magnitude == 0:
            return images.clone()
        size = blur_kernel_size(magnitude)
        if size // 2 >= min(images.shape[-2:]):
            raise InvkitError(
                f"gaussian_blur σ = {magnitude:g} needs a kernel of {size} pixels, wider than "
                f"the {images.shape[-2]}×{images.shape[-1]} images can reflect; use a smaller σ"
            )
        return kornia.filters.gaussian_blur2d(
            images, (size, size), (magnitude, magnitude), border_type="reflect"
        )


def image_seeds(images: torch.Tensor, seed: int) -> list[int]:
    """One seed per image from its pixels (quantised to 8 bits, an exact integer hash), so an
    image gets the same noise whatever its batch, device or position."""
    import torch

    flat = (images.detach() * 255).round().to(torch.int64).flatten(1)
    weights = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=torch.int64)
    weights = (weights * 2654435761) % 2147483647 + 1
    hashes = (flat * weights).sum(dim=1).tolist()
    return [(seed * 1_000_003 + h) % (2**63 - 1) for h in hashes]


class GaussianNoise(Family):
    """Add Gaussian noise of each standard deviation (pixels in [0, 1]), clipped to [0, 1].

    The noise is seeded per image (``seed`` and the image's own pixels), as shifts are, so an
    image gets the same noise whatever the batch; every standard deviation scales the same
    pattern, so the magnitudes differ only in strength.
    """

    name = "gaussian_noise"

    def __init__(self, stds: float | Sequence[float] = (0.02, 0.05, 0.1), seed: int = 0):
        self.values = magnitudes(
            self.name, "stds", stds, lambda s: math.isfinite(s) and s >= 0, "standard deviation ≥ 0"
        )
        self.seed = int(seed)

    def iter_views(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        check_batch(self.name, images)
        noise = self.noise(images)
        for value in self.values:
            yield (images + value * noise).clamp(0, 1)

    def noise(self, images: torch.Tensor) -> torch.Tensor:
        """The standard normal noise of each image, drawn on the CPU from its seed."""
        import torch

        draws = []
        for seed in image_seeds(images, self.seed):
            generator = torch.Generator().manual_seed(seed)
            draws.append(torch.randn(images.shape[1:], generator=generator, dtype=torch.float64))
        return torch.stack(draws).to(device=images.device, dtype=images.dtype)


class Jpeg(Family):
    """Compress each image as JPEG at each quality (1 to 100) and decode it again.

    libjpeg through Pillow, on the CPU, with its default 4:2:0 chroma subsampling; the pixels
    are rounded to 8 bits first."""

    name = "jpeg"

    def __init__(self, qualities: int | Sequence[int] = (90, 50, 10)):
        self.values = magnitudes(
            self.name, "qualities", qualities, lambda q: float(q).is_integer() and 1 <= q <= 100,
            "whole numbers from 1 to 100",
        )  # fmt: skip

    def apply(self, images: torch.Tensor, magnitude: float) -> torch.Tensor:
        import io

        import numpy as np
        import torch
        from PIL import Image

        pixels = (images.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
        decoded = []
        for image in pixels.permute(0, 2, 3, 1).numpy():
            buffer = io.BytesIO()
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
                buffer, format="JPEG", quality=int(magnitude)
            )
            array = np.asarray(Image.open(buffer)).reshape(image.shape)
            decoded.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
        return (torch.stack(decoded).to(images.dtype) / 255).to(images.device)


FAMILIES = (
    Translation,
    Scale,
    Flip,
    Brightness,
    Contrast,
    Saturation,
    Hue,
    GaussianBlur,
    GaussianNoise,
    Jpeg,
)
