"""The input pipeline: 8-bit pixels until the device, decoding once for the models that share
an input, reduced JPEG decoding, and the options that set them."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import pil_to_tensor
from torchvision.transforms.v2 import functional as F

import invkit
from invkit.builtins.datasets import ImageFolder
from invkit.config import ConfigError, load_config, parse_config
from invkit.inputs.data import PreparedDataset, as_float, collate
from invkit.plugin.components import Preprocessing
from invkit.results.store import Store
from invkit.run.passes import auto_workers
from invkit.run.plan import StudyPlan
from invkit.run.study import Study

from .conftest import HERE, run_cli, study_with


def photo(index: int = 0) -> Image.Image:
    """One of scikit-learn's two real 427×640 sample photographs."""
    return Image.fromarray(load_sample_images().images[index])


def float_reference(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """The image resized and cropped as float pixels: the pipeline before 8-bit resizing."""
    pixels = pil_to_tensor(image).float() / 255
    shorter = int(min(prep.input_size[1:]) / prep.crop_pct)
    mode = InterpolationMode(prep.interpolation)
    resized = F.resize(pixels, [shorter], interpolation=mode, antialias=True)
    return F.center_crop(resized, list(prep.input_size[1:])).clamp(0, 1)


@pytest.mark.parametrize(
    ("interpolation", "mean_levels", "max_levels"),
    [("bilinear", 0.35, 1.0), ("bicubic", 0.35, 6.0)],
)
def test_eight_bit_photos_are_resized_as_uint8_within_the_stated_bound(
    interpolation, mean_levels, max_levels
):
    """8-bit files stay uint8 through resizing (a quarter of the bytes to the device); the
    pixels differ from float resizing by rounding (bilinear: under one level of 255) and, for
    bicubic, by clipping its overshoot between the two passes as PIL does."""
    for index in (0, 1):
        for size in (32, 64, 224):
            prep = Preprocessing(input_size=(3, size, size), interpolation=interpolation)
            pixels, *_ = PreparedDataset([(photo(index), 0)], prep)[0]
            assert pixels.dtype == torch.uint8 and pixels.shape == (3, size, size)
            levels = (as_float(pixels) - float_reference(photo(index), prep)).abs() * 255
            assert levels.mean() < mean_levels and levels.max() <= max_levels, (size, levels.max())


def test_pixels_at_size_reach_the_device_unchanged_and_rotate_bit_exactly():
    image = photo().crop((100, 100, 164, 164))
    prep = Preprocessing(input_size=(3, 64, 64), crop_pct=1.0)
    pixels, *_ = PreparedDataset([(image, 0)], prep)[0]
    direct = pil_to_tensor(image).float() / 255  # the float path, exactly
    assert torch.equal(as_float(pixels.clone()), direct)
    [quarter, half, three_quarters] = invkit.get_transform("rotation")(as_float(pixels[None]))
    assert torch.equal(quarter[0], torch.rot90(direct, 1, dims=(1, 2)))
    assert torch.equal(half[0], torch.rot90(direct, 2, dims=(1, 2)))
    assert torch.equal(three_quarters[0], torch.rot90(direct, 3, dims=(1, 2)))


def test_a_batch_mixing_8_bit_and_16_bit_images_becomes_float(tmp_path):
    (tmp_path / "a").mkdir()
    photo().crop((0, 0, 16, 16)).save(tmp_path / "a" / "eight.png")
    deep = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "a" / "sixteen.png")
    prep = Preprocessing(input_size=(3, 16, 16), crop_pct=1.0)
    data = PreparedDataset(ImageFolder(str(tmp_path)), prep)
    pixels, labels, *_ = collate([data[0], data[1]])
    assert pixels.dtype == torch.float32 and labels.tolist() == [0, 0]
    assert torch.equal(pixels[0], pil_to_tensor(Image.open(tmp_path / "a" / "eight.png")) / 255)
    assert torch.allclose(pixels[1, 0], torch.from_numpy(deep / 65535).float())


def photo_folder(root, count: int = 16):
    """``count`` JPEG crops of the sample photos at natural size, in class folders 0 and 1."""
    rng = np.random.default_rng(0)
    for i in range(count):
        image = photo(i % 2)
        left, top = int(rng.integers(0, 100)), int(rng.integers(0, 60))
        folder = root / str(i % 2)
        folder.mkdir(parents=True, exist_ok=True)
        image.crop((left, top, left + 520, top + 360)).save(folder / f"{i}.jpg", quality=90)
    return root


