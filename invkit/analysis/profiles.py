"""Invariance profiles: how invariance changes with the magnitude of a transform, or with the
depth of a layer, and at which magnitude (or layer) invariance tracks accuracy best across
models.

For every transform whose views are magnitudes (rotation's angles, a blur's sigmas: a
transform's ``magnitudes``), the ``invariance_profile`` analysis draws each model's value on each
view against the magnitude, and correlates accuracy with invariance at each magnitude across
models, exactly as ``model_centric`` does with the cell (Pearson r, Spearman ρ, bootstrap
intervals).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from invkit.analysis.analyses import ModelCentric, _json_ready, directions
from invkit.analysis.render import direction_sign, direction_text, interval_text
from invkit.errors import InvkitError
from invkit.inputs.layers import split_layer_cell
from invkit.markup import code, md, plain

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROFILE_COLUMNS = [
    "dataset", "transform", "measure", "magnitude", "view", "models", "pearson_r",
    "pearson_low", "pearson_high", "spearman_rho", "spearman_low", "spearman_high",
]  # fmt: skip
LAYER_PROFILE_COLUMNS = ["dataset", "transform", "measure", "depth", "layer",
                         *PROFILE_COLUMNS[5:]]  # fmt: skip
PANELS = 4  # test sets drawn per figure


@dataclass
class Profile:
    """One transform × measure on one test set: each model's value at each magnitude, and the
    model-centric correlation of accuracy with invariance at each magnitude."""

    dataset: str
    transform: str
    measure: str
    magnitudes: list[float]
    views: list[str]
    models: list[str]
    accuracy: list[float | None]
    values: list[list[float]]  # per model, per magnitude
    correlations: list[dict[str, Any]] = field(default_factory=list)  # per magnitude


@dataclass
class ProfileResult:
    """What ``invariance_profile`` returns: a ``Profile`` per test set × transform × measure."""

    params: dict[str, Any]
    profiles: list[Profile]
    directions: dict[str, bool | None]
    notes: list[str] = field(default_factory=list)
    analysis: str = "invariance_profile"
    axis: str = "magnitude"  # what a profile runs along: a transform's "magnitude", or "depth"

    @property
    def position(self) -> str:
        """What one point of a profile is: a view (magnitude), or a layer (depth)."""
        return "layer" if self.axis == "depth" else "view"

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(
            {
                "analysis": self.analysis,
                "params": self.params,
                "profiles": [asdict(p) for p in self.profiles],
                "notes": self.notes,
                "axis": self.axis,
            }
        )

    def __str__(self) -> str:
        lines = [f"{self.analysis}: {len(self.profiles)} profile(s)"]
        for profile in self.profiles:
            lines.append(f"  {profile.dataset} / {profile.transform} / {profile.measure}")
            for corr in profile.correlations:
                r = corr.get("pearson_r")
                text = "—" if r is None else f"r {r:+.3f}, ρ {corr['spearman_rho']:+.3f}"
                lines.append(f"    {corr['view']}: {text}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def best_and_least(self) -> list[tuple[str, str, dict[str, Any], dict[str, Any], int]]:
        """Per transform × measure: the magnitude whose invariance tracks accuracy best and the
        one that tracks it least (by the signed r, averaged over the labeled test sets), and
        how many test sets that mean is over."""
        found = []
        pairs = dict.fromkeys((p.transform, p.measure) for p in self.profiles)
        for transform, measure in pairs:
            sign = direction_sign(self.directions.get(measure))
            means: dict[str, list[float]] = {}
            magnitude_of: dict[str, dict[str, Any]] = {}
            for profile in self.profiles:
                if (profile.transform, profile.measure) != (transform, measure):
                    continue
                for corr in profile.correlations:
                    if corr.get("pearson_r") is not None:
                        means.setdefault(corr["view"], []).append(sign * corr["pearson_r"])
                        magnitude_of[corr["view"]] = corr
            if len(means) < 2:
                continue
            mean = {view: sum(rs) / len(rs) for view, rs in means.items()}
            best = max(mean, key=mean.get)
            least = min(mean, key=mean.get)
            sets = len(next(iter(means.values())))
            found.append(
                (
                    transform,
                    measure,
                    {**magnitude_of[best], "mean_r": mean[best]},
                    {**magnitude_of[least], "mean_r": mean[least]},
                    sets,
                )
            )
        return found

    def summary(self) -> str | None:
        """One sentence per transform × measure: the magnitude (or layer) that tracks accuracy
        best and the one that tracks it least; along depth, first where invariance forms."""
        lines = []
        forms = self.where_invariance_forms() if self.axis == "depth" else {}
        for transform, measure, best, least, sets in self.best_and_least():
            where = forms.pop((transform, measure), "")
            lines.append(
                f"- **{md(transform)}**: {where}{code(measure)} at {md(best['view'])} tracks "
                f"accuracy best (mean r = {best['mean_r']:+.2f} over {sets} test set(s)), at "
                f"{md(least['view'])} least (r = {least['mean_r']:+.2f}); r is signed so that "
                "+ means more invariant models are more accurate"
            )
        lines += [f"- **{md(t)}**: {where.rstrip('; ')}." for (t, _), where in forms.items()]
        return "\n".join(lines) or None

    def where_invariance_forms(self) -> dict[tuple[str, str], str]:
        """Per transform × measure along depth: the step between consecutive layers where the
        models' mean invariance grows most (over the profiles' test sets), as a phrase."""
        found = {}
        for transform, measure in dict.fromkeys((p.transform, p.measure) for p in self.profiles):
            sign = direction_sign(self.directions.get(measure))
            mine = [p for p in self.profiles if (p.transform, p.measure) == (transform, measure)]
            steps: dict[int, list[float]] = {}
            for profile in mine:
                for values in profile.values:
                    for i in range(len(values) - 1):
                        steps.setdefault(i, []).append(sign * (values[i + 1] - values[i]))
            if not steps:
                continue
            mean = {i: sum(v) / len(v) for i, v in steps.items()}
            i = max(mean, key=mean.get)
            layers, depths = mine[0].views, mine[0].magnitudes
            found[(transform, measure)] = (
                f"by {code(measure)}, invariance forms most between {md(layers[i])} (depth "
                f"{depths[i]:.2f}) and {md(layers[i + 1])} ({depths[i + 1]:.2f}); "
                if mean[i] > 0
                else f"by {code(measure)}, invariance does not grow with depth; "
            )
        return found

    def to_markdown(self) -> str:
        """Per test set × transform × measure, r and ρ at each magnitude, with intervals."""
        parts = []
        for profile in self.profiles:
            sign = direction_sign(self.directions.get(profile.measure))
            parts += [
                f"**{md(profile.dataset)}**, {md(profile.transform)} {code(profile.measure)}"
                f"{direction_text(self.directions.get(profile.measure))}, "
                f"{len(profile.models)} model(s) (r, ρ signed: + more invariant, more accurate)",
                "",
                f"| {self.position} | r | ρ |",
                "|---|---|---|",
            ]
            for corr in profile.correlations:
                if corr.get("pearson_r") is None:
                    row = f"| {md(corr['view'])} | — | {md(corr.get('message') or '')} |"
                else:
                    r, rho = (
                        interval_text(corr, corr["intervals"], name, sign)
                        for name in ("pearson_r", "spearman_rho")
                    )
                    row = f"| {md(corr['view'])} | {r} | {rho} |"
                parts.append(row)
            parts.append("")
        parts += [f"Note: {md(note)}" for note in self.notes]
        return "\n".join(parts).strip()

    def tables(self) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
        rows = []
        for profile in self.profiles:
            for corr in profile.correlations:
                low_r, high_r = corr.get("intervals", {}).get("pearson_r", (None, None))
                low_rho, high_rho = corr.get("intervals", {}).get("spearman_rho", (None, None))
                rows.append(
                    {
                        "dataset": profile.dataset,
                        "transform": profile.transform,
                        "measure": profile.measure,
                        self.axis: corr["magnitude"],
                        self.position: corr["view"],
                        "models": corr["n"],
                        "pearson_r": corr.get("pearson_r"),
                        "pearson_low": low_r,
                        "pearson_high": high_r,
                        "spearman_rho": corr.get("spearman_rho"),
                        "spearman_low": low_rho,
                        "spearman_high": high_rho,
                    }
                )
        if self.axis == "depth":
            return {"layer_profiles": (LAYER_PROFILE_COLUMNS, rows)}
        return {"profiles": (PROFILE_COLUMNS, rows)}

    def figures(self) -> Iterator[tuple[str, Figure]]:
        """Per transform × measure: each model's value against the magnitude, a line per model
        coloured by its accuracy, a panel per test set (the first four)."""
        pairs = dict.fromkeys((p.transform, p.measure) for p in self.profiles)
        for transform, measure in pairs:
            profiles = [
                p for p in self.profiles if (p.transform, p.measure) == (transform, measure)
            ]
            prefix = "layers" if self.axis == "depth" else "profile"
            yield (
                f"{prefix}-{transform}-{measure}",
                self._figure(profiles[:PANELS], transform, measure),
            )

    def _figure(self, profiles: Sequence[Profile], transform: str, measure: str) -> Figure:
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2 * len(profiles) + 0.8, 3.0))
        axes = figure.subplots(1, len(profiles), squeeze=False)[0]
        known = [a for p in profiles for a in p.accuracy if a is not None]
        norm = Normalize(min(known, default=0.0), max(known, default=1.0))
        cmap = colormaps["viridis"]
        for ax, profile in zip(axes, profiles, strict=True):
            for values, accuracy in zip(profile.values, profile.accuracy, strict=True):
                color = "0.6" if accuracy is None else cmap(norm(accuracy))
                ax.plot(profile.magnitudes, values, marker="o", markersize=3, color=color, lw=1)
            ax.set_title(plain(profile.dataset), fontsize=9)
            ax.set_xlabel(
                plain(f"{transform}: relative depth (0 first module, 1 output)")
                if self.axis == "depth"
                else plain(f"{transform} magnitude"),
                fontsize=8,
            )
            ax.tick_params(labelsize=7)
        axes[0].set_ylabel(
            plain(measure) + direction_text(self.directions.get(measure)), fontsize=8
        )
        if known:
            figure.colorbar(ScalarMappable(norm, cmap), ax=list(axes), label="accuracy")
        return figure


class InvarianceProfile:
    """Invariance against the magnitude of a transform, and its correlation with accuracy.

    For each transform whose views are magnitudes: each model's value per magnitude, and the
    model-centric correlation of accuracy with invariance at each magnitude.

    ``transforms``: the transform labels to profile (default: every one with magnitudes; one
    named that has none is refused). The statistics are ``model_centric``'s, with its
    parameters."""

    name = "invariance_profile"

    def __init__(
        self,
        transforms: Sequence[str] | None = None,
        n_bootstrap: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
        fit: str = "theil_sen",
    ):
        self.correlation = ModelCentric(n_bootstrap, confidence, seed, fit)
        self.transforms = None if transforms is None else [str(t) for t in transforms]
        self.params = {"transforms": self.transforms, **self.correlation.params}

    def check_transforms(self, transforms: Mapping[str, Any]) -> None:
        """Before any pass: each transform named in ``transforms`` is in the study and its
        views are magnitudes (``invkit check`` and a study refuse it otherwise)."""
        if self.transforms is None:
            return
        with_magnitudes = [t for t, x in transforms.items() if getattr(x, "magnitudes", None)]
        for name in self.transforms:
            if name not in transforms:
                raise InvkitError(
                    f"invariance_profile: transform {name!r} is not in the study; its "
                    f"transforms: {', '.join(transforms) or 'none'}"
                )
            if name not in with_magnitudes:
                raise InvkitError(
                    f"invariance_profile: transform(s) {name!r} have no magnitudes (their views "
                    "are not magnitudes of one family); profile one of: "
                    + (", ".join(with_magnitudes) or "none in this study")
                )

    def __call__(self, table: Iterable[Mapping[str, Any]]) -> ProfileResult:
        table = [row for row in table if row.get("views") and not row.get("layer")]
        profiled = [  # a derivative measure's cells have one view, no magnitude: left out
            row for row in table if all(v.get("magnitude") is not None for v in row["views"])
        ]
        with_magnitudes = {row["transform"] for row in profiled}
        without = sorted({row["transform"] for row in table} - with_magnitudes)
        chosen = sorted(with_magnitudes) if self.transforms is None else self.transforms
        refused = [t for t in chosen if t not in with_magnitudes]
        if refused:
            raise InvkitError(
                f"invariance_profile: transform(s) {', '.join(map(repr, refused))} have no "
                "magnitudes (their views are not magnitudes of one family); profile one of: "
                + (", ".join(sorted(with_magnitudes)) or "none in this study (rotation, "
                   "translation, scale, blur, noise, JPEG, … have them)")
            )  # fmt: skip
        notes = [
            f"{t!r} has no magnitudes: not profiled" for t in without if self.transforms is None
        ]
        rows = [row for row in profiled if row["transform"] in chosen]
        return ProfileResult(
            self.params, build_profiles(self.correlation, rows), directions(table), notes
        )


class LayerProfile:
    """Invariance against relative depth: each model's layer measure at each measured layer
    (0 the first module, 1 the output), and the model-centric correlation of accuracy with
    invariance at each layer.

    Models are profiled together when they measure the same layers (one architecture, or
    shared module names); a model whose layers differ from the most common list is named in
    a note. The statistics are ``model_centric``'s, with its parameters."""

    name = "layer_profile"

    def __init__(
        self,
        n_bootstrap: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
        fit: str = "theil_sen",
    ):
        self.correlation = ModelCentric(n_bootstrap, confidence, seed, fit)
        self.params = dict(self.correlation.params)

    def __call__(self, table: Iterable[Mapping[str, Any]]) -> ProfileResult:
        rows, notes = layer_rows([row for row in table if row.get("layer")])
        if not rows:
            notes.append("no layer cells: name layers in the config (docs/layers.md)")
        return ProfileResult(
            self.params, build_profiles(self.correlation, rows), directions(rows), notes,
            analysis=self.name, axis="depth",
        )  # fmt: skip


