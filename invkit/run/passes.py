"""One pass: a model over a dataset, every transform and measure it must compute.

``run_pass`` takes a ``PassSpec`` (plain data) and returns a ``PassResult`` (plain data); it
loads what it needs and writes nothing, so an executor can run it in this process, in a
worker process or on another machine. A spec may bundle several models that share the
dataset's decoding. The last pass's models and the last few datasets stay loaded in the
process, so consecutive passes of the same models do not load them again.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch

from invkit.analysis.aggregate import summarize, views_of
from invkit.errors import InvkitError, described, listing
from invkit.inputs.checkpoints import trusted_checkpoints
from invkit.inputs.classes import plan_labels
from invkit.inputs.data import PreparedDataset, make_loader, subset_indices
from invkit.inputs.layers import layer_depths, split_layer_cell
from invkit.inputs.preprocessing import checked_model
from invkit.lookup import get_component, get_layer_measure, get_measure, get_shift, get_transform
from invkit.plugin.components import LoadedModel, Preprocessing
from invkit.plugin.passes import Cell, PassResult, PassSpec, Resolved
from invkit.results.outputs import reads_model
from invkit.run.engine import Evaluation, Keep, ModelRun, evaluate, resolve_device
from invkit.run.kept import kept_outputs, spill_folder

DATASETS_KEPT = 4
DERIVATIVE_VIEW = ("d/dt", None)  # the one "view" of a derivative measure: t → 0
ALL_VIEWS = "all views"  # the one "view" of a layer measure taken over every view at once


_model_cache: dict[str, LoadedModel] = {}
_dataset_cache: OrderedDict[str, Any] = OrderedDict()


def load_models_for(
    models: Sequence[Resolved], transforms: dict[str, Any], trust: bool
) -> list[LoadedModel]:
    """The models specs name, loaded, overridden by the config and checked (kept for the next
    pass of the same models; any others are freed first)."""
    wanted = {model.fingerprint for model in models}
    for key in [key for key in _model_cache if key not in wanted]:
        del _model_cache[key]
    for model in models:
        if model.fingerprint not in _model_cache:
            _model_cache[model.fingerprint] = _load_model(model, transforms, trust)
    return [_model_cache[model.fingerprint] for model in models]


def load_model_for(model: Resolved, transforms: dict[str, Any], trust: bool) -> LoadedModel:
    """One model, as ``load_models_for`` loads it."""
    return load_models_for([model], transforms, trust)[0]


def _load_model(model: Resolved, transforms: dict[str, Any], trust: bool) -> LoadedModel:
    entry = model.entry
    try:
        with trusted_checkpoints(trust):
            loaded = get_component("model", model.scheme).create(model.rest, **model.params)
    except (Exception, SystemExit) as error:  # a user's model code may raise anything
        raise InvkitError(f"model {entry.name!r}: {described(error)}") from error
    if entry.preprocessing:
        override = {
            k: tuple(v) if isinstance(v, list) else v for k, v in entry.preprocessing.items()
        }
        loaded.preprocessing = dataclasses.replace(loaded.preprocessing, **override)
    return checked_model(loaded, transforms, entry.name)


def module_bytes(module: Any) -> int:
    """The bytes a module's parameters and buffers take (0 for what is not a torch module)."""
    if not isinstance(module, torch.nn.Module):
        return 0
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def input_key(preprocessing: Preprocessing) -> tuple[Any, ...]:
    """What decides the pixels a model receives: models with equal keys can share decoding."""
    return (
        tuple(preprocessing.input_size),
        preprocessing.interpolation,
        float(preprocessing.crop_pct),
    )


def load_dataset_for(dataset: Resolved) -> Any:
    """The dataset a spec names (the last few are kept for the next passes)."""
    key = dataset.fingerprint
    if key in _dataset_cache:
        _dataset_cache.move_to_end(key)
    else:
        try:
            _dataset_cache[key] = get_component("dataset", dataset.scheme).create(
                dataset.rest, **dataset.params
            )
        except (Exception, SystemExit) as error:
            raise InvkitError(f"dataset {dataset.name!r}: {described(error)}") from error
        while len(_dataset_cache) > DATASETS_KEPT:
            _dataset_cache.popitem(last=False)
    return _dataset_cache[key]


