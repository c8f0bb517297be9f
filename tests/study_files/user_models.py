"""Models the study tests load through the ``python:`` loader, as a user's own code."""

import time

import torch
from torch import nn

from invkit import LoadedModel, Preprocessing


def linear(size: int = 16, classes: int = 10, seed: int = 0):
    """A linear classifier on flattened pixels (seeded): rotation changes its outputs."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes))


class Slow(nn.Module):
    """A linear model that sleeps in every forward pass, so a test can kill a study mid-run."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.body = linear()

    def forward(self, x):
        time.sleep(self.seconds)
        return self.body(x)


def slow(seconds: float = 0.2):
    torch.manual_seed(0)
    return Slow(seconds)


def named(size: int = 16):
    """Six named classes (a..f), so datasets are matched by folder name and can be subsets."""
    torch.manual_seed(1)
    preprocessing = Preprocessing(
        input_size=(3, size, size),
        crop_pct=1.0,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        num_classes=6,
        class_names=list("abcdef"),
    )
    return LoadedModel(linear(size, 6), preprocessing, "named")


class Broken(nn.Module):
    """Raises in every forward pass: a component failing in the middle of a study."""

    def forward(self, x):
        raise RuntimeError("this model is broken")


def broken():
    return Broken()


class NotANumber(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 10), float("nan"))


def nan():
    return NotANumber()


def two_outputs(size: int = 16):
    """Two classes only: wrong for a ten-class dataset."""
    return linear(size, 2)


def exits():
    """User code that calls sys.exit (as an argparse-based script does)."""
    raise SystemExit(2)


class Flat(nn.Module):
    def forward(self, x):
        return x.flatten()


def flat():
    """Returns one flat vector for the whole batch: not (batch, classes)."""
    return Flat()


def other_linear():
    """The linear classifier with other weights: a second model for a population."""
    return linear(seed=5)


class ExitsInForward(nn.Module):
    """Loads and passes the blank-image check, then calls sys.exit on real batches."""

    def __init__(self):
        super().__init__()
        self.body = linear()

    def forward(self, x):
        if x.shape[0] > 1:
            raise SystemExit(3)
        return self.body(x)


def exits_in_forward():
    return ExitsInForward()


class Logged(nn.Module):
    """Appends a line to ``log`` for every real batch, then fails or (once) kills its process."""

    def __init__(self, log: str, mode: str):
        super().__init__()
        self.log, self.mode = log, mode
        self.body = linear()

    def forward(self, x):
        if x.shape[0] > 1:  # not the one-image check before the study
            import os
            from pathlib import Path

            with open(self.log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            if self.mode == "raise":
                raise RuntimeError("this pass always fails")
            marker = Path(self.log + ".killed")
            if self.mode == "die_once" and not marker.exists():
                marker.write_text("once")
                os.kill(os.getpid(), 9)  # as kill -9 of the worker mid-pass
        return self.body(x)


def logged(log: str = "", mode: str = "raise"):
    return Logged(log, mode)


def third_linear():
    """A third seeded linear classifier: three models make a model-centric correlation."""
    return linear(seed=9)


class Raises(nn.Module):
    """Passes the one-image check, then raises ``message`` on real batches."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message
        self.body = linear()

    def forward(self, x):
        if x.shape[0] > 1:
            raise RuntimeError(self.message)
        return self.body(x)


def raises(message: str = "failed"):
    return Raises(message)


class Constant(nn.Module):
    """The same logits for every image, class 0 first: any two such models are as accurate."""

    def __init__(self, classes: int):
        super().__init__()
        self.register_buffer("logits", torch.arange(classes, 0, -1, dtype=torch.float32))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def constant(classes: int = 10):
    return Constant(classes)


def named_digits(size: int = 16):
    """Ten outputs named zero … nine in a shuffled order, so only matching by name is right."""
    torch.manual_seed(2)
    order = ["three", "zero", "nine", "one", "eight", "two", "seven", "four", "six", "five"]
    preprocessing = Preprocessing(
        input_size=(3, size, size),
        crop_pct=1.0,
        num_classes=10,
        class_names=order,
    )
    return LoadedModel(linear(size), preprocessing, "named_digits")


def conv(seed: int = 3):
    """A small convolutional classifier (seeded): its float32 reductions depend on the number
    of threads that run them, unlike a linear model's on these sizes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, 10),
    )  # fmt: skip


class Pair(nn.Module):
    """A module that returns a tuple, as attention blocks and RNNs do."""

    def forward(self, x):
        return x, x


class First(nn.Module):
    def forward(self, pair):
        return pair[0]


def paired(size: int = 16):
    """A linear classifier behind a module that returns a tuple: that module is no layer to
    measure."""
    torch.manual_seed(0)
    return nn.Sequential(Pair(), First(), nn.Flatten(), nn.Linear(3 * size * size, 10))
