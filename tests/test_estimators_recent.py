"""The field's recent estimators (COT, COTT, MaNo, importance weighting), each checked on
synthetic logits against an independent computation: scipy's linear program and Hungarian
assignment for the optimal transport, torch's own norms for MaNo, a loop over bins for the
importance weights. ``test_estimators.py`` runs them on a real study's kept outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
import scipy.special
import torch

import invkit
from invkit.analysis.estimation import StudyData
from invkit.builtins.estimators import mano_score, transport_costs
from invkit.results.outputs import Outputs

K = 10


def synthetic(seed: int, n: int, spread: float, balanced: bool = False):
    """Logits of a model that is right on about ``spread``-dependent share of ``n`` images."""
    rng = np.random.default_rng(seed)
    targets = np.tile(np.arange(K), n // K) if balanced else rng.integers(0, K, n)
    logits = rng.normal(size=(n, K))
    logits[np.arange(n), targets] += spread
    return logits.astype(np.float32), targets


def study(source_spread: float = 2.5, target_spread: float = 1.0, n: int = 300) -> StudyData:
    sets = {"source": synthetic(0, n, source_spread), "target": synthetic(1, n, target_spread)}
    outputs = {("m", name): Outputs.from_logits("m", name, *sets[name]) for name in sets}
    rows = [
        {"model": "m", "dataset": name, "transform": "rotation", "measure": "ei",
         "invariance": math.nan, "accuracy": outputs["m", name].accuracy,
         "source": name == "source"}
        for name in sets
    ]  # fmt: skip
    data = StudyData(rows, outputs)
    data.target = "target"
    return data


def estimate(name: str, data: StudyData, **params) -> float:
    answer = invkit.get_component("estimator", name).create(**params)("m", "target", data)
    return getattr(answer, "value", answer)


def transport_by_linear_program(probs: np.ndarray, weights: np.ndarray) -> float:
    """The total transport cost as scipy's HiGHS solves the N × K linear program."""
    n, k = probs.shape
    rows = scipy.sparse.kron(scipy.sparse.eye(n), np.ones((1, k)))
    columns = scipy.sparse.kron(np.ones((1, n)), scipy.sparse.eye(k))
    found = scipy.optimize.linprog(
        (1.0 - probs).ravel(), A_eq=scipy.sparse.vstack([rows, columns]),
        b_eq=np.concatenate([np.full(n, 1.0 / n), weights]), bounds=(0, None), method="highs",
    )  # fmt: skip
    assert found.status == 0
    return found.fun


def test_cot_is_one_minus_the_exact_transport_cost():
    data = study()
    source, target = data.kept["m", "source"], data.kept["m", "target"]
    weights = np.bincount(source.targets, minlength=K) / len(source.targets)
    probs = scipy.special.softmax(np.asarray(target.logits["original"], np.float64), axis=1)
    direct = 1.0 - transport_by_linear_program(probs, weights)
    assert estimate("cot", data) == pytest.approx(direct, abs=1e-9)
    assert abs(estimate("cot", data) - target.accuracy) < 0.1  # and it estimates accuracy


