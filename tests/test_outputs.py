"""Kept outputs: a study keeps each pass's per-image outputs, computes new cells from them with
no forward pass (equal to the pass's own, bit for bit), checks them before reuse, and reads them
back for Python and for analyses. Formulas are checked against scipy on the kept logits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from safetensors.numpy import load_file

import invkit
from invkit.config import load_config
from invkit.errors import InvkitError
from invkit.results.outputs import reads_top
from invkit.run.study import Study

from .conftest import HERE, run_cli

VIEWS = ["original", "rotation/90", "rotation/180", "rotation/270", "grayscale/0"]


def write_config(
    folder: Path, measures: list[str], outputs: str = "summary", limit: int = 48, **run: object
) -> Path:
    """Two seeded linear models × two digits test sets, rotation and grayscale."""
    shutil.copy(HERE / "study_files" / "user_models.py", folder / "user_models.py")
    lines = [
        'transforms = ["rotation", "grayscale"]',
        f"measures = {json.dumps(measures)}",
        "",
        "[run]",
        "batch_size = 16",
        'device = "cpu"',
        f'outputs = "{outputs}"',
        *(f"{key} = {json.dumps(value)}" for key, value in run.items()),
    ]
    for name in ("linear", "other_linear"):
        lines += ["", "[[models]]", f'name = "{name}"', f'spec = "python:user_models.py:{name}"',
                  "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"]  # fmt: skip
    for seed in (0, 1):
        lines += ["", "[[datasets]]", f'name = "d{seed}"', 'spec = "digits"',
                  "params = { size = 16 }", f"limit = {limit}", f"seed = {seed}"]  # fmt: skip
    path = folder / f"study-{len(list(folder.glob('study-*.toml')))}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_study(config: Path, out: Path) -> tuple[object, list[str]]:
    lines: list[str] = []
    outcome = Study(load_config(config), out_dir=out, progress=False, echo=lines.append).run()
    return outcome, lines


def cells(out: Path) -> dict[tuple[str, ...], tuple]:
    rows = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT model, dataset, transform, measure, value, low, high, accuracy, images, "
        "labeled, skipped, matching FROM cells"
    )
    return {tuple(row[:4]): tuple(row[4:]) for row in rows}


def records(out: Path) -> dict[tuple[str, str], str]:
    rows = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT model, dataset, file FROM outputs"
    )
    return {(model, dataset): file for model, dataset, file in rows}


def softmax(logits: np.ndarray) -> np.ndarray:
    return scipy.special.softmax(np.asarray(logits, dtype=np.float64), axis=1)


def test_new_top1_cells_come_from_kept_outputs_equal_to_a_pass_bit_for_bit(tmp_path):
    run_study(write_config(tmp_path, ["ei"]), tmp_path / "kept")
    outcome, lines = run_study(write_config(tmp_path, ["ei", "agreement"]), tmp_path / "kept")
    assert (outcome.from_outputs, outcome.computed, outcome.passes) == (8, 0, 0)
    assert outcome.forward_images == outcome.decoded == 0
    assert any("8 cell(s) from kept outputs" in line for line in lines)
    run_study(write_config(tmp_path, ["ei", "agreement"]), tmp_path / "direct")
    assert cells(tmp_path / "kept") == cells(tmp_path / "direct")  # exact, not approximately

    # a bootstrap interval is asked for: every cell is recomputed from the same outputs
    bootstrapped = write_config(tmp_path, ["ei", "agreement"], bootstrap=200, seed=3)
    outcome, _ = run_study(bootstrapped, tmp_path / "kept")
    assert (outcome.from_outputs, outcome.forward_images) == (16, 0)
    run_study(bootstrapped, tmp_path / "direct-bootstrap")
    kept = cells(tmp_path / "kept")
    assert kept == cells(tmp_path / "direct-bootstrap")
    assert all(low < value < high for value, low, high, *_ in kept.values() if 0 < value < 1)


def test_a_softmax_measure_over_summary_outputs_runs_passes_and_equals_scipy(tmp_path):
    run_study(write_config(tmp_path, ["ei"]), tmp_path / "summary")
    outcome, _ = run_study(write_config(tmp_path, ["ei", "js"]), tmp_path / "summary")
    assert outcome.from_outputs == 0 and outcome.passes == 4  # never from the top-k alone
    assert outcome.computed == 8 and outcome.forward_images == 4 * 48 * 5
    run_study(write_config(tmp_path, ["ei"], outputs="full"), tmp_path / "full")
    stored = cells(tmp_path / "summary")
    for model in ("linear", "other_linear"):
        for dataset in ("d0", "d1"):
            kept = invkit.load_outputs(tmp_path / "full", model, dataset)
            original = softmax(kept.logits["original"])
            for transform, views in kept.transforms.items():
                per_view = [
                    scipy.spatial.distance.jensenshannon(original, softmax(kept.logits[v]), axis=1)
                    ** 2
                    for v in views
                ]
                expected = np.mean(np.mean(per_view, axis=0))
                value = stored[(model, dataset, transform, "js")][0]
                assert value == pytest.approx(expected, abs=1e-12)


def test_kept_outputs_hold_what_scipy_computes_from_the_logits(tmp_path):
    run_study(write_config(tmp_path, ["ei"], outputs="full"), tmp_path / "out")
    stored = cells(tmp_path / "out")
    for (model, dataset), name in records(tmp_path / "out").items():
        kept = invkit.load_outputs(tmp_path / "out", model, dataset)
        assert kept.views == VIEWS and kept.level == "full" and kept.topk == 5
        assert kept.accuracy == stored[(model, dataset, "rotation", "ei")][3]
        assert len(kept.indices) == 48 and (kept.targets >= 0).all()
        independent = load_file(tmp_path / "out" / "outputs" / name)  # safetensors' own reader
        for j, view in enumerate(kept.views):
            logits = np.asarray(kept.logits[view], dtype=np.float64)
            probs = softmax(logits)
            order = np.argsort(-probs, axis=1, kind="stable")[:, :5]
            assert (kept.top_indices[view] == order).all()
            expected_top = np.take_along_axis(probs, order, axis=1)
            np.testing.assert_allclose(kept.top_probs[view], expected_top, rtol=0, atol=1e-15)
            lse = scipy.special.logsumexp(logits, axis=1)
            np.testing.assert_allclose(kept.logsumexp[view], lse, rtol=1e-14)
            entropy = scipy.stats.entropy(probs, axis=1)
            np.testing.assert_allclose(kept.entropy[view], entropy, rtol=1e-13)
            assert (independent[f"v{j}.top_probs"] == kept.top_probs[view]).all()
            assert (independent[f"v{j}.logits"] == kept.logits[view]).all()
        assert (kept.predictions == kept.top_indices["original"][:, 0]).all()


def test_a_damaged_or_deleted_outputs_file_is_recomputed_with_a_warning(tmp_path):
    run_study(write_config(tmp_path, ["ei"]), tmp_path / "out")
    files = records(tmp_path / "out")
    damaged = tmp_path / "out" / "outputs" / files[("linear", "d0")]
    deleted = tmp_path / "out" / "outputs" / files[("other_linear", "d1")]
    content = bytearray(damaged.read_bytes())
    content[-3] ^= 0xFF  # the same size: only the SHA-256 tells
    damaged.write_bytes(bytes(content))
    deleted.unlink()
    outcome, lines = run_study(write_config(tmp_path, ["ei", "agreement"]), tmp_path / "out")
    assert f"invkit: warning: kept outputs {damaged} do not match their recorded SHA-256 " in (
        "\n".join(lines)
    )
    assert any(f"kept outputs {deleted} are missing" in line for line in lines)
    assert (outcome.passes, outcome.from_outputs) == (2, 4)
    run_study(write_config(tmp_path, ["ei", "agreement"]), tmp_path / "direct")
    assert cells(tmp_path / "out") == cells(tmp_path / "direct")
    assert invkit.load_outputs(tmp_path / "out", "linear", "d0").accuracy is not None
    again, _ = run_study(write_config(tmp_path, ["ei", "agreement"]), tmp_path / "out")
    assert again.reused == 16 and again.forward_images == 0


def test_kill_9_while_full_outputs_are_written_then_a_rerun_equals_an_uninterrupted_run(tmp_path):
    config = write_config(tmp_path, ["ei"], outputs="full", limit=400)
    text = config.read_text().replace('spec = "python:user_models.py:linear"', (
        'spec = "python:user_models.py:slow"\nparams = { kwargs = { seconds = 0.05 } }'
    ))  # fmt: skip
    config.write_text(text)
    out = tmp_path / "killed"
    invkit_cli = Path(sys.executable).with_name("invkit")
    process = subprocess.Popen(
        [str(invkit_cli), "study", str(config), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = out / "outputs" / "staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        spilled = list(staging.glob("*/v0.logits")) if staging.is_dir() else []
        if spilled and spilled[0].stat().st_size > 0:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the study wrote no logits to kill it over")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list(staging.iterdir())  # what the killed pass was writing
    run_cli("study", str(config), "--out", str(out), "--no-progress")
    assert list(staging.iterdir()) == []
    run_cli("study", str(config), "--out", str(tmp_path / "whole"), "--no-progress")
    assert cells(out) == cells(tmp_path / "whole")
    assert records(out) == records(tmp_path / "whole")
    for name in records(out).values():
        assert (out / "outputs" / name).read_bytes() == (
            tmp_path / "whole" / "outputs" / name
        ).read_bytes()


def test_outputs_none_keeps_nothing_and_every_new_cell_runs_a_pass(tmp_path):
    out = tmp_path / "out"
    run_study(write_config(tmp_path, ["ei"], outputs="none"), out)
    assert not (out / "outputs").exists() and records(out) == {}
    outcome, _ = run_study(write_config(tmp_path, ["ei", "agreement"], outputs="none"), out)
    assert (outcome.from_outputs, outcome.passes, outcome.computed) == (0, 4, 8)
    run_study(write_config(tmp_path, ["ei", "agreement"]), tmp_path / "direct")
    assert cells(out) == cells(tmp_path / "direct")
    with pytest.raises(InvkitError, match="kept no outputs of 'linear' × 'd0'"):
        invkit.load_outputs(out, "linear", "d0")
    listed = run_cli("outputs", str(out))
    assert "kept no model outputs" in listed.stdout


def test_asking_for_more_than_was_kept_reruns_and_replaces_the_files(tmp_path):
    out = tmp_path / "out"
    run_study(write_config(tmp_path, ["ei"]), out)
    summary_files = set(records(out).values())
    outcome, _ = run_study(write_config(tmp_path, ["ei"], outputs="full"), out)
    assert outcome.passes == 4 and outcome.computed == 0  # the cells stand; outputs grow
    assert set(os.listdir(out / "outputs")) == {*records(out).values(), "staging"}
    assert not summary_files & set(records(out).values())
    listed = json.loads(run_cli("outputs", str(out), "--json").stdout)
    assert [row["level"] for row in listed] == ["full"] * 4
    assert {row["views"] == VIEWS for row in listed} == {True}


def test_a_measure_declares_what_it_reads():
    class Reads:
        def __init__(self, reads):
            self.reads = reads

    assert reads_top(object()) is None  # declares nothing: the whole softmax
    assert reads_top(Reads("softmax")) is None
    assert reads_top(Reads("top5")) == 5
    assert reads_top(invkit.get_measure("ei")) == 1
    assert reads_top(invkit.get_measure("kl")) is None
    for wrong in ("top0", "top", "five", "top-1"):
        with pytest.raises(InvkitError, match="use 'softmax'"):
            reads_top(Reads(wrong))


def test_a_third_party_measure_and_analysis_read_kept_outputs(tmp_path, with_plugin_site):
    env = {"INVKIT_LOAD_PLUGINS": "invkit-topfive"}
    out = tmp_path / "out"
    first = write_config(tmp_path, ["ei"], outputs="full")
    run_cli("study", str(first), "--out", str(out), "--no-progress", env=env)
    second = write_config(tmp_path, ["ei", "top5_overlap"], outputs="full")
    second.write_text(second.read_text() + '\n[[analyses]]\nname = "mean_entropy"\n')
    result = run_cli("study", str(second), "--out", str(out), "--no-progress", env=env)
    assert "8 cell(s) from kept outputs" in result.stderr
    assert "0 cell(s) computed in 0 pass(es), 8 from kept outputs, 8 reused" in result.stdout
    stored = cells(out)
    analysis = json.loads((out / "analyses.json").read_text())["mean_entropy"]["mean_entropy"]
    for model in ("linear", "other_linear"):
        for dataset in ("d0", "d1"):
            kept = invkit.load_outputs(out, model, dataset)
            ranked = {v: np.argsort(-softmax(kept.logits[v]), axis=1)[:, :5] for v in VIEWS}
            for transform, views in kept.transforms.items():
                first = ranked["original"]
                overlap = [
                    [len(set(a) & set(b)) / 5 for a, b in zip(first, ranked[v], strict=True)]
                    for v in views
                ]
                value = stored[(model, dataset, transform, "top5_overlap")][0]
                assert value == pytest.approx(np.mean(np.mean(overlap, axis=0)), abs=1e-12)
            entropy = scipy.stats.entropy(softmax(kept.logits["original"]), axis=1).mean()
            assert analysis[f"{model} × {dataset}"] == pytest.approx(entropy, rel=1e-12)
    listed = run_cli("outputs", str(out), env=env).stdout
    assert "linear × d0: full, top-5 of 10 classes, 48 images × 5 views (rotation, " in listed
    assert "invkit: 4 model × dataset output(s)" in listed


def test_links_in_the_outputs_folder_are_never_followed(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_study(write_config(tmp_path, ["ei"]), out)
    kept = out / "outputs" / records(out)[("linear", "d0")]
    precious = elsewhere / "precious.safetensors"
    shutil.copy(kept, precious)  # the same bytes: only the link gives it away
    kept.unlink()
    kept.symlink_to(precious)
    outcome, lines = run_study(write_config(tmp_path, ["ei", "agreement"]), out)
    assert any(str(kept) in line and "symbolic link" in line for line in lines)
    assert outcome.passes == 1 and outcome.from_outputs == 6
    assert not kept.is_symlink() and precious.read_bytes() == kept.read_bytes()
    shutil.rmtree(out / "outputs")
    (out / "outputs").symlink_to(elsewhere)
    with pytest.raises(InvkitError, match="outputs'.*symbolic link"):
        run_study(write_config(tmp_path, ["ei", "agreement", "js"]), out)
    assert os.listdir(elsewhere) == ["precious.safetensors"]


def test_fresh_removes_the_outputs_invkit_wrote_and_keeps_a_users_file(tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path, ["ei"])
    run_study(config, out)
    before = set(records(out).values())
    mine = out / "outputs" / "my-notes.safetensors"
    mine.write_bytes(b"not invkit's")
    none = write_config(tmp_path, ["ei"], outputs="none")  # a fresh start that keeps nothing
    Study(load_config(none), out_dir=out, fresh=True, progress=False, echo=print).run()
    assert mine.read_bytes() == b"not invkit's" and records(out) == {}
    assert set(os.listdir(out / "outputs")) == {"staging", mine.name}
    assert before and not before & set(os.listdir(out / "outputs"))


def test_load_outputs_and_invkit_outputs_never_read_through_a_linked_outputs_folder(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    run_study(write_config(tmp_path, ["ei"]), out)
    shutil.move(out / "outputs", elsewhere)  # the same files, readable through the link
    (out / "outputs").symlink_to(elsewhere)
    with pytest.raises(InvkitError, match="outputs'.*symbolic link"):
        invkit.load_outputs(out, "linear", "d0")
    listed = run_cli("outputs", str(out), check=False)
    assert listed.returncode == 1 and "symbolic link" in listed.stderr
    assert "Traceback" not in listed.stderr and "linear × d0" not in listed.stdout


def _forged(header: object, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text


def test_malformed_outputs_files_are_named_and_the_listing_goes_on(tmp_path):
    out = tmp_path / "out"
    run_study(write_config(tmp_path, ["ei"]), out)
    files = records(out)
    real = out / "outputs" / files["linear", "d0"]
    length = int.from_bytes(real.read_bytes()[:8], "little")
    header = json.loads(real.read_bytes()[8 : 8 + length])
    body = real.read_bytes()[8 + length :]

    def with_header(changed: dict) -> bytes:
        text = json.dumps(changed).encode()
        return _forged(None, text + b" " * (-len(text) % 8)) + body

    meta = header["__metadata__"]
    forged = {
        "not UTF-8": _forged(None, b"\xff\xfe{}"),
        "not JSON": _forged(None, b"{nope"),
        "a list": _forged([1, 2]),
        "no shape": _forged({"indices": {"dtype": "I64", "data_offsets": [0, 0]}}),
        "offsets of three": _forged({"x": {"dtype": "I64", "shape": [1], "data_offsets": [0]}}),
        "a text shape": _forged({"x": {"dtype": "I64", "shape": "1", "data_offsets": [0, 8]}}),
        "no views": with_header({**header, "__metadata__": {**meta, "views": "{"}}),
        "no level": with_header(
            {**header, "__metadata__": {k: v for k, v in meta.items() if k != "level"}}
        ),
        "shape -1": with_header({**header, "indices": {**header["indices"], "shape": [-1]}}),
    }
    victim = out / "outputs" / files["other_linear", "d1"]
    for kind, content in forged.items():
        victim.write_bytes(content)
        with pytest.raises(InvkitError, match=f"kept outputs {victim} "):  # its size or hash
            invkit.load_outputs(out, "other_linear", "d1")
        rows = {
            (r["model"], r["dataset"]): r
            for r in invkit.results.reading.StudyOutputs.of(out).listing()
        }
        assert f"kept outputs {victim} are not a readable" in rows["other_linear", "d1"]["error"]
        assert rows["linear", "d0"]["images"] == 48, kind  # the others are listed as before
    victim.unlink()
    os.mkfifo(victim)  # a reader of a FIFO would wait for a writer forever
    listed = run_cli("outputs", str(out), check=False)
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert f"kept outputs {victim} are not a regular file" in listed.stderr
    assert (
        "linear × d0: summary" in listed.stdout and "3 model × dataset output(s)" in listed.stdout
    )
    victim.unlink()
    listed = run_cli("outputs", str(out), check=False)
    assert f"kept outputs {victim} are missing" in listed.stderr and listed.returncode == 1


def per_view_rows(out: Path) -> dict[tuple[str, ...], tuple[str, str]]:
    import csv

    with (out / "per_view.csv").open() as handle:
        return {
            (r["model"], r["dataset"], r["transform"], r["measure"], r["view"]): (
                r["magnitude"], r["value"],
            )
            for r in csv.DictReader(handle)
        }  # fmt: skip


def test_every_cell_keeps_its_value_on_each_view_from_a_pass_or_from_kept_outputs(tmp_path):
    fresh, added = tmp_path / "fresh", tmp_path / "added"
    run_study(write_config(tmp_path, ["ei", "agreement"]), fresh)
    run_study(write_config(tmp_path, ["ei"]), added)
    outcome, _ = run_study(write_config(tmp_path, ["ei", "agreement"]), added)
    assert outcome.from_outputs == 8 and outcome.forward_images == 0
    rows = per_view_rows(fresh)
    assert per_view_rows(added) == rows  # from kept outputs: the same, bit for bit
    loaded = invkit.load_per_view(fresh)  # the Python API: the same rows, as numbers
    assert {(r["model"], r["dataset"], r["transform"], r["measure"], r["view"]): r["value"]
            for r in loaded} == {k: float(v[1]) for k, v in rows.items()}  # fmt: skip
    assert len(rows) == 2 * 2 * 2 * (3 + 1)  # models × datasets × measures × views
    assert rows["linear", "d0", "rotation", "ei", "90"][0] == "90.0"
    assert rows["linear", "d0", "grayscale", "ei", "0"][0] == ""  # not a magnitude
    cells = {k[:4]: v for k, v in cells_by_key(fresh).items()}
    for model in ("linear", "other_linear"):
        outputs = invkit.load_outputs(fresh, model, "d1")
        original = outputs.top_indices["original"][:, 0]
        views = []
        for angle in ("90", "180", "270"):
            expected = np.mean(original == outputs.top_indices[f"rotation/{angle}"][:, 0])
            value = float(rows[model, "d1", "rotation", "agreement", angle][1])
            assert value == pytest.approx(expected, abs=1e-15)
            views.append(value)
        assert np.mean(views) == pytest.approx(
            cells[model, "d1", "rotation", "agreement"], abs=1e-12
        )


def cells_by_key(out: Path) -> dict[tuple[str, ...], float]:
    rows = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT model, dataset, transform, measure, value FROM cells"
    )
    return {tuple(row[:4]): row[4] for row in rows}


def test_views_made_a_chunk_at_a_time_give_the_cells_of_all_at_once(tmp_path):
    results = {}
    for views in (0, 1, 4):  # all of a batch's views at once, one at a time, the default chunk
        out = tmp_path / f"views-{views}"
        run_study(write_config(tmp_path, ["ei", "js"], max_views_per_forward=views), out)
        results[views] = cells_by_key(out)
    for views in (1, 4):
        assert results[views].keys() == results[0].keys()
        for key, value in results[0].items():
            assert results[views][key] == pytest.approx(value, abs=1e-9), (views, key)
