"""The statistics behind invkit's analyses: axis scaling, correlations, line fits, bootstrap.

Pure numpy/scipy on 1-D arrays of finite values; the analyses handle tables and bad input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from invkit.errors import InvkitError

SCALES = ("none", "probit", "logit")
FITS = ("theil_sen", "least_squares")
SCALE_EPS = 1e-6  # values are clipped to [eps, 1 - eps] before probit or logit


def check_scale(kind: str | None) -> str:
    kind = kind or "none"
    if kind not in SCALES:
        raise InvkitError(f"unknown axis scaling {kind!r}; choose one of {', '.join(SCALES)}")
    return kind


def scale(values: np.ndarray, kind: str | None) -> np.ndarray:
    """Map values in [0, 1] to the probit (Φ⁻¹) or logit axis; ``none`` leaves them."""
    from scipy import special  # scipy loads when a statistic is first computed

    kind = check_scale(kind)
    values = np.asarray(values, dtype=np.float64)
    if kind == "none":
        return values
    clipped = np.clip(values, SCALE_EPS, 1 - SCALE_EPS)
    return special.ndtri(clipped) if kind == "probit" else special.logit(clipped)


def unscale(values: np.ndarray, kind: str | None) -> np.ndarray:
    """The inverse of ``scale`` (Φ or the logistic function)."""
    from scipy import special  # scipy loads when a statistic is first computed

    kind = check_scale(kind)
    values = np.asarray(values, dtype=np.float64)
    if kind == "none":
        return values
    return special.ndtr(values) if kind == "probit" else special.expit(values)


@dataclass(frozen=True)
class Line:
    slope: float
    intercept: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.asarray(x, dtype=np.float64)


def fit_line(x: np.ndarray, y: np.ndarray, method: str) -> Line:
    """Least-squares line, or the robust Theil–Sen line (median of pairwise slopes)."""
    from scipy import stats  # scipy loads when a statistic is first computed

    if method == "least_squares":
        result = stats.linregress(x, y)
        return Line(float(result.slope), float(result.intercept))
    if method == "theil_sen":
        with warnings.catch_warnings():  # its slope interval (unused) warns on tiny samples
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.theilslopes(y, x)
        return Line(float(result.slope), float(result.intercept))
    raise InvkitError(f"unknown fit {method!r}; choose one of {', '.join(FITS)}")


PAIRS_PER_CHUNK = 4_000_000  # bounds the memory of the pairwise-slope arrays


def fit_lines(xs: np.ndarray, ys: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """``fit_line`` for many point sets at once (rows of ``xs`` and ``ys``): slopes, intercepts.

    Theil–Sen as scipy computes it: the median of the slopes over pairs with distinct x, and
    the intercept median(y) − slope · median(x).
    """
    if method == "least_squares":
        xc = xs - xs.mean(axis=1, keepdims=True)
        yc = ys - ys.mean(axis=1, keepdims=True)
        slopes = (xc * yc).sum(axis=1) / (xc**2).sum(axis=1)
        return slopes, ys.mean(axis=1) - slopes * xs.mean(axis=1)
    if method != "theil_sen":
        raise InvkitError(f"unknown fit {method!r}; choose one of {', '.join(FITS)}")
    n = xs.shape[1]
    first, second = np.triu_indices(n, k=1)
    rows = max(1, PAIRS_PER_CHUNK // max(len(first), 1))
    slopes = np.empty(len(xs))
    for start in range(0, len(xs), rows):
        x, y = xs[start : start + rows], ys[start : start + rows]
        dx = x[:, second] - x[:, first]
        dy = y[:, second] - y[:, first]
        with np.errstate(invalid="ignore", divide="ignore"):
            pairwise = np.where(dx != 0, dy / dx, np.nan)
        slopes[start : start + rows] = np.nanmedian(pairwise, axis=1)
    return slopes, np.median(ys, axis=1) - slopes * np.median(xs, axis=1)


def correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson r, Spearman ρ and Kendall τ-b with two-sided p-values, and the R² of the LS line."""
    from scipy import stats  # scipy loads when a statistic is first computed

    pearson = stats.pearsonr(x, y)
    spearman = stats.spearmanr(x, y)
    kendall = stats.kendalltau(x, y)
    return {
        "pearson_r": float(pearson.statistic),
        "pearson_p": float(pearson.pvalue),
        "spearman_rho": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
        "kendall_tau": float(kendall.statistic),
        "kendall_p": float(kendall.pvalue),
        "r_squared": float(pearson.statistic**2),
    }


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (xc * yc).sum(axis=1) / denominator, np.nan)


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile intervals from resampling the points (pairs) with replacement."""

    pearson_r: tuple[float, float]
    spearman_rho: tuple[float, float]
    slope: tuple[float, float]
    intercept: tuple[float, float]
    band_x: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    n_valid: int  # resamples with at least two distinct x and y values


def bootstrap(
    x: np.ndarray,
    y: np.ndarray,
    fit: str,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    band_points: int = 50,
) -> BootstrapResult:
    """Seeded pairs bootstrap of r, ρ and the fitted line, with a pointwise band for the line."""
    from scipy import stats  # scipy loads when a statistic is first computed

    rng = np.random.default_rng(seed)
    n = len(x)
    idx = rng.integers(0, n, size=(n_resamples, n))
    xs, ys = x[idx], y[idx]
    valid = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    if not valid.any():
        raise InvkitError("every bootstrap resample had constant values; no interval possible")
    xs, ys = xs[valid], ys[valid]
    r = _rowwise_pearson(xs, ys)
    rho = _rowwise_pearson(stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1))
    slopes, intercepts = fit_lines(xs, ys, fit)
    grid = np.linspace(x.min(), x.max(), band_points)
    predictions = intercepts[:, None] + slopes[:, None] * grid[None, :]
    tail = (1 - confidence) / 2 * 100
    q = [tail, 100 - tail]

    def interval(values: np.ndarray) -> tuple[float, float]:
        low, high = np.nanpercentile(values, q)
        return float(low), float(high)

    low_band, high_band = np.percentile(predictions, q, axis=0)
    return BootstrapResult(
        pearson_r=interval(r),
        spearman_rho=interval(rho),
        slope=interval(slopes),
        intercept=interval(intercepts),
        band_x=grid,
        band_low=low_band,
        band_high=high_band,
        n_valid=int(valid.sum()),
    )


def prediction_interval(
    x: np.ndarray, y: np.ndarray, x_new: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares prediction at ``x_new`` with its prediction interval (t with n − 2 df)."""
    from scipy import stats  # scipy loads when a statistic is first computed

    n = len(x)
    line = fit_line(x, y, "least_squares")
    residuals = y - line(x)
    s = np.sqrt((residuals**2).sum() / (n - 2))
    sxx = ((x - x.mean()) ** 2).sum()
    x_new = np.asarray(x_new, dtype=np.float64)
    t = stats.t.ppf(0.5 + confidence / 2, n - 2)
    half = t * s * np.sqrt(1 + 1 / n + (x_new - x.mean()) ** 2 / sxx)
    center = line(x_new)
    return center, center - half, center + half
