"""The Lie derivative (local invariance): an exact Jacobian-vector product through the model,
checked against central finite differences of the real warp on smooth real photographs, forward
mode against double backward, and inside a study, where it is a cell like any other."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import kornia
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

import invkit
from invkit import get_measure, get_transform
from invkit.config import ConfigError, load_config
from invkit.run.study import Study

from .conftest import HERE, run_cli

FAMILIES = [  # (transform, parameter, identity, step of the finite difference)
    ("rotation", "angles", 0.0, 1e-2),
    ("translation", "shifts", 0.0, 1e-3),
    ("scale", "factors", 1.0, 1e-4),
    ("brightness", "factors", 1.0, 1e-4),
    ("saturation", "factors", 1.0, 1e-4),
]


@pytest.fixture(scope="module")
def smooth() -> torch.Tensor:
    """Two real photographs at 32×32, blurred a little so that finite differences are smooth,
    in float64 and kept inside (0, 1) so that brightness is not clipped."""
    images = []
    for name in ("china.jpg", "flower.jpg"):
        image = Image.fromarray(load_sample_image(name)).resize((32, 32), Image.BILINEAR)
        images.append(torch.tensor(np.asarray(image)).permute(2, 0, 1).double() / 255)
    batch = kornia.filters.gaussian_blur2d(torch.stack(images), (7, 7), (1.2, 1.2))
    return 0.05 + 0.6 * batch


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(16, 16, 3, stride=2),
        torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 10),
    ).double().eval()  # fmt: skip


def probabilities(model):
    return lambda pixels: model(pixels).softmax(dim=1)


@pytest.mark.parametrize(("name", "parameter", "identity", "step"), FAMILIES)
def test_the_lie_derivative_equals_central_finite_differences_of_the_warp(
    smooth, model, name, parameter, identity, step
):
    options = {"padding": "border"} if name in ("rotation", "translation", "scale") else {}
    warp = get_transform(name, **{parameter: [identity + step, identity - step]}, **options)
    lie = get_measure("lie_derivative")
    exact = lie.derivative(probabilities(model), smooth, warp.generator(smooth))
    with torch.no_grad():
        plus, minus = (model(view).softmax(dim=1) for view in warp(smooth))
    finite = ((plus - minus) / (2 * step)).abs().mean(dim=1)
    assert exact.dtype == torch.float64 and (exact > 0).all()
    assert ((finite - exact).abs() / exact).max() < 1e-3, (finite, exact)


def test_forward_mode_and_double_backward_agree(smooth, model):
    tangent = get_transform("rotation").generator(smooth)
    forward = get_measure("lie_derivative", method="forward")
    backward = get_measure("lie_derivative", method="double_backward")
    one = forward.derivative(probabilities(model), smooth, tangent)
    two = backward.derivative(probabilities(model), smooth, tangent)
    assert ((one - two).abs() / two).max() < 1e-5


class _NoSecondDerivative(torch.autograd.Function):
    """An operation with neither a forward-mode rule nor a differentiable backward."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return grad * 2


def test_a_model_with_neither_product_is_named_with_the_fix(smooth):
    linear = torch.nn.Linear(3 * 32 * 32, 10).double()

    def forward(pixels):
        return linear(_NoSecondDerivative.apply(pixels).flatten(1)).softmax(dim=1)

    tangent = get_transform("translation").generator(smooth)
    with pytest.raises(invkit.InvkitError, match=r"cannot be taken \(double backward: .*; "
                       "forward mode: .*set_fused_attn"):  # fmt: skip
        get_measure("lie_derivative").derivative(forward, smooth, tangent)


