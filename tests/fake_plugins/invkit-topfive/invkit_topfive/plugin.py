"""A third-party measure that declares what it reads (the top 5), an analysis that reads a
study's kept outputs, and an accuracy estimator."""

from invkit import hookimpl


class TopFiveOverlap:
    """The share of the original's five most probable classes that stay among the view's."""

    name = "top5_overlap"
    higher_is_invariant = True
    reads = "top5"

    def __call__(self, original, view, labels=None):
        import torch

        first = original.topk(5, dim=1).indices
        second = view.topk(5, dim=1).indices
        same = (first[:, :, None] == second[:, None, :]).any(dim=2)
        return same.to(torch.float64).mean(dim=1)


class EntropyResult:
    def __init__(self, entropies):
        self.entropies = entropies

    def to_dict(self):
        return {"mean_entropy": self.entropies}

    def __str__(self):
        return "\n".join(f"{pair}: {value:.6f}" for pair, value in self.entropies.items())


class MeanEntropy:
    """The mean entropy of each model's softmax on each dataset's original images."""

    name = "mean_entropy"
    reads_outputs = True

    def __call__(self, rows, outputs):
        means = {}
        for model, dataset in outputs:
            kept = outputs[model, dataset]
            means[f"{model} × {dataset}"] = float(kept.entropy["original"].mean())
        return EntropyResult(means)


@hookimpl
def register_measures(register):
    register(TopFiveOverlap)


@hookimpl
def register_analyses(register):
    register(MeanEntropy)


class TopFiveMass:
    """The mean probability the model gives its five most probable classes on the target."""

    name = "top5_mass"

    def __call__(self, model, target, study):
        kept = study.outputs(model, target, self.name)
        return float(kept.top_probs["original"][:, :5].sum(axis=1).mean())


@hookimpl
def register_estimators(register):
    register(TopFiveMass)
