"""A finished study read back, for notebooks and scripts: ``invkit.open_study(out_dir)``.

Its tables are pandas DataFrames, tidy (one row per observation), read from the study's
store (cells, per-view and per-sample values, models, datasets) or from the CSV files its
analyses wrote (correlations, estimates, predictions); its kept outputs are numpy arrays;
its figures can be drawn again on a notebook's matplotlib Axes; ``report()`` rewrites its
report. Nothing here runs a model. Column names never shadow a DataFrame attribute:
``transform`` is ``transformation`` here, a sample's ``idx`` is ``image``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invkit.errors import InvkitError
from invkit.paths import refuse_links
from invkit.report.per_sample import (
    CHUNK_ROWS,
    FRAME_NAMES,
    SAMPLE_COLUMNS,
    configured,
    sample_frames,
)
from invkit.report.report import (
    MODEL_COLUMNS,
    PER_VIEW_COLUMNS,
    RESULT_COLUMNS,
    model_rows,
    output_names,
    per_view_table,
    results_table,
)
from invkit.results.store import STORE_NAME, Store

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from invkit.results.outputs import Outputs
    from invkit.run.study import StudyOutcome

FLOAT_COLUMNS = ("value", "low", "high", "accuracy", "magnitude", "depth")
# Names in the analyses' CSV tables: text even where they read as numbers (a model "-1",
# a view "90"), and empty cells there are missing.
TEXT_COLUMNS = ("analysis", "kind", "model", "dataset", "transform", "measure", "estimator",
                "point", "view", "group")  # fmt: skip
CSV_QUOTE = "^'"  # what invkit's CSV cells add before a text a spreadsheet would run (csv_cell)
DATASET_COLUMNS = [
    "dataset", "spec", "params", "corruption", "severity", "corruption_params", "seed", "limit",
    "class_subset", "class_map", "source", "held_out", "meta_set", "images", "labeled",
]  # fmt: skip


def _frame(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Rows as a DataFrame with the given columns, renamed (``FRAME_NAMES``); a float column
    with missing values holds NaN, never None."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame.from_records(
        [{c: row.get(c) for c in columns} for row in rows], columns=list(columns)
    )
    for column in frame.columns:
        if column in FLOAT_COLUMNS:
            frame[column] = frame[column].astype("float64")
        elif frame[column].dtype == object:  # an output cell's layer: NaN, as a CSV reads it
            frame[column] = frame[column].where(frame[column].notna(), np.nan)
    return frame.rename(columns=FRAME_NAMES)


def _dataset_row(entry: dict[str, Any], counts: tuple[int, int] | None) -> dict[str, Any]:
    """A dataset's config entry as one flat row: its loader's and its shift's params as JSON
    text, the shift's severity apart, and the images and labels its passes counted."""
    shift = entry.get("shift") or {}
    shift_params = shift.get("params", {})
    return {
        **entry, "dataset": entry["name"],
        "params": json.dumps(entry.get("params") or {}, sort_keys=True),
        "corruption": shift.get("name"), "severity": shift_params.get("severity"),
        "corruption_params": json.dumps(shift_params, sort_keys=True) if shift else None,
        "images": counts[0] if counts else None, "labeled": counts[1] if counts else None,
    }  # fmt: skip


