"""Layer-wise invariance: normalized variance against tmeasures, linear CKA against numpy,
hooks that leave the outputs bit-identical, layers added to a finished study computed alone,
bad layers named, ``invkit layers``, and the layer profile's statistics."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import invkit
from invkit.builtins.layer_measures import check_views
from invkit.config import load_config, parse_config
from invkit.errors import InvkitError
from invkit.lookup import get_layer_measure
from invkit.run.check import check_study
from invkit.run.plan import StudyPlan
from invkit.run.study import Study

from .conftest import HERE, run_cli

SEEDS = (1, 2, 3, 4, 5)


def _digits(count: int) -> torch.Tensor:
    data = invkit.load_dataset("digits", size=16, split="test")
    return torch.stack(
        [torch.as_tensor(data[i][0], dtype=torch.float64) / 255 for i in range(count)]
    )


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval().double()  # fmt: skip


def _accumulated(model, layers, images, views_of, measure: str, batch: int = 16):
    """Each layer's value of a layer measure, fed batch by batch as a pass feeds it."""
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, n=n: captured.setdefault(n, []).append(o))
        for n, module in layers.items()
    ]
    accumulators = {n: get_layer_measure(measure).accumulator() for n in layers}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            captured.clear()
            model(chunk)
            for view in views_of(chunk):
                model(view)
            for name, (original, *views) in captured.items():
                accumulators[name].update(original, views)
    for hook in hooks:
        hook.remove()
    return {name: accumulator.result() for name, accumulator in accumulators.items()}


def test_normalized_variance_equals_tmeasures_on_the_same_model_images_and_views():
    import tmeasures as tm
    from tmeasures.pytorch.model import ActivationsModule
    from tmeasures.pytorch.transformations import PyTorchTransformation, PyTorchTransformationSet

    model, images, rotation = _small_cnn(), _digits(40), invkit.get_transform("rotation")
    layers = {"conv1": model[1], "conv2": model[3], "linear": model[6]}

    class Hooked(ActivationsModule):
        def __init__(self):
            super().__init__()
            self.inner = model

        def activation_names(self):
            return list(layers)

        def forward_activations(self, x):
            got = {}
            hooks = [m.register_forward_hook(lambda _, __, o, n=n: got.__setitem__(n, o))
                     for n, m in layers.items()]  # fmt: skip
            self.inner(x)
            for hook in hooks:
                hook.remove()
            return [got[n] for n in layers]

    class View(PyTorchTransformation):  # the identity, then invkit's three turns
        def __init__(self, k):
            super().__init__()
            self.k = k

        def parameters(self):
            return torch.tensor([float(self.k)])

        def __call__(self, x):
            return x if self.k == 0 else rotation(x.unsqueeze(0))[self.k - 1].squeeze(0)

    class Views(PyTorchTransformationSet):
        def __init__(self):
            super().__init__([View(k) for k in range(4)])

        def valid_input(self, shape):
            return True

        def copy(self):
            return self

        def id(self):
            return "rotation"

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i]

    options = tm.pytorch.PyTorchMeasureOptions(batch_size=16, verbose=False)
    measure = tm.pytorch.NormalizedVarianceInvariance(tm.pytorch.AverageFeatureMaps())
    theirs = measure.eval(Images(), Views(), Hooked(), options)
    ours = _accumulated(model, layers, images, rotation, "normalized_variance")
    for name, per_unit in zip(theirs.layer_names, theirs.layers, strict=True):
        assert ours[name][0] == pytest.approx(float(per_unit.mean()), abs=1e-6), name
        assert ours[name][1] is None
    # and a direct computation with every feature held: numerator and denominator per unit
    with torch.no_grad():
        features = {n: [] for n in layers}
        hooks = [m.register_forward_hook(lambda _, __, o, n=n: features[n].append(o))
                 for n, m in layers.items()]  # fmt: skip
        model(images)
        for view in rotation(images):
            model(view)
        for hook in hooks:
            hook.remove()
    stacked = torch.stack(features["conv2"])  # (4 transformations, 40 images, 8, 16, 16)
    across_views = stacked.std(dim=0).mean(dim=0).mean(dim=(1, 2))
    across_images = stacked.std(dim=1).mean(dim=0).mean(dim=(1, 2))
    alive = across_images > 0
    expected = torch.where(alive, across_views / across_images.clamp_min(1e-300), 1.0)
    assert ours["conv2"][0] == pytest.approx(float(expected.mean()), abs=1e-12)


