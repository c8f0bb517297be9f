"""The demo's small architectures, built by the ``python:`` model loader like a user's own."""

from __future__ import annotations

import torch
from torch import nn

from invkit.plugin.components import LoadedModel, Preprocessing

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def network(kind: str, width: int, depth: int, size: int, num_classes: int = 10) -> nn.Module:
    """An MLP (``depth`` hidden layers of ``width``) or a CNN (``depth`` conv blocks)."""
    if kind == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        features = 3 * size * size
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        return nn.Sequential(*layers, nn.Linear(features, num_classes))
    if kind == "cnn":
        layers = []
        channels = 3
        for block in range(depth):
            out = width * 2**block
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = out
        side = size // 2**depth
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, num_classes))
    raise ValueError(f"unknown demo architecture {kind!r}")


def build(kind: str, width: int, depth: int, size: int) -> LoadedModel:
    """The factory the demo config names: ``python:invkit.demo.models:build``."""
    preprocessing = Preprocessing(
        input_size=(3, size, size),
        crop_pct=1.0,
        mean=MEAN,
        std=STD,
        num_classes=10,
        class_names=[str(d) for d in range(10)],
    )
    return LoadedModel(network(kind, width, depth, size), preprocessing, f"demo {kind}")


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images - mean) / std
