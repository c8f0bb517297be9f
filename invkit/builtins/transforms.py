"""Built-in transforms: exact and interpolated rotation, grayscale, composition, and the
families of ``invkit.builtins.families`` (translation, scale, flip, colour, blur, noise, JPEG).

All act on float pixels in [0, 1] before the model's normalization, batched, on the batch's
device. ``docs/transforms.md`` describes each one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from invkit.builtins.families import (
    FAMILIES,
    INTERPOLATIONS,
    PADDINGS,
    Family,
    centred_grid,
    check_batch,
    choice,
    flow,
    magnitudes,
)
from invkit.errors import InvkitError
from invkit.plugin.components import Transform
from invkit.plugin.hookspecs import hookimpl

if TYPE_CHECKING:  # torch loads when a component first runs, not when it is listed
    import torch


class Rotation(Family):
    """Rotate counter-clockwise by each angle (degrees); multiples of 90° are exact.

    A multiple of 90° moves pixels with ``torch.rot90`` (no interpolation, bit-exact); any other
    angle goes through ``kornia.geometry.transform.rotate`` about the image centre, keeping the
    image size, with the given interpolation and padding of the uncovered corners.
    """

    name = "rotation"

    def __init__(
        self,
        angles: float | Sequence[float] = (90, 180, 270),
        interpolation: str = "bilinear",
        padding: str = "zeros",
    ):
        self.angles = magnitudes(self.name, "angles", angles, math.isfinite, "finite degrees")
        self.values = self.angles
        self.interpolation = choice(self.name, "interpolation", interpolation, INTERPOLATIONS)
        self.padding = choice(self.name, "padding", padding, PADDINGS)

    def generator(self, images: torch.Tensor) -> torch.Tensor:
        """d/dθ of the rotation by θ degrees at θ = 0: the source of pixel p flows by
        (−(y − cy), x − cx) · π/180 (x to the right, y down; counter-clockwise on screen)."""
        xs, ys = centred_grid(images)
        return flow(images, -ys * (math.pi / 180), xs * (math.pi / 180))

    def apply(self, images: torch.Tensor, angle: float) -> torch.Tensor:
        import kornia
        import torch

        if angle % 90 == 0:
            quarter_turns = int(angle // 90) % 4
            if quarter_turns % 2 and images.shape[-1] != images.shape[-2]:
                raise InvkitError(
                    f"rotating a non-square batch ({images.shape[-2]}×{images.shape[-1]}) by "
                    f"{angle:g}° would swap its height and width; crop the images to a square "
                    "first (a model's preprocessing does)"
                )
            return torch.rot90(images, quarter_turns, dims=(-2, -1))
        angle_tensor = torch.full(
            (images.shape[0],), angle, device=images.device, dtype=images.dtype
        )
        return kornia.geometry.transform.rotate(
            images, angle_tensor, mode=self.interpolation, padding_mode=self.padding
        )


class Grayscale(Transform):
    """Convert RGB to luminance (kornia's ITU-R 601 weights), replicated to three channels.

    The view keeps the input's shape, so the model sees a gray RGB image.
    """

    name = "grayscale"
    channels = (3,)

    @property
    def num_views(self) -> int:
        return 1

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        import kornia

        check_batch(self.name, images)
        if images.shape[1] != 3:
            raise InvkitError(
                f"grayscale needs RGB images (3 channels); got {images.shape[1]} channel(s). "
                "A 1-channel image is already gray, so its grayscale invariance is trivially "
                "perfect: leave this transform out, or give the model RGB input"
            )
        gray = kornia.color.rgb_to_grayscale(images)
        return [gray.expand(-1, 3, -1, -1).contiguous()]


class Compose(Transform):
    """Apply transforms one after another: every view of one step goes through the next.

    ``steps`` lists transform names, or mappings ``{"name": ..., **params}``; the views are the
    product of the steps' views (grayscale then rotation by 90/180/270 gives three views).
    """

    name = "compose"

    def __init__(self, steps: Sequence[str | Mapping[str, Any]]):
        from invkit.lookup import get_transform

        if not steps:
            raise InvkitError(
                "compose needs at least one step, e.g. steps=['grayscale', 'rotation']"
            )
        self.steps = []
        for step in steps:
            if isinstance(step, str):
                self.steps.append(get_transform(step))
            elif isinstance(step, Mapping) and "name" in step:
                params = {k: v for k, v in step.items() if k != "name"}
                self.steps.append(get_transform(step["name"], **params))
            else:
                raise InvkitError(
                    f"compose step {step!r} is neither a transform name nor a mapping with a "
                    "'name' key, e.g. {'name': 'rotation', 'angles': [90]}"
                )

    @property
    def channels(self) -> tuple[int, ...] | None:
        """The channel counts every step accepts (transforms keep the channel count)."""
        accepted: set[int] | None = None
        for step in self.steps:
            own = getattr(step, "channels", None)
            if own is not None:
                accepted = set(own) if accepted is None else accepted & set(own)
        return None if accepted is None else tuple(sorted(accepted))

    @property
    def num_views(self) -> int:
        count = 1
        for step in self.steps:
            count *= step.num_views
        return count

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        views = [images]
        for step in self.steps:
            views = [out for view in views for out in step(view)]
        return views


@hookimpl
def register_transforms(register):
    register(Rotation)
    register(Grayscale)
    register(Compose)
    for family in FAMILIES:
        register(family)
