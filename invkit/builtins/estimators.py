"""Built-in label-free accuracy estimators, each as its paper defines it (docs/estimators.md).

Direct estimators fit on the same model's outputs on the labeled source set; agreement
estimators compare several models' predictions on the same images; line fits regress accuracy
on a dataset score across the labeled test sets and read it off at the target's score. Each
reads the study's kept outputs: adding one to a finished study runs no forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from invkit.analysis.linefit import LineFit, cdf, probit
from invkit.errors import EstimatorNeeds, InvkitError
from invkit.plugin.components import Estimate, Estimator
from invkit.plugin.hookspecs import hookimpl

ALINE_MIN_R2 = 0.9  # docs/estimators.md: why this default


def _confidence(outputs: Any) -> np.ndarray:
    return np.asarray(outputs.top_probs["original"][:, 0], dtype=np.float64)


class AverageConfidence(Estimator):
    """AC: the mean max-softmax probability on the target (Hendrycks & Gimpel 2017)."""

    name = "ac"
    reads = "the target's top-1 probabilities"

    def __call__(self, model, target, study):
        return float(_confidence(study.outputs(model, target, self.name)).mean())


class DifferenceOfConfidences(Estimator):
    """DoC: source accuracy − (source − target mean confidence) (Guillory et al. 2021)."""

    name = "doc"
    reads = "the source's accuracy and top-1 probabilities, the target's top-1 probabilities"

    def __call__(self, model, target, study):
        source, accuracy = study.need_source(self.name, model)
        drop = _confidence(source).mean() - _confidence(study.outputs(model, target, self.name))
        return float(accuracy - drop.mean())


def full_logits(outputs: Any, needer: str) -> np.ndarray:
    """The kept logits on the originals, as float64; ``EstimatorNeeds`` naming ``needer`` and
    the setting that keeps them when the study kept only summaries."""
    if "original" not in outputs.logits:
        raise EstimatorNeeds(
            f"{needer} needs the logits of {outputs.model!r} × {outputs.dataset!r}: run the "
            "study with run.outputs = 'full'"
        )
    return np.asarray(outputs.logits["original"], dtype=np.float64)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Each row's softmax, in float64."""
    from scipy.special import softmax

    return softmax(np.asarray(logits, dtype=np.float64), axis=1)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T) on
    labeled images (Guo et al. 2017), as ATC's authors calibrate the source."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(targets))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, targets].mean())

    found = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(found.x))


@dataclass(frozen=True)
class Threshold:
    """ATC's threshold t, and the share of the images scoring exactly t that count as above it.

    With distinct scores that share is 1 and ``share`` is the fraction scoring ≥ t, as Garg et
    al. define it. Tied scores cannot be split by any t, so the ties are broken at random, in
    expectation: each image tied at t counts ``tied_above``, the share of the source's tied
    images that must lie above t for the source to reproduce its accuracy."""

    value: float
    tied_above: float

    def share(self, scores: np.ndarray) -> float:
        """The share of images above the threshold (each tie at it counted ``tied_above``)."""
        scores = np.asarray(scores, dtype=np.float64)
        above = np.count_nonzero(scores > self.value)
        tied = np.count_nonzero(scores == self.value)
        return float((above + self.tied_above * tied) / len(scores))


def atc_threshold(scores: np.ndarray, correct: np.ndarray) -> Threshold:
    """ATC's threshold: the score t with as many wrong source images above it as right ones
    below it, so that the share of source images above t is exactly the source accuracy (ties
    at t broken at random, in expectation: ``Threshold``)."""
    scores = np.asarray(scores, dtype=np.float64)
    right = int(np.count_nonzero(correct))
    if right == 0:
        return Threshold(float("inf"), 0.0)
    value = float(np.sort(scores)[len(scores) - right])
    above = int(np.count_nonzero(scores > value))
    tied = int(np.count_nonzero(scores == value))
    return Threshold(value, (right - above) / tied)


