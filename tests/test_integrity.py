"""Security and integrity: configs run only a model's code, edited model code is recomputed,
a damaged or vanished store is noticed, storage faults and signals end in one clear line."""

from __future__ import annotations

import importlib.util
import os
import random
import resource
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import invkit
from invkit.config import ConfigError, load_config, parse_config
from invkit.errors import EXIT_STORAGE, StorageError
from invkit.inputs.usercode import import_factory, python_spec_fingerprint
from invkit.report.report import rerender, write_report
from invkit.run.study import Study

from .conftest import run_cli, study_with, wait_for_cells

INVKIT = str(Path(sys.executable).with_name("invkit"))


def quiet_study(config_path: Path, **options) -> invkit.run.study.StudyOutcome:
    return Study(load_config(config_path), progress=False, echo=lambda _: None, **options).run()


# -- code in configs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    ["python:os:system", "python:subprocess:run", "python:builtins:eval", "python:invkit.cli:main"],
)
def test_a_config_cannot_name_system_code(tmp_path, spec):
    marker = tmp_path / "owned.txt"
    config = {
        "models": [
            {"name": "m", "spec": spec, "params": {"kwargs": {"command": f"id > {marker}"}}}
        ],
        "datasets": ["digits"],
        "transforms": ["rotation"],
        "measures": ["ei"],
    }
    with pytest.raises(ConfigError, match=r"is refused: .* (standard library|invkit itself)"):
        Study(parse_config(config, base_dir=tmp_path), out_dir=tmp_path / "out", progress=False)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_shell_command_of_the_report_is_refused_by_the_cli(tmp_path):
    marker = tmp_path / "owned.txt"
    (tmp_path / "evil.toml").write_text(
        'transforms = ["rotation"]\nmeasures = ["ei"]\ndatasets = ["digits"]\n[[models]]\n'
        f'spec = "python:os:system"\nparams = {{ kwargs = {{ command = "id > {marker}" }} }}\n'
    )
    result = run_cli("study", str(tmp_path / "evil.toml"), check=False)
    assert result.returncode == 1 and not marker.exists()
    assert "'os' is Python's standard library, not a model's code" in result.stderr


def test_a_factory_re_exported_from_system_code_is_refused_before_the_call(tmp_path):
    marker = tmp_path / "owned.txt"
    (tmp_path / "sneaky.py").write_text("from os import system\nfrom subprocess import run\n")
    sneaky = tmp_path / "sneaky.py"
    with pytest.raises(invkit.InvkitError, match="'run' comes from 'subprocess', which is Python"):
        invkit.load_model(f"python:{sneaky}:run", kwargs={"args": f"id > {marker}", "shell": True})
    with pytest.raises(invkit.InvkitError, match="names a builtin_function_or_method"):
        invkit.load_model(f"python:{sneaky}:system", kwargs={"command": f"id > {marker}"})
    assert not marker.exists()
    assert invkit.load_model("python:torch.nn:Identity").module is not None  # a layer class
    with pytest.raises(invkit.InvkitError, match="only a torch.nn.Module class"):
        invkit.load_model("python:torch.nn.functional:relu")  # torch.nn, but not a class
    assert callable(import_factory("invkit.demo.models:build"))  # the demo's own model code
    with pytest.raises(invkit.InvkitError, match="'invkit.demo' is invkit itself"):
        import_factory("invkit.demo:demo_config")