def test_each_images_transport_cost_equals_the_hungarian_assignment_to_sampled_labels():
    logits, _ = synthetic(2, 200, 1.5, balanced=True)
    probs = scipy.special.softmax(logits.astype(np.float64), axis=1)
    labels = np.repeat(np.arange(K), 200 // K)  # N one-hot labels in the classes' proportions
    cost = 1.0 - probs[:, labels]  # image i to label j: ½‖p_i − e_j‖₁
    rows, columns = scipy.optimize.linear_sum_assignment(cost)
    ours = transport_costs(probs, np.full(K, 1.0 / K))
    np.testing.assert_allclose(ours[rows], cost[rows, columns], atol=1e-9)


def test_cott_counts_target_costs_within_the_source_threshold():
    data = study()
    source, target = data.kept["m", "source"], data.kept["m", "target"]
    weights = np.bincount(source.targets, minlength=K) / len(source.targets)

    def costs(outputs):
        probs = scipy.special.softmax(np.asarray(outputs.logits["original"], np.float64), axis=1)
        return transport_costs(probs, weights)

    right = int(np.sum(source.predictions == source.targets))
    cut = np.sort(costs(source))[right - 1]  # the right-th smallest source cost
    direct = float(np.mean(costs(target) <= cut))
    assert estimate("cott", data) == pytest.approx(direct, abs=1e-12)
    assert float(np.mean(costs(source) <= cut)) == pytest.approx(source.accuracy)


def test_a_bounded_transport_runs_exactly_on_its_drawn_images_and_says_so():
    data = study(n=300)
    source, target = data.kept["m", "source"], data.kept["m", "target"]
    weights = np.bincount(source.targets, minlength=K) / len(source.targets)
    drawn = np.sort(np.random.default_rng(0).choice(300, 120, replace=False))
    probs = scipy.special.softmax(np.asarray(target.logits["original"], np.float64)[drawn], 1)
    answer = invkit.get_component("estimator", "cot").create(max_images=120)("m", "target", data)
    assert answer.value == pytest.approx(
        1.0 - transport_by_linear_program(probs, weights), abs=1e-9
    )
    assert answer.detail == "transport on 120 of 300 images, drawn with seed 0"
    assert answer.value != pytest.approx(estimate("cot", data), abs=1e-6)  # not all images
    assert estimate("cot", data, max_images="all") == estimate("cot", data)  # 300 < 10,000
    with pytest.raises(
        invkit.errors.InvkitError, match='max_images must be a positive integer or "all"'
    ):
        estimate("cott", data, max_images=0)


def test_a_bounded_cott_sends_the_drawn_source_images_to_their_own_labels():
    data = study(n=300)
    source, target = data.kept["m", "source"], data.kept["m", "target"]
    drawn = np.sort(np.random.default_rng(0).choice(300, 120, replace=False))

    def costs(outputs, weights):
        logits = np.asarray(outputs.logits["original"], np.float64)[drawn]
        return transport_costs(scipy.special.softmax(logits, axis=1), weights)

    own = np.bincount(source.targets[drawn], minlength=K) / 120
    right = source.predictions[drawn] == source.targets[drawn]
    cut = np.sort(costs(source, own))[int(right.sum()) - 1]
    everyone = np.bincount(source.targets, minlength=K) / 300
    direct = float(np.mean(costs(target, everyone) <= cut))
    assert estimate("cott", data, max_images=120) == pytest.approx(direct, abs=1e-12)


def mano_in_torch(logits: np.ndarray, norm: int = 4) -> float:
    """The paper's score with torch's own functions."""
    z = torch.tensor(logits, dtype=torch.float64)
    uniform = torch.full_like(z, 1.0 / z.shape[1])
    if torch.nn.functional.cross_entropy(z, uniform) > 5:
        q = torch.softmax(z, dim=1)
    else:
        q = 1 + z + z**2 / 2
        q = torch.nn.functional.normalize(q - q.min(dim=1, keepdim=True)[0], p=1, dim=1)
    return (torch.linalg.vector_norm(q, ord=norm) / (q.numel() ** (1 / norm))).item()


@pytest.mark.parametrize("scale", [1.0, 40.0])  # the Taylor rows, then the softmax rows
def test_mano_score_equals_the_papers_formula_in_torch(scale):
    logits, _ = synthetic(3, 300, 2.0)
    logits = logits * scale
    z = torch.tensor(logits, dtype=torch.float64)
    uniform_ce = torch.nn.functional.cross_entropy(z, torch.full_like(z, 0.1)).item()
    assert (uniform_ce > 5) == (scale > 1)  # both branches are exercised
    for norm in (4, 2):
        assert mano_score(logits, norm) == pytest.approx(mano_in_torch(logits, norm), abs=1e-12)


def test_importance_weighting_equals_a_loop_over_confidence_bins():
    data = study()
    source, target = data.kept["m", "source"], data.kept["m", "target"]
    mine, theirs = source.top_probs["original"][:, 0], target.top_probs["original"][:, 0]
    correct = source.predictions == source.targets
    bins = 10
    total, weight_sum = 0.0, 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (mine >= low) & ((mine < high) if b < bins - 1 else (mine <= high))
        there = (theirs >= low) & ((theirs < high) if b < bins - 1 else (theirs <= high))
        if inside.any():
            weight = (there.mean()) / (inside.mean())
            total += weight * correct[inside].sum()
            weight_sum += weight * inside.sum()
    assert estimate("im", data) == pytest.approx(total / weight_sum, abs=1e-12)


def test_the_recent_estimators_say_what_they_need():
    data = study()
    summary = Outputs.from_logits("m", "target", *synthetic(1, 300, 1.0))
    summary.logits.clear()  # as a study with run.outputs = "summary" keeps them
    data.kept["m", "target"] = summary
    for name in ("cot", "cott"):
        with pytest.raises(invkit.errors.EstimatorNeeds, match="run.outputs = 'full'"):
            estimate(name, data)
    mano = invkit.get_component("estimator", "mano").create()
    with pytest.raises(invkit.errors.EstimatorNeeds, match="run.outputs = 'full'"):
        mano.dataset_score("m", "target", data)
    with pytest.raises(invkit.InvkitError, match="bins must be a positive integer"):
        invkit.get_component("estimator", "im").create(bins=0)
