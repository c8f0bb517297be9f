"""Config checking, class matching and subsets, datasets, shifts and checkpoints."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.data import ImageNetInfo

import invkit
from invkit.config import ConfigError, load_config, parse_config
from invkit.inputs.classes import plan_labels, timm_subset_indices
from invkit.inputs.data import resize_and_crop, subset_indices, to_tensor
from invkit.plugin.components import Preprocessing

MINIMAL = {"models": ["timm:resnet18"], "datasets": ["digits"], "transforms": ["rotation"],
           "measures": ["ei"]}  # fmt: skip


def test_minimal_config_and_defaults():
    config = parse_config(MINIMAL)
    assert config.models[0].name == "timm:resnet18" and config.models[0].spec == "timm:resnet18"
    assert config.run.device == "auto" and config.run.batch_size == 64 and not config.run.amp


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": ["x"]}, "config: unknown key 'model'; did you mean 'models'?"),
        (
            {"models": [{"spec": "timm:x", "param": {}}]},
            "unknown key 'param'; did you mean 'params'?",
        ),
        ({"models": [{"name": "x"}]}, "models[0] needs a spec"),
        ({"datasets": [{"spec": "digits", "limit": 0}]}, "datasets[0].limit must be a positive"),
        (
            {"datasets": [{"spec": "digits", "corruption": "fog", "shift": "contrast"}]},
            "gives both shift and corruption/severity",
        ),
        ({"run": {"batch_size": "64"}}, "run.batch_size must be a int; got '64'"),
        ({"run": {"amp": 1}}, "run.amp must be a bool"),
        ({"measures": []}, "the config lists no measures"),
        ({"transforms": ["rotation", "rotation"]}, "two transforms are named 'rotation'"),
        ({"models": {"spec": "timm:x"}}, "write [[models]] (double brackets)"),
    ],
)
def test_bad_configs_name_the_key(change, message):
    with pytest.raises(ConfigError) as error:
        parse_config(MINIMAL | change)
    assert message in str(error.value)


def test_shifts_are_components_and_corruption_is_their_shorthand():
    from invkit.run.study import Study

    short = parse_config(MINIMAL | {"datasets": [{"spec": "digits", "corruption": "contrast",
                                                  "severity": 3}]})  # fmt: skip
    full = parse_config(MINIMAL | {"datasets": [{"spec": "digits", "shift": {
        "component": "contrast", "params": {"severity": 3}}}]})  # fmt: skip
    assert short.datasets[0].shift.params == full.datasets[0].shift.params == {"severity": 3}
    assert short.datasets[0].shift.component == full.datasets[0].shift.component == "contrast"
    for shift, message in [("fog", "unknown shift 'fog'"), ("contrast", "severity must be 1 to 5")]:
        bad = parse_config(MINIMAL | {"datasets": [{"spec": "digits", "corruption": shift,
                                                    "severity": 9}]})  # fmt: skip
        with pytest.raises(ConfigError, match=r"datasets\['digits'\].shift: .*" + message):
            Study(bad, progress=False)


def test_malformed_toml_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('transforms = ["rotation"\nmeasures = ["ei"]\n')
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML: .*line 2, column"):
        load_config(path)


def test_imagenet_r_subset_comes_from_timm_and_maps_labels():
    indices = timm_subset_indices("imagenet-r")
    assert len(indices) == 200 and indices == sorted(indices)
    wnids = list(ImageNetInfo("imagenet-1k").label_names())
    folders = sorted(wnids[i] for i in indices)  # ImageNet-R's folders are these wnids
    prep = Preprocessing(num_classes=1000, class_names=wnids)
    plan = plan_labels(folders, prep, class_subset="imagenet-r")
    assert plan.logit_index == tuple(indices)
    assert [indices[plan.target(c)] for c in range(200)] == [wnids.index(f) for f in folders]
    with pytest.raises(invkit.InvkitError, match="not in class_subset 'imagenet-a'"):
        plan_labels(folders, prep, class_subset="imagenet-a")


def test_unmatched_folders_and_class_maps(tmp_path):
    prep = Preprocessing(num_classes=3, class_names=["cat", "dog", "emu"])
    assert plan_labels(["dog", "emu"], prep).targets == (1, 2)
    with pytest.raises(invkit.InvkitError, match=r"1 dataset class\(es\) match no class.*'cow'"):
        plan_labels(["cow", "dog"], prep, context="m × d")
    mapping = tmp_path / "map.txt"
    mapping.write_text("kitty cat\npuppy 1\n")
    assert plan_labels(["kitty", "puppy"], prep, class_map=str(mapping)).targets == (0, 1)
    anonymous = Preprocessing(num_classes=2)
    with pytest.raises(invkit.InvkitError, match="Matching by position would need exactly 2"):
        plan_labels(["a", "b", "c"], anonymous)


def test_digits_split_colours_and_determinism():
    train = invkit.load_dataset("digits", split="train", size=12)
    test = invkit.load_dataset("digits", split="test", size=12)
    assert len(train) + len(test) == 1797 and len(test) == 539
    image, _ = test[0]
    assert image.shape == (3, 12, 12) and image.min() >= 0 and image.max() <= 1
    assert not torch.allclose(image[0], image[1])  # coloured, not gray
    again, _ = invkit.load_dataset("digits", split="test", size=12)[0]
    assert torch.equal(image, again)
    unlabeled = invkit.load_dataset("digits", labeled=False)
    assert unlabeled[0][1] == -1


def test_shifts_are_seeded_and_ordered_by_severity():
    image = invkit.load_dataset("digits", size=32)[0][0]
    for name in ("gaussian_noise", "gaussian_blur", "contrast"):
        mild, strong = invkit.get_shift(name, severity=1), invkit.get_shift(name, severity=5)
        assert torch.equal(mild(image, 3), invkit.get_shift(name, severity=1)(image, 3))
        assert (mild(image, 3) - image).abs().mean() < (strong(image, 3) - image).abs().mean()
    noise = invkit.get_shift("gaussian_noise", severity=2)
    assert not torch.equal(noise(image, 3), noise(image, 4))  # the seed draws the noise


def test_images_take_the_model_channel_count_at_the_model_size():
    from PIL import Image

    gray = Image.new("L", (40, 30), color=128)
    rgba = Image.new("RGBA", (40, 30), color=(255, 0, 0, 10))
    assert to_tensor(gray, 3, "x").shape == (3, 30, 40)
    assert torch.equal(to_tensor(rgba, 3, "x")[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    prep = Preprocessing(input_size=(3, 16, 16), crop_pct=0.8)
    assert resize_and_crop(to_tensor(gray, 3, "x"), prep).shape == (3, 16, 16)
    # one channel: a gray file passes bit for bit; RGB becomes exactly PIL's convert("L")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    rgb = Image.fromarray(pixels)
    luminance = np.asarray(rgb.convert("L"), dtype=np.float32) / 255
    assert torch.equal(to_tensor(rgb, 1, "x"), torch.from_numpy(luminance)[None])
    gray_pixels = Image.fromarray(pixels[..., 0])
    expected = torch.from_numpy(pixels[..., 0].astype(np.float32) / 255)[None]
    assert torch.equal(to_tensor(gray_pixels, 1, "x"), expected)
    # a float RGB tensor: the same ITU-R 601 weights, computed directly
    tensor = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(1))
    direct = 0.299 * tensor[0] + 0.587 * tensor[1] + 0.114 * tensor[2]
    assert torch.allclose(to_tensor(tensor, 1, "x")[0], direct, atol=1e-7)
    assert subset_indices(100, 10, seed=1) == subset_indices(100, 10, seed=1)
    assert subset_indices(100, None, seed=1) is None


def test_sixteen_bit_images_are_scaled_like_their_eight_bit_twin(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    eight = rng.integers(0, 256, size=(20, 24), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # 255 → 65535: the same picture at 16 bits
    Image.fromarray(eight).save(tmp_path / "eight.png")
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    with Image.open(tmp_path / "sixteen.png") as image:
        assert image.mode.startswith("I")  # what Pillow gives: 16-bit gray, not 8-bit
        high = to_tensor(image, 3, "sixteen.png")
    with Image.open(tmp_path / "eight.png") as image:
        low = to_tensor(image, 3, "eight.png")
    assert high.shape == low.shape == (3, 20, 24)
    assert torch.allclose(high, low, atol=1e-6)
    assert abs(float(high.mean()) - eight.mean() / 255) < 1e-6  # not 99.6% white
    weird = Image.fromarray(np.full((4, 4), 70000, dtype=np.int32), mode="I")
    with pytest.raises(invkit.InvkitError, match="no known pixel range"):
        to_tensor(weird, 1, "weird.tif")


class Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def test_code_carrying_checkpoints_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": Evil()}, path)
    with pytest.raises(
        invkit.InvkitError, match=r"cannot load checkpoint .* safely.*arbitrary code"
    ):
        invkit.load_model("python:torch.nn:Identity", checkpoint=str(path))
    assert "this ran" not in capsys.readouterr().out
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(invkit.InvkitError, match="safely"):
        invkit.load_model("python:torch.nn:Identity", checkpoint=str(raw))


def test_checkpoint_mismatch_is_summarized(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)
    with pytest.raises(invkit.InvkitError, match="does not match the architecture"):
        invkit.load_model(
            "python:torch.nn:Linear",
            checkpoint=str(path),
            kwargs={"in_features": 5, "out_features": 2},
        )
    user_models = Path(__file__).parent / "study_files" / "user_models.py"
    with pytest.raises(invkit.InvkitError, match="2 missing .*2 unexpected"):
        invkit.load_model(f"python:{user_models}:linear", checkpoint=str(path))


def test_torchvision_and_torchscript_loaders_use_local_files(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    loaded = invkit.load_model(
        "torchvision:resnet18", weights_file=str(tmp_path / "r18.pt"), num_classes=10
    )
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module.eval()(x), reference(x))
    prep = loaded.preprocessing  # from the DEFAULT weights' metadata
    assert prep.input_size == (3, 224, 224) and prep.crop_pct == pytest.approx(224 / 256)
    assert prep.num_classes == 10 and prep.class_names is None
    torch.jit.script(reference).save(str(tmp_path / "r18.ts"))
    scripted = invkit.load_model(f"torchscript:{tmp_path / 'r18.ts'}")
    with torch.no_grad():
        assert torch.equal(scripted.module(x), reference(x))
    with pytest.raises(invkit.InvkitError, match="torchvision has no model 'resnet19'"):
        invkit.load_model("torchvision:resnet19")


def test_missing_and_empty_inputs_name_the_path(tmp_path):
    with pytest.raises(invkit.InvkitError, match="image folder '.*nope' does not exist"):
        invkit.load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(invkit.InvkitError, match="holds no images"):
        invkit.load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(
        invkit.InvkitError, match="weights file '.*missing.safetensors' does not exist"
    ):
        invkit.load_model("timm:resnet18", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(invkit.InvkitError, match="checkpoint '.*gone.pt' does not exist"):
        invkit.load_model("python:torch.nn:Identity", checkpoint=str(tmp_path / "gone.pt"))
