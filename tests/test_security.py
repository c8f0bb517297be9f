"""Security and integrity, second round: names from configs and file names from datasets stay
text in report.md and report.html; invkit never writes, reads or deletes through a link in its
output folder, and removes only the plots it recorded writing; python: specs cannot reach a
library's loaders; class subsets, the report cache and datasets cannot serve stale numbers."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import pickle
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import invkit
from invkit.config import ConfigError, load_config, parse_config
from invkit.markup import md, unmarked
from invkit.report.report import ReportCache, ReportCacheWarning, rerender
from invkit.results.store import Store
from invkit.run.check import check_study
from invkit.run.study import Study

from .conftest import HERE, run_cli, study_with, wait_for_cells

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DIGITS = load_digits()


def digit_folder(root: Path, classes: list[int], per_class: int = 6, suffix: str = "png") -> Path:
    """Real 8×8 digits as image files in one folder per class index."""
    for label in classes:
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        images = DIGITS.images[DIGITS.target == label][:per_class]
        for i, image in enumerate(images):
            pixels = (image * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(root / str(label) / f"{i}.{suffix}")
    return root


def quiet(config: Path | invkit.config.StudyConfig, **options) -> invkit.run.study.StudyOutcome:
    config = load_config(config) if isinstance(config, Path) else config
    return Study(config, progress=False, echo=lambda _: None, **options).run()


def cell_values(out: Path) -> dict[tuple[str, ...], float]:
    rows = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT model, dataset, transform, measure, value FROM cells"
    )
    return {tuple(row[:4]): row[4] for row in rows}


# -- names stay text --------------------------------------------------------------------------

MODEL_SCRIPT = "<img src=x onerror=\"document.title='model'\">"
DATASET_SCRIPT = "<svg onload=\"document.title='dataset'\">"
FILE_SCRIPT = "<img src=x onerror=\"document.title='file'\">"
ERROR_SCRIPT = "<img src=x onerror=\"document.title='error'\">"
THIRD = "third$\\foo$\x1b[2J\x1b[31m"  # TeX that mathtext would fail on; a terminal escape


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    """A study whose model and dataset names, an image file name and a model's exception text
    are HTML, and whose model name is a Markdown image of a file outside the study."""
    root = tmp_path_factory.mktemp("hostile")
    shutil.copy(HERE / "study_files" / "user_models.py", root / "user_models.py")
    digit_folder(root / "images", [0, 1, 2])
    (root / "images" / "1" / f"{FILE_SCRIPT}.png").write_bytes(b"")  # unreadable: skipped
    secret = root / "secret.png"
    Image.new("RGB", (4, 4), (200, 10, 10)).save(secret)
    size = "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"
    config = root / "study.toml"
    q = json.dumps  # a TOML basic string: quotes inside escaped
    config.write_text(
        'transforms = ["rotation"]\nmeasures = ["ei"]\nanalyses = ["model_centric"]\n'
        '[run]\nout = "out"\nbatch_size = 8\nskip_bad_images = true\n'
        f'[[models]]\nname = {q(MODEL_SCRIPT)}\nspec = "python:user_models.py:linear"\n{size}\n'
        f"[[models]]\nname = {q(f'![x]({secret})')}\n"
        f'spec = "python:user_models.py:other_linear"\n{size}\n'
        f'[[models]]\nname = {q(THIRD)}\nspec = "python:user_models.py:third_linear"\n{size}\n'
        f'[[models]]\nname = "failing"\nspec = "python:user_models.py:raises"\n{size}\n'
        f"params = {{ kwargs = {{ message = {q(ERROR_SCRIPT)} }} }}\n"
        f'[[datasets]]\nname = {q(DATASET_SCRIPT)}\nspec = "imagefolder:images"\n'
    )
    result = run_cli("study", str(config), "--no-progress", check=False)
    assert result.returncode == 1, result.stderr  # the failing model's pass
    assert "\x1b" not in result.stdout + result.stderr and "third$\\foo$?[2J?[31m" in result.stderr
    return root / "out", secret


def test_markdown_text_round_trips_through_every_rendering():
    import markdown

    hostile = ["<b>x</b>", "![a](/etc/b.png)", "[l](javascript:x)", "a|b", "_i_", "*s*", "`c`",
               "# h", "- l", "1. n", "back\\slash", "a&amp;b", "net_a1.b-c"]  # fmt: skip
    for text in hostile:
        cell = markdown.markdown(f"| h |\n|---|\n| {md(text)} |", extensions=["tables"])
        shown = re.search(r"<td>(.*)</td>", cell).group(1)
        assert html.unescape(shown) == text and unmarked(md(text)) == text
    assert md("net_a1") == "net_a1"  # ordinary names read as they are in report.md
    assert md("two\nlines\x1b[31m") == "two lines \\[31m"


def test_names_files_and_errors_reach_the_report_as_text(hostile):
    out, secret = hostile
    page = (out / "report.html").read_text()
    report = (out / "report.md").read_text()
    for script in (MODEL_SCRIPT, DATASET_SCRIPT, FILE_SCRIPT, ERROR_SCRIPT):
        assert script not in page and script not in report
        assert html.escape(script, quote=False)[:24] in page  # shown, as text
    assert "onerror" not in re.sub(r"&lt;.*?&gt;", "", page)  # only inside escaped text
    assert page.count("<script>") == 1  # invkit's own table sorting, nothing else
    assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert "secret.png" in page and f"![x]({secret})" not in report  # shown, as text
    embedded = page.count('src="data:image/png;base64,')
    assert embedded == len(list((out / "plots").glob("*.png"))) >= 1
    assert "<img" not in page.replace('<img alt="', "")  # every image is one of the plots
    tex = (out / "summary.tex").read_text()  # the dataset's name heads a column, as text
    assert DATASET_SCRIPT in tex and r"\textbackslash" not in tex


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_no_script_of_a_name_runs_when_report_html_is_opened(hostile):
    out, _ = hostile
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
         "--dump-dom", (out / "report.html").as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "<title>invkit study report</title>" in dom  # no handler renamed the page
    tags = set(re.findall(r"<([a-z0-9]+)[\s>]", dom))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p",
                    "table", "thead", "tbody", "tr", "th", "td", "img", "a", "ul", "li", "br",
                    "code", "pre", "em", "strong", "script"}, tags  # fmt: skip
    assert not re.search(r"<[^>]*\son\w+=", dom)  # no element carries an event handler


def test_a_plugin_analysis_cannot_embed_files_from_outside_the_study(tmp_path):
    from invkit.report.formats import report_html

    (tmp_path / "plots").mkdir()
    outside = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(outside)
    own = tmp_path / "plots" / "a-0123abcd.png"
    Image.new("RGB", (2, 2), (1, 2, 3)).save(own)
    link = tmp_path / "plots" / "b-0123abcd.png"
    link.symlink_to(outside)
    page = report_html(
        f"![own](plots/{own.name}) ![abs]({outside}) ![up](plots/../secret.png) "
        f"![link](plots/{link.name}) ![web](https://example.org/t.png) <script>x()</script>"
        '<a href="javascript:x()">j</a>',
        tmp_path,
    )
    assert page.count("data:image/png;base64,") == 1
    assert base64.b64encode(own.read_bytes()).decode() in page
    assert "example.org" not in page and "x()" not in page.split("<script>")[0]
    assert page.count("<script>") == 1


# -- links in the output folder ---------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished three-model study with figures, to copy and tamper with."""
    root = tmp_path_factory.mktemp("finished")
    config = study_with(root, "linear,other_linear,third_linear", datasets=2)
    config.write_text('analyses = ["model_centric"]\n' + config.read_text())
    quiet(config, out_dir=root / "out")
    assert list((root / "out" / "plots").glob("*.png"))
    return root


