"""A third party's shear (with its generator, so the Lie derivative works along it) and a
derivative measure of its own (the largest class's rate of change)."""

import torch

from invkit import Measure, Transform, hookimpl
from invkit.builtins.families import centred_grid, flow
from invkit.run.derivatives import jvp


class HorizontalShear(Transform):
    """Shear rows sideways in proportion to their height: x' = x + s · (y − cy)."""

    name = "hshear"

    def __init__(self, amounts=(0.1,)):
        self.amounts = tuple(float(a) for a in amounts)

    @property
    def num_views(self):
        return len(self.amounts)

    @property
    def magnitudes(self):
        return list(self.amounts)

    @property
    def view_names(self):
        return [f"{a:g}" for a in self.amounts]

    def __call__(self, images):
        import torch.nn.functional as F

        xs, ys = centred_grid(images)
        height, width = images.shape[-2:]
        views = []
        for s in self.amounts:
            sx = xs - s * ys + (width - 1) / 2
            sy = ys + (height - 1) / 2
            grid = torch.stack((2 * sx / (width - 1) - 1, 2 * sy / (height - 1) - 1), dim=-1)
            grid = grid.unsqueeze(0).expand(images.shape[0], -1, -1, -1)
            views.append(F.grid_sample(images, grid, padding_mode="border", align_corners=True))
        return views

    def generator(self, images):
        xs, ys = centred_grid(images)
        return flow(images, -ys, torch.zeros_like(xs))


class LargestRate(Measure):
    """The largest class's |d/dt softmax| along the transform (a derivative measure)."""

    name = "largest_rate"
    higher_is_invariant = False
    reads = "model"

    def derivative(self, forward, images, tangent):
        return jvp(forward, images, tangent).abs().max(dim=1).values.double()


@hookimpl
def register_transforms(register):
    register(HorizontalShear)


@hookimpl
def register_measures(register):
    register(LargestRate)
