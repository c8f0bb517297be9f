"""A tour of invkit's Python API: transforms, measures and an analysis, on small tensors.

Run it with `python examples/api_tour.py`. It builds a tiny untrained CNN, so the invariance
numbers it prints only show the mechanics; `invkit study` runs real models on real data.
"""

import torch

import invkit
from invkit.analysis.aggregate import summarize, view_average

torch.manual_seed(0)
images = torch.rand(64, 3, 32, 32)  # pixels in [0, 1], before normalization
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
    torch.nn.ReLU(),
    torch.nn.Flatten(),
    torch.nn.Linear(8 * 16 * 16, 10),
).eval()

with torch.no_grad():
    original = model(images).double().softmax(dim=1)
    for transform_name in ("rotation", "grayscale"):
        views = invkit.get_transform(transform_name)(images)
        view_probs = [model(v).double().softmax(dim=1) for v in views]
        for measure_name in ("ei", "agreement", "js"):
            measure = invkit.get_measure(measure_name)
            summary = summarize(view_average(measure, original, view_probs), bootstrap=True)
            print(
                f"{transform_name:>9} {measure_name:>9}: {summary.mean:.4f} "
                f"[{summary.low:.4f}, {summary.high:.4f}] over {summary.n} images"
            )

rows = [
    {
        "model": f"m{i}",
        "dataset": "val",
        "transform": "rotation",
        "measure": "ei",
        "invariance": inv,
        "accuracy": acc,
    }
    for i, (inv, acc) in enumerate(
        [(0.42, 0.61), (0.55, 0.70), (0.61, 0.74), (0.70, 0.81), (0.48, 0.66), (0.66, 0.77)]
    )
]
print(invkit.get_analysis("model_centric", n_bootstrap=1000, seed=0)(rows))
