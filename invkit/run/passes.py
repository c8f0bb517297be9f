"""One pass: a model over a dataset, every transform and measure it must compute.

``run_pass`` takes a ``PassSpec`` (plain data) and returns a ``PassResult`` (plain data); it
loads what it needs and writes nothing, so an executor can run it in this process, in a
worker process or on another machine. The last model and the last few datasets stay loaded
in the process, so consecutive passes of one model do not load it again.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import torch

from invkit.aggregate import summarize
from invkit.api import get_component, get_measure, get_shift, get_transform
from invkit.checkpoints import trusted_checkpoints
from invkit.classes import plan_labels
from invkit.data import PreparedDataset, make_loader, subset_indices
from invkit.engine import Evaluation, evaluate, resolve_device
from invkit.errors import InvkitError, described, listing
from invkit.plugin.components import LoadedModel
from invkit.plugin.passes import Cell, PassResult, PassSpec, Resolved
from invkit.preprocessing import checked_model

DATASETS_KEPT = 4


_model_cache: dict[str, LoadedModel] = {}
_dataset_cache: OrderedDict[str, Any] = OrderedDict()


def load_model_for(model: Resolved, transforms: dict[str, Any], trust: bool) -> LoadedModel:
    """The model a spec names, loaded, overridden by the config and checked (kept for the
    next pass of the same model)."""
    key = model.fingerprint
    if key not in _model_cache:
        _model_cache.clear()  # free the previous model first
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
        _model_cache[key] = checked_model(loaded, transforms, entry.name)
    return _model_cache[key]


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


def _prediction_rows(spec: PassSpec, evaluation: Evaluation) -> list[tuple[Any, ...]]:
    rows = []
    targets = evaluation.targets.tolist()
    indices = evaluation.indices.tolist()
    for view, record in evaluation.views.items():
        predictions = torch.cat(record.prediction).tolist()
        confidences = torch.cat(record.confidence).tolist()
        for idx, target, prediction, confidence in zip(
            indices, targets, predictions, confidences, strict=True
        ):
            correct = None if target < 0 else int(prediction == target)
            row = (spec.model.name, spec.dataset.name, view, idx, target, prediction)
            rows.append((*row, confidence, correct))
    return rows


def run_pass(spec: PassSpec) -> PassResult:
    """Compute the cells of one model × dataset pass; raises ``InvkitError`` naming the model,
    the dataset or the image that went wrong."""
    run = spec.run
    device = resolve_device(run.device)
    transforms = {t.name: get_transform(t.component, **t.params) for t in spec.transforms}
    measures = {m.name: get_measure(m.component, **m.params) for m in spec.measures}
    loaded = load_model_for(spec.model, transforms, run.trust_checkpoints)
    data = load_dataset_for(spec.dataset)
    entry = spec.dataset.entry
    plan = plan_labels(
        getattr(data, "classes", None),
        loaded.preprocessing,
        entry.class_map,
        entry.class_subset,
        context=spec.label,
    )
    shift = None if entry.shift is None else get_shift(entry.shift.component, **entry.shift.params)
    prepared = PreparedDataset(
        data,
        loaded.preprocessing,
        plan,
        subset_indices(len(data), entry.limit, entry.seed),
        shift,
        entry.seed,
    )
    if len(prepared) == 0:
        raise InvkitError(f"dataset {spec.dataset.name!r} is empty")
    loader = make_loader(prepared, run.batch_size, run.workers, pin=device.type == "cuda")
    cells_by_transform: dict[str, list[tuple[str, Any]]] = {}
    for t, m, _ in spec.cells:
        cells_by_transform.setdefault(t, []).append((m, measures[m]))
    evaluation = evaluate(
        loaded,
        loader,
        transforms,
        cells_by_transform,
        device,
        plan.logit_index,
        amp=run.amp,
        max_views_per_forward=run.max_views_per_forward,
        per_sample=run.per_sample,
        label=spec.label,
        progress=spec.progress,
    )
    describe = getattr(data, "describe", lambda i: f"image {i}")
    bad_files = [describe(index) for index, _ in evaluation.skipped]
    if bad_files and not run.skip_bad_images:
        raise InvkitError(
            f"{spec.label}: {len(bad_files)} unreadable image(s): {listing(bad_files)} (e.g. "
            f"{evaluation.skipped[0][1]}); fix or remove them, or run with --skip-bad-images to "
            "record and skip them (`invkit check --images` finds them all before a study)"
        )
    fingerprints = {(t, m): fingerprint for t, m, fingerprint in spec.cells}
    cells, samples = [], {}
    for (t, m), values in evaluation.values.items():
        summary = summarize(
            values, bootstrap=run.bootstrap > 0, n_resamples=run.bootstrap or 1000, seed=run.seed
        )
        key = (spec.model.name, spec.dataset.name, t, m)
        cells.append(
            Cell(
                *key,
                fingerprint=fingerprints[(t, m)],
                value=summary.mean,
                low=summary.low,
                high=summary.high,
                accuracy=evaluation.accuracy,
                images=evaluation.images,
                labeled=evaluation.labeled,
                skipped=len(evaluation.skipped),
                higher_is_invariant=getattr(measures[m], "higher_is_invariant", None),
                per_sample=run.per_sample,
                seconds=evaluation.seconds,
                matching=plan.method,
            )
        )
        if run.per_sample:
            samples[key] = (evaluation.indices.tolist(), values.tolist())
    return PassResult(
        model=spec.model.name,
        dataset=spec.dataset.name,
        cells=cells,
        samples=samples,
        predictions=_prediction_rows(spec, evaluation),
        skipped=evaluation.skipped,
        images=evaluation.images,
        forward_images=evaluation.forward_images,
        seconds=evaluation.seconds,
        accuracy=evaluation.accuracy,
        matching=plan.method,
        upsampled=evaluation.upsampled,
        bad_files=bad_files,
        input_size=tuple(loaded.preprocessing.input_size),
        device=str(device),
    )
