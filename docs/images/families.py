"""Draw docs/images/families.png: one real photograph (scikit-learn's china.jpg) under each
built-in transform family at three magnitudes, through the same code a study runs.

    python docs/images/families.py [OUTPUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from invkit import get_transform

ROWS = [  # (family, parameters, label of each magnitude)
    ("rotation", {"angles": [15, 45, 90]}, "°"),
    ("translation", {"shifts": [-12, 4.5, 20]}, " px"),
    ("scale", {"factors": [0.6, 0.8, 1.5]}, "×"),
    ("flip", {"directions": ["horizontal", "vertical"]}, ""),
    ("brightness", {"factors": [0.4, 0.7, 1.6]}, "×"),
    ("contrast", {"factors": [0.2, 0.5, 2.0]}, "×"),
    ("saturation", {"factors": [0.0, 0.5, 2.5]}, "×"),
    ("hue", {"shifts": [-0.25, 0.1, 0.5]}, " turn"),
    ("gaussian_blur", {"sigmas": [1, 2, 4]}, " px"),
    ("gaussian_noise", {"stds": [0.05, 0.1, 0.2]}, ""),
    ("jpeg", {"qualities": [50, 15, 3]}, ""),
]


def photograph(size: int = 128) -> torch.Tensor:
    image = Image.fromarray(load_sample_image("china.jpg"))
    side = min(image.size)
    left = (image.width - side) // 2
    image = image.crop((left, 0, left + side, side)).resize((size, size), Image.BILINEAR)
    return (torch.tensor(np.asarray(image)).permute(2, 0, 1).float() / 255).unsqueeze(0)


def draw(output: Path) -> Path:
    from matplotlib.figure import Figure

    image = photograph()
    figure = Figure(figsize=(8, 2.1 * len(ROWS) / 1.6))
    axes = figure.subplots(len(ROWS), 4)
    for row, (name, params, unit) in zip(axes, ROWS, strict=True):
        transform = get_transform(name, **params)
        panels = [
            ("original", image[0]),
            *zip(transform.view_names, (v[0] for v in transform(image)), strict=True),
        ]
        for ax in row:
            ax.axis("off")
        for ax, (label, view) in zip(row, panels, strict=False):
            ax.imshow(view.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_title(
                label if label in ("original", "horizontal", "vertical") else f"{label}{unit}",
                fontsize=8,
            )
        row[0].text(
            -0.1, 0.5, name, transform=row[0].transAxes, ha="right", va="center", fontsize=9
        )
    figure.tight_layout()
    figure.savefig(output, dpi=80)
    return output


if __name__ == "__main__":
    print(draw(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png")))
