"""A third-party analysis: mean invariance per model, with a figure and a CSV table."""

from invkit import hookimpl


class MeanScore:
    """What the analysis returns: follows the documented result contract, nothing more."""

    def __init__(self, means):
        self.means = means

    def to_dict(self):
        return {"means": self.means}

    def __str__(self):
        return "\n".join(f"{model}: mean invariance {v:.4f}" for model, v in self.means.items())

    def tables(self):
        rows = [{"model": m, "mean_invariance": v} for m, v in self.means.items()]
        return {"means": (["model", "mean_invariance"], rows)}

    def figures(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots()
        axes.bar(list(self.means), list(self.means.values()))
        yield "bars", figure


class MeanInvariance:
    """Mean invariance of each model over every dataset, transform and measure."""

    name = "mean_invariance"

    def __call__(self, rows):
        by_model = {}
        for row in rows:
            by_model.setdefault(row["model"], []).append(row["invariance"])
        return MeanScore({m: sum(v) / len(v) for m, v in by_model.items()})


@hookimpl
def register_analyses(register):
    register(MeanInvariance)