def shared_study(tmp_path, models_per_pass, workers=0):
    """Four linear models on 16×16 inputs (one input: they can share decoding) and one on
    32×32 (its own), over a folder of 16 JPEG photos."""
    shutil.copy(HERE / "study_files" / "user_models.py", tmp_path / "user_models.py")
    same = {"input_size": [3, 16, 16], "crop_pct": 0.875}
    models = [
        {"name": f"lin{seed}", "spec": "python:user_models.py:linear",
         "params": {"kwargs": {"seed": seed}}, "preprocessing": same}
        for seed in range(4)
    ] + [{"name": "big", "spec": "python:user_models.py:linear",
          "params": {"kwargs": {"size": 32}},
          "preprocessing": {"input_size": [3, 32, 32]}}]  # fmt: skip
    config = {
        "models": models,
        "datasets": [{"name": "photos", "spec": f"imagefolder:{tmp_path / 'photos'}"}],
        "transforms": ["rotation", "grayscale"],
        "measures": ["ei", "js"],
        "run": {"batch_size": 8, "workers": workers, "models_per_pass": models_per_pass},
    }
    return parse_config(config, base_dir=tmp_path)


def test_models_sharing_an_input_decode_each_image_once_with_identical_cells(tmp_path, monkeypatch):
    photo_folder(tmp_path / "photos")
    reads: list[int] = []
    read = ImageFolder._read

    def counted(self, index, shorter_side):
        reads.append(index)
        return read(self, index, shorter_side)

    monkeypatch.setattr(ImageFolder, "_read", counted)  # workers = 0: reads happen here
    figures = {}
    for models_per_pass in ("auto", 2, 1):
        reads.clear()
        lines: list[str] = []
        out = tmp_path / f"out-{models_per_pass}"
        outcome = Study(
            shared_study(tmp_path, models_per_pass), out_dir=out, progress=False, echo=lines.append
        ).run()
        assert not outcome.failures and outcome.passes == 5 and outcome.computed == 5 * 4
        figures[models_per_pass] = (len(reads), outcome.decoded, lines)
        store = Store(out / "results.sqlite")
        figures[models_per_pass] += ({k: c.value for k, c in store.cells().items()},)
        store.close()
    assert figures["auto"][:2] == (32, 32)  # the four 16×16 models once, the 32×32 one once
    assert figures[2][:2] == (48, 48)  # two bundles of two, and the 32×32 model
    assert figures[1][:2] == (80, 80)  # every model decodes every image
    assert figures["auto"][3] == figures[2][3] == figures[1][3]  # bit for bit
    lines = figures["auto"][2]
    [bundle] = [line for line in lines if "images decoded once" in line]  # one line, 4 models
    assert bundle.startswith("  4 models × photos (lin0, lin1, lin2, lin3): 16 images decoded")
    opening = "invkit: 5 model × dataset pass(es) to run (on 2 decoding(s) shared by models)"
    assert any(line.startswith(opening) for line in lines), lines  # the count the end uses
    assert not any("decoded once" in line for line in figures[1][2])


def test_a_model_failing_in_a_shared_pass_fails_alone(tmp_path):
    lines: list[str] = []
    config = load_config(study_with(tmp_path, "linear,nan,other_linear"))
    outcome = Study(config, out_dir=tmp_path / "out", progress=False, echo=lines.append).run()
    assert [(f["model"], f["dataset"]) for f in outcome.failures] == [("nan", "d0")]
    assert "NaN or infinite outputs" in outcome.failures[0]["error"]
    assert outcome.computed == 2  # linear and other_linear, computed again one at a time
    assert any("its models run again one at a time" in line for line in lines)


def test_data_loader_workers_decode_while_models_run(tmp_path):
    photo_folder(tmp_path / "photos")
    computed = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        Study(shared_study(tmp_path, "auto", workers), out_dir=out, progress=False).run()
        store = Store(out / "results.sqlite")
        computed[workers] = {k: c.value for k, c in store.cells().items()}
        store.close()
    assert computed[0] == computed[2]
    gpu, cpu = torch.device("cuda"), torch.device("cpu")  # only compared, never used
    assert auto_workers(images=64, batch_size=64, device=gpu) == 0  # one batch: no overlap
    assert auto_workers(images=65, batch_size=64, device=gpu) >= 1
    assert auto_workers(images=10_000, batch_size=64, device=cpu) == 0  # cores run forwards


@pytest.mark.parametrize(
    ("key", "value"),
    [("workers", "many"), ("workers", -1), ("workers", True), ("models_per_pass", 0),
     ("models_per_pass", 1.5)],
)  # fmt: skip
def test_auto_or_count_options_refuse_anything_else(key, value):
    with pytest.raises(ConfigError, match=f'run.{key} must be "auto" or an integer'):
        parse_config({"models": ["m"], "datasets": ["d"], "transforms": ["t"], "measures": ["m"],
                      "run": {key: value}})  # fmt: skip