def test_editing_a_model_file_recomputes_and_touching_it_does_not(tmp_path):
    config = study_with(tmp_path, "linear")
    lines: list[str] = []
    first = Study(load_config(config), progress=False, echo=lines.append).run()
    assert first.computed == 1
    models = tmp_path / "user_models.py"
    assert f"invkit: the config runs this code: python:{models}:linear" in lines
    stat = models.stat()
    os.utime(models, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, not changed
    touched = quiet_study(config)
    assert (touched.computed, touched.reused) == (0, 1)
    text = models.read_text()
    models.write_text(text.replace("seed: int = 0):", "seed: int = 1):"))  # other weights
    edited = quiet_study(config)
    assert (edited.computed, edited.reused) == (1, 0)


def test_module_specs_fingerprint_their_source_and_distribution(tmp_path, monkeypatch):
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text("def build():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = python_spec_fingerprint("mymodels.nets:build")
    (package / "nets.py").write_text("def build():\n    return 1\n")
    after = python_spec_fingerprint("mymodels.nets:build")
    assert before["source"] != after["source"]
    info = tmp_path / "mymodels-1.2.3.dist-info"  # as pip installs the user's own package
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mymodels\nVersion: 1.2.3\n")
    (info / "top_level.txt").write_text("mymodels\n")
    assert python_spec_fingerprint("mymodels.nets:build")["distribution"] == ["mymodels==1.2.3"]


PLUGIN_PYPROJECT = """[project]
name = "edplug"
version = "1.0"
[project.entry-points.invkit]
edplug = "edplug.plugin"
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
"""

ROLL_PLUGIN = """import torch
from invkit import Transform, hookimpl

from edplug.amount import SHIFT


class Roll(Transform):
    \"\"\"Rolls the pixels sideways.\"\"\"

    name = "roll"
    num_views = 1

    def __call__(self, images):
        return [torch.roll(images, SHIFT, dims=-1)]


@hookimpl
def register_transforms(register):
    register(Roll)
"""


def _results(out: Path) -> dict[str, float]:
    lines = (out / "results.csv").read_text().splitlines()[1:]
    return {line.split(",")[2]: float(line.split(",")[4]) for line in lines}


def test_editing_an_editable_plugin_recomputes_exactly_the_cells_it_shapes(tmp_path):
    source = tmp_path / "src"
    (source / "edplug").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (source / "edplug" / "__init__.py").write_text("")
    (source / "edplug" / "plugin.py").write_text(ROLL_PLUGIN)
    (source / "edplug" / "amount.py").write_text("SHIFT = 5\n")
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    install = [*pip, "--target", str(site), "-e", str(source)]
    subprocess.run(install, check=True, capture_output=True)
    # the install's .pth puts the source folder on the path; --target folders are not site dirs
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(source)])}
    config = study_with(tmp_path, "linear")
    config.write_text(config.read_text().replace('["rotation"]', '["roll", "rotation"]', 1)
                      .replace('["ei"]', '["agreement"]'))  # fmt: skip
    out = tmp_path / "invkit-results"
    first = run_cli("study", str(config), env=env)
    assert "2 cell(s) computed" in first.stderr + first.stdout
    before = _results(out)
    assert before["roll"] < 0.9  # a 5-pixel roll changes a linear model's predictions
    (source / "edplug" / "amount.py").write_text("SHIFT = 0\n")  # a helper: now the identity
    second = run_cli("study", str(config), env=env)
    assert "1 cell(s) computed in 1 pass(es), 0 from kept outputs, 1 reused" in second.stdout
    after = _results(out)
    assert after["roll"] == 1.0 and after["rotation"] == before["rotation"]


