"""The command line, run as a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import invkit

from .conftest import FAKE_PLUGINS, run_cli


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"invkit, version {invkit.__version__}"
    help_text = run_cli("--help").stdout
    for command in ("plugins", "list", "install", "uninstall", "study"):
        assert command in help_text


def test_list_measures_as_json_and_text():
    listed = json.loads(run_cli("list", "measures", "--json").stdout)
    by_name = {c["name"]: c for c in listed}
    assert set(by_name) >= {"ei", "agreement", "js", "kl", "l2", "cosine"}
    assert by_name["kl"]["params"] == [
        {"name": "eps", "type": "float", "required": False, "default": 0.0}
    ]
    text = run_cli("list", "measures").stdout
    assert "js  [invkit.builtins.measures]" in text
    assert "(lower = more invariant)" in text


def test_jigsaw_is_installed_and_listed():
    plugins = json.loads(run_cli("plugins", "--json").stdout)
    jigsaw = next(p for p in plugins if p["name"] == "invkit-jigsaw")
    assert jigsaw["hooks"] == ["register_transforms"] and jigsaw["error"] is None
    transforms = run_cli("list", "transforms").stdout
    assert "jigsaw  [invkit-jigsaw]" in transforms
    assert "grid: int = 2" in transforms


def test_listing_imports_neither_torch_nor_scipy():
    """invkit list and invkit plugins describe every component, the installed jigsaw plugin's
    included, without loading torch, kornia or scipy (the reason they answer at once)."""
    probe = (
        "import sys; from invkit.api import list_components; from invkit.plugins import "
        "get_host; components = list_components(); get_host().plugins(include_builtins=True); "
        "print(len(components), sorted(m for m in ('torch', 'kornia', 'scipy', 'timm', "
        "'torchvision', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    count, heavy = out.stdout.split(" ", 1)
    assert int(count) >= 25 and heavy.strip() == "[]", out.stdout
    listed = run_cli("list").stdout
    assert "jigsaw  [invkit-jigsaw]" in listed and "effective invariance" in listed.lower()


def test_errors_are_one_line_without_traceback(tmp_path):
    result = run_cli("study", str(tmp_path / "missing.toml"), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("invkit: error: config file ")
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'models = ["timm:x"]\ndatasets = ["digits"]\ntransforms = ["rotaton"]\nmeasures = ["ei"]\n'
    )
    result = run_cli("study", str(bad), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 1
    assert (
        "transforms['rotaton']: unknown transform 'rotaton': did you mean 'rotation'"
        in result.stderr
    )


def test_install_and_uninstall_run_pip_in_invkits_environment(tmp_path):
    package = tmp_path / "invkit-hello"
    shutil.copytree(FAKE_PLUGINS / "invkit-hello", package)
    env = {"PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_DEPS": "1"}
    try:
        result = run_cli("install", str(package), env=env)
        pip_line = result.stderr.splitlines()[0]
        assert pip_line.startswith(f"$ {Path(sys.executable).parent}/python")  # invkit's own
        assert pip_line.endswith(f" -m pip install {package}")
        assert "hflip" in run_cli("list", "transforms").stdout
    finally:
        run_cli("uninstall", "invkit-hello", check=False)
    assert "hflip" not in run_cli("list", "transforms").stdout
    shown = subprocess.run(
        [sys.executable, "-m", "pip", "show", "invkit-hello"], capture_output=True, check=False
    )
    assert shown.returncode != 0


def test_list_takes_a_kind_in_either_number_and_suggestions_ignore_case():
    singular, plural = run_cli("list", "measure"), run_cli("list", "measures")
    assert singular.stdout == plural.stdout and "ei  [invkit.builtins.measures]" in plural.stdout
    with pytest.raises(invkit.InvkitError, match="did you mean 'ei'"):
        invkit.get_measure("EI")


def test_a_study_on_a_terminal_shows_one_bar_for_the_whole_study(tmp_path):
    """On a terminal the study draws its own bar (model × dataset passes done, images per
    second) above the lines of finished passes, then one over the analyses, naming each."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    from .conftest import study_with

    config = study_with(tmp_path, "linear,other_linear", datasets=2)
    config.write_text(config.read_text() + '\n[[analyses]]\nname = "model_centric"\n')
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a size
    invkit_cli = str(Path(sys.executable).with_name("invkit"))
    run = subprocess.Popen(
        [invkit_cli, "study", str(config), "--models-per-pass", "1"],
        stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the study ended and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert run.wait(timeout=120) == 0
    text = shown.decode(errors="replace")
    assert "study:" in text and "/4 [" in text and "img/s" in text  # 4 passes, a rate
    assert text.count("  linear × d") == 2 and "4 cell(s) computed in 4 pass(es)" in text
    assert "analyses:" in text and "model_centric" in text  # a bar over the analyses too
