"""The built-in transform families, each checked at every magnitude against an independent
computation on a real photograph (scikit-learn's china.jpg): scipy's interpolation for the
geometric families, torchvision's functional transforms and PIL for the photometric ones and
JPEG, the formula for noise. Flips and whole-pixel shifts are bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from sklearn.datasets import load_sample_image

import invkit
from invkit import get_transform
from invkit.builtins.families import LUMA, blur_kernel_size
from invkit.config import ConfigError, parse_config
from invkit.run.check import check_study
from invkit.run.study import Study

SCIPY_MODES = {"zeros": "grid-constant", "border": "nearest", "reflection": "mirror"}


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """Two real photographs, 48×64, as a batch of float pixels in [0, 1]."""
    images = []
    for name in ("china.jpg", "flower.jpg"):
        image = Image.fromarray(load_sample_image(name)).resize((64, 48), Image.BILINEAR)
        images.append(torch.tensor(np.asarray(image)).permute(2, 0, 1).float() / 255)
    return torch.stack(images)


def sampled(images: torch.Tensor, source_x, source_y, padding: str) -> torch.Tensor:
    """Bilinear sampling at the given source coordinates, by scipy (the independent side)."""
    out = np.empty(images.shape, dtype=np.float64)
    for b in range(images.shape[0]):
        for c in range(images.shape[1]):
            out[b, c] = scipy.ndimage.map_coordinates(
                images[b, c].double().numpy(), [source_y, source_x], order=1,
                mode=SCIPY_MODES[padding], cval=0.0,
            )  # fmt: skip
    return torch.from_numpy(out)


def grid(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.meshgrid(np.arange(images.shape[-2]), np.arange(images.shape[-1]), indexing="ij")
    return xs.astype(np.float64), ys.astype(np.float64)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_translation_moves_whole_pixels_exactly_and_interpolates_fractions(photo, padding):
    xs, ys = grid(photo)
    for axis in ("x", "y"):
        for shift in (-5, 3, 0):
            [view] = get_transform("translation", shifts=[shift], axis=axis, padding=padding)(photo)
            dx, dy = (shift, 0) if axis == "x" else (0, shift)
            expected = sampled(photo, xs - dx, ys - dy, padding).float()
            assert torch.equal(view, expected), (axis, shift)  # bit-exact
        for shift in (-2.5, 0.3, 7.75):
            [view] = get_transform("translation", shifts=[shift], axis=axis, padding=padding)(photo)
            dx, dy = (shift, 0) if axis == "x" else (0, shift)
            expected = sampled(photo, xs - dx, ys - dy, padding)
            assert (view.double() - expected).abs().max() < 1e-5, (axis, shift)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_scale_zooms_about_the_centre(photo, padding):
    xs, ys = grid(photo)
    cx, cy = (photo.shape[-1] - 1) / 2, (photo.shape[-2] - 1) / 2
    transform = get_transform("scale", factors=[0.6, 1.0, 1.5], padding=padding)
    for factor, view in zip(transform.magnitudes, transform(photo), strict=True):
        expected = sampled(photo, cx + (xs - cx) / factor, cy + (ys - cy) / factor, padding)
        assert (view.double() - expected).abs().max() < 1e-5, factor
    assert torch.equal(transform(photo)[1], photo)


def test_flip_is_exact(photo):
    horizontal, vertical = get_transform("flip", directions=["horizontal", "vertical"])(photo)
    assert torch.equal(horizontal, torch.from_numpy(photo.numpy()[..., ::-1].copy()))
    assert torch.equal(vertical, torch.from_numpy(photo.numpy()[..., ::-1, :].copy()))


def test_colour_families_equal_torchvision_and_their_formula(photo):
    gray = sum(w * photo[:, i : i + 1] for i, w in enumerate(LUMA))
    for factor in (0.0, 0.4, 1.0, 1.8):
        [bright] = get_transform("brightness", factors=[factor])(photo)
        assert torch.equal(bright, TF.adjust_brightness(photo, factor))
        [contrast] = get_transform("contrast", factors=[factor])(photo)
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
        assert (contrast - (factor * photo + (1 - factor) * mean).clamp(0, 1)).abs().max() < 1e-6
        # torchvision weighs red 0.2989 where ITU-R 601 (and invkit's grayscale) says 0.299
        assert (contrast - TF.adjust_contrast(photo, factor)).abs().max() < 1e-4
        [saturated] = get_transform("saturation", factors=[factor])(photo)
        assert (saturated - (factor * photo + (1 - factor) * gray).clamp(0, 1)).abs().max() < 1e-6
        assert (saturated - TF.adjust_saturation(photo, factor)).abs().max() < 1e-4
    for shift in (-0.5, -0.2, 0.0, 0.1, 0.45):
        [hue] = get_transform("hue", shifts=[shift])(photo)
        assert (hue - TF.adjust_hue(photo, shift)).abs().max() < 1e-5, shift


def test_gaussian_blur_equals_torchvisions(photo):
    for sigma in (0.5, 1.0, 2.5):
        [blurred] = get_transform("gaussian_blur", sigmas=[sigma])(photo)
        size = blur_kernel_size(sigma)
        assert (blurred - TF.gaussian_blur(photo, [size, size], [sigma, sigma])).abs().max() < 1e-5
    assert torch.equal(get_transform("gaussian_blur", sigmas=[0])(photo)[0], photo)
    with pytest.raises(invkit.InvkitError, match="needs a kernel of 61 pixels"):
        get_transform("gaussian_blur", sigmas=[10])(photo[:, :, :20, :20])


def test_gaussian_noise_is_seeded_per_image_whatever_the_batch(photo):
    noise = get_transform("gaussian_noise", stds=[0.05, 0.2], seed=3)
    both = noise(photo)
    alone = noise(photo[1:])
    assert torch.equal(both[0][1:], alone[0]) and torch.equal(both[1][1:], alone[1])
    added = (both[1] - photo)[photo.gt(0.25) & photo.lt(0.75)]  # away from the clipping
    assert 0.18 < float(added.std()) < 0.22
    pattern = noise.noise(photo)
    for std, view in zip(noise.magnitudes, both, strict=True):
        assert torch.equal(view, (photo + std * pattern).clamp(0, 1))
    assert not torch.equal(pattern[0], pattern[1])
    other = get_transform("gaussian_noise", stds=[0.05], seed=4)(photo)[0]
    assert not torch.equal(other, both[0])


def test_jpeg_equals_torchvisions_libjpeg(photo):
    from torchvision.io import decode_jpeg, encode_jpeg

    for quality in (95, 50, 10):
        [view] = get_transform("jpeg", qualities=[quality])(photo)
        pixels = (photo * 255).round().byte()
        for image, ours in zip(pixels, view, strict=True):
            theirs = decode_jpeg(encode_jpeg(image, quality=quality)).float() / 255
            assert (ours - theirs).abs().max() <= 1 / 255, quality
    gray = get_transform("jpeg", qualities=[50])(photo[:, :1])[0]  # one channel: a gray JPEG
    assert gray.shape == photo[:, :1].shape


def test_families_name_their_views_by_magnitude():
    assert get_transform("translation", shifts=[-2, 0.5]).view_names == ["-2", "0.5"]
    assert get_transform("jpeg", qualities=[90, 10]).magnitudes == [90.0, 10.0]
    assert get_transform("rotation", angles=[15, 90]).magnitudes == [15.0, 90.0]
    flip = get_transform("flip", directions=["vertical"])
    assert flip.view_names == ["vertical"] and getattr(flip, "magnitudes", None) is None


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (
            {"name": "jpeg", "params": {"qualities": [90, 0]}},
            r"jpeg params.qualities: 0 is outside",
        ),
        ({"name": "scale", "params": {"factors": [0]}}, r"scale params.factors: 0 is outside"),
        ({"name": "gaussian_blur", "params": {"sigmas": [-1]}}, r"params.sigmas: -1 is outside"),
        ({"name": "hue", "params": {"shifts": [0.7]}}, r"hue params.shifts: 0.7 is outside"),
    ],
)
def test_a_magnitude_outside_its_range_is_refused_before_any_work(tmp_path, transform, message):
    config = parse_config(
        {
            "models": [{"name": "m", "spec": "python:torch.nn:Flatten"}],
            "datasets": ["digits"],
            "transforms": [transform],
            "measures": ["ei"],
        },
        base_dir=tmp_path,
    )
    report = check_study(config, progress=False, echo=lambda _: None)
    assert any(message.replace("\\", "") in line for line in report.problems), report.problems
    with pytest.raises(ConfigError, match=message):
        Study(config, out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_docs_figure_is_drawn_from_the_families_code(tmp_path):
    import importlib.util

    script = invkit.__file__.replace("invkit/__init__.py", "docs/images/families.py")
    spec = importlib.util.spec_from_file_location("families_figure", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {name for name, _, _ in module.ROWS}
    assert names == {"rotation", *(f.name for f in invkit.builtins.families.FAMILIES)}
    output = module.draw(tmp_path / "families.png")
    assert Image.open(output).size[0] > 400