def test_an_inline_plugin_edited_and_registered_again_recomputes(tmp_path):
    from invkit.plugins import temporary_plugin

    module_file = tmp_path / "inline_roll.py"
    config = study_with(tmp_path, "linear")
    config.write_text(config.read_text().replace('["rotation"]', '["roll"]', 1)
                      .replace('["ei"]', '["agreement"]'))  # fmt: skip
    values = []
    for shift in (5, 0, 5):
        code = ROLL_PLUGIN.replace("from edplug.amount import SHIFT", f"SHIFT = {shift}")
        module_file.write_text(code)
        spec = importlib.util.spec_from_file_location("inline_roll", module_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with temporary_plugin(module, name="inline-roll"):
            outcome = quiet_study(config)
        values.append((outcome.computed, outcome.reused, _results(tmp_path / "invkit-results")))
    assert values[0][:2] == (1, 0) and values[0][2]["roll"] < 0.9
    assert values[1][:2] == (1, 0) and values[1][2]["roll"] == 1.0
    assert values[2][:2] == (1, 0) and values[2][2] == values[0][2]  # the same code, the same


def test_a_component_typed_into_a_notebook_is_fingerprinted_by_its_live_code():
    from invkit.inputs.codeprint import component_code

    def make(shift):
        namespace = {"__name__": "__main__"}  # as a notebook cell defines it: no file behind it
        exec(ROLL_PLUGIN.replace("from edplug.amount import SHIFT", "")
             .replace("SHIFT", str(shift)), namespace)  # fmt: skip
        return namespace["Roll"]

    main = types.ModuleType("__main__")  # a notebook's __main__ has no __file__
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "__main__", main)
        digests = [component_code(make(shift), main) for shift in (5, 0, 5)]
    assert digests[0] != digests[1] and digests[0] == digests[2]


# -- a store that knows it is whole ---------------------------------------------------------


def test_a_flipped_bit_in_a_stored_value_is_recomputed_with_a_warning(tmp_path):
    config = study_with(tmp_path, "linear", datasets=2)
    quiet_study(config)
    store = tmp_path / "invkit-results" / "results.sqlite"
    db = sqlite3.connect(store)
    (value,) = db.execute("SELECT value FROM cells WHERE dataset = 'd1'").fetchone()
    db.close()
    data = bytearray(store.read_bytes())
    packed = struct.pack(">d", value)  # SQLite stores a REAL as a big-endian double
    assert data.count(packed) == 1
    data[data.index(packed) + 7] ^= 1  # the lowest bit of the mantissa
    store.write_bytes(bytes(data))
    lines: list[str] = []
    rerun = Study(load_config(config), progress=False, echo=lines.append).run()
    # recomputed from the pass's kept outputs, which hold what ei reads: no forward pass
    assert (rerun.from_outputs, rerun.computed, rerun.reused) == (1, 0, 1)
    assert rerun.forward_images == 0
    assert any("linear × d1 × rotation × ei fails its checksum" in line for line in lines)
    db = sqlite3.connect(store)
    assert db.execute("SELECT value FROM cells WHERE dataset = 'd1'").fetchone() == (value,)


def test_random_bytes_in_the_store_are_detected(tmp_path):
    config = study_with(tmp_path, "linear", datasets=3)
    quiet_study(config)
    store = tmp_path / "invkit-results" / "results.sqlite"
    data = bytearray(store.read_bytes())
    rng = random.Random(4)
    start = rng.randrange(4096, len(data) - 4096)
    data[start : start + 4096] = rng.randbytes(4096)
    store.write_bytes(bytes(data))
    result = run_cli("study", str(config), "--no-progress", check=False)
    assert result.returncode == EXIT_STORAGE, result.stderr
    assert "is damaged or unreadable" in result.stderr and "--fresh" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_store_deleted_during_the_run_is_reported(tmp_path):
    config = study_with(tmp_path, "slow", datasets=3)
    store = tmp_path / "invkit-results" / "results.sqlite"
    process = subprocess.Popen(
        [INVKIT, "study", str(config), "--no-progress"], stderr=subprocess.PIPE, text=True
    )
    wait_for_cells(store, 1, process)
    store.unlink()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_STORAGE
    assert "was deleted or replaced while the study ran" in stderr
    assert "cell(s) computed" not in stderr and "Traceback" not in stderr