def auto_workers(images: int, batch_size: int, device: torch.device) -> int:
    """``run.workers = "auto"``: on a GPU, half the cores (1 to 8) decode while it runs the
    forward passes. On the CPU none: the forward passes already use every core, and workers
    would take cores from them (measured: docs/performance.md). None either when the pass is
    a single batch: there is nothing to overlap."""
    import os

    if images <= batch_size or device.type == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def run_pass(spec: PassSpec) -> PassResult:
    """Compute the cells of one model × dataset pass (or of several models sharing the
    dataset's decoding: one result each, in ``PassResult.shared``); raises ``InvkitError``
    naming the model, the dataset or the image that went wrong."""
    run = spec.run
    device = resolve_device(run.device)
    members = spec.members
    transforms = {
        t.name: get_transform(t.component, **t.params)
        for t in {t.name: t for m in members for t in m.transforms}.values()
    }
    measures = {
        m.name: get_measure(m.component, **m.params)
        for m in {m.name: m for member in members for m in member.measures}.values()
    }
    layer_measures = {
        m.name: get_layer_measure(m.component, **m.params)
        for m in {m.name: m for member in members for m in member.layer_measures}.values()
    }
    models = load_models_for([m.model for m in members], transforms, run.trust_checkpoints)
    keys = {input_key(loaded.preprocessing) for loaded in models}
    if len(keys) > 1:
        raise InvkitError(
            f"{spec.label}: the models of a shared pass take different inputs ({keys}); "
            "they run one by one"
        )
    data = load_dataset_for(spec.dataset)
    entry = spec.dataset.entry
    plans = [
        plan_labels(
            getattr(data, "classes", None),
            loaded.preprocessing,
            entry.class_map,
            entry.class_subset,
            context=member.label,
        )
        for member, loaded in zip(members, models, strict=True)
    ]
    shift = None if entry.shift is None else get_shift(entry.shift.component, **entry.shift.params)
    prepared = PreparedDataset(
        data,
        models[0].preprocessing,
        subset_indices(len(data), entry.limit, entry.seed),
        shift,
        entry.seed,
        reduced_decoding=run.reduced_decoding,
    )
    if len(prepared) == 0:
        raise InvkitError(f"dataset {spec.dataset.name!r} is empty")
    workers = run.workers
    if workers == "auto":
        workers = auto_workers(len(prepared), run.batch_size, device)
    loader = make_loader(prepared, run.batch_size, workers, pin=device.type == "cuda")
    with ExitStack() as cleanup:  # a failed pass leaves no spilled logits behind
        model_runs = []
        for member, loaded, plan in zip(members, models, plans, strict=True):
            cells: dict[str, list[tuple[str, Any]]] = {t.name: [] for t in member.transforms}
            layers: dict[str, list[tuple[str, str, Any]]] = {}
            for t, m, _ in member.cells:
                split = split_layer_cell(m)
                if split:
                    layers.setdefault(t, []).append((split[1], m, layer_measures[split[0]]))
                else:
                    cells.setdefault(t, []).append((m, measures[m]))
            keep = None
            if member.kept_file:
                spill = spill_folder(member.staging) if run.outputs == "full" else None
                if spill is not None:
                    cleanup.callback(shutil.rmtree, spill, ignore_errors=True)
                keep = Keep(run.outputs, run.outputs_topk, spill)
            model_runs.append(
                ModelRun(loaded, cells, plan.logit_index, plan.targets, member.label, keep,
                         layers, spec=f"{member.model.scheme}:{member.model.rest}")
            )  # fmt: skip
        evaluations = evaluate(
            model_runs,
            loader,
            transforms,
            device,
            amp=run.amp,
            max_views_per_forward=run.max_views_per_forward,
            label=spec.label,
            progress=spec.progress,
            channels_last=run.channels_last and device.type == "cuda",
            compile=run.compile,
        )
        describe = getattr(data, "describe", lambda i: f"image {i}")
        skipped = evaluations[0].skipped
        bad_files = [describe(index) for index, _ in skipped]
        if bad_files and not run.skip_bad_images:
            raise InvkitError(
                f"{spec.label}: {len(bad_files)} unreadable image(s): {listing(bad_files)} "
                f"(e.g. {skipped[0][1]}); fix or remove them, or run with --skip-bad-images to "
                "record and skip them (`invkit check --images` finds them all before a study)"
            )
        results = [
            pass_result(
                member, plan.method, evaluation, measures, bad_files, transforms, layer_measures
            )
            for member, plan, evaluation in zip(members, plans, evaluations, strict=True)
        ]
        for result, loaded, member in zip(results, models, members, strict=True):
            result.input_size = tuple(loaded.preprocessing.input_size)
            result.device = str(device)
            result.preprocessing = {
                **model_input(loaded.preprocessing),
                "random_weights": loaded.random_weights,
            }
            if member.layers:  # each measured layer's relative depth, for layer_profile
                result.preprocessing["layer_depths"] = layer_depths(loaded.module, member.layers)
        results[0].shared = results[1:]
        results[0].decoded = len(prepared)
        return results[0]