def write_study(folder: Path, measures: str, transforms: str) -> Path:
    shutil.copy(HERE / "study_files" / "user_models.py", folder / "user_models.py")
    lines = [f"transforms = {transforms}", f"measures = {measures}", "[run]", 'device = "cpu"',
             "batch_size = 16"]  # fmt: skip
    for name in ("linear", "conv"):
        lines += ["[[models]]", f'name = "{name}"', f'spec = "python:user_models.py:{name}"',
                  "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"]  # fmt: skip
    lines += ["[[datasets]]", 'name = "d0"', 'spec = "digits"', "params = { size = 16 }",
              "limit = 24"]  # fmt: skip
    path = folder / f"study-{len(list(folder.glob('study*.toml')))}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_study_stores_it_as_cells_computed_in_a_pass(tmp_path):
    transforms = '["rotation", { name = "translation", params = { shifts = [2] } }]'
    out = tmp_path / "out"
    first = write_study(tmp_path, '["ei"]', transforms)
    Study(load_config(first), out_dir=out, progress=False, echo=lambda _: None).run()
    added = write_study(tmp_path, '["ei", "lie_derivative"]', transforms)
    outcome = Study(load_config(added), out_dir=out, progress=False, echo=lambda _: None).run()
    assert outcome.computed == 4 and outcome.from_outputs == 0 and outcome.forward_images > 0
    with (out / "per_view.csv").open() as handle:
        views = [r for r in csv.DictReader(handle) if r["measure"] == "lie_derivative"]
    assert {(r["model"], r["transform"], r["view"], r["magnitude"]) for r in views} == {
        (m, t, "d/dt", "") for m in ("linear", "conv") for t in ("rotation", "translation")
    }
    with (out / "results.csv").open() as handle:
        cells = {(r["model"], r["transform"]): r for r in csv.DictReader(handle)
                 if r["measure"] == "lie_derivative"}  # fmt: skip
    assert all(
        float(c["value"]) > 0 and c["higher_is_invariant"] == "False" for c in cells.values()
    )
    # the cell is the mean over images of the measure on the same pixels and model
    loaded = invkit.load_model(f"python:{tmp_path / 'user_models.py'}:linear")
    data = invkit.load_dataset("digits", size=16)
    indices = invkit.load_outputs(out, "linear", "d0").indices  # the images the pass read
    pixels = torch.stack([data[int(i)][0] for i in indices])  # float digits pass unchanged
    mean = torch.tensor(loaded.preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(loaded.preprocessing.std).view(1, -1, 1, 1)

    def forward(z):
        return loaded.module((z - mean) / std).double().softmax(dim=1)

    tangent = get_transform("translation", shifts=[2]).generator(pixels)
    direct = get_measure("lie_derivative").derivative(forward, pixels, tangent).mean()
    assert float(cells["linear", "translation"]["value"]) == pytest.approx(float(direct), rel=1e-6)


def test_a_transform_with_no_generator_is_refused_naming_those_with_one(tmp_path):
    config = write_study(tmp_path, '["lie_derivative"]', '["rotation", "grayscale"]')
    with pytest.raises(ConfigError, match="'grayscale' has none; transforms with one: .*rotation"):
        Study(load_config(config), out_dir=tmp_path / "out", progress=False)


def test_a_pip_installed_plugin_adds_a_generator_and_a_derivative_measure(
    tmp_path, with_plugin_site, monkeypatch
):
    monkeypatch.setenv("INVKIT_LOAD_PLUGINS", "invkit-shear")
    invkit.plugins.reset_host()
    transforms = '[{ name = "hshear", params = { amounts = [0.2, -0.2] } }]'
    config = write_study(tmp_path, '["ei", "lie_derivative", "largest_rate"]', transforms)
    out = tmp_path / "out"
    result = run_cli("study", str(config), "--out", str(out), "--no-progress",
                     env={"INVKIT_LOAD_PLUGINS": "invkit-shear"})  # fmt: skip
    assert "6 cell(s) computed" in result.stdout
    with (out / "results.csv").open() as handle:
        cells = {(r["model"], r["measure"]): float(r["value"]) for r in csv.DictReader(handle)}
    for model in ("linear", "conv"):  # the largest class's rate is at least the mean's
        assert cells[model, "largest_rate"] >= cells[model, "lie_derivative"] > 0
    shear = get_transform("hshear", amounts=[1e-3, -1e-3])
    image = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    plus, minus = shear(image)
    inner = (..., slice(2, -2), slice(2, -2))
    finite = ((plus - minus) / 2e-3)[inner]
    assert torch.allclose(finite, shear.generator(image)[inner], atol=1e-9)
