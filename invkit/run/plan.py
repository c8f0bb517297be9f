"""Planning a study: check the config's components, resolve and fingerprint what it names, and
list the model × dataset passes whose cells are missing from the store.

Everything here happens before any model loads or any image is read, so a mistake in the
config costs seconds, not the hours of a study.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invkit.config import (
    ComponentEntry,
    ConfigError,
    DatasetEntry,
    ModelEntry,
    StudyConfig,
    problems_error,
    run_problems,
)
from invkit.errors import InvkitError, described
from invkit.fingerprint import digest, path_digest
from invkit.inputs.classes import SUBSET_KEYWORDS, check_class_map, subset_lines
from invkit.inputs.codeprint import component_version
from invkit.inputs.data import PIPELINE_VERSION
from invkit.inputs.layers import layer_cell, resolve_layers, split_layer_cell
from invkit.inputs.preprocessing import check_channels
from invkit.lookup import (
    get_analysis,
    get_component,
    get_executor,
    get_layer_measure,
    get_measure,
    get_shift,
    get_transform,
    split_spec,
)
from invkit.paths import resolve_path
from invkit.plugin.passes import Cell, PassSpec, Resolved
from invkit.results.outputs import OutputRecord, reads_model, reads_top
from invkit.run.engine import autocast_enabled, resolve_device
from invkit.run.recompute import KeptJob
from invkit.version import __version__

RELATIVE = " (relative paths in a config are taken from the config file's folder)"


def _context(where: str, error: InvkitError) -> ConfigError:
    return ConfigError(f"{where}: {error}")


def declared_channels(entry: ModelEntry) -> int | None:
    """A model's channel count when the config states it (input_size, or timm's in_chans)."""
    size = entry.preprocessing.get("input_size")
    if size:
        return size[0]
    in_chans = entry.params.get("in_chans")
    return in_chans if isinstance(in_chans, int) else None


def check_generators(measure: str, transforms: Mapping[str, Any]) -> None:
    """Refuse a derivative measure beside a transform with no generator (no derivative along
    it), naming the transforms that have one."""
    from invkit.lookup import list_components

    lacking = [
        label for label, t in transforms.items() if not callable(getattr(t, "generator", None))
    ]
    if lacking:
        having = [c.name for c in list_components("transform") if hasattr(c.factory, "generator")]
        raise InvkitError(
            f"{measure} is a derivative along a transform's generator, and "
            f"{', '.join(map(repr, lacking))} has none; transforms with one: {', '.join(having)} "
            "(measure those in a study of their own)"
        )


class Problems:
    """The problems a check finds, collected so that one run reports all of them at once."""

    def __init__(self, lines: list[str] | None = None) -> None:
        self.lines: list[str] = list(lines or [])

    @contextmanager
    def at(self, where: str = "", any_error: bool = False) -> Iterator[None]:
        """Record an ``InvkitError`` raised in the block (prefixed with ``where``) and go on;
        with ``any_error``, any exception (a user's model or dataset code raising)."""
        try:
            yield
        except (Exception, SystemExit) as error:  # SystemExit: a user's code calling sys.exit
            if not isinstance(error, InvkitError) and not any_error:
                raise
            text = described(error)
            self.lines.append(f"{where}: {text}" if where else text)

    def raise_if_any(self, what: str = "the config") -> None:
        if self.lines:
            raise problems_error(self.lines, what)


def _build(
    section: str, entries: tuple[ComponentEntry, ...], get: Callable[..., Any], problems: Problems
) -> dict[str, Any]:
    """Each entry's component, built once now so that every name and parameter is checked."""
    built = {}
    for entry in entries:
        with problems.at(f"{section}[{entry.name!r}]"):
            built[entry.name] = get(entry.component, **entry.params)
    return built


class StudyPlan:
    """A checked study config: built components, resolved models and datasets, fingerprints.

    Every check runs before any model loads; all the problems found are reported together,
    one line each (a ``ConfigError``)."""

    def __init__(self, config: StudyConfig, problems: Problems | None = None):
        """Raises a ``ConfigError`` listing every problem, unless ``problems`` is given: then
        they are recorded there and the plan holds what could be resolved."""
        collect = problems is not None
        problems = problems if problems is not None else Problems()
        self.config = config
        self.run = config.run
        problems.lines.extend(run_problems(config.run))
        self.device = resolve_device("cpu")  # until the one asked for is known to exist
        with problems.at("run.device"):
            self.device = resolve_device(config.run.device)
        self.transforms = _build("transforms", config.transforms, get_transform, problems)
        self.measures = _build("measures", config.measures, get_measure, problems)
        self.reads: dict[str, int | None] = {}  # measure → what it reads: top-k, or None (all)
        for label, measure in self.measures.items():
            with problems.at(f"measures[{label!r}]"):
                self.reads[label] = reads_top(measure)
        self.derivatives = {label for label, m in self.measures.items() if reads_model(m)}
        for label in self.derivatives:
            with problems.at(f"measures[{label!r}]"):
                check_generators(label, self.transforms)
        self.layer_measures = _build(
            "layer_measures", config.layer_measures, get_layer_measure, problems
        )
        self.analyses = _build("analyses", config.analyses, get_analysis, problems)
        for label, analysis in self.analyses.items():
            check = getattr(analysis, "check_transforms", None)
            if callable(check):
                with problems.at(f"analyses[{label!r}]"):
                    check(self.transforms)
        with problems.at("run.executor"):
            self.executor = get_executor(config.run.executor, **config.run.executor_params)
        self._versions: dict[tuple[str, str], str] = {}
        self.models = self._resolve_all("model", config.models, problems)
        self.layers: dict[str, list[str]] = {}  # model → the layers measured in it
        for model in self.models:
            names = model.entry.layers or config.run.layers
            with problems.at(f"models[{model.name!r}].layers"):
                self.layers[model.name] = resolve_layers(
                    names, model.scheme, model.rest, f"models[{model.name!r}]"
                )
        for entry in config.models:
            channels = declared_channels(entry)
            if channels is not None:
                with problems.at():
                    check_channels(self.transforms, channels, entry.name)
        self.datasets = self._resolve_all("dataset", config.datasets, problems)
        if not collect:
            problems.raise_if_any()

    def _resolve_all(
        self, kind: str, entries: tuple[Any, ...], problems: Problems
    ) -> list[Resolved]:
        resolved = []
        for entry in entries:
            with problems.at():
                resolved.append(self._resolve(kind, entry))
        return resolved

    def component_version(self, kind: str, name: str) -> str:
        """``plugin==version`` of the plugin providing a component (part of fingerprints)."""
        key = (kind, name)
        if key not in self._versions:
            self._versions[key] = component_version(kind, name)
        return self._versions[key]

    def _component_print(self, kind: str, entry: ComponentEntry) -> list[Any]:
        return [entry.component, entry.params, self.component_version(kind, entry.component)]

    def _resolve(self, kind: str, entry: ModelEntry | DatasetEntry) -> Resolved:
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
            if resolve_spec is resolve_path and not Path(rest).exists():  # the spec is a path
                missing = f"{scheme}:{rest} names a path that does not exist"
                raise _context(where, InvkitError(missing + RELATIVE))
        by_content = isinstance(entry, DatasetEntry) and entry.verify == "content"
        params = dict(entry.params)
        files = {}
        for param in component.params:
            if param.is_path and isinstance(params.get(param.name), str):
                params[param.name] = resolve_path(params[param.name], base)
                if not Path(params[param.name]).exists():
                    missing = f"params.{param.name}: {params[param.name]!r} does not exist"
                    raise _context(where, InvkitError(missing + RELATIVE))
                files[param.name] = path_digest(params[param.name], by_content)
        try:
            component.check(params)
        except InvkitError as error:
            raise _context(where, error) from None
        content = {
            "kind": kind,
            "spec": f"{scheme}:{rest}",
            "params": params,
            "files": files,
            "spec_code": self._spec_fingerprint(component, rest, where, by_content),
            "loader": self.component_version(kind, scheme),
        }
        if isinstance(entry, ModelEntry):
            content["preprocessing"] = entry.preprocessing
        else:
            entry = self._resolve_dataset_options(entry, where, content)
        return Resolved(entry, scheme, rest, params, digest(content))

    def _resolve_dataset_options(
        self, entry: DatasetEntry, where: str, content: dict[str, Any]
    ) -> DatasetEntry:
        base = self.config.base_dir
        for name in ("class_map", "class_subset"):
            value = getattr(entry, name)
            if value is not None and not (name == "class_subset" and value in SUBSET_KEYWORDS):
                value = resolve_path(value, base)  # a file: its bytes are in the fingerprint
                entry = dataclasses.replace(entry, **{name: value})
                content[f"{name}_file"] = path_digest(value)
        try:
            if entry.class_map is not None:
                check_class_map(Path(entry.class_map))
            if entry.class_subset is not None and entry.class_subset not in SUBSET_KEYWORDS:
                subset_lines(Path(entry.class_subset))
        except InvkitError as error:
            raise _context(where, InvkitError(f"{error}{RELATIVE}")) from None
        if entry.shift is not None:
            try:
                get_shift(entry.shift.component, **entry.shift.params)
            except InvkitError as error:
                raise _context(f"{where}.shift", error) from None
            content["shift"] = self._component_print("shift", entry.shift)
        options = dataclasses.asdict(entry)
        content.update(
            {
                k: v
                for k, v in options.items()
                if k not in ("name", "spec", "params", "shift", "held_out", "source", "meta_set")
            }
        )
        return entry

    @staticmethod
    def _spec_fingerprint(component: Any, rest: str, where: str, by_content: bool) -> Any:
        """What the spec itself names (a file, a folder's files, a module's code), so editing
        it recomputes."""
        if not rest:
            return None
        fingerprint = getattr(component.factory, "spec_fingerprint", None)
        if fingerprint is None:
            return path_digest(rest, by_content) if Path(rest).exists() else None
        try:
            return fingerprint(rest)
        except InvkitError as error:
            raise _context(where, error) from None

    def _pass_print(self, model: Resolved, dataset: Resolved) -> dict[str, Any]:
        """What determines every output of a model on a dataset."""
        return {
            "invkit": __version__,
            "model": model.fingerprint,
            "dataset": dataset.fingerprint,
            "amp": autocast_enabled(self.run.amp, self.device),
            "skip_bad_images": self.run.skip_bad_images,
            "pixels": [PIPELINE_VERSION, self.run.reduced_decoding],
        }

    def cell_fingerprint(
        self, model: Resolved, dataset: Resolved, transform: ComponentEntry, measure: ComponentEntry
    ) -> str:
        return digest(
            {
                **self._pass_print(model, dataset),
                "transform": self._component_print("transform", transform),
                "measure": self._component_print("measure", measure),
                "bootstrap": [self.run.bootstrap, self.run.seed],
            }
        )

    def layer_fingerprint(
        self,
        model: Resolved,
        dataset: Resolved,
        transform: ComponentEntry,
        measure: ComponentEntry,
        layer: str,
    ) -> str:
        """What determines a layer measure's value at one layer: as a cell, and the layer."""
        return digest(
            {
                **self._pass_print(model, dataset),
                "transform": self._component_print("transform", transform),
                "layer_measure": self._component_print("layer_measure", measure),
                "layer": layer,
            }
        )

    def cells_of(self, model: Resolved) -> int:
        """How many cells a model has on each dataset: transforms × (measures + layer
        measures × its layers)."""
        per_transform = len(self.config.measures)
        per_transform += len(self.config.layer_measures) * len(self.layers.get(model.name, ()))
        return len(self.config.transforms) * per_transform

    def outputs_fingerprint(
        self, model: Resolved, dataset: Resolved, transform: ComponentEntry
    ) -> str:
        """What determines a transform's kept outputs (and the original's beside them)."""
        return digest(
            {
                **self._pass_print(model, dataset),
                "transform": self._component_print("transform", transform),
                "outputs": "outputs",
            }
        )

    def code(self) -> list[str]:
        """The user code the config names (``python:`` specs), as the study announces it."""
        specs = (f"{m.scheme}:{m.rest}" for m in self.models if m.scheme == "python")
        return list(dict.fromkeys(specs))  # each once, in config order

    def passes(
        self,
        stored: Mapping[tuple[str, str, str, str], Cell],
        damaged: set[tuple[str, ...]],
        kept: Mapping[tuple[str, str, str], OutputRecord] | None = None,
    ) -> tuple[list[PassSpec], int, list[KeptJob]]:
        """The passes with cells the store lacks (or holds stale or damaged), how many cells
        it already holds, and the cells to compute from kept outputs instead of a pass.

        A missing cell comes from kept outputs when they hold what its measure reads. A
        transform runs in a pass when one of its cells cannot, or when its kept outputs are
        less than ``run.outputs`` asks (a pass then keeps them, even with no cell to
        compute)."""
        kept = kept or {}
        specs, jobs, reused = [], [], 0
        for model in self.models:
            for dataset in self.datasets:
                files = self._kept_for(model, dataset, kept)
                missing = self._missing(model, dataset, stored, damaged)
                rerun = {
                    t.name
                    for t in self.config.transforms
                    if self.run.outputs != "none"
                    and not (t.name in files and files[t.name].covers(*self._keep()))
                }
                rerun |= {
                    t
                    for t, m, _ in missing
                    if m not in self.reads  # a layer cell: only a pass sees the layers
                    or m in self.derivatives
                    or t not in files
                    or not files[t].serves(self.reads[m])
                }
                from_files: dict[str, list[tuple[str, str, str]]] = {}
                for t, m, fingerprint in missing:
                    if t not in rerun:
                        from_files.setdefault(files[t].file, []).append((t, m, fingerprint))
                cells = [(t, m, fingerprint) for t, m, fingerprint in missing if t in rerun]
                reused += self.cells_of(model) - len(missing)
                if rerun:
                    specs.append(self._pass_spec(model, dataset, cells, rerun))
                records = {record.file: record for record in files.values()}
                jobs += [
                    KeptJob(self._pass_spec(model, dataset, file_cells), records[file])
                    for file, file_cells in from_files.items()
                ]
        return specs, reused, jobs

    def _keep(self) -> tuple[str, int]:
        return self.run.outputs, self.run.outputs_topk

    def _kept_for(
        self,
        model: Resolved,
        dataset: Resolved,
        kept: Mapping[tuple[str, str, str], OutputRecord],
    ) -> dict[str, OutputRecord]:
        """The kept outputs of a model × dataset, by transform, that are still current."""
        files = {}
        for transform in self.config.transforms:
            record = kept.get((model.name, dataset.name, transform.name))
            current = self.outputs_fingerprint(model, dataset, transform)
            if record is not None and record.fingerprint == current:
                files[transform.name] = record
        return files

    def _missing(
        self,
        model: Resolved,
        dataset: Resolved,
        stored: Mapping[tuple[str, str, str, str], Cell],
        damaged: set[tuple[str, ...]],
    ) -> list[tuple[str, str, str]]:
        """The cells of a model × dataset the store lacks, or holds stale or damaged."""
        wanted = []  # (transform, cell label, fingerprint, whether it keeps per-sample values)
        for transform in self.config.transforms:
            wanted += [
                (transform.name, measure.name,
                 self.cell_fingerprint(model, dataset, transform, measure), self.run.per_sample)
                for measure in self.config.measures
            ]  # fmt: skip
            wanted += [  # a layer measure is a statistic of the whole set: no per-sample values
                (transform.name, layer_cell(measure.name, layer),
                 self.layer_fingerprint(model, dataset, transform, measure, layer), False)
                for measure in self.config.layer_measures
                for layer in self.layers.get(model.name, ())
            ]  # fmt: skip
        missing = []
        for transform, label, fingerprint, per_sample in wanted:
            key = (model.name, dataset.name, transform, label)
            cell = stored.get(key)
            if (
                cell is None
                or key in damaged
                or cell.fingerprint != fingerprint
                or (per_sample and not cell.per_sample)
            ):
                missing.append((transform, label, fingerprint))
        return missing

    def _pass_spec(
        self,
        model: Resolved,
        dataset: Resolved,
        cells: list[tuple[str, str, str]],
        rerun: set[str] | None = None,
    ) -> PassSpec:
        """The pass over the transforms ``rerun`` computing ``cells``, keeping its outputs
        (unless ``run.outputs`` is "none"); without ``rerun``, the job on kept outputs
        computing ``cells``."""
        names = rerun or {t for t, _, _ in cells}, {m for _, m, _ in cells}
        transforms = tuple(t for t in self.config.transforms if t.name in names[0])
        views = tuple((t.name, self.outputs_fingerprint(model, dataset, t)) for t in transforms)
        keeping = rerun is not None and self.run.outputs != "none"
        layered = {split[0] for m in names[1] if (split := split_layer_cell(m))}
        name = outputs_name(model.name, dataset.name, [views, *self._keep()])
        return PassSpec(
            model=model,
            dataset=dataset,
            transforms=transforms,
            measures=tuple(m for m in self.config.measures if m.name in names[1]),
            cells=tuple(cells),
            run=self.run,  # "auto" resolves where the pass runs
            kept_file=name if keeping else "",
            kept_views=views if keeping else (),
            layer_measures=tuple(e for e in self.config.layer_measures if e.name in layered),
            layers=tuple(self.layers.get(model.name, ())),
        )


def outputs_name(model: str, dataset: str, content: Any) -> str:
    """An outputs file's name: readable (model and dataset, reduced to safe characters) and
    unique (a digest of what it holds)."""
    return f"{_slug(model)}__{_slug(dataset)}__{digest(content)[:16]}.safetensors"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:40] or "x"