# -- storage faults ---------------------------------------------------------------------------


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_stored_passes(tmp_path):
    config = study_with(tmp_path, "linear", datasets=6, per_sample=True)
    result = subprocess.run(
        [INVKIT, "study", str(config), "--no-progress"],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(256 * 1024),
        timeout=300,
    )
    assert result.returncode == EXIT_STORAGE, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "storage error" in line]
    assert "results.sqlite" in line and "every pass stored before this one is kept" in line
    assert "Traceback" not in result.stderr
    stored = sqlite3.connect(tmp_path / "invkit-results" / "results.sqlite")
    (kept,) = stored.execute("SELECT COUNT(*) FROM cells").fetchone()
    assert 1 <= kept < 6
    stored.close()
    resumed = run_cli("study", str(config), "--no-progress")  # room again: it resumes
    assert f"{6 - kept} cell(s) computed" in resumed.stdout and f"{kept} reused" in resumed.stdout


def test_a_report_on_a_read_only_filesystem_is_one_line(tmp_path):
    config = study_with(tmp_path, "linear")
    quiet_study(config, out_dir=tmp_path / "mnt")
    mount = subprocess.run(
        ["mount", "-o", "bind,ro", str(tmp_path / "mnt"), str(tmp_path / "mnt")],
        capture_output=True,
    )
    if mount.returncode:
        pytest.skip(f"cannot bind-mount read-only here (needs root): {mount.stderr!r}")
    try:
        result = run_cli("report", str(tmp_path / "mnt"), check=False)
        assert result.returncode == EXIT_STORAGE
        assert "Read-only file system" in result.stderr and "Traceback" not in result.stderr
    finally:
        subprocess.run(["umount", str(tmp_path / "mnt")], check=True)


def test_a_report_that_fails_half_way_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    config = study_with(tmp_path, "linear,other_linear", datasets=3)
    text = config.read_text().replace('measures = ["ei"]', 'measures = ["ei", "js"]')
    config.write_text(text + '\n[[analyses]]\nname = "dataset_centric"\n')
    out = tmp_path / "invkit-results"
    quiet_study(config)
    rerender(out)
    before = (out / "report.md").read_text()
    links = [line.split("](")[1].split(")")[0] for line in before.splitlines() if "![" in line]
    assert len(links) >= 2

    from matplotlib.figure import Figure

    calls = []
    real_savefig = Figure.savefig

    def disk_full_on_second_plot(figure, path, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the first figure as PNG and PDF, then the second one's PNG
            Path(path).write_bytes(b"half a png")  # the device fills up mid-file
            raise OSError(28, "No space left on device")
        return real_savefig(figure, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", disk_full_on_second_plot)
    (out / ".invkit-report-cache.json").unlink()  # so that the figures are drawn again
    with pytest.raises(StorageError, match=r"cannot write '.*\.png' \(No space left on device\)"):
        rerender(out)
    assert (out / "report.md").read_text() == before
    assert all((out / link).is_file() for link in links)
    leftovers = [p.name for p in out.rglob("*invkit-tmp*")]
    assert leftovers == []


def test_plot_names_never_collide(tmp_path):
    config = load_config(study_with(tmp_path, "linear", datasets=3))
    import dataclasses

    labels = ("rot/a", "rot a")  # one slug, two transforms: two figures all the same
    transforms = tuple(dataclasses.replace(config.transforms[0], name=label) for label in labels)
    analyses = parse_config(
        {"models": ["x"], "datasets": ["x"], "transforms": ["x"], "measures": ["x"],
         "analyses": ["dataset_centric"]}
    ).analyses  # fmt: skip
    config = dataclasses.replace(config, transforms=transforms, analyses=analyses)
    Study(config, out_dir=tmp_path / "o", progress=False, echo=lambda _: None).run()
    assert len(list((tmp_path / "o" / "plots").glob("*.png"))) == 2


def test_write_report_uses_temporary_names_only(tmp_path):
    from invkit.results.store import Store

    config = study_with(tmp_path, "linear")
    quiet_study(config)
    out = tmp_path / "invkit-results"
    store = Store(out / "results.sqlite")
    try:
        paths = write_report(out, store, store.config(), {})
    finally:
        store.close()
    assert paths["report"].is_file() and not list(out.glob(".*invkit-tmp"))


# -- inputs read right or refused --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crop_pct": 0}, r"preprocessing.crop_pct must be a number in \(0, 1\]"),
        ({"input_size": [3, 0, 0]}, "preprocessing.input_size must be .channels, height, width"),
        ({"std": [0, 0, 0]}, "preprocessing.std must be positive"),
        ({"interpolation": "cubic"}, "preprocessing.interpolation 'cubic' is not one of"),
    ],
)
def test_preprocessing_values_are_checked_when_the_config_is_read(tmp_path, change, message):
    config = {"models": [{"spec": "timm:resnet18", "preprocessing": change}],
              "datasets": ["digits"], "transforms": ["rotation"], "measures": ["ei"]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"models\[0\] \('timm:resnet18'\): " + message):
        parse_config(config)


