"""The Lie derivative: its cost against a plain forward pass, and its values side by side with
the authors' code (Gruver et al., ngruver/lie-deriv, ``lee/lie_derivs.py``) on the same models
and photographs.

invkit differentiates the model along the transform's generator (central image differences);
the authors differentiate their own bilinear sampler at t = 0, whose derivative there is
one-sided (the next pixel's value minus this one's). Their units differ too: rotation per
radian (invkit: per degree), translation per unit of the [-1, 1] grid, (W − 1)/2 pixels
(invkit: per pixel). The script converts theirs to invkit's units before comparing.

    python benchmarks/lie_derivative.py --authors /path/to/lie-deriv   # a checkout of theirs

Without ``--authors`` it times invkit's products only. The authors' code is not part of invkit:
fetch it yourself (github.com/ngruver/lie-deriv) to compare.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from invkit import get_measure, get_transform


def photographs(count: int, size: int) -> torch.Tensor:
    """``count`` crops of scikit-learn's two real photographs, at ``size`` pixels."""
    rng = np.random.default_rng(0)
    crops = []
    for i in range(count):
        image = Image.fromarray(load_sample_image(("china.jpg", "flower.jpg")[i % 2]))
        side = int(rng.integers(200, min(image.size)))
        left = int(rng.integers(0, image.width - side))
        top = int(rng.integers(0, image.height - side))
        crop = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        crops.append(torch.tensor(np.asarray(crop)).permute(2, 0, 1).float() / 255)
    return torch.stack(crops)


def timed(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, help="a checkout of ngruver/lie-deriv")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = photographs(args.images, args.size)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} "
        f"photographs at {args.size} px, random-weight timm models"
    )
    lie = get_measure("lie_derivative", method="forward")
    double = get_measure("lie_derivative", method="double_backward")
    values: dict[str, dict[str, float]] = {}
    for name in ("resnet18", "efficientnet_b0"):
        model = timm.create_model(name, pretrained=False).eval()
        for parameter in model.parameters():  # as a study's pass does
            parameter.requires_grad_(False)

        def probabilities(pixels, model=model):
            return model(pixels).softmax(dim=1)

        rotation = get_transform("rotation").generator(images)
        shift = get_transform("translation").generator(images)
        with torch.no_grad():
            forward = timed(lambda: probabilities(images).sum().item(), args.repeats)
        ours = timed(lambda: lie.derivative(probabilities, images, rotation), args.repeats)  # noqa: B023
        twice = timed(lambda: double.derivative(probabilities, images, rotation), args.repeats)  # noqa: B023
        print(
            f"{name}: forward {forward:.3f} s; lie_derivative forward mode {ours / forward:.2f}×, "
            f"double backward {twice / forward:.2f}× a forward pass"
        )
        values[name] = {
            "rotation": float(lie.derivative(probabilities, images, rotation).mean()),
            "translation": float(lie.derivative(probabilities, images, shift).mean()),
        }
        if args.authors is None:
            continue
        sys.path.insert(0, str(args.authors))
        from lee.lie_derivs import rotation_lie_deriv, translation_lie_deriv

        def authors(function, *rest, probabilities=probabilities):
            return function(probabilities, images, *rest).detach().abs().mean(dim=-1).mean()

        authors_time = timed(lambda: authors(rotation_lie_deriv), args.repeats)
        per_radian = float(authors(rotation_lie_deriv))
        per_grid = float(authors(translation_lie_deriv, "x"))
        theirs = {
            "rotation": per_radian * math.pi / 180,  # per degree
            "translation": per_grid * 2 / (args.size - 1),  # per pixel
        }
        for family in ("rotation", "translation"):
            ratio = theirs[family] / values[name][family]
            print(
                f"  {family}: invkit {values[name][family]:.4g}, authors' {theirs[family]:.4g} "
                f"(in invkit's units), ratio authors'/invkit {ratio:.3f}"
            )
        print(
            f"  the authors' rotation derivative takes {authors_time / forward:.2f}× a forward pass"
        )
        values[name].update({f"authors {k}": v for k, v in theirs.items()})
    if args.authors is not None:
        for family in ("rotation", "translation"):
            mine = sorted(values, key=lambda n: values[n][family])
            yours = sorted(values, key=lambda n: values[n][f"authors {family}"])
            print(
                f"ordering of models by {family}: invkit {mine}, authors' {yours}: "
                + ("the same" if mine == yours else "DIFFERENT")
            )


if __name__ == "__main__":
    main()
