"""A study: every model × dataset × transform × measure, stored cell by cell, then analysed.

The plan (``invkit.run.plan``) checks everything it can before the first forward pass; the
study takes the output directory's lock, hands the missing passes to the executor, and alone
writes each result to the store as it arrives (one transaction per pass), then the report.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invkit.config import StudyConfig
from invkit.errors import InvkitError, StorageError, listing, unwritable_output
from invkit.lock import exclusive
from invkit.markup import terminal
from invkit.paths import check_writable, refuse_links, resolve_path
from invkit.plugin.passes import Cell, JobOutcome, PassResult, PassSpec
from invkit.results import outputs as kept_files
from invkit.results.store import STORE_NAME, Store, store_files
from invkit.run.plan import Problems, StudyPlan
from invkit.run.recompute import KeptJob, evaluation_from_outputs
from invkit.run.sharing import ModelInput, share_decoding
from invkit.version import __version__

OUTPUT_FILES = (
    "results.csv",
    "per_view.csv",
    "correlations.csv",
    "predictions.csv",
    "estimates.csv",
    "profiles.csv",
    "per_sample.parquet",
    "models.csv",
    "analyses.json",
    "summary.tex",
    "report.html",
    "report.md",
    ".invkit-report-cache.json",
)


@dataclass
class StudyOutcome:
    out_dir: Path
    computed: int = 0
    reused: int = 0
    from_outputs: int = 0  # cells computed from kept outputs, with no forward pass
    passes: int = 0
    forward_images: int = 0
    decoded: int = 0  # images read and decoded (once for all the models sharing a pass)
    failures: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)


def _notes(result: PassResult) -> list[str]:
    """What a pass line adds after its counts: unreadable images skipped, images upsampled."""
    notes = [f"{len(result.skipped)} unreadable image(s) skipped: {listing(result.bad_files)}"]
    notes = notes if result.skipped else []
    if result.upsampled:
        size = "×".join(map(str, result.input_size[1:]))
        notes.append(f"{result.upsampled} image(s) smaller than the {size} input upsampled")
    return notes


def pass_line(spec: PassSpec, result: PassResult) -> str:
    """The one line a finished pass of one model prints: images, rate, accuracy and class
    matching, and notes."""
    rate = result.images / max(result.seconds, 1e-9)
    accuracy = (
        "unlabeled"
        if result.accuracy is None
        else f"accuracy {result.accuracy:.4f} (classes {result.matching})"
    )
    return (
        f"  {spec.label}: {result.images} images, {rate:,.0f} img/s, {accuracy}, "
        f"{len(result.cells)} cell(s)" + "".join(f", {note}" for note in _notes(result))
    )


def bundle_line(spec: PassSpec, results: Sequence[PassResult]) -> str:
    """The one line a finished pass of several models on one decoding prints: the models, the
    images decoded once for all, the range of their accuracies, the cells."""
    first = results[0]
    seconds = max(r.seconds for r in results)
    rate = first.images * len(results) / max(seconds, 1e-9)
    labeled = [r.accuracy for r in results if r.accuracy is not None]
    matching = ", ".join(sorted({r.matching for r in results if r.accuracy is not None}))
    accuracy = (
        f"accuracy {min(labeled):.4f} to {max(labeled):.4f} (classes {matching})"
        if labeled
        else "unlabeled"
    )
    cells = sum(len(r.cells) for r in results)
    names = listing([member.model.name for member in spec.members])
    return (
        f"  {len(results)} models × {spec.dataset.name} ({names}): {first.images} images "
        f"decoded once, {rate:,.0f} model-img/s, {accuracy}, {cells} cell(s)"
        + "".join(f", {note}" for note in _notes(first))
    )


def smoke_lines(cells: Sequence[Cell]) -> list[str]:
    """A smoke run's values, one line per transform × measure (the range over its models and
    datasets), so that a run of hundreds of cells prints a screenful, not a line per cell."""
    values: dict[tuple[str, str], list[float]] = {}
    for cell in cells:
        if cell.value is not None:
            values.setdefault((cell.transform, cell.measure), []).append(cell.value)
    return [
        f"  {terminal(transform)} {terminal(measure)}: {min(v):.4f} to {max(v):.4f} over "
        f"{len(v)} cell(s)"
        for (transform, measure), v in values.items()
    ]


def model_passes(specs: Sequence[PassSpec]) -> int:
    """How many model × dataset passes ``specs`` hold (a bundle holds one per model): the one
    count the study's lines use, first to last."""
    return sum(len(spec.members) for spec in specs)