def pass_result(
    spec: PassSpec,
    matching: str,
    evaluation: Evaluation,
    measures: dict[str, Any],
    bad_files: list[str],
    transforms: Mapping[str, Any],
    layer_measures: Mapping[str, Any] | None = None,
) -> PassResult:
    """One model's ``PassResult`` from its ``Evaluation`` (made by a pass, or read from kept
    outputs): a cell per (transform, measure), summarized, its value on each view, and the
    outputs it kept."""
    run = spec.run
    fingerprints = {(t, m): fingerprint for t, m, fingerprint in spec.cells}
    cells, samples, per_view = [], {}, {}

    def cell(key: tuple[str, str, str, str], measure: Any, **values: Any) -> Cell:
        """A cell of this pass: its keys and values, and what the pass counted."""
        return Cell(
            *key,
            fingerprint=fingerprints[key[2:]],
            accuracy=evaluation.accuracy,
            images=evaluation.images,
            labeled=evaluation.labeled,
            skipped=len(evaluation.skipped),
            higher_is_invariant=getattr(measure, "higher_is_invariant", None),
            seconds=evaluation.seconds,
            matching=matching,
            **values,
        )

    for (t, m), by_view in evaluation.values.items():
        values = by_view.mean(dim=0)  # each image's mean over the views
        summary = summarize(
            values, bootstrap=run.bootstrap > 0, n_resamples=run.bootstrap or 1000, seed=run.seed
        )
        key = (spec.model.name, spec.dataset.name, t, m)
        cells.append(cell(key, measures[m], value=summary.mean, low=summary.low,
                          high=summary.high, per_sample=run.per_sample))  # fmt: skip
        if run.per_sample:
            samples[key] = (evaluation.indices.tolist(), values.tolist())
        means = by_view.mean(dim=1).tolist()  # each view's mean over the images
        views = [DERIVATIVE_VIEW] if reads_model(measures[m]) else views_of(transforms[t])
        per_view[key] = [
            (name, magnitude, value) for (name, magnitude), value in zip(views, means, strict=True)
        ]
    for (t, label), (value, by_view) in evaluation.layers.items():
        key = (spec.model.name, spec.dataset.name, t, label)
        measure = (layer_measures or {})[split_layer_cell(label)[0]]  # type: ignore[index]
        # a layer measure is a statistic of the whole set: no interval, no per-sample values
        cells.append(cell(key, measure, value=value, low=None, high=None, per_sample=False))
        views = views_of(transforms[t])
        per_view[key] = (
            [(name, magnitude, v) for (name, magnitude), v in zip(views, by_view, strict=True)]
            if by_view is not None
            else [(ALL_VIEWS, None, value)]
        )
    kept = None
    if evaluation.recorder is not None:
        metadata = {
            "matching": matching,
            "skipped": json.dumps(evaluation.skipped),
            "bad_files": json.dumps(bad_files),
        }
        kept = kept_outputs(
            spec, evaluation.recorder, evaluation.indices, evaluation.targets, metadata
        )
    return PassResult(
        model=spec.model.name,
        dataset=spec.dataset.name,
        cells=cells,
        samples=samples,
        views=per_view,
        skipped=evaluation.skipped,
        images=evaluation.images,
        forward_images=evaluation.forward_images,
        seconds=evaluation.seconds,
        accuracy=evaluation.accuracy,
        matching=matching,
        upsampled=evaluation.upsampled,
        bad_files=bad_files,
        kept=kept,
    )


def model_input(preprocessing: Preprocessing) -> dict[str, Any]:
    """What a model was given, for the record (models.csv): everything but class names."""
    record = dataclasses.asdict(preprocessing)
    record.pop("class_names", None)
    record["channels"] = preprocessing.input_size[0]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}
