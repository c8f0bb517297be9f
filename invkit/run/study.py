"""A study: every model × dataset × transform × measure, stored cell by cell, then analysed.

The plan (``invkit.run.plan``) checks everything it can before the first forward pass; the
study takes the output directory's lock, hands the missing passes to the executor, and alone
writes each result to the store as it arrives (one transaction per pass), then the report.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from invkit import __version__
from invkit.config import StudyConfig
from invkit.errors import StorageError, unwritable_output
from invkit.lock import exclusive
from invkit.paths import check_writable, resolve_path
from invkit.plugin.passes import JobOutcome, PassResult, PassSpec
from invkit.run.passes import listing
from invkit.run.plan import StudyPlan
from invkit.store import STORE_NAME, Store

OUTPUT_FILES = ("results.csv", "correlations.csv", "predictions.csv", "analyses.json", "report.md")


@dataclass
class StudyOutcome:
    out_dir: Path
    computed: int = 0
    reused: int = 0
    passes: int = 0
    forward_images: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)


def pass_line(spec: PassSpec, result: PassResult) -> str:
    """The one line a finished pass prints: images, rate, accuracy and class matching, notes."""
    rate = result.images / max(result.seconds, 1e-9)
    accuracy = (
        "unlabeled"
        if result.accuracy is None
        else f"accuracy {result.accuracy:.4f} (classes {result.matching})"
    )
    notes = [f"{len(result.skipped)} unreadable image(s) skipped: {listing(result.bad_files)}"]
    notes = notes if result.skipped else []
    if result.upsampled:
        size = "×".join(map(str, result.input_size[1:]))
        notes.append(f"{result.upsampled} image(s) smaller than the {size} input upsampled")
    return (
        f"  {spec.label}: {result.images} images, {rate:,.0f} img/s, {accuracy}, "
        f"{len(result.cells)} cell(s)" + "".join(f", {note}" for note in notes)
    )


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
    ):
        self.config = config
        self.out_dir = (
            Path(out_dir).resolve()
            if out_dir
            else Path(resolve_path(config.run.out, config.base_dir))
        )
        self.fresh = fresh
        self.progress = progress
        self.echo = echo
        self.plan = StudyPlan(config)
        self.device = self.plan.device

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
        if free_mb < self.config.run.min_free_mb:
            raise StorageError(
                f"only {free_mb} MB free on the disk of {self.out_dir}; the study wants at least "
                f"{self.config.run.min_free_mb} MB for its store and report (free some space, "
                "choose another --out, or lower run.min_free_mb)"
            )

    def _clear_outputs(self) -> None:
        for name in (STORE_NAME, STORE_NAME + "-wal", STORE_NAME + "-shm", *OUTPUT_FILES):
            (self.out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.out_dir / "plots", ignore_errors=True)

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
        damaged = set(store.damaged())
        for key in sorted(damaged):
            self.echo(
                f"invkit: warning: stored cell {' × '.join(key)} fails its checksum (the store "
                "was damaged); it is computed again"
            )
        specs, outcome.reused = self.plan.passes(store.cells(), damaged)
        specs = [dataclasses.replace(spec, progress=self.progress) for spec in specs]
        if specs:
            code = self.plan.code()
            if code:
                self.echo(f"invkit: the config runs this code: {', '.join(code)}")
            self.echo(
                f"invkit: {len(specs)} model × dataset pass(es) to run on {self.device}, "
                f"{outcome.reused} cell(s) already in {self.out_dir / STORE_NAME}"
            )
        for job in self.plan.executor(specs):
            spec = specs[job.index]
            if job.ok:
                result: PassResult = job.result
                store.write_pass(result.cells, result.samples, result.predictions, result.skipped)
                outcome.computed += len(result.cells)
                outcome.passes += 1
                outcome.forward_images += result.forward_images
                self.echo(pass_line(spec, result))
                continue
            message = failure_message(job)
            store.record_failure(spec.model.name, spec.dataset.name, message, job.traceback)
            outcome.failures.append(
                {"model": spec.model.name, "dataset": spec.dataset.name, "error": message}
            )
            self.echo(f"invkit: FAILED {spec.label}: {message}")
        store.check_identity()
        outcome.report = write_report(self.out_dir, store, config, self.plan.analyses)
        return outcome


def run_study(config: StudyConfig, **options: object) -> StudyOutcome:
    """Run a study from a config (see ``Study`` for the options)."""
    return Study(config, **options).run()  # type: ignore[arg-type]