def copy_of(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(finished, tmp_path / "s", symlinks=True)
    return tmp_path / "s" / "study.toml", tmp_path / "s" / "out"


def test_a_plots_link_is_refused_and_its_target_untouched(finished, tmp_path):
    config, out = copy_of(finished, tmp_path)
    elsewhere = tmp_path / "holiday"
    elsewhere.mkdir()
    (elsewhere / "holiday.png").write_bytes(b"\x89PNG mine")
    (elsewhere / "thesis.pdf").write_bytes(b"%PDF mine")
    shutil.rmtree(out / "plots")
    (out / "plots").symlink_to(elsewhere)
    for command in (
        ["study", str(config), "--out", str(out), "--no-progress"],
        ["report", str(out)],
    ):
        result = run_cli(*command, check=False)
        assert result.returncode == 1
        assert "plots" in result.stderr and "symbolic link" in result.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["holiday.png", "thesis.pdf"]
    assert (elsewhere / "holiday.png").read_bytes() == b"\x89PNG mine"


@pytest.mark.parametrize(
    "name",
    [".invkit.lock", ".invkit-write-test", "results.sqlite-wal", ".invkit-report-cache.json"],
)
def test_links_where_invkit_writes_are_refused(finished, tmp_path, name):
    config, out = copy_of(finished, tmp_path)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(target)
    with pytest.raises(invkit.InvkitError, match=f"{re.escape(name)}.*symbolic link"):
        quiet(config, out_dir=out)
    assert target.read_text() == "keep me"


def test_a_dangling_store_link_creates_nothing_elsewhere(tmp_path):
    config = study_with(tmp_path, "linear")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").symlink_to(tmp_path / "elsewhere" / "store.sqlite")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(invkit.InvkitError, match="results.sqlite.*symbolic link"):
        quiet(config, out_dir=out)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_invkit_removes_only_the_plots_it_recorded_writing(finished, tmp_path):
    config, out = copy_of(finished, tmp_path)
    mine = out / "plots" / "mine.png"
    mine.write_bytes(b"\x89PNG the user's own")
    written = sorted(p.name for p in (out / "plots").iterdir() if p != mine)
    edited = out / "plots" / written[0]
    edited.write_bytes(b"\x89PNG edited by the user")  # no longer the bytes invkit wrote
    run_cli("report", str(out))
    assert mine.exists() and edited.read_bytes() == b"\x89PNG edited by the user"
    store = Store(out / "results.sqlite")
    stored = store.config()
    stored["analyses"][0]["name"] = "renamed"  # every old plot is now stale
    store.set_config(stored)
    store.close()
    run_cli("report", str(out))
    left = {p.name for p in (out / "plots").iterdir()}
    assert {"mine.png", edited.name} <= left
    assert not (left & set(written[1:])) and all(
        name.startswith("renamed-") for name in left - {"mine.png", edited.name}
    )
    quiet(config, out_dir=out, fresh=True)
    assert mine.exists() and edited.exists()


def test_concurrent_reports_wait_for_each_other(finished, tmp_path):
    _, out = copy_of(finished, tmp_path)
    invkit_cli = str(Path(sys.executable).with_name("invkit"))
    runs = [
        subprocess.Popen([invkit_cli, "report", str(out)], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0] * 6, errors
    report = (out / "report.md").read_text()
    linked = re.findall(r"\]\((plots/[^)]+\.png)\)", report)
    assert linked and all((out / path).is_file() for path in linked)


def test_a_report_waits_while_another_process_holds_the_folder(finished, tmp_path):
    """invkit report writes nothing while a study (here: this test) holds the folder's lock,
    and finishes once it is released."""
    from invkit.lock import exclusive

    _, out = copy_of(finished, tmp_path)
    before = (out / "report.md").stat().st_mtime_ns
    invkit_cli = str(Path(sys.executable).with_name("invkit"))
    with exclusive(out):
        run = subprocess.Popen([invkit_cli, "report", str(out)], stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            run.wait(timeout=8)  # long enough to have written the report had it not waited
        assert (out / "report.md").stat().st_mtime_ns == before
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert (out / "report.md").stat().st_mtime_ns > before


# -- code from configs --------------------------------------------------------------------------


class Payload:
    """Unpickling it writes a marker file: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "owned"))


def model_config(tmp_path: Path, spec: str, kwargs: dict) -> invkit.config.StudyConfig:
    return parse_config(
        {
            "models": [{"name": "m", "spec": spec, "params": {"kwargs": kwargs}}],
            "datasets": ["digits"],
            "transforms": ["rotation"],
            "measures": ["ei"],
        },
        base_dir=tmp_path,
    )


def test_python_specs_cannot_name_a_librarys_loaders(tmp_path):
    marker = tmp_path / "owned.txt"
    torch.save(Payload(marker), tmp_path / "evil.pt")
    np.save(tmp_path / "evil.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write('owned')\n")
    cases = [
        ("python:torch:load", {"f": str(tmp_path / "evil.pt"), "weights_only": False}, "torch"),
        ("python:numpy:load", {"file": str(tmp_path / "evil.npy"), "allow_pickle": True}, "numpy"),
        ("python:torch.hub:load",
         {"repo_or_dir": str(tmp_path / "hub"), "model": "m", "source": "local"}, "torch.hub"),
        ("python:timm:create_model", {"model_name": "resnet18"}, "timm"),
        ("python:joblib:load", {"filename": str(tmp_path / "evil.pt")}, "joblib"),
    ]  # fmt: skip
    for spec, kwargs, module in cases:
        with pytest.raises(ConfigError, match=rf"'{re.escape(module)}' is a library .*instead use"):
            Study(model_config(tmp_path, spec, kwargs), out_dir=tmp_path / "out", progress=False)
    assert not marker.exists() and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r'instead use spec = "timm:NAME"'):
        Study(model_config(tmp_path, "python:timm:create_model", {}), out_dir=tmp_path / "o")


def test_a_librarys_loader_re_exported_from_a_users_file_is_refused_before_the_call(tmp_path):
    marker = tmp_path / "owned.txt"
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write('owned')\n")
    (tmp_path / "models.py").write_text("from torch.hub import load as build\n")
    kwargs = {"repo_or_dir": str(tmp_path / "hub"), "model": "m", "source": "local"}
    config = model_config(tmp_path, "python:models.py:build", kwargs)
    with pytest.raises(ConfigError, match=r"'build' comes from 'torch.hub', which is a library"):
        quiet(config, out_dir=tmp_path / "out")
    assert not marker.exists()


# -- class subsets ------------------------------------------------------------------------------


def subset_study(root: Path, subset_text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "study_files" / "user_models.py", root / "user_models.py")
    digit_folder(root / "images", [0, 1, 2])
    (root / "sub.txt").write_text(subset_text)
    config = root / "study.toml"
    config.write_text(
        'transforms = ["rotation"]\nmeasures = ["ei"]\n[run]\nout = "out"\nbatch_size = 8\n'
        '[[models]]\nname = "linear"\nspec = "python:user_models.py:linear"\n'
        "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }\n"
        '[[datasets]]\nname = "d"\nspec = "imagefolder:images"\nclass_subset = "sub.txt"\n'
    )
    return config


def test_a_class_listed_twice_in_a_subset_is_refused(tmp_path):
    config = subset_study(tmp_path, "0\n0\n1\n2\n")
    with pytest.raises(ConfigError, match=r"sub.txt' lists '0' twice \(entries 1 and 2\)"):
        quiet(config)
    assert not (tmp_path / "out").exists()


def test_a_class_subset_is_read_from_the_configs_folder_and_fingerprinted(tmp_path, monkeypatch):
    config = subset_study(tmp_path / "a", "0\n1\n2\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the config's folder, not the working directory, decides
    first = quiet(config)
    assert first.computed == 1
    before = cell_values(tmp_path / "a" / "out")
    (tmp_path / "a" / "sub.txt").write_text("0\n1\n2\n3\n4\n5\n")  # six logits, not three
    second = quiet(config)
    assert second.computed == 1 and second.reused == 0
    after = cell_values(tmp_path / "a" / "out")
    assert after != before
    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / "a", fresh, ignore=shutil.ignore_patterns("out"))
    quiet(fresh / "study.toml")
    assert cell_values(fresh / "out") == after


def test_a_class_subset_index_outside_the_outputs_is_caught_before_any_pass(tmp_path):
    config = subset_study(tmp_path, "0\n1\n2\n10\n")
    report = check_study(load_config(config), progress=False, echo=lambda _: None)
    [problem] = report.problems
    assert "class index 10, outside the model's 10 outputs (0 to 9)" in problem
    with pytest.raises(ConfigError, match="class index 10, outside"):
        quiet(config)
    assert not (tmp_path / "out" / "results.sqlite").exists()


# -- the report cache -------------------------------------------------------------------------


def test_the_report_cache_sees_the_component_and_verifies_its_entries(finished, tmp_path):
    _, out = copy_of(finished, tmp_path)
    truth = json.loads((out / "analyses.json").read_text())["model_centric"]
    cache_path = out / ReportCache.NAME
    cache = json.loads(cache_path.read_text())
    statistics = cache["model_centric"]["content"]["as_json"]["groups"][0]["statistics"]
    statistics["pearson_r"] = 0.999  # a hand-edited value
    cache_path.write_text(json.dumps(cache))
    with pytest.warns(invkit.report.report.ReportCacheWarning, match="fails its check"):
        rerender(out)
    assert json.loads((out / "analyses.json").read_text())["model_centric"] == truth
    assert truth["groups"][0]["statistics"]["pearson_r"] != 0.999
    store = Store(out / "results.sqlite")
    config = store.config()
    config["analyses"] = [{"name": "model_centric", "component": "dataset_centric", "params": {}}]
    store.set_config(config)
    store.close()
    rerender(out)
    assert json.loads((out / "analyses.json").read_text())["model_centric"]["analysis"] == (
        "dataset_centric"
    )


@pytest.mark.parametrize(
    ("text", "warned"),
    [('{"model_centric": 5}', True), ("[]", True), ('"text"', True), ("{not json", True),
     ('{"model_centric": {"key": 1}}', False),  # another key: stale, recomputed quietly
     ('{"model_centric": {"content": 5}}', True), ("\xff\xfe", True)],
)  # fmt: skip
def test_a_damaged_report_cache_is_rebuilt_with_a_warning(finished, tmp_path, text, warned):
    config, out = copy_of(finished, tmp_path)
    truth = (out / "analyses.json").read_text()
    (out / ReportCache.NAME).write_text(text, encoding="latin-1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rerender(out)
    assert (out / "analyses.json").read_text() == truth
    said = [str(w.message) for w in caught if issubclass(w.category, ReportCacheWarning)]
    assert bool(said) == warned and all(m.startswith("the report cache") for m in said)
    json.loads((out / ReportCache.NAME).read_text())  # rewritten whole
    quiet(config, out_dir=out)  # and later studies into the folder are unharmed


# -- datasets by content ------------------------------------------------------------------------


def test_verify_content_sees_same_size_files_swapped_with_their_times(tmp_path):
    config = study_with(tmp_path, "linear")
    digit_folder(tmp_path / "images", [0, 1], suffix="bmp")  # BMP: every file the same size
    config.write_text(
        config.read_text().replace(
            'spec = "digits"\nparams = { size = 16 }', 'spec = "imagefolder:images"'
        )
    )
    out = tmp_path / "out"
    quiet(config, out_dir=out)
    a, b = tmp_path / "images" / "0" / "0.bmp", tmp_path / "images" / "1" / "0.bmp"
    times = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)]
    data = a.read_bytes(), b.read_bytes()
    a.write_bytes(data[1])
    b.write_bytes(data[0])
    for path, (atime, mtime) in zip((a, b), times, strict=True):
        os.utime(path, ns=(atime, mtime))
    assert quiet(config, out_dir=out).reused == 1  # the listing (the default) cannot see it
    by_content = tmp_path / "content.toml"
    by_content.write_text(
        config.read_text().replace("limit = 32", 'limit = 32\nverify = "content"')
    )
    quiet(by_content, out_dir=out)
    a.write_bytes(data[0])
    b.write_bytes(data[1])
    for path, (atime, mtime) in zip((a, b), times, strict=True):
        os.utime(path, ns=(atime, mtime))
    again = quiet(by_content, out_dir=out)
    assert again.computed == 1 and again.reused == 0


# -- smaller ------------------------------------------------------------------------------------


def test_check_images_refuses_what_the_study_refuses(tmp_path):
    config = study_with(tmp_path, "linear")
    digit_folder(tmp_path / "images", [0, 1])
    deep = np.array([[0, 69_669], [1_000, 65_536]], dtype=np.int32)
    Image.fromarray(deep, mode="I").save(tmp_path / "images" / "1" / "deep.tif")
    config.write_text(
        config.read_text().replace(
            'spec = "digits"\nparams = { size = 16 }', 'spec = "imagefolder:images"'
        )
    )
    report = check_study(load_config(config), images=True, progress=False, echo=lambda _: None)
    [problem] = report.problems
    assert "deep.tif" in problem and "no known pixel range" in problem
    outcome = quiet(config, out_dir=tmp_path / "out")  # the study refuses the same file
    [failure] = outcome.failures
    assert "deep.tif" in failure["error"] and "no known pixel range" in failure["error"]


def test_held_out_on_an_unlabeled_set_says_it_changes_nothing(tmp_path):
    config = study_with(tmp_path, "linear")
    config.write_text(
        config.read_text().replace(
            "params = { size = 16 }", "params = { size = 16, labeled = false }\nheld_out = true"
        )
    )
    lines: list[str] = []
    Study(load_config(config), out_dir=tmp_path / "out", progress=False, echo=lines.append).run()
    assert any("'d0' is held_out but has no labels" in line for line in lines)


def test_payload_pickles_really_run_code_when_loaded_unsafely(tmp_path):
    """The payloads above are real: unpickled without the guard, they write the marker."""
    marker = tmp_path / "owned.txt"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.read_text() == "owned"


def test_an_interrupted_fresh_run_names_the_command_that_resumes(tmp_path):
    config = study_with(tmp_path, "slow", datasets=2)
    invkit_cli = str(Path(sys.executable).with_name("invkit"))
    store = tmp_path / "invkit-results" / "results.sqlite"
    run = subprocess.Popen(
        [invkit_cli, "study", str(config), "--fresh", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_cells(store, 1, run)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130
    assert "Run it again without --fresh to resume." in stderr


def test_no_csv_cell_invkit_writes_starts_a_formula(tmp_path):
    from invkit.markup import FORMULA_START, csv_cell, csv_text

    shutil.copy(HERE / "study_files" / "user_models.py", tmp_path / "user_models.py")
    models = ['=HYPERLINK("http://evil.example","click")', "@SUM(1+1)", "+cmd|'/C calc'!A0"]
    datasets = ["-1", "-2+3", "\tTAB"]
    size = "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"
    spec = 'spec = "python:user_models.py:linear"\n'
    config = 'transforms = ["rotation"]\nmeasures = ["ei"]\n[run]\ndevice = "cpu"\n'
    for i, name in enumerate(models):
        seed = f"params = {{ kwargs = {{ seed = {i} }} }}\n"
        config += f"[[models]]\nname = {json.dumps(name)}\n{spec}{seed}{size}\n"
    for i, name in enumerate(datasets):
        source = "source = true\n" if i == 0 else ""
        config += (f"[[datasets]]\nname = {json.dumps(name)}\nspec = \"digits\"\n"
                   f"params = {{ size = 16 }}\nlimit = 40\nseed = {i}\n{source}")  # fmt: skip
    config += '[[analyses]]\nname = "estimate_accuracy"\nparams = { estimators = ["ac", "doc"] }\n'
    (tmp_path / "study.toml").write_text(config)
    out = tmp_path / "out"
    quiet(tmp_path / "study.toml", out_dir=out)
    read_back: dict[str, set[str]] = {}
    for name in ("results.csv", "models.csv", "estimates.csv"):
        rows = list(csv.reader((out / name).open(newline="", encoding="utf-8")))
        for row in rows:
            for cell in row:
                if cell.startswith(FORMULA_START):
                    float(cell)  # only a number may start so: "-1", "-0.25"
        header = rows[0]
        read_back[name] = {csv_text(row[header.index("model")]) for row in rows[1:]}
        if "dataset" in header:
            read_back[name] |= {csv_text(row[header.index("dataset")]) for row in rows[1:]}
    assert read_back["results.csv"] == set(models) | set(datasets)
    assert read_back["models.csv"] == set(models)
    assert read_back["estimates.csv"] == set(models) | set(datasets[1:])  # targets only
    assert csv_cell("-1") == "-1" and csv_cell("'quoted") == "''quoted"
    assert csv_text(csv_cell("'=x")) == "'=x" and csv_cell(-0.5) == -0.5
