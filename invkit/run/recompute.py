"""Cells computed from kept outputs, with no model loaded and no image decoded: the
``Evaluation`` a pass would have made, rebuilt from its file (docs/outputs.md)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invkit.analysis.aggregate import view_values
from invkit.plugin.passes import PassSpec
from invkit.results.outputs import OutputRecord, Outputs, folder, read_file, reads_top
from invkit.run.engine import Evaluation
from invkit.run.kept import dense_top

ROWS_PER_CHUNK = 1024  # images whose softmax rows are rebuilt at a time (40 MB at K = 1000)


@dataclass(frozen=True)
class KeptJob:
    """Cells a study computes from one kept outputs file: no model, no image."""

    spec: PassSpec  # the model, dataset and the cells to compute
    record: OutputRecord  # the file, as the store records it (verified before the job runs)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A copy of (a block of) a read-only memory-mapped array, as a tensor."""
    return torch.from_numpy(np.array(array))


def _softmax_rows(outputs: Outputs, view: str, rows: slice, top: int | None) -> torch.Tensor:
    if top is None:
        return _tensor(outputs.logits[view][rows]).double().softmax(dim=1)
    indices, probs = (
        _tensor(outputs.top_indices[view][rows]),
        _tensor(outputs.top_probs[view][rows]),
    )
    return dense_top(indices, probs, outputs.classes, top)


def values_from_outputs(
    outputs: Outputs, cells: Sequence[tuple[str, str, Any]], rows: int = ROWS_PER_CHUNK
) -> dict[tuple[str, str], torch.Tensor]:
    """Per-view, per-image values ``(V, N)`` of each (transform, measure label, measure) of
    ``cells`` from kept outputs, block by block of images: each view's softmax rows are
    rebuilt once per block for every measure that reads them the same way."""
    targets = _tensor(outputs.targets)
    chunks: dict[tuple[str, str], list[torch.Tensor]] = {(t, m): [] for t, m, _ in cells}
    for start in range(0, len(targets), rows):
        block = slice(start, start + rows)
        labels = targets[block]
        known = labels if bool((labels >= 0).all()) else None
        rebuilt: dict[tuple[str, int | None], torch.Tensor] = {}
        for transform, label, measure in cells:
            top = reads_top(measure)
            for view in ("original", *outputs.transforms[transform]):
                if (view, top) not in rebuilt:
                    rebuilt[view, top] = _softmax_rows(outputs, view, block, top)
            views = [rebuilt[view, top] for view in outputs.transforms[transform]]
            original = rebuilt["original", top]
            chunks[transform, label].append(view_values(measure, original, views, known))
    return {key: torch.cat(parts, dim=1) for key, parts in chunks.items()}


def evaluation_from_outputs(
    job: KeptJob, out_dir: Path, measures: Mapping[str, Any]
) -> tuple[Any, Outputs]:
    """The ``Evaluation`` a pass would have produced for ``job``'s cells (``measures`` by
    label), from its file."""
    started = time.perf_counter()
    outputs = read_file(folder(out_dir) / job.record.file)  # verified as the study planned
    values = values_from_outputs(outputs, [(t, m, measures[m]) for t, m, _ in job.spec.cells])
    targets = _tensor(outputs.targets)
    evaluation = Evaluation(
        values=values,
        indices=_tensor(outputs.indices),
        targets=targets,
        correct=_tensor(outputs.predictions).long() == targets,
        skipped=outputs.skipped,
        upsampled=0,
        images=len(targets),
        forward_images=0,
        seconds=time.perf_counter() - started,
    )
    return evaluation, outputs