def _cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_linear_cka_equals_numpy_is_one_for_identical_features_and_ignores_rotations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 6, 3, 3))  # conv maps: pooled to (90, 6)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    y_rotated = np.einsum("nchw,cd->ndhw", x, q) * 2.5  # an orthogonal map and a scale
    y_other = x + rng.normal(size=x.shape) * 0.7
    accumulator = get_layer_measure("cka").accumulator()
    for start in range(0, 90, 32):  # streamed in batches of 32, 32 and 26
        part = slice(start, start + 32)
        accumulator.update(torch.tensor(x[part]),
                           [torch.tensor(x[part]), torch.tensor(y_rotated[part]),
                            torch.tensor(y_other[part])])  # fmt: skip
    value, per_view = accumulator.result()
    pooled = [a.mean(axis=(2, 3)) for a in (x, y_rotated, y_other)]
    assert per_view[0] == pytest.approx(1.0, abs=1e-12)
    assert per_view[1] == pytest.approx(1.0, abs=1e-12)
    assert per_view[2] == pytest.approx(_cka(pooled[0], pooled[2]), abs=1e-12)
    assert 0.2 < per_view[2] < 0.99
    assert value == pytest.approx(np.mean(per_view), abs=1e-15)


def test_a_view_whose_features_change_shape_is_named():
    with pytest.raises(InvkitError, match=r"on a view has shape \(4, 6, 8\), on the original"):
        check_views(torch.zeros(2, 4, 8, 6), [torch.zeros(2, 4, 6, 8)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("layers")
    shutil.copy(HERE / "study_files" / "user_models.py", folder / "user_models.py")
    return folder


def _config(folder: Path, layers: list[str], name: str = "study.toml", seeds=SEEDS) -> Path:
    models = "\n".join(
        f"""
[[models]]
name = "conv{seed}"
spec = "python:user_models.py:conv"
params = {{ kwargs = {{ seed = {seed} }} }}
preprocessing = {{ input_size = [3, 16, 16], crop_pct = 1.0 }}
"""
        for seed in seeds
    )
    path = folder / name
    path.write_text(
        f"""transforms = ["rotation"]
measures = ["ei"]

[run]
batch_size = 40
device = "cpu"
outputs = "full"
layers = {layers!r}
{models}
[[datasets]]
name = "clean"
spec = "digits"
params = {{ size = 16, split = "test" }}
limit = 40

[[datasets]]
name = "noisy"
spec = "digits"
params = {{ size = 16, split = "test" }}
limit = 40
corruption = "gaussian_noise"
severity = 3

[[analyses]]
name = "layer_profile"
params = {{ n_bootstrap = 100 }}
""".replace("'", '"')
    )
    return path


@pytest.fixture(scope="module")
def layered(folder) -> Path:
    """Five seeded CNNs × 2 sets, layers 1 and output measured; then layer 3 added."""
    out = folder / "out"
    first = Study(load_config(_config(folder, ["1", "output"])), out_dir=out, progress=False,
                  echo=lambda _: None).run()  # fmt: skip
    assert first.computed == 5 * 2 * (1 + 2 * 2) and first.failures == []
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "results.csv").open()))


def test_adding_a_layer_computes_only_its_cells(folder, layered):
    before = {(r["model"], r["dataset"], r["measure"], r["layer"]): r["value"]
              for r in _rows(layered)}  # fmt: skip
    again = Study(load_config(_config(folder, ["1", "3", "output"], "more.toml")),
                  out_dir=layered, progress=False, echo=lambda _: None).run()  # fmt: skip
    assert again.computed == 5 * 2 * 2  # normalized_variance and cka at layer 3, nothing else
    assert again.reused == 5 * 2 * (1 + 2 * 2)
    after = {(r["model"], r["dataset"], r["measure"], r["layer"]): r["value"]
             for r in _rows(layered)}  # fmt: skip
    assert {k: v for k, v in after.items() if k[3] != "3"} == before
    depths = {r["layer"]: float(r["depth"]) for r in _rows(layered) if r["layer"]}
    assert depths == {"1": 1 / 6, "3": 3 / 6, "output": 1.0}  # 7 modules: 0 to 6