class StudyResults:
    """A finished study in ``out_dir``, read back without running anything.

    Every property reads the folder when it is asked for, so a study still running (or
    re-run) is seen as it is now. ``outcome``: what the run that returned this object did
    (cells computed and reused, failures), or ``None`` when opened with ``open_study``.
    """

    def __init__(self, out_dir: str | Path, outcome: StudyOutcome | None = None):
        self.out_dir = Path(out_dir)
        self.outcome = outcome
        refuse_links(self.out_dir, output_names())
        if not (self.out_dir / STORE_NAME).is_file():
            raise InvkitError(
                f"{str(self.out_dir)!r} holds no study ({STORE_NAME} is missing); run "
                "invkit.run_study(config, out_dir=...) or `invkit study` into it first"
            )
        self.plot = StudyPlots(self)

    def __repr__(self) -> str:
        return f"StudyResults({str(self.out_dir)!r})"

    @contextmanager
    def _store(self) -> Iterator[tuple[Store, dict[str, Any]]]:
        store = Store(self.out_dir / STORE_NAME)
        try:
            config = store.config()
            if config is None:
                raise InvkitError(f"{self.out_dir / STORE_NAME} holds no study configuration")
            yield store, config
        finally:
            store.close()

    @property
    def config(self) -> dict[str, Any]:
        """The study's configuration, as its store recorded it."""
        with self._store() as (_, config):
            return config

    @property
    def cells(self) -> pd.DataFrame:
        """One row per model × dataset × transformation × measure: the invariance ``value``
        (with its interval ``low``–``high`` where the measure gives one), the model's
        ``accuracy`` on the dataset, image counts, the measure's direction and the class
        matching: results.csv, with ``transform`` named ``transformation``."""
        with self._store() as (store, config):
            return _frame(results_table(store, config), RESULT_COLUMNS)

    @property
    def per_view(self) -> pd.DataFrame:
        """One row per cell and view of its transformation (``view``, ``magnitude``): the
        measure on that view alone, as per_view.csv."""
        with self._store() as (store, config):
            return _frame(per_view_table(results_table(store, config)), PER_VIEW_COLUMNS)

    @property
    def models(self) -> pd.DataFrame:
        """The preprocessing each model ran with (input size, interpolation, mean, std,
        number of outputs, random weights), as models.csv."""
        with self._store() as (store, config):
            return _frame(model_rows(config, store.model_inputs()), MODEL_COLUMNS)

    @property
    def datasets(self) -> pd.DataFrame:
        """One row per dataset: its config entry (spec, params, shift, roles) and how many
        images it had and how many of them were labeled."""
        with self._store() as (store, config):
            counts: dict[str, tuple[int, int]] = {}
            for cell in store.cells().values():
                counts[cell.dataset] = (cell.images, cell.labeled)
            rows = [_dataset_row(entry, counts.get(entry["name"])) for entry in config["datasets"]]
        return _frame(rows, DATASET_COLUMNS)

    def table(self, name: str) -> pd.DataFrame:
        """A table an analysis wrote (``correlations``, ``predictions``, ``estimates``,
        ``estimates_by_target``, ``profiles``, or a plugin's), read from its CSV file with
        the text cells as they were before CSV-injection quoting."""
        import pandas as pd

        file = f"{name}.csv"
        if Path(file).name != file or file.startswith("."):
            raise InvkitError(f"{name!r} is not a table name (a CSV file in the study folder)")
        refuse_links(self.out_dir, [file])
        path = self.out_dir / file
        if not path.is_file():
            written = sorted(p.stem for p in self.out_dir.glob("*.csv"))
            raise InvkitError(
                f"the study in {str(self.out_dir)!r} has no {file}: none of its analyses wrote "
                f"a {name!r} table (it has: {', '.join(written) or 'none'}); "
                "run `invkit report` if the analyses changed"
            )
        frame = pd.read_csv(
            path, keep_default_na=False, na_values=[""], dtype=dict.fromkeys(TEXT_COLUMNS, str)
        )
        for column in frame.columns:
            if pd.api.types.is_string_dtype(frame[column].dtype) and frame[column].notna().any():
                frame[column] = frame[column].str.replace(CSV_QUOTE, "", n=1, regex=True)
        return frame.rename(columns=FRAME_NAMES)

    @property
    def correlations(self) -> pd.DataFrame:
        """One row per analysed group: ``pearson_r``, ``spearman_rho`` and ``kendall_tau`` as
        computed (raw: accuracy against the measure's value), their intervals and p-values,
        and their ``signed_`` twins, positive when more invariant goes with more accurate."""
        return self.table("correlations")

    @property
    def estimates(self) -> pd.DataFrame:
        """One row per estimator × model × target set: the label-free accuracy estimate, the
        true accuracy where known, its error, and the estimator's flag and detail."""
        return self.table("estimates")

    @property
    def predictions(self) -> pd.DataFrame:
        """Accuracy predicted from invariance for unlabeled or held-out sets."""
        return self.table("predictions")

    def per_sample(
        self,
        model: str | Sequence[str] | None = None,
        dataset: str | Sequence[str] | None = None,
        transformation: str | Sequence[str] | None = None,
        measure: str | Sequence[str] | None = None,
        chunksize: int | None = None,
    ) -> pd.DataFrame | Iterator[pd.DataFrame]:
        """Each image's value of each cell (``model``, ``dataset``, ``transformation``,
        ``measure``, ``image``: its index in the dataset, ``value``), optionally only some
        models, datasets, transformations or measures. With ``chunksize``, an iterator of
        DataFrames of at most that many rows, which streams a store of millions of rows
        without holding them; without, one DataFrame."""
        import pandas as pd

        with self._store() as (_, config):
            where = configured(config)
        chosen = {"model": model, "dataset": dataset, "transform": transformation,
                  "measure": measure}  # fmt: skip
        for column, values in chosen.items():
            if values is not None:
                values = [values] if isinstance(values, str) else list(values)
                unknown = [v for v in values if v not in where[column]]
                if unknown:
                    raise InvkitError(
                        f"{FRAME_NAMES.get(column, column)} {unknown[0]!r} is not in the study "
                        f"(it has: {', '.join(where[column])})"
                    )
                where[column] = values
        if chunksize is not None:
            if chunksize < 1:
                raise InvkitError(f"chunksize must be a positive number of rows; got {chunksize}")
            return self._chunks(where, chunksize)
        frames = list(self._chunks(where, CHUNK_ROWS))
        return pd.concat(frames, ignore_index=True) if frames else _frame([], SAMPLE_COLUMNS)

    def _chunks(self, where: dict[str, list[str]], rows: int) -> Iterator[pd.DataFrame]:
        with self._store() as (store, _):
            yield from sample_frames(store, where, rows)

    def outputs(self, model: str, dataset: str) -> Outputs:
        """The per-image outputs the study kept of ``model`` on ``dataset`` (numpy arrays,
        memory-mapped once their file's SHA-256 is verified): ``invkit.load_outputs``."""
        from invkit.results.reading import load_outputs

        return load_outputs(self.out_dir, model, dataset)

    def report(self) -> dict[str, Path]:
        """Re-run the study's analyses and rewrite its report (``invkit report``): the paths
        of the files written, by name."""
        from invkit.report.report import rerender

        return rerender(self.out_dir)

    def analysis(self, label: str) -> dict[str, Any]:
        """What an analysis wrote to analyses.json under its config label."""
        refuse_links(self.out_dir, ["analyses.json"])
        path = self.out_dir / "analyses.json"
        written = json.loads(path.read_text()) if path.is_file() else {}
        if label not in written:
            raise InvkitError(
                f"no analysis {label!r} in {path} (it has: {', '.join(written) or 'none'}); "
                "run `invkit report` if the config's analyses changed"
            )
        return written[label]


