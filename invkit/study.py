"""A study: every model × dataset × transform × measure, stored cell by cell, then analysed.

The study checks everything it can before the first forward pass (component names and
parameters, paths, the output directory), skips cells already in the store with the same
fingerprint, runs one pass per model × dataset for the cells it lacks, and writes the report.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from invkit import __version__
from invkit.aggregate import summarize
from invkit.api import (
    get_analysis,
    get_component,
    get_executor,
    get_measure,
    get_transform,
    split_spec,
)
from invkit.checkpoints import trusted_checkpoints
from invkit.classes import check_class_map, plan_labels
from invkit.config import ComponentEntry, ConfigError, DatasetEntry, ModelEntry, StudyConfig
from invkit.data import PreparedDataset, make_loader, subset_indices
from invkit.engine import evaluate, resolve_device
from invkit.errors import InvkitError, StorageError, unwritable_output
from invkit.fingerprint import digest, path_digest
from invkit.lock import exclusive
from invkit.paths import check_writable, resolve_path
from invkit.plugin.components import LoadedModel
from invkit.plugins import get_host
from invkit.preprocessing import check_channels, checked_model
from invkit.store import STORE_NAME, Cell, Store

OUTPUT_FILES = ("results.csv", "correlations.csv", "predictions.csv", "analyses.json", "report.md")


@dataclass
class Prepared:
    """A model or dataset entry with its paths resolved and its fingerprint."""

    entry: Any
    scheme: str
    rest: str
    params: dict[str, Any]
    fingerprint: str


@dataclass
class StudyOutcome:
    out_dir: Path
    computed: int = 0
    reused: int = 0
    passes: int = 0
    forward_images: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)


def declared_channels(entry: ModelEntry) -> int | None:
    """A model's channel count when the config states it (input_size, or timm's in_chans)."""
    size = entry.preprocessing.get("input_size")
    if size:
        return size[0]
    in_chans = entry.params.get("in_chans")
    return in_chans if isinstance(in_chans, int) else None


def _context(where: str, error: InvkitError) -> ConfigError:
    return ConfigError(f"{where}: {error}")


class Study:
    """Runs one study configuration into one output directory."""

    def __init__(
        self,
        config: StudyConfig,
        out_dir: str | Path | None = None,
        fresh: bool = False,
        progress: bool = True,
        echo: Callable[[str], None] = print,
    ):
        self.config = config
        self.run_options = config.run
        base = config.base_dir
        self.out_dir = (
            Path(out_dir).resolve() if out_dir else Path(resolve_path(config.run.out, base))
        )
        self.fresh = fresh
        self.progress = progress
        self.echo = echo
        self.device = resolve_device(config.run.device)
        self.transforms = self._build("transforms", config.transforms, get_transform)
        self.measures = self._build("measures", config.measures, get_measure)
        self.analyses = self._build("analyses", config.analyses, get_analysis)
        self.executor = get_executor(config.run.executor)
        self._versions: dict[tuple[str, str], str] = {}
        self._entries = {e.name: e for e in config.transforms + config.measures}
        self.models = [self._prepare("model", m) for m in config.models]
        for entry in config.models:
            channels = declared_channels(entry)
            if channels is not None:
                try:
                    check_channels(self.transforms, channels, entry.name)
                except InvkitError as error:
                    raise ConfigError(str(error)) from None
        self.datasets = [self._prepare("dataset", d) for d in config.datasets]
        self._loaded: tuple[str, LoadedModel] | None = None
        self._dataset_cache: dict[str, Any] = {}

    # -- checking and fingerprinting, before any work ---------------------------------------

    def _build(
        self, section: str, entries: tuple[ComponentEntry, ...], get: Callable[..., Any]
    ) -> dict[str, Any]:
        built = {}
        for entry in entries:
            try:
                built[entry.name] = get(entry.component, **entry.params)
            except InvkitError as error:
                raise _context(f"{section}[{entry.name!r}]", error) from None
        return built

    def _component_version(self, kind: str, name: str) -> str:
        """``plugin==version`` of the plugin providing a component (part of fingerprints)."""
        key = (kind, name)
        if key not in self._versions:
            component = get_component(kind, name)
            versions = {p.name: p.version for p in get_host().plugins(include_builtins=True)}
            self._versions[key] = f"{component.plugin}=={versions.get(component.plugin, '?')}"
        return self._versions[key]

    def _prepare(self, kind: str, entry: ModelEntry | DatasetEntry) -> Prepared:
        where = f"{kind}s[{entry.name!r}]"
        try:
            scheme, rest = split_spec(entry.spec)
            component = get_component(kind, scheme)
        except InvkitError as error:
            raise _context(where, error) from None
        base = self.config.base_dir
        resolve_spec = getattr(component.factory, "resolve_spec", None)
        if resolve_spec is not None and rest:
            rest = resolve_spec(rest, base)
        params = dict(entry.params)
        files = {}
        for param in component.params:
            if param.is_path and isinstance(params.get(param.name), str):
                params[param.name] = resolve_path(params[param.name], base)
                files[param.name] = path_digest(params[param.name])
        try:
            component.check(params)
        except InvkitError as error:
            raise _context(where, error) from None
        content = {
            "kind": kind,
            "spec": f"{scheme}:{rest}",
            "params": params,
            "files": files,
            "spec_code": self._spec_fingerprint(component, rest, where),
            "loader": self._component_version(kind, scheme),
        }
        if isinstance(entry, ModelEntry):
            content["preprocessing"] = entry.preprocessing
        else:
            for name in ("class_map", "class_subset"):
                value = getattr(entry, name)
                if value is not None and (name == "class_map" or Path(base, value).is_file()):
                    value = resolve_path(value, base)
                    entry = dataclasses.replace(entry, **{name: value})
                    content[f"{name}_file"] = path_digest(value)
            if entry.class_map is not None:
                try:
                    check_class_map(Path(entry.class_map))
                except InvkitError as error:
                    raise _context(where, error) from None
            options = dataclasses.asdict(entry)
            content.update(
                {k: v for k, v in options.items() if k not in ("name", "spec", "params")}
            )
        return Prepared(entry, scheme, rest, params, digest(content))

    @staticmethod
    def _spec_fingerprint(component: Any, rest: str, where: str) -> Any:
        """What the spec itself names (a file, a module's code), so editing it recomputes."""
        if not rest:
            return None
        fingerprint = getattr(component.factory, "spec_fingerprint", None)
        if fingerprint is None:
            return path_digest(rest) if Path(rest).exists() else None
        try:
            return fingerprint(rest)
        except InvkitError as error:
            raise _context(where, error) from None

    def _cell_fingerprint(
        self, model: Prepared, dataset: Prepared, transform: str, measure: str
    ) -> str:
        entries = self._entries  # transforms and measures by label
        return digest(
            {
                "invkit": __version__,
                "model": model.fingerprint,
                "dataset": dataset.fingerprint,
                "transform": [
                    entries[transform].component,
                    entries[transform].params,
                    self._component_version("transform", entries[transform].component),
                ],
                "measure": [
                    entries[measure].component,
                    entries[measure].params,
                    self._component_version("measure", entries[measure].component),
                ],
                "amp": self.run_options.amp and self.device.type == "cuda",
                "bootstrap": [self.run_options.bootstrap, self.run_options.seed],
                "skip_bad_images": self.run_options.skip_bad_images,
            }
        )

    def _make_output_dir(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise unwritable_output(self.out_dir, error) from None

    def _check_output_dir(self) -> None:
        """Fail now, not after hours of work, if results could not be written (run under the
        directory's lock, so that simultaneous starts see "another study", not each other's
        probe files)."""
        check_writable(self.out_dir)
        free_mb = shutil.disk_usage(self.out_dir).free // 2**20
        if free_mb < self.run_options.min_free_mb:
            raise StorageError(
                f"only {free_mb} MB free on the disk of {self.out_dir}; the study wants at least "
                f"{self.run_options.min_free_mb} MB for its store and report (free some space, "
                "choose another --out, or lower run.min_free_mb)"
            )

    def _clear_outputs(self) -> None:
        for name in (STORE_NAME, STORE_NAME + "-wal", STORE_NAME + "-shm", *OUTPUT_FILES):
            (self.out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.out_dir / "plots", ignore_errors=True)

    # -- running -----------------------------------------------------------------------------

    def run(self) -> StudyOutcome:
        """Compute every missing cell, then write the report; failures are collected."""
        self._make_output_dir()
        with exclusive(self.out_dir):
            self._check_output_dir()
            if self.fresh:
                self._clear_outputs()
            store = Store(self.out_dir / STORE_NAME)
            try:
                return self._run(store)
            finally:
                store.close()

    def _run(self, store: Store) -> StudyOutcome:
        from invkit.report import write_report

        outcome = StudyOutcome(self.out_dir)
        config = self.config.to_dict()
        store.set_config(config)
        store.set_meta("invkit_version", __version__)
        stored = store.cells()
        damaged = set(store.damaged())
        for key in sorted(damaged):
            self.echo(
                f"invkit: warning: stored cell {' × '.join(key)} fails its checksum (the store "
                "was damaged); it is computed again"
            )
        jobs, labels = [], []
        for model in self.models:
            for dataset in self.datasets:
                missing = {}
                for t in self.transforms:
                    for m in self.measures:
                        fingerprint = self._cell_fingerprint(model, dataset, t, m)
                        cell = stored.get((model.entry.name, dataset.entry.name, t, m))
                        if (
                            cell is not None
                            and cell.key not in damaged
                            and cell.fingerprint == fingerprint
                            and (cell.per_sample or not self.run_options.per_sample)
                        ):
                            outcome.reused += 1
                        else:
                            missing[(t, m)] = fingerprint
                if missing:
                    jobs.append(self._job(store, model, dataset, missing, outcome))
                    labels.append((model.entry.name, dataset.entry.name))
        code = [f"{m.scheme}:{m.rest}" for m in self.models if m.scheme == "python"]
        if jobs and code:
            self.echo(f"invkit: the config runs this code: {', '.join(code)}")
        if jobs:
            self.echo(
                f"invkit: {len(jobs)} model × dataset pass(es) to run on {self.device}, "
                f"{outcome.reused} cell(s) already in {self.out_dir / STORE_NAME}"
            )
        for result in self.executor(jobs):
            if isinstance(result.error, StorageError):
                raise result.error  # the store failed: no later pass could be kept either
            if not result.ok:
                model_name, dataset_name = labels[result.index]
                message = f"{type(result.error).__name__}: {result.error}"
                if isinstance(result.error, SystemExit):
                    message = f"SystemExit: the code called sys.exit({result.error.code!r})"
                store.record_failure(model_name, dataset_name, message, result.traceback)
                outcome.failures.append(
                    {"model": model_name, "dataset": dataset_name, "error": message}
                )
                self.echo(f"invkit: FAILED {model_name} × {dataset_name}: {message}")
        store.check_identity()
        outcome.report = write_report(self.out_dir, store, config, self.analyses)
        return outcome

    def _job(
        self,
        store: Store,
        model: Prepared,
        dataset: Prepared,
        missing: dict[tuple[str, str], str],
        outcome: StudyOutcome,
    ) -> Callable[[], None]:
        def job() -> None:
            cells = self._run_pass(model, dataset, missing, store)
            outcome.computed += cells
            outcome.passes += 1

        return job

    def _model(self, model: Prepared) -> LoadedModel:
        if self._loaded is None or self._loaded[0] != model.entry.name:
            self._loaded = None  # free the previous model first
            entry: ModelEntry = model.entry
            try:
                with trusted_checkpoints(self.run_options.trust_checkpoints):
                    loaded = get_component("model", model.scheme).create(model.rest, **model.params)
            except InvkitError as error:
                raise InvkitError(f"model {entry.name!r}: {error}") from None
            if entry.preprocessing:
                override = {
                    k: tuple(v) if isinstance(v, list) else v
                    for k, v in entry.preprocessing.items()
                }
                loaded.preprocessing = dataclasses.replace(loaded.preprocessing, **override)
            self._loaded = (entry.name, checked_model(loaded, self.transforms, entry.name))
        return self._loaded[1]

    def _dataset(self, dataset: Prepared) -> Any:
        name = dataset.entry.name
        if name not in self._dataset_cache:
            try:
                self._dataset_cache[name] = get_component("dataset", dataset.scheme).create(
                    dataset.rest, **dataset.params
                )
            except InvkitError as error:
                raise InvkitError(f"dataset {name!r}: {error}") from None
        return self._dataset_cache[name]

    def _run_pass(
        self, model: Prepared, dataset: Prepared, missing: dict[tuple[str, str], str], store: Store
    ) -> int:
        loaded = self._model(model)
        data = self._dataset(dataset)
        entry: DatasetEntry = dataset.entry
        label = f"{model.entry.name} × {entry.name}"
        plan = plan_labels(
            getattr(data, "classes", None),
            loaded.preprocessing,
            entry.class_map,
            entry.class_subset,
            context=label,
        )
        prepared = PreparedDataset(
            data,
            loaded.preprocessing,
            plan,
            subset_indices(len(data), entry.limit, entry.seed),
            entry.corruption,
            entry.severity,
            entry.seed,
            skip_bad=self.run_options.skip_bad_images,
        )
        if len(prepared) == 0:
            raise InvkitError(f"dataset {entry.name!r} is empty")
        run = self.run_options
        loader = make_loader(prepared, run.batch_size, run.workers, pin=self.device.type == "cuda")
        cells_by_transform: dict[str, list[tuple[str, Any]]] = {}
        for t, m in missing:
            cells_by_transform.setdefault(t, []).append((m, self.measures[m]))
        evaluation = evaluate(
            loaded,
            loader,
            self.transforms,
            cells_by_transform,
            self.device,
            plan.logit_index,
            amp=run.amp,
            max_views_per_forward=run.max_views_per_forward,
            keep_views=run.per_sample,
            label=label,
            progress=self.progress,
        )
        cells, samples = [], {}
        for (t, m), values in evaluation.values.items():
            summary = summarize(
                values,
                bootstrap=run.bootstrap > 0,
                n_resamples=run.bootstrap or 1000,
                seed=run.seed,
            )
            key = (model.entry.name, entry.name, t, m)
            cells.append(
                Cell(
                    *key,
                    fingerprint=missing[(t, m)],
                    value=summary.mean,
                    low=summary.low,
                    high=summary.high,
                    accuracy=evaluation.accuracy,
                    images=evaluation.images,
                    labeled=evaluation.labeled,
                    skipped=len(evaluation.skipped),
                    higher_is_invariant=getattr(self.measures[m], "higher_is_invariant", None),
                    per_sample=run.per_sample,
                    seconds=evaluation.seconds,
                    matching=plan.method,
                )
            )
            if run.per_sample:
                samples[key] = (evaluation.indices.tolist(), values.tolist())
        predictions = self._prediction_rows(model, entry, evaluation)
        store.write_pass(cells, samples, predictions, evaluation.skipped)
        rate = evaluation.images / max(evaluation.seconds, 1e-9)
        accuracy = (
            "unlabeled"
            if evaluation.accuracy is None
            else f"accuracy {evaluation.accuracy:.4f} (classes {plan.method})"
        )
        notes = [f"{len(evaluation.skipped)} unreadable image(s) skipped"] * bool(
            evaluation.skipped
        )
        if evaluation.upsampled:
            size = "×".join(map(str, loaded.preprocessing.input_size[1:]))
            notes.append(f"{evaluation.upsampled} image(s) smaller than the {size} input upsampled")
        self.echo(
            f"  {label}: {evaluation.images} images, {rate:,.0f} img/s, {accuracy}, "
            f"{len(cells)} cell(s)" + "".join(f", {note}" for note in notes)
        )
        return len(cells)

    def _prediction_rows(
        self, model: Prepared, entry: DatasetEntry, evaluation: Any
    ) -> list[tuple[Any, ...]]:
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
                rows.append(
                    (
                        model.entry.name,
                        entry.name,
                        view,
                        idx,
                        target,
                        prediction,
                        confidence,
                        correct,
                    )
                )
        return rows


def run_study(config: StudyConfig, **options: Any) -> StudyOutcome:
    """Run a study from a config (see ``Study`` for the options)."""
    return Study(config, **options).run()