class AverageThresholdedConfidence(Estimator):
    """ATC: the share of target images whose score reaches the threshold fitted on the source
    (Garg et al. 2022); ``score`` is ``mc`` (max probability) or ``ne`` (negative entropy,
    Σ p log p); ``temperature``: calibrate on the source first (needs full logits)."""

    reads = "the source's and target's top-1 probabilities or entropies (logits with temperature)"
    score = "mc"

    def __init__(self, temperature: bool = False):
        self.temperature = temperature

    def _scores(self, outputs: Any, temperature: float | None) -> np.ndarray:
        if temperature is None:
            if self.score == "mc":
                return _confidence(outputs)
            return -np.asarray(outputs.entropy["original"], dtype=np.float64)
        from scipy.special import log_softmax

        logits = full_logits(outputs, f"{self.name} with temperature = true")
        log_p = log_softmax(logits / temperature, axis=1)
        if self.score == "mc":
            return np.exp(log_p.max(axis=1))
        return (np.exp(log_p) * log_p).sum(axis=1)

    def __call__(self, model, target, study):
        source, _ = study.need_source(self.name, model)
        labels = np.asarray(source.targets)
        correct = np.asarray(source.predictions) == labels
        temperature = None
        if self.temperature:
            logits = full_logits(source, f"{self.name} with temperature = true")
            temperature = fit_temperature(logits, labels)
        threshold = atc_threshold(self._scores(source, temperature), correct)
        return threshold.share(self._scores(study.outputs(model, target, self.name), temperature))


class ATCMaxConfidence(AverageThresholdedConfidence):
    """ATC with the max-softmax score (Garg et al. 2022)."""

    name = "atc_mc"
    score = "mc"


class ATCNegativeEntropy(AverageThresholdedConfidence):
    """ATC with the negative-entropy score Σ p log p (Garg et al. 2022)."""

    name = "atc_ne"
    score = "ne"


def _predictions(study: Any, model: str, dataset: str, name: str) -> tuple[Any, np.ndarray]:
    outputs = study.outputs(model, dataset, name)
    return outputs.indices, np.asarray(outputs.predictions)


def agreement(study: Any, first: str, second: str, dataset: str, name: str) -> float:
    """The share of a dataset's images on which two models predict the same class."""
    indices, a = _predictions(study, first, dataset, name)
    other_indices, b = _predictions(study, second, dataset, name)
    if not np.array_equal(indices, other_indices):
        raise EstimatorNeeds(
            f"{name} compares {first!r} and {second!r} on the same images of {dataset!r}, and "
            "their kept outputs cover different images (a limit or unreadable images?)"
        )
    return float(np.mean(a == b))


class GeneralizationDisagreement(Estimator):
    """GDE: agreement with a second run of the same recipe on the target (Jiang et al. 2022).

    ``other``: that model's label; else the next model of the study in the same ``group``
    (the key a [[models]] entry gives to runs of one recipe, e.g. seeds)."""

    name = "gde"
    reads = "two same-recipe models' top-1 predictions on the target"

    def __init__(self, other: str = ""):
        self.other = other

    def partner(self, model: str, study: Any) -> str:
        """The model GDE compares ``model`` with: ``other``, or the next one in its group."""
        if self.other:
            if self.other not in study.models:
                raise EstimatorNeeds(f"gde's other model {self.other!r} is not in the study")
            return self.other
        group = study.groups.get(model)
        if group is None:
            raise EstimatorNeeds(
                f"gde compares {model!r} with a second training run of the same recipe: give "
                'the runs one group key in their [[models]] entries (group = "..."), or name '
                'the partner with params = { other = "..." }'
            )
        runs = [m for m in study.models if study.groups.get(m) == group]
        if len(runs) < 2:
            raise EstimatorNeeds(
                f"gde: {model!r} is the only model of group {group!r}; it needs a second run "
                "of the same recipe in that group"
            )
        return runs[(runs.index(model) + 1) % len(runs)]

    def __call__(self, model, target, study):
        return agreement(study, model, self.partner(model, study), target, self.name)


