"""Each measure against an independent numpy implementation of its formula."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

import invkit
from invkit.analysis.aggregate import view_average

SHAPES = [(1, 2), (7, 3), (64, 10), (33, 1000)]


def np_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference(name: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Direct, loop-based formulas in float64 (deliberately not vectorized like invkit's)."""
    out = []
    for a, b in zip(p, q, strict=True):
        ia, ib = int(np.argmax(a)), int(np.argmax(b))
        if name == "ei":
            out.append(math.sqrt(a[ia] * b[ib]) if ia == ib else 0.0)
        elif name == "agreement":
            out.append(float(ia == ib))
        elif name in ("js", "kl"):

            def kl(x, y):
                terms = [
                    math.inf if yi == 0 else xi * math.log(xi / yi)
                    for xi, yi in zip(x, y, strict=True)
                    if xi > 0
                ]
                return sum(terms)

            # rounded inputs that do not sum to exactly 1 can give tiny negative divergences;
            # invkit reports those as 0, the true divergence of distributions
            if name == "kl":
                out.append(max(0.0, kl(a, b)))
            else:
                m = [(x + y) / 2 for x, y in zip(a, b, strict=True)]
                out.append(max(0.0, 0.5 * kl(a, m) + 0.5 * kl(b, m)))
        elif name == "l2":
            out.append(math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True))))
        elif name == "cosine":
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            out.append(dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)))
    return np.array(out)


def softmax_pairs(shape, seed):
    """Pairs of softmax batches mixing agreeing/disagreeing, confident/flat distributions."""
    rng = np.random.default_rng(seed)
    b = shape[0]
    temperature = rng.choice([0.05, 1.0, 20.0], size=(b, 1))  # confident ... flat
    logits = rng.normal(size=shape) / temperature
    p = np_softmax(logits)
    noise = rng.normal(scale=rng.choice([0.01, 0.5, 5.0], size=(b, 1)), size=shape)
    q = np_softmax(logits + noise / temperature)
    return p, q


@pytest.mark.parametrize("name", ["ei", "agreement", "js", "kl", "l2", "cosine"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("draw", range(5))
def test_matches_the_formula_on_random_softmax(name, shape, draw):
    p, q = softmax_pairs(shape, seed=zlib.crc32(repr((name, shape, draw)).encode()))
    measure = invkit.get_measure(name)
    got = measure(torch.from_numpy(p), torch.from_numpy(q)).numpy()
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, reference(name, p, q), rtol=1e-10, atol=1e-12)
    # float32 input (a model's usual softmax) is measured exactly as given, in float64 math
    p32, q32 = torch.from_numpy(p).float(), torch.from_numpy(q).float()
    got32 = measure(p32, q32).numpy()
    expected32 = reference(name, p32.double().numpy(), q32.double().numpy())
    np.testing.assert_allclose(got32, expected32, rtol=1e-10, atol=1e-12)


def test_inputs_include_both_agreeing_and_disagreeing_predictions():
    p, q = softmax_pairs((64, 10), seed=3)
    agree = p.argmax(1) == q.argmax(1)
    assert 0 < agree.sum() < len(agree)


def test_exact_zeros_and_ties():
    p = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # one-hot, agreeing
            [0.5, 0.5, 0.0],  # a tie: argmax is the first index, 0
            [0.0, 1.0, 0.0],  # disjoint supports
            [0.4, 0.4, 0.2],  # tie against a view that prefers class 1
        ],
        dtype=torch.float64,
    )
    q = torch.tensor(
        [[1.0, 0.0, 0.0], [0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [0.3, 0.5, 0.2]],
        dtype=torch.float64,
    )
    ei = invkit.get_measure("ei")(p, q)
    np.testing.assert_allclose(ei.numpy(), [1.0, math.sqrt(0.5 * 0.7), 0.0, 0.0])
    js = invkit.get_measure("js")(p, q)
    assert torch.isfinite(js).all()
    np.testing.assert_allclose(js.numpy(), reference("js", p.numpy(), q.numpy()), atol=1e-15)
    assert js[0] == 0 and js[2] == pytest.approx(math.log(2))  # identical, disjoint
    kl = invkit.get_measure("kl")(p, q)
    assert kl[0] == 0 and math.isinf(kl[2])  # the view gives 0 where the original gives 1
    smoothed = invkit.get_measure("kl", eps=1e-6)(p, q)
    assert torch.isfinite(smoothed).all() and smoothed[2] > 10


def test_paper_toy_examples():
    """Deng et al. (2022), Fig. 1: EI separates cases that JS does not."""
    ei, js = invkit.get_measure("ei"), invkit.get_measure("js")
    confident = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.7, 0.3]])
    flat = torch.tensor([[0.55, 0.45]]), torch.tensor([[0.51, 0.49]])
    assert ei(*confident).item() == pytest.approx(math.sqrt(0.9 * 0.7), rel=1e-6)
    assert ei(*flat).item() == pytest.approx(math.sqrt(0.55 * 0.51), rel=1e-6)
    flipped = torch.tensor([[0.51, 0.49]]), torch.tensor([[0.49, 0.51]])
    assert ei(*flipped).item() == 0.0 and js(*flipped).item() < 1e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_ranges_and_symmetry(shape):
    p, q = (torch.from_numpy(a) for a in softmax_pairs(shape, seed=11))
    ei = invkit.get_measure("ei")(p, q)
    assert ((ei >= 0) & (ei <= 1)).all()
    js = invkit.get_measure("js")
    torch.testing.assert_close(js(p, q), js(q, p), rtol=0, atol=1e-15)
    assert ((js(p, q) >= 0) & (js(p, q) <= math.log(2) + 1e-12)).all()


def test_directions_and_labels_are_declared():
    directions = {m.name: m.factory.higher_is_invariant for m in invkit.list_components("measure")}
    assert directions == {
        "ei": True,
        "agreement": True,
        "cosine": True,
        "js": False,
        "kl": False,
        "l2": False,
        "lie_derivative": False,
    }
    assert not any(m.factory.needs_labels for m in invkit.list_components("measure"))


def test_per_sample_averages_over_views():
    p, q1 = (torch.from_numpy(a) for a in softmax_pairs((20, 5), seed=1))
    _, q2 = (torch.from_numpy(a) for a in softmax_pairs((20, 5), seed=2))
    ei = invkit.get_measure("ei")
    torch.testing.assert_close(view_average(ei, p, [q1, q2]), (ei(p, q1) + ei(p, q2)) / 2)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(invkit.InvkitError, match=r"same shape \(B, K\)"):
        invkit.get_measure("ei")(torch.rand(4, 3), torch.rand(4, 5))