def test_negative_class_map_entries_and_seeds_are_config_errors(tmp_path):
    (tmp_path / "map.txt").write_text("a 0\nb -1\n")
    config = {"models": ["timm:resnet18"], "transforms": ["rotation"], "measures": ["ei"],
              "datasets": [{"spec": "digits", "class_map": "map.txt"}]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"class map .*map.txt: class index -1 is negative"):
        Study(parse_config(config, base_dir=tmp_path), progress=False)
    with pytest.raises(ConfigError, match="run.seed must be >= 0; got -1"):
        parse_config({**config, "run": {"seed": -1}})


def test_wrongly_shaped_outputs_name_the_model_and_the_shape(tmp_path):
    with pytest.raises(ConfigError, match=r"model 'flat' returned \(768,\) for a batch of one "):
        quiet_study(study_with(tmp_path, "flat"))


def test_a_decompression_bomb_names_the_file_and_can_be_skipped(tmp_path):
    folder = tmp_path / "set" / "0"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")  # 400 megapixels, 50 KB on disk
    dataset = invkit.load_dataset(f"imagefolder:{tmp_path / 'set'}")
    bomb = next(i for i in range(len(dataset)) if dataset.describe(i).endswith("bomb.png"))
    with pytest.raises(invkit.InvkitError, match=r"bomb.png' is 20000×20000 pixels, over"):
        dataset[bomb]
    small = invkit.load_dataset(f"imagefolder:{tmp_path / 'set'}", max_pixels=100)
    with pytest.raises(invkit.InvkitError, match="max_pixels"):
        small[0]
    config = study_with(tmp_path, "linear")
    text = config.read_text().replace('spec = "digits"\nparams = { size = 16 }',
                                      'spec = "imagefolder:set"')  # fmt: skip
    config.write_text(text)
    strict = quiet_study(config, out_dir=tmp_path / "strict")
    assert "bomb.png" in strict.failures[0]["error"]
    result = run_cli("study", str(config), "--skip-bad-images", "--no-progress")
    assert "1 unreadable image(s) skipped" in result.stderr


def test_checkpoint_paths_that_are_folders_or_garbage_say_so(tmp_path):
    with pytest.raises(invkit.InvkitError, match=r"checkpoint '.*' is a folder, not a file"):
        invkit.load_model("python:torch.nn:Identity", checkpoint=str(tmp_path))
    garbage = tmp_path / "w.safetensors"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(invkit.InvkitError, match=r"w.safetensors' is not a readable .safetensors"):
        invkit.load_model("python:torch.nn:Identity", checkpoint=str(garbage))
    with pytest.raises(invkit.InvkitError, match=r"w.safetensors' is not a readable .safetensors"):
        invkit.load_model("timm:resnet18", weights=str(garbage))


# -- signals and exits ------------------------------------------------------------------------