class _AgreementOnTheLine(Estimator):
    """ALine (Baek et al. 2022): over every pair of models, probit agreement on the target is
    linear in probit agreement on the source, with the slope and bias that relate the models'
    accuracies; pairs agreeing on under 5% or over 98% of images are left out, as the
    authors do. That line is the premise, and it needs no labels: where its R² on a target is
    below ``min_r2``, the estimate is flagged."""

    reads = "every model's top-1 predictions on the source and the target; source accuracies"
    low, high = 0.05, 0.98

    def __init__(self, min_r2: float = ALINE_MIN_R2):
        if not 0.0 <= min_r2 <= 1.0:
            raise InvkitError(f"{self.name}: min_r2 must lie in [0, 1]; got {min_r2}")
        self.min_r2 = min_r2

    def fit(self, target: str, study: Any) -> dict[str, Any]:
        key = ("aline", target)
        if key in study.memo:
            return study.memo[key]
        if study.source is None:
            study.need_source(self.name, study.models[0])
        models = [m for m in study.models if study.accuracy(m, study.source) is not None]
        if len(models) < 3:
            raise EstimatorNeeds(
                f"{self.name} needs at least 3 models with a labeled source set; the study has "
                f"{len(models)}"
            )
        pairs, source_ag, target_ag = [], [], []
        for i, first in enumerate(models):
            for second in models[i + 1 :]:
                on_source = agreement(study, first, second, study.source, self.name)
                on_target = agreement(study, first, second, target, self.name)
                if self.low <= on_source <= self.high and self.low <= on_target <= self.high:
                    pairs.append((i, models.index(second)))
                    source_ag.append(on_source)
                    target_ag.append(on_target)
        if len(pairs) < 2:
            raise EstimatorNeeds(
                f"{self.name} needs at least 2 model pairs agreeing on 5% to 98% of the images "
                f"of both {study.source!r} and {target!r}; {len(pairs)} do"
            )
        accuracy = [study.accuracy(m, study.source) for m in models]
        fitted = {"models": models, **aline(accuracy, pairs, source_ag, target_ag)}
        study.memo[key] = fitted
        return fitted

    def __call__(self, model, target, study):
        fitted = self.fit(target, study)
        if model not in fitted["models"]:
            raise EstimatorNeeds(f"{self.name}: {model!r} has no labeled source accuracy")
        estimates = fitted[self.name]
        if estimates is None:
            raise EstimatorNeeds(
                f"{self.name}: the pairs left do not determine every model's accuracy "
                "(too few distinct pairs); aline_s still applies"
            )
        r2, pairs = fitted["r2"], fitted["pairs"]
        flag = ""
        if r2 < self.min_r2:
            flag = (
                f"premise failed: the probit agreement line on {target!r} has R² {r2:.3f} "
                f"< {self.min_r2:g}"
            )
        return Estimate(
            float(estimates[fitted["models"].index(model)]),
            flag=flag,
            detail=f"agreement line R² {r2:.3f} over {pairs} pairs",
        )


class ALineS(_AgreementOnTheLine):
    """ALine-S: source accuracy carried along the agreement line (Baek et al. 2022)."""

    name = "aline_s"


class ALineD(_AgreementOnTheLine):
    """ALine-D: all models' accuracies solved from pairwise agreements (Baek et al. 2022)."""

    name = "aline_d"


def aline(
    source_accuracy: Any, pairs: Any, source_agreement: Any, target_agreement: Any
) -> dict[str, Any]:
    """Agreement-on-the-line (Baek et al. 2022) for models 0..M-1 with their source
    accuracies, from each pair (i, j)'s agreement on the source and the target.

    The probit line Φ⁻¹(target agreement) = a Φ⁻¹(source agreement) + b is fitted by least
    squares. ALine-S carries each model's source accuracy along it: Φ(a Φ⁻¹(acc) + b). ALine-D
    solves, in least squares, ½(xᵢ + xⱼ) = Φ⁻¹(target agreementᵢⱼ) + a (½(Φ⁻¹(accᵢ) +
    Φ⁻¹(accⱼ)) − Φ⁻¹(source agreementᵢⱼ)) for every model's probit target accuracy x (only
    when the pairs determine every x). ``r2``: the line's coefficient of determination, the
    premise check that needs no labels."""
    x, y = probit(source_agreement), probit(target_agreement)
    slope, bias = np.polyfit(x, y, 1)
    residual = y - (slope * x + bias)
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / spread if spread > 0 else 1.0
    accuracy = probit(source_accuracy)
    design = np.zeros((len(pairs), len(accuracy)))
    for row, (i, j) in enumerate(pairs):
        design[row, i] += 0.5
        design[row, j] += 0.5
    right = y + slope * (design @ accuracy - x)
    solved, _, rank, _ = np.linalg.lstsq(design, right, rcond=None)
    return {
        "slope": float(slope),
        "bias": float(bias),
        "r2": r2,
        "pairs": len(pairs),
        "aline_s": cdf(slope * accuracy + bias),
        "aline_d": cdf(solved) if rank == len(accuracy) else None,
    }


