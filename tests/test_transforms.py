"""Rotation, grayscale and composition: exactness, kornia agreement, clear errors."""

from __future__ import annotations

import pytest
import torch

import invkit
from invkit.analysis.aggregate import view_average


def images(b=4, c=3, h=16, w=16, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_default_rotation_views_are_the_three_quarter_turns():
    x = images()
    views = invkit.get_transform("rotation")(x)
    assert len(views) == 3
    for k, view in zip((1, 2, 3), views, strict=True):
        assert torch.equal(view, torch.rot90(x, k, dims=(-2, -1)))


def test_ninety_degrees_four_times_is_the_identity_bit_for_bit():
    x = images()
    rotate = invkit.get_transform("rotation", angles=[90])
    y = x
    for _ in range(4):
        [y] = rotate(y)
    assert torch.equal(y, x)
    assert invkit.get_transform("rotation", angles=[360])(x)[0].equal(x)
    assert invkit.get_transform("rotation", angles=[-90])(x)[0].equal(
        rotate(rotate(rotate(x)[0])[0])[0]
    )


def test_rotation_is_counter_clockwise():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 2] = 1.0  # top-right corner
    [y] = invkit.get_transform("rotation", angles=[90])(x)
    assert y[0, 0, 0, 0] == 1.0  # counter-clockwise: top-right goes to top-left
    [z] = invkit.get_transform("rotation", angles=[90.0001], interpolation="nearest")(x)
    assert z[0, 0, 0, 0] == 1.0  # kornia's positive angles turn the same way


def test_kornia_path_agrees_with_the_exact_path_at_ninety():
    x = images(h=32, w=32)
    exact = invkit.get_transform("rotation", angles=[90])(x)[0]
    # a hair off 90° forces the kornia path; interior pixels agree within interpolation error
    [approx] = invkit.get_transform("rotation", angles=[90.001])(x)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(approx[interior], exact[interior], atol=2e-3, rtol=0)


def test_arbitrary_angle_keeps_the_shape_and_pads():
    x = torch.ones(2, 3, 20, 20)
    [y] = invkit.get_transform("rotation", angles=[45], padding="zeros")(x)
    assert y.shape == x.shape
    assert y[0, 0, 0, 0] == 0  # a corner outside the rotated square is padding
    assert y[0, 0, 10, 10] == pytest.approx(1.0)
    [b] = invkit.get_transform("rotation", angles=[45], padding="border")(x)
    assert b[0, 0, 0, 0] == pytest.approx(1.0)


def test_rotation_symmetric_content_gets_ei_equal_to_its_confidence():
    quadrant = images(b=3, h=8, w=8)
    top = torch.cat([quadrant, torch.rot90(quadrant, -1, (-2, -1))], dim=-1)
    symmetric = torch.cat([top, torch.rot90(top, 2, (-2, -1))], dim=-2)
    assert torch.equal(torch.rot90(symmetric, 1, (-2, -1)), symmetric)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 7)).double()
    probs = model(symmetric.double()).softmax(dim=1)
    views = invkit.get_transform("rotation")(symmetric.double())
    view_probs = [model(v).softmax(dim=1) for v in views]
    ei = view_average(invkit.get_measure("ei"), probs, view_probs)
    torch.testing.assert_close(ei, probs.max(dim=1).values, rtol=1e-12, atol=1e-12)


def test_non_square_quarter_turn_is_a_clear_error():
    with pytest.raises(invkit.InvkitError, match=r"non-square batch \(8×16\).*crop"):
        invkit.get_transform("rotation")(images(h=8, w=16))
    [half_turn] = invkit.get_transform("rotation", angles=[180])(images(h=8, w=16))
    assert half_turn.shape == (4, 3, 8, 16)


def test_grayscale_luminance_replicated_and_gray_unchanged():
    x = images()
    [gray] = invkit.get_transform("grayscale")(x)
    assert gray.shape == x.shape
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(gray[:, c], expected, rtol=0, atol=1e-6)
    already_gray = x[:, :1].expand(-1, 3, -1, -1)
    [again] = invkit.get_transform("grayscale")(already_gray)
    torch.testing.assert_close(again, already_gray, rtol=0, atol=1e-6)


def test_grayscale_of_one_channel_is_an_error_not_an_identity():
    with pytest.raises(invkit.InvkitError, match="needs RGB images.*got 1 channel"):
        invkit.get_transform("grayscale")(images(c=1))


def test_compose_applies_steps_in_order_to_every_view():
    x = images()
    composed = invkit.get_transform(
        "compose", steps=["grayscale", {"name": "rotation", "angles": [90, 180]}]
    )
    assert composed.num_views == 2
    [gray] = invkit.get_transform("grayscale")(x)
    views = composed(x)
    assert len(views) == 2
    assert torch.equal(views[0], torch.rot90(gray, 1, (-2, -1)))
    assert torch.equal(views[1], torch.rot90(gray, 2, (-2, -1)))
    with pytest.raises(invkit.InvkitError, match="parameter 'steps' must be Sequence"):
        invkit.get_transform("compose", steps=[3])


def test_bad_inputs_and_parameters():
    with pytest.raises(invkit.InvkitError, match=r"batch \(B, C, H, W\)"):
        invkit.get_transform("rotation")(torch.rand(3, 8, 8))
    with pytest.raises(invkit.InvkitError, match="float pixels"):
        invkit.get_transform("grayscale")(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(invkit.InvkitError, match="interpolation 'cubic'"):
        invkit.get_transform("rotation", interpolation="cubic")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_transforms_and_measures_run_on_cuda_and_match_cpu():
    x = images(b=8, h=32, w=32)
    gpu = x.cuda()
    for name, params in [("rotation", {}), ("rotation", {"angles": [30]}), ("grayscale", {})]:
        transform = invkit.get_transform(name, **params)
        for cpu_view, gpu_view in zip(transform(x), transform(gpu), strict=True):
            assert gpu_view.device.type == "cuda"
            torch.testing.assert_close(gpu_view.cpu(), cpu_view, atol=1e-5, rtol=0)
    p = torch.rand(64, 100).softmax(dim=1)
    q = (p + 0.01 * torch.rand(64, 100)).softmax(dim=1)
    for name in ("ei", "agreement", "js", "kl", "l2", "cosine"):
        measure = invkit.get_measure(name)
        on_gpu = measure(p.cuda(), q.cuda())
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), measure(p, q), rtol=1e-12, atol=1e-12)