def test_hooks_leave_the_outputs_bit_identical(folder, layered):
    plain = folder / "plain"
    Study(load_config(_config(folder, [], "plain.toml", seeds=SEEDS[:2])), out_dir=plain,
          progress=False, echo=lambda _: None).run()  # fmt: skip
    for model in ("conv1", "conv2"):
        hooked = invkit.load_outputs(layered, model, "noisy")
        alone = invkit.load_outputs(plain, model, "noisy")
        for view in alone.views:
            assert np.array_equal(hooked.logits[view], alone.logits[view]), view
    ei = {(r["model"], r["dataset"]): r["value"] for r in _rows(plain)}
    assert ei == {(r["model"], r["dataset"]): r["value"] for r in _rows(layered)
                  if r["measure"] == "ei" and r["model"] in ("conv1", "conv2")}  # fmt: skip


def test_the_layer_profile_correlates_accuracy_with_each_layer(layered):
    rows = [r for r in _rows(layered) if r["layer"]]
    profile = list(csv.DictReader((layered / "layer_profiles.csv").open()))
    assert {(p["measure"], p["layer"]) for p in profile} == {
        (m, layer) for m in ("normalized_variance", "cka") for layer in ("1", "3", "output")
    }
    for p in profile:
        points = [r for r in rows if (r["dataset"], r["measure"], r["layer"]) ==
                  (p["dataset"], p["measure"], p["layer"])]  # fmt: skip
        x = [float(r["value"]) for r in points]
        y = [float(r["accuracy"]) for r in points]
        assert int(p["models"]) == 5 and float(p["depth"]) == float(points[0]["depth"])
        assert float(p["pearson_r"]) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    report = (layered / "report.md").read_text()
    assert "invariance forms most between" in report or "does not grow with depth" in report


def test_a_layer_that_is_not_there_is_refused_with_the_nearest_names(tmp_path):
    config = parse_config({
        "models": [{"spec": "timm:resnet18", "params": {"pretrained": False},
                    "layers": ["layr1", "output"]}],
        "datasets": [{"name": "d", "spec": "digits", "params": {"size": 16}, "limit": 4}],
        "transforms": ["rotation"], "measures": ["ei"],
    })  # fmt: skip
    report = check_study(config, progress=False, echo=lambda _: None)
    [problem] = [p for p in report.problems if "layr1" in p]
    assert "has no layer 'layr1'; did you mean 'layer1'" in problem
    assert "`invkit layers timm:resnet18` lists its modules" in problem


def test_a_layer_whose_output_is_a_tuple_is_named(folder):
    config = parse_config({
        "models": [{"name": "paired", "spec": f"python:{folder / 'user_models.py'}:paired",
                    "preprocessing": {"input_size": [3, 16, 16], "crop_pct": 1.0},
                    "layers": ["0"]}],
        "datasets": [{"name": "d", "spec": "digits", "params": {"size": 16}, "limit": 8}],
        "transforms": ["rotation"], "measures": ["ei"], "run": {"device": "cpu"},
    })  # fmt: skip
    outcome = Study(config, out_dir=folder / "paired", progress=False, echo=lambda _: None).run()
    [failure] = outcome.failures
    assert "layer '0' returns a tuple, not a tensor" in failure["error"]


def test_stages_are_a_timm_models_feature_info_and_refused_elsewhere(folder):
    entry = {"datasets": [{"name": "d", "spec": "digits"}], "transforms": ["rotation"],
             "measures": ["ei"], "run": {"layers": "stages", "device": "cpu"}}  # fmt: skip
    plan = StudyPlan(parse_config({"models": ["timm:resnet18"], **entry}))
    assert plan.layers["timm:resnet18"] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    python = {"models": [f"python:{folder / 'user_models.py'}:conv"], **entry}
    with pytest.raises(InvkitError, match=r'layers = "stages" reads a timm model'):
        StudyPlan(parse_config(python))


def test_invkit_layers_lists_modules_with_their_output_shapes(folder):
    listed = run_cli("layers", f"python:{folder / 'user_models.py'}:conv").stdout.splitlines()
    assert listed[0].split() == ["0", "Conv2d", "64×224×224"]
    assert listed[-1].split() == ["output", "Sequential", "10"]
    timm_listed = run_cli("layers", "timm:resnet18", "--param", "pretrained=false").stdout
    assert '"stages": act1, layer1, layer2, layer3, layer4' in timm_listed
    assert "layer4.1.conv2" in timm_listed and "512×7×7" in timm_listed