class StudyPlots:
    """The report's correlation figures, drawn again on a notebook's Axes to restyle:
    ``study.plot.correlation("rotation", "ei")``. Each returns the matplotlib Axes."""

    def __init__(self, study: StudyResults):
        self.study = study

    def _result(self, analysis: str) -> Any:
        from invkit.analysis.analyses import AnalysisResult

        data = self.study.analysis(analysis)
        if "groups" not in data or "points" not in data:
            raise InvkitError(
                f"analysis {analysis!r} is not a correlation analysis (model_centric or "
                "dataset_centric), or was written by an older invkit: run `invkit report`"
            )
        return AnalysisResult.from_dict(data)

    def correlation(
        self,
        transformation: str,
        measure: str,
        analysis: str = "model_centric",
        only: str | Sequence[str] | None = None,
        ax: Axes | None = None,
    ) -> Axes:
        """Accuracy against invariance for one transformation × measure, as the report draws
        it: for a model-centric analysis, the models as points, one colour, fit and signed r
        per test set; for a dataset-centric one, the test sets as points, one colour per
        model. ``only``: the test sets (model-centric) or models (dataset-centric) to draw."""
        from invkit.analysis.render import draw_overlay

        result = self._result(analysis)
        groups = [
            g for g in result.groups
            if g.group.get("transform") == transformation and g.group.get("measure") == measure
        ]  # fmt: skip
        if not groups:
            pairs = sorted({(g.group.get("transform"), g.group.get("measure"))
                            for g in result.groups})  # fmt: skip
            raise InvkitError(
                f"analysis {analysis!r} has no {transformation} × {measure} (it has: "
                f"{', '.join(f'{t} × {m}' for t, m in pairs) or 'none'})"
            )
        if only is not None:
            wanted = [only] if isinstance(only, str) else list(only)
            other = "dataset" if result.points == "model" else "model"
            groups = [g for g in groups if g.group.get(other) in wanted]
            if not groups:
                raise InvkitError(f"none of {wanted} is a {other} of analysis {analysis!r}")
        axes = draw_overlay(_axes(ax, (7, 5)), groups, result, transformation, measure)
        return _laid_out(axes, ax)

    def heatmap(self, analysis: str = "model_centric", ax: Axes | None = None) -> Axes:
        """Signed Pearson r for every transformation × measure and test set."""
        from invkit.analysis.render import by_pair, draw_heatmap

        result = self._result(analysis)
        axes = draw_heatmap(_axes(ax, (8, 4)), result, by_pair(result.groups))
        return _laid_out(axes, ax)


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    """The Axes to draw on: the caller's, or a new pyplot figure's (shown inline in a
    notebook)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)[1]


def _laid_out(axes: Axes, given: Axes | None) -> Axes:
    """A figure made here laid out so that its outside legend shows; the caller's untouched."""
    if given is None:
        axes.figure.tight_layout()
    return axes


def open_study(out_dir: str | Path) -> StudyResults:
    """A finished study in ``out_dir``, read back without running anything."""
    return StudyResults(out_dir)
