"""Training the demo's model population: small MLPs and CNNs of different widths, depths,
training lengths and augmentations, on the training split of coloured digits."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from invkit.fingerprint import digest
from invkit.paths import cache_root

SIZE = 16
RECIPE_VERSION = 2


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    width: int
    depth: int
    epochs: int
    augment: str = "none"  # none, rotate (random quarter turns), gray (random grayscale), both
    seed: int = 0


RECIPES = (
    Recipe("mlp-w16-e1", "mlp", 16, 1, 1),
    Recipe("mlp-w32-e3", "mlp", 32, 1, 3),
    Recipe("mlp-w64-e8", "mlp", 64, 1, 8),
    Recipe("mlp-w128x2-e20", "mlp", 128, 2, 20),
    Recipe("mlp-w128x2-e20-rot", "mlp", 128, 2, 20, "rotate"),
    Recipe("cnn-w4-e2", "cnn", 4, 2, 2),
    Recipe("cnn-w8-e4", "cnn", 8, 2, 4),
    Recipe("cnn-w16-e8", "cnn", 16, 2, 8),
    Recipe("cnn-w16-e8-gray", "cnn", 16, 2, 8, "gray"),
    Recipe("cnn-w32x3-e15", "cnn", 32, 3, 15),
    Recipe("cnn-w32x3-e15-rot", "cnn", 32, 3, 15, "rotate"),
    Recipe("cnn-w32x3-e15-both", "cnn", 32, 3, 15, "both"),
)


def cache_dir() -> Path:
    return cache_root() / "demo"


def augment(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind in ("rotate", "both"):
        turns = torch.randint(0, 4, (len(images),), generator=generator)
        images = torch.stack(
            [torch.rot90(x, int(k), dims=(-2, -1)) for x, k in zip(images, turns, strict=True)]
        )
    if kind in ("gray", "both"):
        gray = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)
        chosen = (torch.rand(len(images), generator=generator) < 0.5).view(-1, 1, 1, 1)
        images = torch.where(chosen, gray.expand_as(images), images)
    return images


def train(recipe: Recipe, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """Adam, cross-entropy, batches of 64, seeded: the same recipe gives the same weights."""
    from invkit.demo.models import network, normalize

    torch.manual_seed(recipe.seed)
    model = network(recipe.kind, recipe.width, recipe.depth, SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 64):
            batch = order[start : start + 64]
            inputs = normalize(augment(images[batch], recipe.augment, generator))
            loss = nn.functional.cross_entropy(model(inputs), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def trained_models(echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Checkpoints of every recipe, trained now if the cache lacks them."""
    from safetensors.torch import save_file

    from invkit.builtins.datasets import Digits

    key = digest(
        {"version": RECIPE_VERSION, "size": SIZE, "recipes": [asdict(r) for r in RECIPES]}
    )[:12]
    folder = cache_dir() / key
    paths = {r.name: folder / f"{r.name}.safetensors" for r in RECIPES}
    todo = [r for r in RECIPES if not paths[r.name].is_file()]
    if not todo:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    train_split = Digits(split="train", size=SIZE, colored=True)
    echo(
        f"invkit demo: training {len(todo)} model(s) on {len(train_split)} digits "
        f"(cached in {folder})"
    )
    for recipe in todo:
        started = time.perf_counter()
        model = train(recipe, train_split.images, train_split.labels)
        temporary = paths[recipe.name].with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(temporary))
        temporary.replace(paths[recipe.name])  # never a half-written checkpoint in the cache
        echo(f"  trained {recipe.name} in {time.perf_counter() - started:.1f}s")
    return paths
