"""The recent estimators side by side with their authors' code, on the same logits.

    python benchmarks/estimators_authors.py --cot /path/to/COT --mano /path/to/MaNo \
        --atc /path/to/ATC_code

Each path is a checkout of the authors' repository (github.com/luyuzhe111/COT,
Renchunzi-Xie/MaNo, saurabhgarg1996/ATC_code); the script runs their functions, or for COT the
branch of ``run_estimation.py`` that computes the estimate, read from their files and run as
they are. Their code is not part of invkit: fetch it yourself to compare. The logits are
synthetic: a source and three increasingly shifted targets of 2,000 images and 10 classes,
balanced, so that the authors' sampled one-hot labels are exactly the source's label
distribution. It prints, per target, invkit's estimate, theirs and the difference.
"""

from __future__ import annotations

import argparse
import ast
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invkit import get_component
from invkit.analysis.estimation import StudyData
from invkit.results.outputs import Outputs

CLASSES, IMAGES = 10, 2000


def logits_of(seed: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = np.tile(np.arange(CLASSES), IMAGES // CLASSES)
    logits = rng.normal(size=(IMAGES, CLASSES)) * 1.5
    logits[np.arange(IMAGES), targets] += signal
    return logits.astype(np.float32), targets


SETS = {"source": (0, 4.0), "mild": (1, 3.0), "medium": (2, 2.0), "severe": (3, 1.0)}


def study() -> StudyData:
    outputs = {("m", name): Outputs.from_logits("m", name, *logits_of(*spec))
               for name, spec in SETS.items()}  # fmt: skip
    rows = [{"model": "m", "dataset": name, "transform": "t", "measure": "e", "invariance": None,
             "accuracy": outputs["m", name].accuracy, "source": name == "source"}
            for name in SETS]  # fmt: skip
    return StudyData(rows, outputs)


def ours(name: str, data: StudyData, target: str) -> float:
    data.target = target
    answer = get_component("estimator", name).create()("m", target, data)
    return float(getattr(answer, "value", answer))


def source_of(path: Path, name: str) -> str:
    """The source text of the function ``name`` defined in ``path``."""
    text = path.read_text()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(text, node)
    raise SystemExit(f"{path} defines no {name}")


def branch_of(path: Path, metric: str) -> str:
    """The body of ``run_estimation.py``'s ``elif metric == METRIC:`` branch, as a module."""
    text = path.read_text()
    for node in ast.walk(ast.parse(text)):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.comparators[0], ast.Constant)
                and node.test.comparators[0].value == metric):  # fmt: skip
            lines = text.splitlines()[node.body[0].lineno - 1 : node.body[-1].end_lineno]
            return textwrap.dedent("\n".join(lines))
    raise SystemExit(f"{path} has no branch for {metric}")


def their_branch(checkout: Path, metric: str, probabilities: np.ndarray, **names: Any) -> float:
    """1 − the error that the ``metric`` branch of ``run_estimation.py`` computes (one batch:
    under 10,000 images), with their ``sample_label_dist`` and ``names`` in its namespace."""
    import math
    import random

    import ot

    namespace: dict[str, Any] = {"random": random, "torch": torch, "ot": ot, "math": math}
    namespace["get_expected_label_distribution"] = lambda _: [1 / CLASSES] * CLASSES
    exec(source_of(checkout / "torch_datasets" / "configs.py", "sample_label_dist"), namespace)
    namespace.update(
        n_test_sample=len(probabilities), ood_acts=torch.tensor(probabilities, dtype=torch.float32),
        dsname="balanced", n_class=CLASSES, nn=torch.nn, print=lambda *_: None, **names,
    )  # fmt: skip
    exec(branch_of(checkout / "run_estimation.py", metric), namespace)
    return 1.0 - namespace["est"]


def their_cot(checkout: Path, probabilities: np.ndarray) -> float:
    """Their COT on the target's softmax."""
    return their_branch(checkout, "COT", probabilities)


