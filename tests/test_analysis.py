"""Analyses and their statistics, each checked against scipy or a direct formula."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

import invkit
from invkit.analysis import stats
from invkit.analysis.aggregate import summarize


def population(n_models=12, datasets=("val", "v2", "sketch"), seed=0, noise=0.02):
    """A synthetic study: accuracy roughly linear in invariance, per dataset."""
    rng = np.random.default_rng(seed)
    invariance = rng.uniform(0.3, 0.9, size=n_models)
    rows = []
    for d, dataset in enumerate(datasets):
        shift = 0.1 * d
        for m in range(n_models):
            inv = float(np.clip(invariance[m] - shift + rng.normal(0, 0.01), 0.01, 0.99))
            acc = float(np.clip(0.9 * inv + 0.05 + rng.normal(0, noise), 0.01, 0.99))
            rows.append(
                dict(
                    model=f"m{m:02d}",
                    dataset=dataset,
                    transform="rotation",
                    measure="ei",
                    invariance=inv,
                    accuracy=acc,
                )
            )
    return rows


def xy(rows, dataset):
    chosen = [r for r in rows if r["dataset"] == dataset]
    return np.array([r["invariance"] for r in chosen]), np.array([r["accuracy"] for r in chosen])


def test_model_centric_statistics_match_scipy_and_direct_formulas():
    rows = population()
    result = invkit.get_analysis("model_centric", n_bootstrap=200, seed=3)(rows)
    assert [g.group["dataset"] for g in result.groups] == ["val", "v2", "sketch"]
    for group in result.groups:
        x, y = xy(rows, group.group["dataset"])
        s = group.statistics
        r_direct = ((x - x.mean()) * (y - y.mean())).sum() / math.sqrt(
            ((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum()
        )
        assert s["pearson_r"] == pytest.approx(r_direct, abs=1e-12)
        assert s["pearson_p"] == pytest.approx(sps.pearsonr(x, y).pvalue, rel=1e-9)
        rho_direct = np.corrcoef(sps.rankdata(x), sps.rankdata(y))[0, 1]
        assert s["spearman_rho"] == pytest.approx(rho_direct, abs=1e-12)
        assert s["spearman_p"] == pytest.approx(sps.spearmanr(x, y).pvalue, rel=1e-9)
        pairs = list(itertools.combinations(range(len(x)), 2))
        concordance = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
        assert s["kendall_tau"] == pytest.approx(concordance / len(pairs), abs=1e-12)  # no ties
        assert s["kendall_p"] == pytest.approx(sps.kendalltau(x, y).pvalue, rel=1e-9)
        slope, intercept = np.polyfit(x, y, 1)
        residual = ((y - (slope * x + intercept)) ** 2).sum()
        assert s["r_squared"] == pytest.approx(
            1 - residual / ((y - y.mean()) ** 2).sum(), abs=1e-12
        )
        assert group.fit["least_squares_slope"] == pytest.approx(slope, rel=1e-10)
        slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i, j in pairs]
        assert group.fit["method"] == "theil_sen"
        assert group.fit["slope"] == pytest.approx(np.median(slopes), rel=1e-12)
        assert group.fit["intercept"] == pytest.approx(
            np.median(y) - np.median(slopes) * np.median(x), rel=1e-12
        )
        assert s["pearson_r"] > 0.8


def test_bootstrap_intervals_contain_the_estimate_are_seeded_and_match_a_recomputation():
    rows = population(n_models=15)
    analysis = invkit.get_analysis("model_centric", n_bootstrap=300, seed=42)
    first, second = analysis(rows), analysis(rows)
    assert first.to_dict() == second.to_dict()
    other = invkit.get_analysis("model_centric", n_bootstrap=300, seed=43)(rows)
    assert other.groups[0].intervals != first.groups[0].intervals
    g = first.groups[0]
    for name in ("pearson_r", "spearman_rho"):
        low, high = g.intervals[name]
        assert low <= g.statistics[name] <= high and low < high
    low, high = g.intervals["slope"]
    assert low <= g.fit["slope"] <= high
    # recompute the bootstrap of r with scipy on the same seeded resamples
    x, y = xy(rows, "val")
    idx = np.random.default_rng(42).integers(0, len(x), size=(300, len(x)))
    rs = [sps.pearsonr(x[i], y[i]).statistic for i in idx if np.ptp(x[i]) and np.ptp(y[i])]
    np.testing.assert_allclose(g.intervals["pearson_r"], np.percentile(rs, [2.5, 97.5]), rtol=1e-10)
    rhos = [sps.spearmanr(x[i], y[i]).statistic for i in idx if np.ptp(x[i]) and np.ptp(y[i])]
    np.testing.assert_allclose(
        g.intervals["spearman_rho"], np.percentile(rhos, [2.5, 97.5]), rtol=1e-10
    )
    band_low, band_high = np.array(g.band["low"]), np.array(g.band["high"])
    assert len(g.band["x"]) == 50 and (band_low <= band_high).all()
    fitted = g.fit["intercept"] + g.fit["slope"] * np.array(g.band["x"])
    assert ((band_low <= fitted + 1e-12) & (fitted <= band_high + 1e-12)).mean() > 0.9


def test_dataset_centric_groups_by_model():
    rows = population(n_models=3, datasets=("a", "b", "c", "d", "e"))
    result = invkit.get_analysis("dataset_centric", n_bootstrap=0)(rows)
    assert [g.group["model"] for g in result.groups] == ["m00", "m01", "m02"]
    g = result.groups[0]
    assert g.points == ["a", "b", "c", "d", "e"]
    chosen = [r for r in rows if r["model"] == "m00"]
    x = [r["invariance"] for r in chosen]
    y = [r["accuracy"] for r in chosen]
    assert g.statistics["pearson_r"] == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-12)
    assert g.intervals == {}  # no bootstrap asked


@pytest.mark.parametrize("kind", ["probit", "logit"])
def test_scaling_round_trips_and_matches_scipy(kind):
    values = np.linspace(0.001, 0.999, 101)
    scaled = stats.scale(values, kind)
    expected = sps.norm.ppf(values) if kind == "probit" else np.log(values / (1 - values))
    np.testing.assert_allclose(scaled, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(stats.unscale(scaled, kind), values, rtol=1e-12)
    assert np.isfinite(stats.scale(np.array([0.0, 1.0]), kind)).all()  # clipped, not infinite


def test_probit_scaling_changes_the_axes_the_statistics_use():
    rows = population()
    result = invkit.get_analysis("model_centric", n_bootstrap=0, scale_accuracy="probit")(rows)
    x, y = xy(rows, "val")
    g = result.groups[0]
    np.testing.assert_allclose(g.y, sps.norm.ppf(y), rtol=1e-12)
    assert g.statistics["pearson_r"] == pytest.approx(sps.pearsonr(x, sps.norm.ppf(y)).statistic)


def test_degenerate_groups_give_messages_not_crashes():
    base = dict(dataset="d", transform="rotation", measure="ei")
    rows = [
        dict(base, model="a", invariance=0.5, accuracy=0.7),
        dict(base, model="b", invariance=0.6, accuracy=0.8),
        dict(base, model="c", invariance=float("nan"), accuracy=0.9),
        dict(base, model="e", invariance=0.7, accuracy=None),
        dict(base, dataset="const", model="a", invariance=0.5, accuracy=0.7),
        dict(base, dataset="const", model="b", invariance=0.5, accuracy=0.8),
        dict(base, dataset="const", model="c", invariance=0.5, accuracy=0.9),
    ]
    result = invkit.get_analysis("model_centric")(rows)
    few, constant = result.groups
    assert few.message == "2 point(s); correlations need at least 3"
    assert few.statistics == {} and few.points == ["a", "b"]
    assert any("'c' left out: invariance is nan" in n for n in few.notes)
    assert any("'e' left out: no accuracy" in n for n in few.notes)
    assert constant.message == "invariance is the same (0.5) for every point"
    text = str(result)
    assert "not analysed: 2 point(s)" in text
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON: no NaN leaks out


def test_bad_tables_are_clear_errors():
    with pytest.raises(invkit.InvkitError, match="row 0 of the results table lacks accuracy"):
        invkit.get_analysis("model_centric")(
            [dict(model="a", dataset="d", transform="t", measure="m", invariance=0.5)]
        )
    row = dict(model="a", dataset="d", transform="t", measure="m", invariance=0.5, accuracy=0.5)
    with pytest.raises(invkit.InvkitError, match="two rows for model 'a'"):
        invkit.get_analysis("model_centric")([row, row])
    with pytest.raises(invkit.InvkitError, match="unknown axis scaling 'log'"):
        invkit.get_analysis("model_centric", scale_accuracy="log")


def test_predict_accuracy_matches_the_textbook_prediction_interval():
    rows = population(n_models=2, datasets=tuple("abcdefgh"), noise=0.03)
    hidden = {"g", "h"}
    truth = {(r["model"], r["dataset"]): r["accuracy"] for r in rows}
    table = [dict(r, accuracy=None) if r["dataset"] in hidden else r for r in rows]
    result = invkit.get_analysis("predict_accuracy", scale_accuracy="none")(table)
    assert [g.group["model"] for g in result.groups] == ["m00", "m01"]
    g = result.groups[0]
    labeled = [r for r in rows if r["model"] == "m00" and r["dataset"] not in hidden]
    x = np.array([r["invariance"] for r in labeled])
    y = np.array([r["accuracy"] for r in labeled])
    n = len(x)
    design = np.column_stack([np.ones(n), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    s2 = ((y - design @ beta) ** 2).sum() / (n - 2)
    t = sps.t.ppf(0.975, n - 2)
    for prediction in g.predictions:
        x0 = prediction["invariance"]
        center = beta[0] + beta[1] * x0
        var = s2 * (1 + np.array([1, x0]) @ np.linalg.inv(design.T @ design) @ np.array([1, x0]))
        low, high = center - t * math.sqrt(var), center + t * math.sqrt(var)
        assert prediction["accuracy"] == pytest.approx(center, rel=1e-10)
        assert prediction["low"] == pytest.approx(max(low, 0), rel=1e-10, abs=1e-15)  # clipped
        assert prediction["high"] == pytest.approx(min(high, 1), rel=1e-10)
        assert prediction["clipped"] == (low < 0 or high > 1)
        actual = truth[("m00", prediction["point"])]
        assert prediction["low"] < actual < prediction["high"]
    assert [p["point"] for p in g.predictions] == ["g", "h"]
    errors = []
    for i in range(n):
        keep = np.arange(n) != i
        slope, intercept = np.polyfit(x[keep], y[keep], 1)
        errors.append(abs(slope * x[i] + intercept - y[i]))
    assert g.statistics["loo_mae"] == pytest.approx(np.mean(errors), rel=1e-10)
    assert "predicted g" in str(result)


def test_predictions_never_leave_0_1_and_say_when_they_extrapolate():
    """A line through accuracies near 0 predicts below 0 further out: on the probit axis (the
    default) the prediction stays inside (0, 1); on the linear axis it is clipped and says so.
    A held-out set's true accuracy travels with its prediction."""
    points = [("a", 0.30, 0.20), ("b", 0.25, 0.12), ("c", 0.20, 0.07), ("d", 0.15, 0.04),
              ("near", 0.22, None), ("far", 0.02, None)]  # fmt: skip
    rows = [
        {"model": "m", "dataset": d, "transform": "rotation", "measure": "ei",
         "invariance": x, "accuracy": y, "true_accuracy": 0.09 if d == "near" else None}
        for d, x, y in points
    ]  # fmt: skip
    linear = invkit.get_analysis("predict_accuracy", scale_accuracy="none")(rows)
    probit = invkit.get_analysis("predict_accuracy")(rows)
    near, far = linear.groups[0].predictions
    assert not near["clipped"] and not near["extrapolated"] and near["true_accuracy"] == 0.09
    slope, intercept = np.polyfit([0.30, 0.25, 0.20, 0.15], [0.20, 0.12, 0.07, 0.04], 1)
    assert intercept + slope * 0.02 < 0  # the straight line leaves [0, 1] ...
    assert far["accuracy"] == 0.0 and far["low"] == 0.0 and far["clipped"]  # ... so it is clipped
    assert far["extrapolated"] and far["true_accuracy"] is None
    for prediction in probit.groups[0].predictions:
        assert 0 < prediction["low"] <= prediction["accuracy"] <= prediction["high"] < 1
        assert not prediction["clipped"]
    x = np.array([0.30, 0.25, 0.20, 0.15])
    line = np.polyfit(x, sps.norm.ppf([0.20, 0.12, 0.07, 0.04]), 1)
    expected = sps.norm.cdf(np.polyval(line, 0.22))  # fitted on probit(accuracy), mapped back
    assert probit.groups[0].predictions[0]["accuracy"] == pytest.approx(expected, rel=1e-9)
    text = linear.to_markdown()
    assert "0.0000*†" in text and "| 0.0900 |" in text and "unknown" in text


