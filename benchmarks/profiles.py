"""What an invariance profile costs: a 12-angle rotation profile against the forward-pass limit
of its 13 views, and the peak memory of a pass with 36 views against one with 4.

1. resnet18 (random weights) at 64 px over random uint8 images: ``evaluate`` with rotation by
   15°, 30°, …, 180° and ``ei``, against plain forward passes over the same 13 × N images
   (the originals and 12 views), the limit any pass with 13 views can reach.
2. Peak resident memory of a pass with 36 rotation views and one with 4, each in a fresh
   process (``ru_maxrss``), at batch 64.

    python benchmarks/profiles.py --images 512 --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import timm
import torch
from torch.utils.data import Dataset

import invkit
from invkit.inputs.data import PreparedDataset, make_loader
from invkit.plugin.components import LoadedModel, Preprocessing
from invkit.run.engine import ModelRun, evaluate

SIZE = 64


class RandomImages(Dataset):
    def __init__(self, count: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (count, 3, SIZE, SIZE), generator=generator).byte()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], index % 1000


def profile_pass(images: int, angles: list[float], batch: int) -> float:
    """Seconds for one pass of resnet18 with rotation by ``angles`` and ``ei``."""
    module = timm.create_model("resnet18", pretrained=False)
    prep = Preprocessing(input_size=(3, SIZE, SIZE), crop_pct=1.0, num_classes=1000)
    data = PreparedDataset(RandomImages(images), prep)
    transforms = {"rotation": invkit.get_transform("rotation", angles=angles)}
    run = ModelRun(
        LoadedModel(module, prep, "resnet18"), {"rotation": [("ei", invkit.get_measure("ei"))]}
    )
    loader = make_loader(data, batch_size=batch, workers=0, pin=False)
    started = time.perf_counter()
    evaluate([run], loader, transforms, torch.device("cpu"), progress=False)
    return time.perf_counter() - started


def forward_limit(images: int, views: int, batch: int) -> float:
    """Seconds for plain forward passes over ``views`` × ``images`` images."""
    module = timm.create_model("resnet18", pretrained=False).eval()
    pixels = torch.rand(batch * views, 3, SIZE, SIZE)
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in range(0, images, batch):
            module(pixels)
    return time.perf_counter() - started


def peak_memory(views: int, batch: int) -> int:
    """Peak resident memory (bytes) of a pass with ``views`` rotation views, in a new process."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(views), "--batch", str(batch)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stdout.split()[-1])


def child(views: int, batch: int) -> None:
    angles = [float(15 + 360 * i / views) for i in range(views)]  # none a multiple of 90
    profile_pass(batch * 4, angles, batch)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, resnet18 at {SIZE} px")
    angles = [15.0 * (i + 1) for i in range(12)]
    profile = statistics.median(
        profile_pass(args.images, angles, args.batch) for _ in range(args.repeats)
    )
    limit = statistics.median(
        forward_limit(args.images, 13, args.batch) for _ in range(args.repeats)
    )
    print(
        f"1. 12-angle rotation profile: {args.images / profile:,.0f} img/s; the forward-pass "
        f"limit of 13 views: {args.images / limit:,.0f} img/s; {limit / profile:.3f}× the limit"
    )
    small, large = peak_memory(4, args.batch), peak_memory(36, args.batch)
    print(
        f"2. peak memory at batch {args.batch}: 4 views {small / 2**20:,.0f} MiB, 36 views "
        f"{large / 2**20:,.0f} MiB: {large / small:.2f}× (target ≤ 1.3×)"
    )


if __name__ == "__main__":
    main()
