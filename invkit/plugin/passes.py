"""What a study's passes are made of: plain, picklable data an executor can send anywhere.

A study plans one ``PassSpec`` per model × dataset with missing cells, and bundles the passes
over one dataset whose models share a preprocessing into one spec (``shared``), so that each
image is decoded once for all of them; an executor runs each spec through ``invkit.run_pass``
(in this process, a process pool, a cluster) and reports a ``JobOutcome`` holding the
``PassResult`` (with one result per bundled model) or the failure. Only the study, in the
driver process, writes results to the store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from invkit.config import ComponentEntry, RunOptions


@dataclass(frozen=True)
class Cell:
    """One (model, dataset, transform, measure) result, as stored."""

    model: str
    dataset: str
    transform: str
    measure: str
    fingerprint: str
    value: float | None
    low: float | None
    high: float | None
    accuracy: float | None
    images: int
    labeled: int
    skipped: int
    higher_is_invariant: bool | None
    per_sample: bool
    seconds: float
    matching: str = ""  # how dataset classes were matched to model outputs (invkit.inputs.classes)
    finished: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.dataset, self.transform, self.measure)


@dataclass(frozen=True)
class Resolved:
    """A model or dataset entry of a config, its spec split into scheme and rest, its paths
    resolved against the config's folder, and the fingerprint of everything it names."""

    entry: Any  # invkit.config.ModelEntry or DatasetEntry
    scheme: str
    rest: str
    params: dict[str, Any]
    fingerprint: str

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class PassSpec:
    """One model over one dataset: the cells to compute (transform label, measure label,
    fingerprint), the components by label, and the run options the pass needs.

    ``shared`` holds further passes over the same dataset whose models take the same input
    (size, interpolation, crop, channels): they run on the same decoded batches, each with
    the results it would have alone, under this spec's ``run`` and ``progress``."""

    model: Resolved
    dataset: Resolved
    transforms: tuple[ComponentEntry, ...]
    measures: tuple[ComponentEntry, ...]
    cells: tuple[tuple[str, str, str], ...]
    run: RunOptions
    progress: bool = False  # a progress bar (in a terminal, when the pass runs in the driver)
    shared: tuple[PassSpec, ...] = ()
    kept_file: str = ""  # the outputs file to keep (its name in outputs/); "": keep nothing
    kept_views: tuple[tuple[str, str], ...] = ()  # (transform, fingerprint of its outputs)
    staging: str = ""  # the study's staging folder, where a pass writes ``full`` outputs
    layer_measures: tuple[ComponentEntry, ...] = ()  # those its layer cells (measure@layer) use
    layers: tuple[str, ...] = ()  # every layer the study measures in this model

    @property
    def members(self) -> tuple[PassSpec, ...]:
        """Each model's own pass: this one (without ``shared``), then the shared ones."""
        alone = dataclasses.replace(self, shared=()) if self.shared else self
        return (alone, *self.shared)

    @property
    def label(self) -> str:
        models = ", ".join(spec.model.name for spec in self.members)
        return f"{models} × {self.dataset.name}"


@dataclass
class KeptOutputs:
    """A pass's kept outputs, on their way to the driver: the arrays themselves (``summary``,
    small), or the name of the file the pass wrote into the staging folder, with its SHA-256
    (``full``), which the driver verifies before adopting it."""

    file: str  # the name it takes in outputs/
    level: str
    topk: int
    classes: int
    images: int
    views: dict[str, str]  # transform → fingerprint of its outputs
    metadata: dict[str, str]
    arrays: dict[str, Any] | None = None  # name → numpy array, in the file's order
    staged: str = ""
    sha256: str = ""
    bytes: int = 0


@dataclass
class PassResult:
    """What one pass produced: its cells, each cell's value on each view, per-sample values
    (with ``per_sample``), its kept outputs, the images it could not read, and figures for its
    log line."""

    model: str
    dataset: str
    cells: list[Cell]
    samples: dict[tuple[str, str, str, str], tuple[list[int], list[float]]]
    skipped: list[tuple[int, str]]
    images: int
    forward_images: int
    seconds: float
    accuracy: float | None
    matching: str
    upsampled: int
    input_size: tuple[int, int, int] = (0, 0, 0)  # the model's (none when read from outputs)
    bad_files: list[str] = field(default_factory=list)  # the skipped images, by path
    device: str = ""
    shared: list[PassResult] = field(default_factory=list)  # one per PassSpec.shared
    decoded: int = 0  # images the pass read and decoded (once for all its models)
    preprocessing: dict[str, Any] = field(default_factory=dict)  # what the model actually used
    kept: KeptOutputs | None = None
    # each cell's value on each view: (view name, magnitude or None, mean over the images)
    views: dict[tuple[str, str, str, str], list[tuple[str, float | None, float]]] = field(
        default_factory=dict
    )

    @property
    def members(self) -> list[PassResult]:
        """One result per model of the pass, in the order of ``PassSpec.members``."""
        return [self, *self.shared]


@dataclass
class JobOutcome:
    """What an executor reports for one pass: its result, or the exception it raised (with the
    formatted traceback, since an exception from another process arrives without one)."""

    index: int
    result: Any = None
    error: BaseException | None = None
    traceback: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None
