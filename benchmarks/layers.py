"""Layer-wise invariance: the pass's speed with layers hooked, and that its memory does not
grow with the images.

    python benchmarks/layers.py                 # resnet18 at 64 px, rotation's 3 views
    python benchmarks/layers.py --images 256    # a quick look

1. Throughput of the pass (``invkit.run.engine.evaluate``, EI on rotation) over ``--images``
   random 64 px images, without layers and with resnet18's 4 stages hooked, each measured by
   normalized variance and linear CKA (8 layer cells), best of ``--repeats``; the ratio
   (target: at least 0.8).
2. The peak resident memory (``ru_maxrss``) of a fresh process running the pass over 1× and
   10× the images, without layers and hooked (target: growth under 5%): the measures keep
   running sums only. glibc keeps freed memory in its heap, so the hooked peak can step up
   once with more batches; the third line has large freed tensors returned to the system at
   once (``MALLOC_MMAP_THRESHOLD_=65536``), which shows what the pass itself holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

STAGES = ("layer1", "layer2", "layer3", "layer4")


class RandomImages(Dataset):
    """Seeded random 64 px images, as the pass's loader yields them."""

    def __init__(self, count: int, size: int = 64):
        self.count, self.size = count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(index)
        pixels = torch.randint(0, 256, (3, self.size, self.size), generator=generator)
        return pixels.to(torch.uint8), index % 1000, index, "", False


def run_pass(images: int, hooked: bool, batch: int = 64) -> float:
    """Seconds of one pass over ``images`` images."""
    import timm

    from invkit import get_measure, get_transform
    from invkit.lookup import get_layer_measure
    from invkit.plugin.components import LoadedModel, Preprocessing
    from invkit.run.engine import ModelRun, evaluate

    torch.manual_seed(0)
    module = timm.create_model("resnet18", pretrained=False)
    loaded = LoadedModel(module, Preprocessing(input_size=(3, 64, 64)), "timm:resnet18")
    layers = {}
    if hooked:
        layers["rotation"] = [
            (stage, f"{m}@{stage}", get_layer_measure(m))
            for stage in STAGES
            for m in ("normalized_variance", "cka")
        ]
    run = ModelRun(loaded, {"rotation": [("ei", get_measure("ei"))]}, label="resnet18",
                   layers=layers, spec="timm:resnet18")  # fmt: skip
    loader = DataLoader(RandomImages(images), batch_size=batch)
    start = time.perf_counter()
    evaluate([run], loader, {"rotation": get_transform("rotation")}, torch.device("cpu"),
             progress=False)  # fmt: skip
    return time.perf_counter() - start


UNMAPPED = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # glibc: a freed tensor's memory goes back at once


def peak_in_fresh_process(images: int, hooked: bool, env: dict[str, str] | None = None) -> int:
    """KiB: the peak resident memory of a process running one pass (``env``: added to its
    environment)."""
    code = (
        "import json, resource, sys; sys.path.insert(0, 'benchmarks'); import layers; "
        f"layers.run_pass({images}, {hooked}); "
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, **(env or {})})  # fmt: skip
    return int(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run_pass(64, True)  # warm up (thread pools, timm's import)
    plain = min(run_pass(args.images, False) for _ in range(args.repeats))
    hooked = min(run_pass(args.images, True) for _ in range(args.repeats))
    ratio = plain / hooked
    print(f"resnet18 at 64 px, rotation's 3 views, {args.images} images, best of {args.repeats}:")
    print(f"  without layers: {args.images / plain:,.0f} img/s")
    print(
        f"  4 stages × normalized_variance and cka: {args.images / hooked:,.0f} img/s "
        f"({ratio:.2f}× the pass without; target ≥ 0.8)  {'ok' if ratio >= 0.8 else 'SLOW'}"
    )
    runs = [(False, None, "without layers"), (True, None, "hooked"),
            (True, UNMAPPED, "hooked, freed tensors unmapped at once")]  # fmt: skip
    for hooked, env, what in runs:
        one = peak_in_fresh_process(args.images, hooked, env)
        ten = peak_in_fresh_process(10 * args.images, hooked, env)
        growth = ten / one - 1
        print(f"  peak resident memory, {what}: {one / 1024:,.0f} MiB for {args.images} images, "
              f"{ten / 1024:,.0f} MiB for {10 * args.images} ({growth:+.1%}; target under 5%)  "
              f"{'ok' if growth < 0.05 else 'GROWS'}")  # fmt: skip


if __name__ == "__main__":
    main()
