"""Throughput of the evaluation engine: images per second for one model × dataset pass.

A synthetic dataset of random 224×224 uint8 images (already at the model's size, so the data
loader only batches) goes through ``invkit.run.engine.evaluate`` with rotation (3 views) and
grayscale (1 view) and the measures ei, agreement and js, under several settings, so their
ratios show what batching all views into one forward pass and bfloat16 autocast buy.

    python benchmarks/engine.py --device auto --model resnet50 --images 2048 --batch-size 128
"""

from __future__ import annotations

import argparse

import timm
import torch
from torch.utils.data import Dataset

import invkit
from invkit.inputs.data import PreparedDataset, make_loader
from invkit.plugin.components import LoadedModel, Preprocessing
from invkit.run.engine import ModelRun, evaluate, resolve_device


class RandomImages(Dataset):
    def __init__(self, count: int, size: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (count, 3, size, size), generator=generator).byte()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], index % 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    module = timm.create_model(args.model, pretrained=False)
    prep = Preprocessing(input_size=(3, args.size, args.size), crop_pct=1.0, num_classes=1000)
    model = LoadedModel(module, prep, args.model)
    data = PreparedDataset(RandomImages(args.images, args.size), prep)
    transforms = {
        "rotation": invkit.get_transform("rotation"),
        "grayscale": invkit.get_transform("grayscale"),
    }
    measures = [(name, invkit.get_measure(name)) for name in ("ei", "agreement", "js")]
    run = ModelRun(model, {name: measures for name in transforms})
    print(
        f"device {device}, {args.model}, {args.images} images {args.size}px, "
        f"batch {args.batch_size}, torch {torch.__version__}"
    )
    settings = [
        ("all 5 views in one forward", {}),
        ("one view per forward", {"max_views_per_forward": 1}),
    ]
    if device.type == "cuda":
        settings.append(("all views, bf16 autocast", {"amp": True}))
        settings.append(("bf16, channels-last", {"amp": True, "channels_last": True}))
    for label, options in settings:
        loader = make_loader(data, args.batch_size, args.workers, pin=device.type == "cuda")
        evaluate([run], loader, transforms, device, progress=False, **options)  # warm-up
        [result] = evaluate([run], loader, transforms, device, progress=False, **options)
        print(
            f"  {label:<30} {result.images / result.seconds:9.0f} images/s "
            f"({result.forward_images / result.seconds:9.0f} forward images/s)"
        )


if __name__ == "__main__":
    main()
