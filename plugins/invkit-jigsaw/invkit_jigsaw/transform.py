"""The jigsaw transform: shuffle an image's tiles, keeping every pixel's value."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from invkit import InvkitError, Transform

if TYPE_CHECKING:  # torch loads when the transform first runs: listing it stays fast
    import torch


class Jigsaw(Transform):
    """Cut the image into a grid×grid of tiles and shuffle them, one view per seeded permutation.

    The permutations are drawn once, from ``seed``, and are never the identity; every view
    holds exactly the input's pixels, rearranged. Height and width must be divisible by
    ``grid``.
    """

    name = "jigsaw"

    def __init__(self, grid: int = 2, permutations: int = 3, seed: int = 0):
        if grid < 2:
            raise InvkitError(
                f"jigsaw grid must be at least 2 (a 1×1 grid is the image); got {grid}"
            )
        tiles = grid * grid
        possible = math.factorial(tiles) - 1
        if not 1 <= permutations <= possible:
            raise InvkitError(
                f"jigsaw permutations must be between 1 and {possible} for a {grid}×{grid} grid; "
                f"got {permutations}"
            )
        self.grid = grid
        self.permutations = permutations
        self.seed = seed
        self.orders = self._draw_orders(tiles, permutations, seed)

    @staticmethod
    def _draw_orders(tiles: int, count: int, seed: int) -> list[torch.Tensor]:
        import torch

        generator = torch.Generator().manual_seed(seed)
        identity = torch.arange(tiles)
        orders: list[torch.Tensor] = []
        while len(orders) < count:
            order = torch.randperm(tiles, generator=generator)
            if not torch.equal(order, identity) and not any(torch.equal(order, o) for o in orders):
                orders.append(order)
        return orders

    @property
    def num_views(self) -> int:
        return self.permutations

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.ndim != 4:
            raise InvkitError(f"jigsaw takes a batch (B, C, H, W); got shape {tuple(images.shape)}")
        b, c, h, w = images.shape
        g = self.grid
        if h % g or w % g:
            raise InvkitError(
                f"jigsaw with a {g}×{g} grid needs height and width divisible by {g}; "
                f"got {h}×{w} (resize or crop the images, or pick another grid)"
            )
        th, tw = h // g, w // g
        tiles = (
            images.reshape(b, c, g, th, g, tw)
            .permute(0, 1, 2, 4, 3, 5)
            .reshape(b, c, g * g, th, tw)
        )
        views = []
        for order in self.orders:
            shuffled = tiles[:, :, order.to(images.device)]
            grid = shuffled.reshape(b, c, g, g, th, tw).permute(0, 1, 2, 4, 3, 5)
            views.append(grid.reshape(b, c, h, w))
        return views

    def __repr__(self) -> str:
        return f"Jigsaw(grid={self.grid}, permutations={self.permutations}, seed={self.seed})"