def nuclear_norm_score(outputs: Any) -> float:
    """‖P‖* / √(N · min(N, K)) of the N × K softmax matrix (Deng et al. 2023), in [0, 1]."""
    n, k = len(outputs.indices), outputs.classes
    return outputs.nuclear_norm / np.sqrt(n * min(n, k))


def avg_energy_score(outputs: Any) -> float:
    """The mean log-sum-exp of the logits, the negative free energy averaged over the images:
    the AVG ablation of Peng et al. (ICLR 2024), not their MDE."""
    return float(np.mean(np.asarray(outputs.logsumexp["original"], dtype=np.float64)))


def mde_score(outputs: Any) -> float:
    """Meta-distribution energy (Peng et al., ICLR 2024): with each image's energy
    E = −log Σₖ exp(logitₖ), the score log(log Σᵢ exp(Eᵢ) − mean E), the log of the mean
    negative log-probability of the images under the softmax of their energies."""
    from scipy.special import logsumexp

    energies = -np.asarray(outputs.logsumexp["original"], dtype=np.float64)
    return float(np.log(logsumexp(energies) - energies.mean()))


class NuclearNorm(LineFit):
    """Line fit of accuracy on the softmax matrix's nuclear norm (Deng et al. 2023)."""

    name = "nuclear_norm"

    def __init__(self):
        super().__init__("nuclear_norm")

    def dataset_score(self, model: str, dataset: str, study: Any) -> float | None:
        try:
            return nuclear_norm_score(study.outputs(model, dataset, self.label))
        except EstimatorNeeds:
            raise
        except InvkitError as error:
            raise EstimatorNeeds(f"nuclear_norm: {error}") from None


class AverageEnergy(LineFit):
    """Line fit of accuracy on the mean log-sum-exp of the logits (Peng et al.'s AVG ablation)."""

    name = "avg_energy"

    def __init__(self):
        super().__init__("avg_energy")

    def dataset_score(self, model: str, dataset: str, study: Any) -> float | None:
        return avg_energy_score(study.outputs(model, dataset, self.label))


class MetaDistributionEnergy(LineFit):
    """MDE (Peng et al., ICLR 2024): a linear fit of accuracy on the meta-distribution energy."""

    name = "mde"
    probit_scale = False  # the paper fits accuracy itself against the score

    def __init__(self):
        super().__init__("mde")

    def dataset_score(self, model: str, dataset: str, study: Any) -> float | None:
        return mde_score(study.outputs(model, dataset, self.label))


def label_distribution(outputs: Any, rows: np.ndarray | None = None) -> np.ndarray:
    """The share of each class among a labeled set's images (or among its ``rows``)."""
    targets = np.asarray(outputs.targets)
    if rows is not None:
        targets = targets[rows]
    counts = np.bincount(targets[targets >= 0], minlength=outputs.classes)
    return counts / counts.sum()