def test_workers_and_models_per_pass_on_the_command_line(tmp_path):
    config = study_with(tmp_path, "linear")
    bad = run_cli("study", str(config), "--workers", "many", check=False)
    assert bad.returncode == 2 and "'many' is neither auto nor an integer >= 0" in bad.stderr
    done = run_cli("study", str(config), "--out", str(tmp_path / "o"), "--workers", "auto",
                   "--models-per-pass", "1", "--no-progress")  # fmt: skip
    assert (
        "1 cell(s) computed in 1 pass(es), 0 from kept outputs, 0 reused; 32 images decoded"
        in done.stdout
    )


def test_reduced_decoding_reads_jpegs_smaller_but_never_below_the_resize(tmp_path):
    (tmp_path / "a").mkdir()
    photo().save(tmp_path / "a" / "photo.jpg", quality=90)
    photo().save(tmp_path / "a" / "photo.png")
    data = ImageFolder(str(tmp_path))
    jpeg = data.samples.index(next(s for s in data.samples if s[0].suffix == ".jpg"))
    png = 1 - jpeg
    assert data[jpeg][0].size == (640, 427)
    assert data.read_reduced(jpeg, 73)[0].size == (160, 107)  # DCT scaling by 1/4
    assert data.read_reduced(jpeg, 250)[0].size == (640, 427)  # 1/2 would go below 250
    assert data.read_reduced(png, 73)[0].size == (640, 427)  # not a JPEG: full
    prep = Preprocessing(input_size=(3, 64, 64), interpolation="bicubic")
    full = as_float(PreparedDataset(data, prep)[jpeg][0])
    reduced = as_float(PreparedDataset(data, prep, reduced_decoding=True)[jpeg][0])
    levels = (full - reduced).abs() * 255
    assert 0.5 < levels.mean() < 4  # not identical: the reason it is off by default


def test_reduced_decoding_is_part_of_every_cell_fingerprint(tmp_path):
    config = load_config(study_with(tmp_path, "linear"))
    reduced = dataclasses.replace(
        config, run=dataclasses.replace(config.run, reduced_decoding=True)
    )
    [full_spec], [reduced_spec] = (StudyPlan(c).passes({}, set())[0] for c in (config, reduced))
    assert full_spec.cells[0][2] != reduced_spec.cells[0][2]


def test_compiled_models_give_the_eager_values(tmp_path):
    config = load_config(study_with(tmp_path, "linear"))
    compiled = dataclasses.replace(config, run=dataclasses.replace(config.run, compile=True))
    [eager_spec], [compiled_spec] = (StudyPlan(c).passes({}, set())[0] for c in (config, compiled))
    eager, fast = invkit.run_pass(eager_spec), invkit.run_pass(compiled_spec)
    assert fast.cells[0].value == pytest.approx(eager.cells[0].value, abs=1e-6)


def test_bundles_keep_to_the_model_count_and_the_parameter_budget(tmp_path):
    from invkit.run.sharing import AUTO_PARAMETER_BYTES, ModelInput, share_decoding

    config = load_config(study_with(tmp_path, "linear,other_linear,nan,slow", datasets=2))
    specs = StudyPlan(config).passes({}, set())[0]
    same, other = ("16px",), ("32px",)
    gib = AUTO_PARAMETER_BYTES // 4
    inputs = {
        "linear": ModelInput(same, 2 * gib),
        "other_linear": ModelInput(same, 2 * gib),
        "nan": ModelInput(same, 1 * gib),  # 2 + 2 + 1 GiB: over the 4 GiB budget
        "slow": ModelInput(other, 1),  # another input: never with the others
    }

    def bundles(models_per_pass):
        return [
            (s.dataset.name, [m.model.name for m in s.members])
            for s in share_decoding(specs, inputs, models_per_pass)
        ]

    assert bundles("auto") == [
        ("d0", ["linear", "other_linear"]), ("d1", ["linear", "other_linear"]),
        ("d0", ["nan"]), ("d1", ["nan"]), ("d0", ["slow"]), ("d1", ["slow"]),
    ]  # fmt: skip
    assert bundles(3) == [  # a number sets no budget: the user chose it
        ("d0", ["linear", "other_linear", "nan"]),
        ("d1", ["linear", "other_linear", "nan"]),
        ("d0", ["slow"]),
        ("d1", ["slow"]),
    ]
    assert bundles(1) == [(s.dataset.name, [s.model.name]) for s in specs]