def test_predict_accuracy_across_models_with_probit_axes():
    rows = population(n_models=10, datasets=("val",))
    table = [dict(r, accuracy=None) if r["model"] == "m09" else r for r in rows]
    result = invkit.get_analysis("predict_accuracy", points="model", scale_accuracy="probit")(table)
    [g] = result.groups
    [prediction] = g.predictions
    assert prediction["point"] == "m09"
    x = np.array(g.x)
    slope, intercept = np.polyfit(x, np.array(g.y), 1)
    assert prediction["accuracy"] == pytest.approx(
        sps.norm.cdf(intercept + slope * rows[9]["invariance"])
    )
    assert 0 < prediction["low"] < prediction["accuracy"] < prediction["high"] < 1


def test_summary_bootstrap_of_a_mean():
    values = np.random.default_rng(0).beta(2, 5, size=400)
    plain = summarize(values)
    assert plain.mean == pytest.approx(values.mean(), rel=1e-12) and plain.low is None
    boot = summarize(values, bootstrap=True, n_resamples=1000, seed=1)
    assert boot.low < boot.mean < boot.high
    assert boot == summarize(values, bootstrap=True, n_resamples=1000, seed=1)
    reference = sps.bootstrap(
        (values,), np.mean, n_resamples=5000, method="percentile", rng=np.random.default_rng(2)
    ).confidence_interval
    assert boot.low == pytest.approx(reference.low, abs=0.003)
    assert boot.high == pytest.approx(reference.high, abs=0.003)
    standard_error = values.std(ddof=1) / math.sqrt(len(values))
    assert boot.high - boot.low == pytest.approx(2 * 1.96 * standard_error, rel=0.1)


