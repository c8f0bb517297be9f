"""How long do transforms and measures take next to a model's forward pass?

Prints milliseconds per batch and images per second for each transform, each measure, and a
timm model's forward pass, on one device, so their ratio shows whether view-making matters.

    python benchmarks/transforms.py --device auto --batch-size 64 --size 224 --model resnet50
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

import invkit


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after two warm-ups."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    b = args.batch_size
    images = torch.rand(b, 3, args.size, args.size, device=device)
    print(f"device {device}, batch {b}×3×{args.size}×{args.size}, torch {torch.__version__}")

    def report(label: str, seconds: float) -> None:
        print(f"  {label:<34} {seconds * 1e3:9.2f} ms/batch {b / seconds:12.0f} images/s")

    for label, transform in [
        ("rotation 90/180/270 (rot90)", invkit.get_transform("rotation")),
        ("rotation 15/30/45 (kornia)", invkit.get_transform("rotation", angles=[15, 30, 45])),
        ("grayscale (kornia)", invkit.get_transform("grayscale")),
    ]:
        report(label, timed(lambda t=transform: t(images), device, args.repeats))
    p = torch.randn(b, args.classes, device=device).softmax(dim=1)
    q = torch.randn(b, args.classes, device=device).softmax(dim=1)
    for measure_name in ("ei", "js", "kl"):
        measure = invkit.get_measure(measure_name)
        report(
            f"measure {measure_name} (K={args.classes})",
            timed(lambda m=measure: m(p, q), device, args.repeats),
        )
    model = timm.create_model(args.model, pretrained=False).to(device).eval()
    with torch.inference_mode():
        report(f"forward {args.model} (fp32)", timed(lambda: model(images), device, args.repeats))


if __name__ == "__main__":
    main()