def test_sys_exit_in_user_code_fails_its_pass_only(tmp_path):
    outcome = quiet_study(study_with(tmp_path, "exits_in_forward,linear"))
    assert outcome.computed == 1
    [failure] = outcome.failures
    assert failure["model"] == "exits_in_forward"
    assert "the code called sys.exit(3)" in failure["error"]
    # calling sys.exit while being built is a problem the check reports, not an exit
    result = run_cli("study", str(study_with(tmp_path, "exits")), check=False)
    assert result.returncode == 1 and "model 'exits': SystemExit: 2" in result.stderr


def test_sigterm_ends_the_study_like_ctrl_c(tmp_path):
    config = study_with(tmp_path, "slow", datasets=4)
    process = subprocess.Popen(
        [INVKIT, "study", str(config), "--no-progress"], stderr=subprocess.PIPE, text=True
    )
    wait_for_cells(tmp_path / "invkit-results" / "results.sqlite", 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert "interrupted (SIGTERM); completed cells are kept in" in stderr
    assert "Run the same command again to resume" in stderr


def test_ctrl_c_during_start_up_exits_130(tmp_path):
    package = tmp_path / "slowimport"
    package.mkdir()
    (package / "__init__.py").write_text("import time\ntime.sleep(30)\n")
    (package / "nets.py").write_text("")
    (tmp_path / "study.toml").write_text(
        'transforms = ["rotation"]\nmeasures = ["ei"]\ndatasets = ["digits"]\n'
        'models = ["python:slowimport.nets:build"]\n'
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    process = subprocess.Popen(
        [INVKIT, "study", str(tmp_path / "study.toml")], stderr=subprocess.PIPE, text=True, env=env
    )
    time.sleep(4)  # in start-up: the config's module is being found
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted (SIGINT)" in stderr and "Aborted!" not in stderr


def test_simultaneous_starts_see_the_lock_not_each_other(tmp_path):
    config = study_with(tmp_path, "linear")
    command = [INVKIT, "study", str(config), "--no-progress"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    for run, stderr in zip(runs, errors, strict=True):
        assert run.returncode == 0 or "another invkit study" in stderr, stderr
        assert "cannot write to the output directory" not in stderr


def test_every_run_option_is_checked_even_when_every_cell_is_reused(tmp_path):
    import dataclasses

    config = study_with(tmp_path, "linear")
    assert quiet_study(config).computed == 1
    loaded = load_config(config)
    bad = dataclasses.replace(
        loaded, run=dataclasses.replace(loaded.run, batch_size=0, device="ｃｐｕ", bootstrap=10**10)
    )
    with pytest.raises(ConfigError) as raised:
        Study(bad, progress=False, echo=lambda _: None).run()
    message = str(raised.value)
    assert "run.batch_size must be at least 1; got 0" in message
    assert "run.device: unknown device 'ｃｐｕ'" in message
    assert "run.bootstrap must be at most 1,000,000 resamples; got 10,000,000,000" in message
    config.write_text(config.read_text().replace("[run]", "[run]\nbootstrap = 10000000000"))
    result = run_cli("study", str(config), check=False)
    assert result.returncode == 1 and "run.bootstrap must be at most 1,000,000" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_while_full_outputs_are_written_is_one_line_and_leaves_nothing(tmp_path):
    config = study_with(tmp_path, "linear,other_linear", datasets=2, outputs="full")
    config.write_text(config.read_text().replace("limit = 32", "limit = 1500"))
    result = subprocess.run(
        [INVKIT, "study", str(config), "--no-progress"],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(160 * 1024),  # the store: 60 KB, a pass's file: 260 KB
        timeout=300,
    )
    assert result.returncode == EXIT_STORAGE, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "storage error" in line]
    assert "staging" in line and "File too large" in line, line
    assert "FAILED" not in result.stderr and "Traceback" not in result.stderr
    assert "run again one at a time" not in result.stderr
    staging = tmp_path / "invkit-results" / "outputs" / "staging"
    assert list(staging.iterdir()) == []  # what was staged is removed
