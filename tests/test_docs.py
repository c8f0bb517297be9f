"""The documentation keeps up with the code."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

from invkit.plugin import hookspecs

DOCS = Path(__file__).parent.parent / "docs"


def hookspec_names() -> list[str]:
    return [
        name
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, "invkit_spec")
    ]


def test_every_hookspec_has_a_section_in_hooks_md():
    text = (DOCS / "hooks.md").read_text()
    sections = set(re.findall(r"^## (\w+)$", text, flags=re.MULTILINE))
    names = hookspec_names()
    assert len(names) >= 7
    missing = [n for n in names if n not in sections]
    assert not missing, f"docs/hooks.md lacks a section for {missing}"
    stale = sections - set(names)
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {stale}"


def test_every_doc_is_reachable_from_the_readme():
    readme = (DOCS.parent / "README.md").read_text()
    for doc in DOCS.glob("*.md"):
        assert f"docs/{doc.name}" in readme, f"README.md does not link docs/{doc.name}"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


DOC_FILES = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_python_examples_in_the_docs_run(path, capsys):
    namespace: dict = {"__name__": f"doc_example_{path.stem}"}
    for block in python_blocks(path):
        exec(compile(block, str(path), "exec"), namespace)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_toml_examples_in_the_docs_are_valid_configs(path):
    from invkit.config import parse_config

    for block in re.findall(r"```toml\n(.*?)```", path.read_text(), flags=re.DOTALL):
        data = tomllib.loads(block)
        if "models" in data:  # a whole study config, not a pyproject fragment
            parse_config(data)


@pytest.mark.parametrize(
    "script", sorted((DOCS.parent / "examples").glob("*.py")), ids=lambda p: p.name
)
def test_examples_run(script):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_the_readme_example_runs_from_the_folder_holding_a_clone_named_invkit(tmp_path):
    """A clone's folder is called invkit; Python run beside it must still import the installed
    package, not that folder as a namespace package (the Makefile installs in compat mode)."""
    import subprocess
    import sys

    (tmp_path / "invkit").symlink_to(DOCS.parent, target_is_directory=True)
    example = python_blocks(DOCS.parent / "README.md")[0]
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "rotation EI of this batch:" in result.stdout


def test_every_test_the_docs_cite_exists():
    """docs name the test that shows each guarantee; each such name is a real test."""
    tests = "\n".join(p.read_text() for p in (DOCS.parent / "tests").glob("test_*.py"))
    defined = set(re.findall(r"^def (test_\w+)", tests, flags=re.MULTILINE))
    cited = {
        name for doc in DOCS.glob("*.md") for name in re.findall(r"`(test_\w+)`", doc.read_text())
    }
    assert len(cited) > 40 and not cited - defined, sorted(cited - defined)


def test_the_deng2022_recipe_names_real_timm_imagenet_models_and_parses():
    import timm
    from timm.models import get_pretrained_cfg

    from invkit.config import load_config

    recipe = DOCS.parent / "examples" / "deng2022"
    study = load_config(recipe / "study.toml")
    specs = [model.spec for model in study.models]
    assert len(specs) >= 100 and len(set(specs)) == len(specs)
    pretrained = set(timm.list_models(pretrained=True))
    names = [spec.removeprefix("timm:") for spec in specs]
    assert [name for name in names if name not in pretrained] == []
    assert {get_pretrained_cfg(name).num_classes for name in names} == {1000}
    assert all(model.params == {"pretrained": True} for model in study.models)
    assert [d.name for d in study.datasets] == [
        "imagenet-val", "imagenet-v2-matched-frequency", "imagenet-v2-threshold0.7",
        "imagenet-v2-top-images", "imagenet-sketch", "imagenet-r",
    ]  # fmt: skip
    assert study.datasets[-1].class_subset == "folders"
    shifts = load_config(recipe / "shifts.toml")
    severities = {
        (d.shift.component, d.shift.params["severity"]) for d in shifts.datasets if d.shift
    }
    assert {s for _, s in severities} == {1, 2, 3, 4, 5} and len(severities) == 15
    assert [m.spec.removeprefix("timm:") in pretrained for m in shifts.models] == [True] * 6