def transport_costs(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's cost in the optimal transport of the images' softmax vectors (each of
    mass 1/N) onto the one-hot labels weighted by ``labels`` (Lu et al., NeurIPS 2023), with
    the cost ½‖p − e_k‖₁ = 1 − p_k; their mean is the transport's total cost.

    Solved exactly (POT's network simplex) on N × K: one atom per class carries that class's
    whole weight, which is what N sampled one-hot labels in these proportions amount to."""
    import ot

    n = len(probabilities)
    cost = 1.0 - probabilities
    plan, log = ot.emd(np.full(n, 1.0 / n), np.asarray(labels, dtype=np.float64), cost,
                       numItermax=10**9, log=True)  # fmt: skip
    if log["result_code"] != 1:
        raise InvkitError(f"optimal transport did not converge: {log['warning']}")
    return n * np.einsum("ik,ik->i", plan, cost)


TRANSPORT_IMAGES = 10_000  # the authors' batch size at ImageNet's scale


def transport_rows(count: int, max_images: int | None) -> np.ndarray:
    """The images a transport runs on: at most ``max_images`` of ``count``, drawn without
    replacement with a fixed seed (all of them when there are no more)."""
    if max_images is None or count <= max_images:
        return np.arange(count)
    return np.sort(np.random.default_rng(0).choice(count, max_images, replace=False))


def _max_images(name: str, max_images: Any) -> int | None:
    """``max_images`` checked: a positive count, or ``"all"`` (None from Python) for the exact
    transport of every image."""
    if max_images is None or max_images == "all":
        return None
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise InvkitError(
            f'{name}: max_images must be a positive integer or "all"; got {max_images!r}'
        )
    return max_images


class ConfidenceOptimalTransport(Estimator):
    """COT: 1 − the optimal-transport cost between the target's softmax vectors and the
    source's label distribution (Lu et al., NeurIPS 2023). ``max_images``: the transport runs
    on at most this many of the target's images, drawn with a fixed seed ("all": every one)."""

    name = "cot"
    reads = "the target's logits (run.outputs = 'full'); the source's labels"

    def __init__(self, max_images: int | str | None = TRANSPORT_IMAGES):
        self.max_images = _max_images(self.name, max_images)

    def __call__(self, model, target, study):
        source, _ = study.need_source(self.name, model)
        costs, detail = self.target_costs(model, target, study, label_distribution(source))
        return Estimate(float(1.0 - costs.mean()), detail=detail)

    def target_costs(
        self, model: str, target: str, study: Any, labels: np.ndarray
    ) -> tuple[np.ndarray, str]:
        """The transport costs of the target's (sampled) images, and how many were drawn."""
        logits = full_logits(study.outputs(model, target, self.name), self.name)
        rows = transport_rows(len(logits), self.max_images)
        drawn = ""
        if len(rows) < len(logits):
            drawn = f"transport on {len(rows):,} of {len(logits):,} images, drawn with seed 0"
        return transport_costs(softmax_rows(logits[rows]), labels), drawn


class ConfidenceOptimalTransportThresholded(ConfidenceOptimalTransport):
    """COTT: the share of target images whose transport cost stays below the threshold that
    reproduces the source's accuracy on the source's own costs (Lu et al., NeurIPS 2023).
    ``max_images`` bounds each transport, the source's and the target's, as for COT."""

    name = "cott"
    reads = "the source's and target's logits (run.outputs = 'full'); the source's labels"

    def __call__(self, model, target, study):
        source, _ = study.need_source(self.name, model)
        key = (self, model)  # the source's threshold serves every target
        if key not in study.memo:
            logits = full_logits(source, self.name)
            rows = transport_rows(len(logits), self.max_images)
            # the drawn images go to their own labels, as the authors' compute_cott sends them
            own = label_distribution(source, rows)
            source_costs = transport_costs(softmax_rows(logits[rows]), own)
            correct = np.asarray(source.predictions)[rows] == np.asarray(source.targets)[rows]
            study.memo[key] = atc_threshold(-source_costs, correct)
        threshold = study.memo[key]
        costs, detail = self.target_costs(model, target, study, label_distribution(source))
        return Estimate(threshold.share(-costs), detail=detail)


class ImportanceWeighting(Estimator):
    """IM: the source's correctness re-weighted by the ratio of target to source densities
    of the top-1 probability, each a histogram of ``bins`` equal-width bins on [0, 1] (the
    baseline of Garg et al. 2022)."""

    name = "im"
    reads = "the source's accuracy and top-1 probabilities, the target's top-1 probabilities"

    def __init__(self, bins: int = 10):
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise InvkitError(f"im: bins must be a positive integer; got {bins!r}")
        self.bins = bins

    def __call__(self, model, target, study):
        source, _ = study.need_source(self.name, model)
        correct = np.asarray(source.predictions) == np.asarray(source.targets)
        edges = np.linspace(0.0, 1.0, self.bins + 1)
        mine, theirs = _confidence(source), _confidence(study.outputs(model, target, self.name))
        source_density = np.histogram(mine, bins=edges, density=True)[0]
        target_density = np.histogram(theirs, bins=edges, density=True)[0]
        where = np.clip(np.digitize(mine, edges) - 1, 0, self.bins - 1)  # histogram's bins
        weights = target_density[where] / source_density[where]
        if weights.sum() == 0:
            raise EstimatorNeeds(
                f"im: no target image of {target!r} has a top-1 probability in a bin that "
                f"{study.source!r}'s images fill; the densities do not overlap"
            )
        return float(np.mean(weights / weights.mean() * correct))


def mano_score(logits: np.ndarray, norm: int = 4, softmax_above: float = 5.0) -> float:
    """MaNo (Xie et al., NeurIPS 2024): the entry-wise L_norm of the normalized prediction
    matrix, divided by (N·K)^(1/norm). Rows are the softmax when the mean cross-entropy of the
    logits to the uniform distribution exceeds ``softmax_above``, else the second-order Taylor
    approximation 1 + z + z²/2, shifted to a minimum of 0 and scaled to sum to 1."""
    from scipy.special import logsumexp

    logits = np.asarray(logits, dtype=np.float64)
    uniform_cross_entropy = float(np.mean(logsumexp(logits, axis=1) - logits.mean(axis=1)))
    if uniform_cross_entropy > softmax_above:
        rows = softmax_rows(logits)
    else:
        rows = 1.0 + logits + logits**2 / 2
        rows -= rows.min(axis=1, keepdims=True)
        rows /= np.maximum(rows.sum(axis=1, keepdims=True), 1e-12)
    return float(np.mean(rows**norm) ** (1.0 / norm))


class MatrixNorm(LineFit):
    """MaNo (Xie et al., NeurIPS 2024): a linear fit of accuracy on the normalized prediction
    matrix's L4 norm over the labeled test sets; ``norm``: its order."""

    name = "mano"
    reads = "the model's logits on the labeled sets and the target (run.outputs = 'full')"
    probit_scale = False

    def __init__(self, norm: int = 4):
        if isinstance(norm, bool) or not isinstance(norm, int) or norm < 1:
            raise InvkitError(f"mano: norm must be a positive integer; got {norm!r}")
        super().__init__("mano")
        self.norm = norm

    def dataset_score(self, model: str, dataset: str, study: Any) -> float | None:
        logits = full_logits(study.outputs(model, dataset, self.label), "mano")
        return mano_score(logits, self.norm)


class DoCRegression(LineFit):
    """DoC with its regression (Guillory et al., ICCV 2021): accuracy regressed linearly on
    the mean top-1 probability over the labeled sets, so that the drop in accuracy is a
    fitted linear function of the difference of confidences, read off at the target."""

    name = "doc_fit"
    reads = "the model's accuracies and top-1 probabilities on the labeled sets and the target"
    probit_scale = False

    def __init__(self):
        super().__init__("doc_fit")

    def dataset_score(self, model: str, dataset: str, study: Any) -> float | None:
        return float(_confidence(study.outputs(model, dataset, self.label)).mean())


@hookimpl
def register_estimators(register):
    for estimator in (
        AverageConfidence,
        DifferenceOfConfidences,
        ATCMaxConfidence,
        ATCNegativeEntropy,
        GeneralizationDisagreement,
        ALineS,
        ALineD,
        NuclearNorm,
        AverageEnergy,
        MetaDistributionEnergy,
        ConfidenceOptimalTransport,
        ConfidenceOptimalTransportThresholded,
        ImportanceWeighting,
        MatrixNorm,
        DoCRegression,
    ):
        register(estimator)
