"""The public functions: find and build components by name, load a model or a dataset, run
one pass, run a study and open a finished one, read a study's kept outputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invkit.inputs.codeprint import component_version
from invkit.lookup import (
    get_analysis,
    get_component,
    get_executor,
    get_layer_measure,
    get_measure,
    get_shift,
    get_transform,
    list_components,
    split_spec,
)

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from invkit.config import StudyConfig
    from invkit.plugin.components import LoadedModel
    from invkit.plugin.passes import PassResult, PassSpec
    from invkit.report.study_results import StudyResults
    from invkit.results.outputs import Outputs

__all__ = [
    "component_version",
    "get_analysis",
    "get_component",
    "get_executor",
    "get_layer_measure",
    "get_measure",
    "get_shift",
    "get_transform",
    "list_components",
    "load_dataset",
    "load_model",
    "load_outputs",
    "load_per_view",
    "open_study",
    "run_pass",
    "run_study",
    "split_spec",
]


def load_model(spec: str, **params: Any) -> LoadedModel:
    """Load a model from a spec such as ``timm:resnet18``; returns an ``invkit.LoadedModel``."""
    scheme, rest = split_spec(spec)
    return get_component("model", scheme).create(rest, **params)


def load_dataset(spec: str, **params: Any) -> Dataset:
    """Load a dataset from a spec such as ``imagefolder:/data/val`` or ``digits``."""
    scheme, rest = split_spec(spec)
    return get_component("dataset", scheme).create(rest, **params)


def run_pass(spec: PassSpec) -> PassResult:
    """Run one model × dataset pass of a study (what an executor calls for each ``PassSpec``);
    it writes nothing, and returns the pass's cells, per-sample values and predictions."""
    from invkit.run.passes import run_pass as run

    return run(spec)


def load_outputs(out_dir: str | Path, model: str, dataset: str) -> Outputs:
    """The per-image outputs a study kept of ``model`` on ``dataset`` (their config labels):
    view names, indices, targets and per view the top-k, log-sum-exp, entropy (and logits,
    when full), as numpy arrays memory-mapped from the verified file (docs/python-api.md)."""
    from invkit.results.reading import load_outputs as load

    return load(out_dir, model, dataset)


def load_per_view(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every cell's value on each view of its transform, from a finished study's store: one
    ``{model, dataset, transform, measure, view, magnitude, value}`` per row, as per_view.csv
    holds them (docs/outputs.md#per-view-values)."""
    from invkit.results.reading import load_per_view as load

    return load(out_dir)


def run_study(
    config: str | Path | Mapping[str, Any] | StudyConfig,
    out_dir: str | Path | None = None,
    **options: Any,
) -> StudyResults:
    """Run a study and return it, opened (``open_study``), with ``.outcome`` saying what the
    run did. ``config``: a TOML file's path (its relative paths are relative to its folder),
    a mapping as the TOML would parse (relative to the current folder), or a parsed config.
    ``out_dir``: where it writes (default: the config's ``run.out``). ``options``: ``fresh``,
    ``progress``, ``echo`` (a function given each console line), ``models``, ``datasets``
    (run only these), as ``invkit study``'s flags."""
    from invkit.config import StudyConfig, load_config, parse_config
    from invkit.errors import InvkitError
    from invkit.report.study_results import StudyResults
    from invkit.run.study import Study

    if isinstance(config, str | Path):
        parsed = load_config(config)
    elif isinstance(config, StudyConfig):
        parsed = config
    elif isinstance(config, Mapping):
        parsed = parse_config(config, base_dir=Path.cwd())
    else:
        raise InvkitError(
            f"run_study takes a config file's path, a mapping or a parsed config; got "
            f"{type(config).__name__}"
        )
    if "smoke_limit" in options:
        raise InvkitError(
            "run_study stores what it computes: a smoke run (smoke_limit, --limit) stores "
            "nothing to open; use `invkit study --limit N` for one"
        )
    study = Study(parsed, out_dir=out_dir, **options)
    outcome = study.run()
    return StudyResults(outcome.out_dir, outcome)


def open_study(out_dir: str | Path) -> StudyResults:
    """A finished study in ``out_dir``, read back without running anything: its tables as
    pandas DataFrames, its per-sample values, kept outputs, figures and report
    (docs/python-api.md)."""
    from invkit.report.study_results import open_study as opened

    return opened(out_dir)
