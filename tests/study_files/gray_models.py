"""One-channel models, as MNIST-style checkpoints are: the tests train and load them."""

import torch
from torch import nn

from invkit import LoadedModel, Preprocessing


def cnn(classes: int = 10):
    """A small CNN on 1×16×16 grayscale input."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


def gray_loaded():
    """A 1-channel model whose loader states its own preprocessing (no config needed)."""
    torch.manual_seed(0)
    preprocessing = Preprocessing(
        input_size=(1, 16, 16), crop_pct=1.0, mean=(0.5,), std=(0.5,), num_classes=10
    )
    return LoadedModel(cnn(), preprocessing, "gray_loaded")