def layer_rows(rows: list[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Layer cells merged into one row per model × dataset × transform × layer measure, its
    layers as ``views`` (the layer's name, its depth as the magnitude, its value), shallowest
    first; the models whose layers differ from the most common list left out, and named."""
    merged: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:
        measure, _ = split_layer_cell(row["measure"])  # type: ignore[misc]
        key = (row["model"], row["dataset"], row["transform"], measure)
        entry = merged.setdefault(key, {**row, "measure": measure, "views": []})
        entry["views"].append({"view": row["layer"], "magnitude": row["depth"],
                               "value": row["value"]})  # fmt: skip
    layers: dict[str, tuple[str, ...]] = {}
    for entry in merged.values():
        entry["views"].sort(key=lambda view: view["magnitude"])
        layers[entry["model"]] = tuple(view["view"] for view in entry["views"])
    if not layers:
        return [], []
    common = max(set(layers.values()), key=list(layers.values()).count)
    apart = sorted(model for model, names in layers.items() if names != common)
    notes = (
        [f"left out of the layer profiles, their layers differing from the others' "
         f"({', '.join(common)}): {', '.join(apart)}"]
        if apart else []
    )  # fmt: skip
    return [entry for entry in merged.values() if entry["model"] not in apart], notes


def build_profiles(correlation: ModelCentric, rows: list[Mapping[str, Any]]) -> list[Profile]:
    """Profiles of rows whose ``views`` are the points (a magnitude or a depth each), with the
    model-centric correlation at each point."""
    pseudo = []  # one row per cell and view: the view's value as the invariance
    for row in rows:
        for position, view in enumerate(row["views"]):
            pseudo.append(
                {**row, "transform": f"{row['transform']}\x00{position}",
                 "invariance": view["value"]}
            )  # fmt: skip
    by_view = {
        (g.group["dataset"], g.group["transform"], g.group["measure"]): g
        for g in correlation(pseudo).groups
    }
    profiles: dict[tuple[str, str, str], Profile] = {}
    for row in rows:
        key = (row["dataset"], row["transform"], row["measure"])
        if key not in profiles:
            profiles[key] = Profile(
                *key,
                magnitudes=[v["magnitude"] for v in row["views"]],
                views=[v["view"] for v in row["views"]],
                models=[], accuracy=[], values=[],
            )  # fmt: skip
        profile = profiles[key]
        profile.models.append(row["model"])
        accuracy = row.get("accuracy")
        profile.accuracy.append(None if accuracy is None or math.isnan(accuracy) else accuracy)
        profile.values.append([v["value"] for v in row["views"]])
    for (dataset, transform, measure), profile in profiles.items():
        for position, (view, magnitude) in enumerate(
            zip(profile.views, profile.magnitudes, strict=True)
        ):
            group = by_view[dataset, f"{transform}\x00{position}", measure]
            profile.correlations.append(
                {
                    "view": view,
                    "magnitude": magnitude,
                    "n": group.n,
                    "message": group.message,
                    "pearson_r": group.statistics.get("pearson_r"),
                    "spearman_rho": group.statistics.get("spearman_rho"),
                    "intervals": {
                        k: v
                        for k, v in group.intervals.items()
                        if k in ("pearson_r", "spearman_rho")
                    },
                }
            )
    return list(profiles.values())