@pytest.mark.parametrize("method", ["theil_sen", "least_squares"])
def test_vectorized_line_fits_match_scipy_per_row(method):
    rng = np.random.default_rng(5)
    x = np.round(rng.uniform(0, 1, size=(40, 9)), 1)  # rounded: many tied x values
    y = 0.7 * x + rng.normal(0, 0.1, size=x.shape)
    slopes, intercepts = stats.fit_lines(x, y, method)
    for row in range(len(x)):
        if method == "theil_sen":
            expected = sps.theilslopes(y[row], x[row])
        else:
            expected = sps.linregress(x[row], y[row])
        assert slopes[row] == pytest.approx(expected.slope, rel=1e-12, abs=1e-12)
        assert intercepts[row] == pytest.approx(expected.intercept, rel=1e-12, abs=1e-12)


def test_point_labels_never_overlap_and_accuracy_stays_in_0_1():
    """Twelve models crowded in one corner: every label drawn keeps clear of the others, and
    a band reaching past 1 is clipped to the axis, which stays inside [0, 1]."""
    from invkit.analysis.render import figures

    rng = np.random.default_rng(1)
    invariance = 0.5 + rng.normal(0, 0.01, 12)
    rows = [
        {"model": f"model-{i:02d}", "dataset": "val", "transform": "rotation", "measure": "js",
         "invariance": x, "accuracy": min(0.99, 0.9 + 0.5 * (x - 0.5) + rng.normal(0, 0.01)),
         "higher_is_invariant": False}
        for i, x in enumerate(invariance)
    ]  # fmt: skip
    result = invkit.get_analysis("model_centric", n_bootstrap=200)(rows)
    (heatmap, _), (title, figure) = figures(result)  # the heatmap first: the Summary shows it
    [axes] = figure.axes
    assert (title, heatmap) == ("rotation-js", "heatmap-r")
    assert "(↓ lower = more invariant)" in axes.get_xlabel()
    low, high = axes.get_ylim()
    assert 0 <= low < high <= 1
    band = [c for c in axes.collections if type(c).__name__.endswith("PolyCollection")]
    assert band and max(p.vertices[:, 1].max() for p in band[0].get_paths()) <= high
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in axes.texts]
    assert 4 <= len(boxes) <= 12  # crowded: some left out rather than printed on each other
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_small_values_keep_significant_digits_in_tables():
    from invkit.analysis.render import format_value

    assert format_value(2.345678e-05) == "2.35e-05"  # a JS divergence, not "0.0000"
    assert format_value(0.123456) == "0.1235" and format_value(0.0) == "0.0000"
    assert format_value(-0.004321) == "-0.00432" and format_value(None) == ""


