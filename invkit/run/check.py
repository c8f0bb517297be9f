"""``invkit check``: what a study would trip over, found before it runs, and all of it at once.

Beyond the plan's checks (names, parameters, paths, class maps), every model is loaded on the
CPU with its weights and passed one blank image, every dataset is opened, and the classes of
every model × dataset pair are matched; with ``images``, every image is decoded too. Nothing
is written and no pass runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from invkit.config import StudyConfig
from invkit.errors import described, listing
from invkit.inputs.classes import plan_labels
from invkit.inputs.data import read_pixels
from invkit.inputs.layers import find_layers
from invkit.plugin.passes import Resolved
from invkit.run.passes import input_key, load_dataset_for, load_model_for, module_bytes
from invkit.run.plan import Problems, StudyPlan
from invkit.run.sharing import ModelInput


@dataclass
class CheckReport:
    """What ``invkit check`` found: the problems (one line each) and what the study holds."""

    problems: list[str]
    models: int = 0
    datasets: int = 0
    code: list[str] = field(default_factory=list)


def _unreadable(data: Any, progress: bool, label: str, channels: int) -> list[str]:
    """Every image a pass would refuse, decoded as the pass decodes it."""
    from tqdm.auto import tqdm

    bad = []
    describe = getattr(data, "describe", lambda i: f"image {i}")
    for index in tqdm(range(len(data)), desc=label, unit="img", disable=None if progress else True):
        try:
            read_pixels(data, index, channels, describe(index))
        except Exception as error:  # any decoder's error: the point is to list them all
            bad.append(f"{describe(index)} ({described(error)})")
    return bad


def check_loading(
    plan: StudyPlan,
    pairs: list[tuple[Resolved, Resolved]],
    problems: Problems,
    echo: Callable[[str], None] = print,
    inputs: dict[str, ModelInput] | None = None,
    models: list[Resolved] | None = None,
) -> list[tuple[Resolved, Any]]:
    """Load each model and open each dataset of ``pairs`` (model × dataset) once, and match the
    classes of each pair; problems are recorded, and what each model takes as input goes in
    ``inputs``. ``models``: also load these, paired or not (a check loads every model that is
    itself right, even when no dataset is). Returns the datasets that opened."""
    datasets: dict[str, tuple[Resolved, Any]] = {}
    for dataset in {d.name: d for _, d in pairs}.values():
        with problems.at(any_error=True):
            datasets[dataset.name] = (dataset, load_dataset_for(dataset))
    for model in {m.name: m for m in [*(m for m, _ in pairs), *(models or [])]}.values():
        loaded = None
        with problems.at(any_error=True):
            loaded = load_model_for(model, plan.transforms, plan.run.trust_checkpoints)
        if loaded is None:
            continue
        if inputs is not None:
            inputs[model.name] = ModelInput(
                input_key(loaded.preprocessing), module_bytes(loaded.module)
            )
        size = "×".join(map(str, loaded.preprocessing.input_size))
        echo(f"  model {model.name!r}: {loaded.preprocessing.num_classes} outputs, input {size}")
        if plan.layers.get(model.name):
            with problems.at():
                find_layers(
                    loaded.module, plan.layers[model.name], f"model {model.name!r}",
                    f"{model.scheme}:{model.rest}",
                )  # fmt: skip
        for dataset, data in [
            datasets[d.name] for m, d in pairs if m == model and d.name in datasets
        ]:
            entry = dataset.entry
            with problems.at():
                plan_labels(
                    getattr(data, "classes", None),
                    loaded.preprocessing,
                    entry.class_map,
                    entry.class_subset,
                    context=f"{model.name} × {dataset.name}",
                )
    return list(datasets.values())


def check_study(
    config: StudyConfig,
    images: bool = False,
    progress: bool = True,
    echo: Callable = print,
    found: list[str] | None = None,
) -> CheckReport:
    """Every problem a study of ``config`` would meet before or at the start of its passes.
    ``found``: the problems reading the config found (``load_config(path, found)``); the
    entries that were right are still checked, and the report lists everything."""
    problems = Problems(found)
    plan = StudyPlan(config, problems)
    pairs = [(model, dataset) for model in plan.models for dataset in plan.datasets]
    inputs: dict[str, ModelInput] = {}
    datasets = check_loading(plan, pairs, problems, echo, inputs, models=plan.models)
    if images:
        channels = {model.key[0][0] for model in inputs.values()} or {3}
        for dataset, data in datasets:
            bad = []
            for count in sorted(channels):  # each channel count the models take
                bad += [b for b in _unreadable(data, progress, dataset.name, count) if b not in bad]
            if bad:
                problems.lines.append(
                    f"dataset {dataset.name!r}: {len(bad)} unreadable image(s): {listing(bad)} "
                    "(fix or remove them, or run with --skip-bad-images to record and skip them)"
                )
    return CheckReport(problems.lines, len(plan.models), len(datasets), plan.code())
