"""Tests of the jigsaw plugin, as a plugin author would write them: through invkit's API."""

import pytest
import torch
from invkit_jigsaw.transform import Jigsaw

import invkit


def test_found_through_invkit():
    transform = invkit.get_transform("jigsaw", grid=2, permutations=3, seed=1)
    assert isinstance(transform, Jigsaw)
    assert invkit.get_component("transform", "jigsaw").plugin == "invkit-jigsaw"


def test_views_are_tile_permutations_of_the_input():
    images = torch.rand(2, 3, 8, 8)
    views = Jigsaw(grid=2, permutations=5, seed=0)(images)
    assert len(views) == 5
    for view, order in zip(views, Jigsaw(grid=2, permutations=5, seed=0).orders, strict=True):
        assert view.shape == images.shape
        assert not torch.equal(view, images)
        # tile k of the view is tile order[k] of the input (tiles in row-major order)
        for k, source in enumerate(order.tolist()):
            r, c = divmod(k, 2)
            sr, sc = divmod(source, 2)
            assert torch.equal(
                view[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4],
                images[:, :, 4 * sr : 4 * sr + 4, 4 * sc : 4 * sc + 4],
            )


def test_seeded_and_distinct():
    first = Jigsaw(grid=3, permutations=4, seed=7).orders
    again = Jigsaw(grid=3, permutations=4, seed=7).orders
    other = Jigsaw(grid=3, permutations=4, seed=8).orders
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert len({tuple(o.tolist()) for o in first}) == 4


def test_bad_sizes_are_clear_errors():
    with pytest.raises(invkit.InvkitError, match="divisible by 3"):
        Jigsaw(grid=3)(torch.rand(1, 3, 8, 8))
    with pytest.raises(invkit.InvkitError, match="between 1 and 23"):
        Jigsaw(grid=2, permutations=24)