def test_fit_lines_stop_at_the_accuracy_axis():
    from invkit.analysis.analyses import GroupResult
    from invkit.analysis.render import _fit_segment

    group = GroupResult({"dataset": "d"}, ["a", "b", "c"], [0.2, 0.5, 0.9], [0.6, 0.8, 0.99],
                        fit={"intercept": 0.4, "slope": 0.8})  # fmt: skip
    xs, ys = _fit_segment(group, (0.5, 1.0))
    assert xs == [0.2, pytest.approx(0.75)] and ys == [pytest.approx(0.56), pytest.approx(1.0)]
    inside = _fit_segment(group, (0.0, 2.0))
    assert inside == ([0.2, 0.9], [pytest.approx(0.56), pytest.approx(1.12)])
    assert _fit_segment(group, (0.0, 0.3)) == ([], [])  # the line never enters the axis


def test_the_summary_signs_r_so_that_positive_means_more_invariant_more_accurate():
    """For a measure where lower is more invariant (JS), the Summary's r, ρ and their
    intervals are the raw ones negated (bounds swapped); for EI they are the raw ones."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 10)
    y = 0.3 + 0.5 * x + rng.normal(0, 0.05, 10)
    rows = [
        {"model": f"m{i}", "dataset": "val", "transform": "rotation", "measure": measure,
         "invariance": float(xi), "accuracy": float(yi), "higher_is_invariant": higher}
        for measure, higher in (("js", False), ("ei", True))
        for i, (xi, yi) in enumerate(zip(x, y, strict=True))
    ]  # fmt: skip
    result = invkit.get_analysis("model_centric", n_bootstrap=100)(rows)
    text = result.summary()
    r = sps.pearsonr(x, y).statistic
    rho = sps.spearmanr(x, y).statistic
    js = next(line for line in text.splitlines() if line.startswith("| rotation js ↓"))
    ei = next(line for line in text.splitlines() if line.startswith("| rotation ei ↑"))
    assert f"r {-r:.3f} [" in js and f"ρ {-rho:.3f} [" in js
    assert f"r {r:.3f} [" in ei and f"ρ {rho:.3f} [" in ei
    [group] = [g for g in result.groups if g.group["measure"] == "js"]
    low, high = group.intervals["pearson_r"]
    assert f"r {-r:.3f} [{-high:.3f}, {-low:.3f}]" in js
    assert text.index("tracks accuracy best") < text.index("| invariance (r, ρ")
