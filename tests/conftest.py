"""Shared fixtures: a fresh plugin host per test, the CLI as a real subprocess, and real
third-party plugin packages (good and broken) installed with pip into a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from invkit.plugins import reset_host

HERE = Path(__file__).parent
FAKE_PLUGINS = HERE / "fake_plugins"
INVKIT_ENV = ("INVKIT_LOAD_PLUGINS", "INVKIT_DISABLE_PLUGINS", "INVKIT_STRICT_PLUGINS")


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch):
    """Each test starts with a plugin host that has read a clean environment."""
    for name in INVKIT_ENV:
        monkeypatch.delenv(name, raising=False)
    host = reset_host()
    yield host
    reset_host()


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True):
    """Run ``invkit ARGS`` as a real subprocess of this interpreter's environment."""
    full_env = {k: v for k, v in os.environ.items() if k not in INVKIT_ENV}
    full_env.update(env or {})
    invkit = Path(sys.executable).with_name("invkit")
    result = subprocess.run(
        [str(invkit), *args], capture_output=True, text=True, env=full_env, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"invkit {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """A folder holding the fake plugin distributions, installed there by pip for real."""
    target = tmp_path_factory.mktemp("plugin-site")
    packages = sorted(str(p) for p in FAKE_PLUGINS.iterdir() if (p / "pyproject.toml").exists())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            *packages,
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture
def with_plugin_site(plugin_site, monkeypatch):
    """Make the fake plugins visible to this process (entry points) and to subprocesses."""
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])
    )
    return plugin_site


def wait_for_cells(store: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if store.exists():
            try:
                (done,) = sqlite3.connect(store).execute("SELECT COUNT(*) FROM cells").fetchone()
            except sqlite3.OperationalError:
                done = 0
            if done >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"the study did not reach {count} cell(s): {process.poll()}")


def study_with(tmp_path: Path, model: str, datasets: int = 1, **run) -> Path:
    shutil.copy(HERE / "study_files" / "user_models.py", tmp_path / "user_models.py")
    lines = ['transforms = ["rotation"]', 'measures = ["ei"]', "", "[run]", "batch_size = 8"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in run.items()]
    for spec in model.split(","):
        lines += ["", "[[models]]", f'name = "{spec}"', f'spec = "python:user_models.py:{spec}"',
                  "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"]  # fmt: skip
        if spec == "slow":  # about 4 s per pass: time for a test to act while it runs
            lines.append("params = { kwargs = { seconds = 1.0 } }")
    for i in range(datasets):
        lines += ["", "[[datasets]]", f'name = "d{i}"', 'spec = "digits"', "params = { size = 16 }",
                  "limit = 32", f"seed = {i}"]  # fmt: skip
    path = tmp_path / "study.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
