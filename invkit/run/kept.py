"""Kept outputs recorded during a pass (``invkit.run.recompute`` reads them back).

What a measure is given is what it declares it reads (``invkit.results.outputs.reads_top``),
in a pass and from kept outputs alike: a ``top1`` measure sees softmax rows holding only their
largest probability (every other class 0), a ``softmax`` measure the whole row. So a cell
computed from a file equals the cell its pass computed, bit for bit on the same device.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invkit.errors import InvkitError
from invkit.plugin.passes import KeptOutputs, PassSpec
from invkit.results.outputs import (
    FORMAT,
    GRAM_MAX_CLASSES,
    Spilled,
    write_file,
)


def dense_top(indices: torch.Tensor, probs: torch.Tensor, classes: int, k: int) -> torch.Tensor:
    """Softmax rows holding only their ``k`` largest probabilities (the rest 0): what a
    measure that reads the top-k is given."""
    rows = torch.zeros(indices.shape[0], classes, dtype=probs.dtype, device=probs.device)
    return rows.scatter_(1, indices[:, :k].long(), probs[:, :k])


class Recorder:
    """What one model keeps of a pass, view by view: the top-k, log-sum-exp and entropy on the
    device (copied once at the end), full logits appended to files batch by batch."""

    def __init__(
        self, transforms: Mapping[str, Sequence[str]], level: str, topk: int, spill: Path | None
    ):
        self.transforms = {t: list(views) for t, views in transforms.items()}
        self.views = ["original", *(view for views in transforms.values() for view in views)]
        self.level = level
        self.topk = topk
        self.spill = spill
        self.parts: dict[str, list[torch.Tensor]] = {}
        self.logits: dict[str, Spilled] = {}
        self.gram: torch.Tensor | None = None  # PᵀP of the original's softmax rows (K × K)
        self.classes = 0

    def add(
        self,
        logits: torch.Tensor,
        probs: torch.Tensor,
        top_indices: torch.Tensor,
        top_probs: torch.Tensor,
        size: int,
    ) -> None:
        """One batch: ``size`` images, each view's rows one block after the other."""
        self.classes = probs.shape[1]
        k = min(self.topk, self.classes)
        log_sum = logits.double().logsumexp(dim=1)
        entropy = torch.special.entr(probs).sum(dim=1)
        if self.classes <= GRAM_MAX_CLASSES:
            original = probs[:size]
            gram = original.T @ original
            self.gram = gram if self.gram is None else self.gram + gram
        blocks = {
            "top_indices": top_indices[:, :k].int(),
            "top_probs": top_probs[:, :k],
            "logsumexp": log_sum,
            "entropy": entropy,
        }
        for j in range(len(self.views)):
            rows = slice(j * size, (j + 1) * size)
            for name, block in blocks.items():
                self.parts.setdefault(f"v{j}.{name}", []).append(block[rows])
            if self.level == "full":
                assert self.spill is not None
                key = f"v{j}.logits"
                if key not in self.logits:
                    self.logits[key] = Spilled(
                        self.spill / key, np.dtype(np.float32), (self.classes,)
                    )
                self.logits[key].append(logits[rows].cpu().numpy())

    def arrays(self, indices: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Every array of the file, in its order: indices, targets, then view by view."""
        arrays: dict[str, Any] = {
            "indices": indices.numpy().astype(np.int64),
            "targets": targets.numpy().astype(np.int64),
        }
        for j in range(len(self.views)):
            for name in ("top_indices", "top_probs", "logsumexp", "entropy"):
                arrays[f"v{j}.{name}"] = torch.cat(self.parts[f"v{j}.{name}"]).cpu().numpy()
            if self.level == "full":
                arrays[f"v{j}.logits"] = self.logits[f"v{j}.logits"]
        if self.gram is not None:
            arrays["v0.gram"] = self.gram.cpu().numpy()
        return arrays


def spill_folder(staging: str) -> Path:
    """A new folder of this pass's own in the study's staging folder (shared with workers)."""
    root = Path(staging)
    if not root.is_dir():
        raise InvkitError(
            f"run.outputs = 'full' writes each pass's logits into {root}, which this worker "
            "cannot see; on a cluster the output folder must be shared, at the same path, by "
            "every worker (or keep 'summary' outputs, which travel with the results)"
        )
    path = root / uuid.uuid4().hex
    path.mkdir()
    return path


def kept_outputs(
    spec: PassSpec,
    recorder: Recorder,
    indices: torch.Tensor,
    targets: torch.Tensor,
    metadata: Mapping[str, str],
) -> KeptOutputs:
    """The pass's kept outputs: the arrays themselves (``summary``: the driver writes them),
    or a file the pass wrote into the staging folder (``full``: the driver adopts it)."""
    topk = min(recorder.topk, recorder.classes)
    meta = {
        "format": FORMAT,
        "model": spec.model.name,
        "dataset": spec.dataset.name,
        "level": recorder.level,
        "topk": str(topk),
        "classes": str(recorder.classes),
        "views": json.dumps(recorder.views),
        "transforms": json.dumps(recorder.transforms),
        **metadata,
    }
    kept = KeptOutputs(
        file=spec.kept_file,
        level=recorder.level,
        topk=topk,
        classes=recorder.classes,
        images=len(indices),
        views=dict(spec.kept_views),
        metadata=meta,
    )
    arrays = recorder.arrays(indices, targets)
    if recorder.level != "full":
        kept.arrays = arrays
        return kept
    assert recorder.spill is not None
    staged = recorder.spill.with_name(f"{recorder.spill.name}.safetensors")
    try:
        kept.sha256, kept.bytes = write_file(staged, arrays, meta)
    finally:
        shutil.rmtree(recorder.spill, ignore_errors=True)
    kept.staged = staged.name
    return kept