class StudyProgress:
    """One bar for the whole study, above the lines of finished passes: model × dataset passes
    done, images per second through the models, and the time left."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.tqdm = tqdm
        self.bar = tqdm(
            total=total, desc="study", unit="pass", disable=None if enabled else True, leave=False
        )
        self.started = time.perf_counter()
        self.images = 0

    def done(self, passes: int, images: int) -> None:
        self.images += images
        rate = self.images / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} img/s", refresh=False)
        self.bar.update(passes)

    def writing(self) -> Any:
        """While printing a line: the bar cleared, then drawn again under it."""
        return self.tqdm.external_write_mode()

    def close(self) -> None:
        self.bar.close()


def _chosen(section: str, names: Sequence[str], entries: tuple[Any, ...]) -> set[str]:
    known = [entry.name for entry in entries]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvkitError(
            f"--{section} names {', '.join(map(repr, unknown))}, which the config does not "
            f"list; its {section}: {', '.join(known)}"
        )
    return set(names)


def each_member(spec: PassSpec, **changes: Any) -> PassSpec:
    """``spec`` with ``changes`` made to it and to every pass bundled with it."""
    shared = tuple(dataclasses.replace(member, **changes) for member in spec.shared)
    return dataclasses.replace(spec, shared=shared, **changes)


def failure_message(outcome: JobOutcome) -> str:
    error = outcome.error
    if isinstance(error, SystemExit):
        return f"SystemExit: the code called sys.exit({error.code!r})"
    return f"{type(error).__name__}: {error}"


class Study:
    """Runs one study configuration into one output directory."""

    def __init__(
        self,
        config: StudyConfig,
        out_dir: str | Path | None = None,
        fresh: bool = False,
        progress: bool = True,
        echo: Callable[[str], None] = print,
        models: Sequence[str] = (),
        datasets: Sequence[str] = (),
        smoke_limit: int | None = None,
    ):
        """``models``/``datasets``: run only the passes of these (labels); the store and the
        report keep the whole config. ``smoke_limit``: a quick run on at most that many images
        per dataset, printed and not stored (its cells would differ from the full run's)."""
        self.only = (
            _chosen("models", models, config.models),
            _chosen("datasets", datasets, config.datasets),
        )
        self.smoke_limit = smoke_limit
        if smoke_limit is not None:
            if smoke_limit < 1:
                raise InvkitError(f"--limit must be a positive number of images; got {smoke_limit}")
            limited = tuple(
                dataclasses.replace(d, limit=min(d.limit or smoke_limit, smoke_limit))
                for d in config.datasets
            )
            config = dataclasses.replace(config, datasets=limited)
        self.config = config
        self.out_dir = (
            Path(out_dir).resolve()
            if out_dir
            else Path(resolve_path(config.run.out, config.base_dir))
        )
        self.fresh = fresh
        self.progress = progress
        self._echo = echo
        self.overall = StudyProgress(0, enabled=False)
        self.plan = StudyPlan(config)
        self.device = self.plan.device

    def echo(self, text: str) -> None:
        """A line for the console, printed above the study's progress bar."""
        with self.overall.writing():
            self._echo(text)

    def _make_output_dir(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise unwritable_output(self.out_dir, error) from None

    def _check_output_dir(self) -> None:
        """Fail now, not after hours of work, if results could not be written (run under the
        directory's lock, so that simultaneous starts see "another study", not each other's
        probe files)."""
        from invkit.report.report import output_names

        refuse_links(self.out_dir, output_names())
        check_writable(self.out_dir)
        free_mb = shutil.disk_usage(self.out_dir).free // 2**20
        if free_mb < self.config.run.min_free_mb:
            raise StorageError(
                f"only {free_mb} MB free on the disk of {self.out_dir}; the study wants at least "
                f"{self.config.run.min_free_mb} MB for its store and report (free some space, "
                "choose another --out, or lower run.min_free_mb)"
            )

    def _clear_outputs(self) -> None:
        """``--fresh``: the store, the report's files, and the plots the store records that
        invkit wrote (a damaged store records none: its plots are left, and overwritten)."""
        from invkit.report.report import remove_report_plots

        path = self.out_dir / STORE_NAME
        if path.is_file():
            with suppress(InvkitError):
                store = Store(path)
                try:
                    remove_report_plots(self.out_dir, store)
                    kept_files.remove_unused(self.out_dir, store.outputs().values(), ())
                finally:
                    store.close()
        for name in (*store_files(), *OUTPUT_FILES):
            (self.out_dir / name).unlink(missing_ok=True)
        outputs = kept_files.folder(self.out_dir)
        for folder in (self.out_dir / "plots", outputs / kept_files.STAGING, outputs):
            with suppress(OSError):  # only when empty: what is left there is not invkit's
                folder.rmdir()

    def _chosen_passes(self, specs: list[Any]) -> list[Any]:
        """The passes (or jobs on kept outputs) of the models and datasets chosen to run."""
        models, datasets = self.only

        def chosen(spec: PassSpec) -> bool:
            return (not models or spec.model.name in models) and (
                not datasets or spec.dataset.name in datasets
            )

        return [s for s in specs if chosen(s.spec if isinstance(s, KeptJob) else s)]

    def _plan(
        self, store: Store | None, damaged: set[tuple[str, ...]]
    ) -> tuple[list[PassSpec], int, list[KeptJob]]:
        """The passes to run and the cells to compute from kept outputs, whose files are
        verified first: a missing or damaged file is forgotten, with a warning naming it, and
        its cells run in passes again."""
        keeping = self.config.run.outputs != "none"
        if keeping or kept_files.folder(self.out_dir).is_dir():
            kept_files.prepare_folder(self.out_dir)
        cells = store.cells() if store else {}
        kept = store.outputs() if store else {}
        bad = self._bad_files(kept.values(), store)
        specs, reused, jobs = self.plan.passes(cells, damaged, self._without(kept, bad))
        jobs = self._chosen_passes(jobs)
        if bad and store is not None:
            store.forget_outputs(bad)
        staging = str(kept_files.folder(self.out_dir) / kept_files.STAGING) if keeping else ""
        specs = [each_member(s, staging=staging) for s in self._chosen_passes(specs)]
        return specs, reused, jobs

    @staticmethod
    def _without(kept: dict[Any, Any], files: set[str]) -> dict[Any, Any]:
        return {key: record for key, record in kept.items() if record.file not in files}

    def _bad_files(self, records: Any, store: Store | None) -> set[str]:
        """The files of ``records`` that are links, missing or changed, each named in a
        warning. Every file is checked by its SHA-256, whether or not its numbers are read
        now (an analysis or ``load_outputs`` may read them later); a file's bytes are hashed
        again only when its stamp moved since they were last found whole."""
        bad = set()
        memo = store.verified_stamps() if store is not None else {}
        checked = []
        for record in {r.file: r for r in records}.values():
            try:
                path = kept_files.verified(self.out_dir, record, content=False)
                now = kept_files.stamp(path)
                if memo.get(record.file) != (record.sha256, now):
                    kept_files.verified(self.out_dir, record, content=True)
                    checked.append((record.file, record.sha256, now))
            except InvkitError as error:
                self.echo(f"invkit: warning: {error}; its cells are computed again")
                bad.add(record.file)
        if checked and store is not None:
            store.remember_verified(checked)
        return bad

    def _execute(
        self, specs: list[PassSpec], outcome: StudyOutcome
    ) -> Iterator[tuple[PassSpec, PassResult | None, JobOutcome]]:
        """Each model's pass as it finishes: its spec, its result (``None`` when it failed) and
        the executor's outcome; once the caller has stored it, the pass is counted and its
        line printed. A failed shared pass runs again one model at a time, so that one
        model's failure fails its own pass only."""
        specs = [dataclasses.replace(spec, progress=self.progress) for spec in specs]
        alone: list[PassSpec] = []
        self.overall = StudyProgress(model_passes(specs), enabled=self.progress)
        try:
            yield from self._each_finished(specs, alone, outcome)
        finally:
            self.overall.close()

    def _each_finished(
        self, specs: list[PassSpec], alone: list[PassSpec], outcome: StudyOutcome
    ) -> Iterator[tuple[PassSpec, PassResult | None, JobOutcome]]:
        for job in self.plan.executor(specs):
            spec = specs[job.index]
            if isinstance(job.error, StorageError):  # the output folder: every pass would fail
                raise job.error
            if not job.ok and spec.shared:
                self.echo(
                    f"invkit: the shared pass {spec.label} failed ({failure_message(job)}); "
                    "its models run again one at a time"
                )
                alone.extend(spec.members)
                continue
            yield from self._finished(spec, job, outcome)
        for job in self.plan.executor(alone) if alone else ():
            if isinstance(job.error, StorageError):
                raise job.error
            yield from self._finished(alone[job.index], job, outcome)

    def _finished(
        self, spec: PassSpec, job: JobOutcome, outcome: StudyOutcome
    ) -> Iterator[tuple[PassSpec, PassResult | None, JobOutcome]]:
        if not job.ok:
            yield spec, None, job
            self.overall.done(1, 0)
            self._failed(spec, failure_message(job), outcome)
            return
        outcome.decoded += job.result.decoded
        results = job.result.members
        for member, result in zip(spec.members, results, strict=True):
            yield member, result, job
            outcome.computed += len(result.cells)
            outcome.passes += 1
            outcome.forward_images += result.forward_images
        self.overall.done(len(results), sum(r.images for r in results))
        self.echo(pass_line(spec, results[0]) if len(results) == 1 else bundle_line(spec, results))

    def _failed(self, spec: PassSpec, message: str, outcome: StudyOutcome, how: str = "") -> None:
        """A failed pass (or job on kept outputs), counted and said; the study goes on."""
        outcome.failures.append(
            {"model": spec.model.name, "dataset": spec.dataset.name, "error": message}
        )
        self.echo(f"invkit: FAILED {spec.label}{how}: {message}")

    def smoke(self) -> StudyOutcome:
        """The chosen passes on at most ``smoke_limit`` images per dataset: values printed,
        nothing written."""
        outcome = StudyOutcome(self.out_dir)
        specs = self._chosen_passes(self.plan.passes({}, set())[0])
        specs = [each_member(spec, kept_file="", kept_views=()) for spec in specs]
        self.echo(
            f"invkit: smoke run of {model_passes(specs)} pass(es) on at most {self.smoke_limit} "
            "image(s) per dataset; nothing is stored"
        )
        cells = [
            cell
            for _, result, _ in self._execute(specs, outcome)
            if result
            for cell in result.cells
        ]
        for line in smoke_lines(cells):
            self.echo(line)
        return outcome

    def run(self) -> StudyOutcome:
        """Compute every missing cell, then write the report; failures are collected."""
        if self.smoke_limit is not None:
            return self.smoke()
        self._make_output_dir()
        with exclusive(self.out_dir):
            self._check_output_dir()
            if self.fresh:
                self._clear_outputs()
            path = self.out_dir / STORE_NAME
            store = Store(path) if path.is_file() else None  # created only once checks pass
            try:
                damaged = set(store.damaged()) if store else set()
                specs, reused, jobs = self._plan(store, damaged)
                code = self.plan.code()
                if specs and code:
                    self.echo(f"invkit: the config runs this code: {', '.join(code)}")
                inputs = self._check_pending(specs)
                specs = share_decoding(specs, inputs, self._models_per_pass())
                store = store or Store(path)
                return self._run(store, specs, reused, damaged, jobs)
            finally:
                if store is not None:
                    store.close()

    def _models_per_pass(self) -> int | str:
        """``auto`` bundles models under the ``local`` executor only: other executors spread
        passes over workers, and bundles would leave workers idle."""
        run = self.config.run
        return (
            1 if run.models_per_pass == "auto" and run.executor != "local" else run.models_per_pass
        )

    def _check_pending(self, specs: list[PassSpec]) -> dict[str, ModelInput]:
        """Before the first pass: load each model and open each dataset the pending passes
        need, and match their classes, so that a wrong checkpoint or folder stops the study
        once, with every problem listed, and not once per pass. Returns what each model
        takes as input, to share decoding between models."""
        from invkit.run.check import check_loading

        problems = Problems()
        pairs = [(spec.model, spec.dataset) for spec in specs]
        inputs: dict[str, ModelInput] = {}
        check_loading(self.plan, pairs, problems, echo=lambda _: None, inputs=inputs)
        problems.raise_if_any("the study")
        return inputs

    def _run(
        self,
        store: Store,
        specs: list[PassSpec],
        reused: int,
        damaged: set[tuple[str, ...]],
        jobs: Sequence[KeptJob] = (),
    ) -> StudyOutcome:
        from invkit.report.report import write_report

        outcome = StudyOutcome(self.out_dir, reused=reused)
        config = self.config.to_dict()
        store.set_config(config)
        store.set_meta("invkit_version", __version__)
        for key in sorted(damaged):
            self.echo(
                f"invkit: warning: stored cell {' × '.join(key)} fails its checksum (the store "
                "was damaged); it is computed again"
            )
        if jobs:
            self._from_outputs(store, jobs, outcome)
        if specs:
            count = model_passes(specs)
            shared = f" (on {len(specs)} decoding(s) shared by models)"
            shared = shared if len(specs) < count else ""
            self.echo(
                f"invkit: {count} model × dataset pass(es) to run{shared} on {self.device}, "
                f"{outcome.reused} cell(s) already in {self.out_dir / STORE_NAME}"
            )
        for spec, result, job in self._execute(specs, outcome):
            if result is not None:
                self._store_pass(store, spec, result)
            else:
                message = failure_message(job)
                store.record_failure(spec.model.name, spec.dataset.name, message, job.traceback)
        store.check_identity()
        self._note_unlabeled_held_out(store)
        self._warn_caveats(store, config)
        outcome.report = write_report(
            self.out_dir, store, config, self.plan.analyses, progress=self.progress
        )
        return outcome

    def _store_pass(self, store: Store, spec: PassSpec, result: PassResult) -> None:
        """A pass's kept outputs file put in place, then its cells and the file's record in
        one transaction; a file no record names any more is removed."""
        records = []
        if result.kept is not None:
            records = kept_files.keep(self.out_dir, result.kept, result.model, result.dataset)
        before = store.outputs().values()
        store.write_pass(
            result.cells,
            result.samples,
            records,
            result.skipped,
            result.preprocessing,
            views=result.views,
        )
        kept_files.remove_unused(self.out_dir, before, store.outputs().values())

    def _from_outputs(self, store: Store, jobs: Sequence[KeptJob], outcome: StudyOutcome) -> None:
        """The cells kept outputs can give, in one transaction (they take milliseconds each,
        and a commit per file would take longer than the cells): no model, no image."""
        from invkit.run.passes import pass_result

        with store.transaction():
            for job in jobs:
                spec = job.spec
                try:
                    measures = {m.name: self.plan.measures[m.name] for m in spec.measures}
                    evaluation, outputs = evaluation_from_outputs(job, self.out_dir, measures)
                    result = pass_result(
                        spec,
                        outputs.matching,
                        evaluation,
                        measures,
                        outputs.bad_files,
                        self.plan.transforms,
                    )
                except InvkitError as error:
                    message = failure_message(JobOutcome(0, error=error))
                    store.record_failure(spec.model.name, spec.dataset.name, message, None)
                    self._failed(spec, message, outcome, " (from kept outputs)")
                    continue
                store.write_pass(
                    result.cells, result.samples, (), result.skipped, views=result.views
                )
                outcome.from_outputs += len(result.cells)
        self.echo(
            f"invkit: {outcome.from_outputs} cell(s) from kept outputs in "
            f"{kept_files.folder(self.out_dir)}, 0 images through the models"
        )

    def _warn_caveats(self, store: Store, config: dict[str, Any]) -> None:
        """Random weights, or one accuracy for every model on a test set: said on the console
        as in the report's Summary, since every number after it depends on it."""
        from invkit.report.report import caveats, model_rows, results_table, subset_datasets

        models = model_rows(config, store.model_inputs())
        for line in caveats(results_table(store, config), models, subset_datasets(config)):
            self.echo(f"invkit: warning: {terminal(line)}")

    def _note_unlabeled_held_out(self, store: Store) -> None:
        """``held_out`` hides a test set's labels from the analyses: on a set without labels
        it changes nothing, which the user should know rather than assume otherwise."""
        held_out = [d for d in self.config.datasets if d.held_out]
        cells = store.cells().values() if held_out else ()
        for dataset in held_out:
            labeled = [c.labeled for c in cells if c.dataset == dataset.name]
            if labeled and not any(labeled):
                self.echo(
                    f"invkit: note: dataset {dataset.name!r} is held_out but has no labels, so "
                    "held_out changes nothing for it: it is predicted either way, with no true "
                    "accuracy to check the prediction against"
                )


def run_study(config: StudyConfig, **options: object) -> StudyOutcome:
    """Run a study from a config (see ``Study`` for the options)."""
    return Study(config, **options).run()  # type: ignore[arg-type]