def their_cott(checkout: Path, source: Outputs, probabilities: np.ndarray) -> float:
    """Their COTT: ``compute_cott``'s threshold on the source, then the branch of
    ``run_estimation.py`` on the target."""
    import ot

    namespace: dict[str, Any] = {"torch": torch, "ot": ot, "nn": torch.nn, "time": time,
                                 "tqdm": lambda items: items, "print": lambda *_: None}  # fmt: skip
    exec(source_of(checkout / "utils.py", "compute_cott"), namespace)
    batches = [(torch.tensor(np.asarray(source.logits["original"][i : i + 500])),
                torch.tensor(np.asarray(source.targets[i : i + 500])))
               for i in range(0, len(source.targets), 500)]  # fmt: skip
    original_cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # their code moves batches to a GPU
    try:
        threshold = namespace["compute_cott"](torch.nn.Identity(), batches, CLASSES, "COTT")
    finally:
        torch.Tensor.cuda = original_cuda
    return their_branch(
        checkout, "COTT", probabilities, get_threshold=lambda *_: threshold,
        model=None, val_iid_loader=None, args=None,
    )  # fmt: skip


def their_mano(checkout: Path, logits: np.ndarray, per_batch: bool) -> float:
    """Their ``MaNo.evaluate`` over batches of 128 (``per_batch``), or over one batch of all
    the images, as the paper defines the score; their criterion from ``uniform_cross_entropy``."""
    sys.path.insert(0, str(checkout))
    from algs.mano import MaNo

    size = 128 if per_batch else len(logits)
    batches = [(torch.tensor(logits[i : i + size]), torch.zeros(len(logits[i : i + size])))
               for i in range(0, len(logits), size)]  # fmt: skip
    mano = MaNo.__new__(MaNo)
    mano.base_model, mano.val_loader, mano.device = torch.nn.Identity(), batches, "cpu"
    mano.args = {"norm_type": 4, "delta": 0, "num_classes": CLASSES}
    mano.args["delta"] = float(mano.uniform_cross_entropy())
    return float(mano.evaluate())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cot", type=Path, help="a checkout of luyuzhe111/COT")
    parser.add_argument("--mano", type=Path, help="a checkout of Renchunzi-Xie/MaNo")
    parser.add_argument("--atc", type=Path, help="a checkout of saurabhgarg1996/ATC_code")
    args = parser.parse_args()
    from scipy.special import softmax

    from invkit.builtins.estimators import mano_score

    data = study()
    source = data.kept["m", "source"]
    for target in list(SETS)[1:]:
        kept = data.kept["m", target]
        logits = np.asarray(kept.logits["original"], dtype=np.float64)
        probabilities = softmax(logits, axis=1)
        print(f"{target}: true accuracy {kept.accuracy:.4f}")
        pairs = []
        if args.cot:
            pairs.append(("cot", ours("cot", data, target), their_cot(args.cot, probabilities)))
            theirs = their_cott(args.cot, source, probabilities)
            pairs.append(("cott", ours("cott", data, target), theirs))
        if args.mano:
            pairs.append(("mano score, one batch", mano_score(logits),
                          their_mano(args.mano, logits, per_batch=False)))  # fmt: skip
            pairs.append(("mano score, their batches of 128", mano_score(logits),
                          their_mano(args.mano, logits, per_batch=True)))  # fmt: skip
        if args.atc:
            sys.path.insert(0, str(args.atc))
            from predict_acc_helper import get_im_estimate

            correct = source.predictions == source.targets
            theirs = get_im_estimate(source.top_probs["original"][:, 0],
                                     kept.top_probs["original"][:, 0], correct) / 100  # fmt: skip
            pairs.append(("im", ours("im", data, target), float(theirs)))
        for name, mine, theirs in pairs:
            print(f"  {name:34s} invkit {mine:.10f}  authors {theirs:.10f}  "
                  f"difference {mine - theirs:+.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
