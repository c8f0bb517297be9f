"""Throughput of a study against its physical limit and against the plain way to compute EI.

Data: real photographs (crops and flips of scikit-learn's two sample photos, 427×640) written
as JPEG files of natural size. All contenders run in this one process, alternating, each
repeated (the median is printed), on the same model, views (rotation: 3, grayscale: 1) and
measures (ei, agreement, js):

  limit   forward passes and softmax alone over the already-preprocessed, normalized tensors of
          the originals and all views (what no pipeline can beat);
  invkit  ``invkit study`` over the JPEG folder (the pass's own rate, and end to end), and a
          pass over an in-memory dataset of uint8 images already at the model's size;
  plain   the way public scripts compute EI: one pass over the folder per view, PIL
          rotate/convert and torchvision preprocessing per image, a Python loop per sample;
  many    8 small timm models with one preprocessing over the JPEG folder, end to end, with
          decode-once (models_per_pass = auto) and without (models_per_pass = 1).

It also compares reduced JPEG decoding with full decoding (speed and the change in the cells),
and reports peak memory of a study over 1× and 10× the images (separate processes).

    python benchmarks/throughput.py                       # CPU figures of docs/performance.md
    python benchmarks/throughput.py --device cuda --models resnet50:224 --batch-size 256
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

import invkit
from invkit.config import parse_config
from invkit.results.store import STORE_NAME, Store
from invkit.run.engine import resolve_device
from invkit.run.study import Study

TRANSFORMS = ("rotation", "grayscale")
MEASURES = ("ei", "agreement", "js")
LONGER = 4  # the limit and the in-memory pass go over the images this many times (steadier)
MANY = (
    "test_byobnet",
    "test_convnext",
    "test_convnext2",
    "test_convnext3",
    "test_efficientnet",
    "test_efficientnet_gn",
    "test_efficientnet_ln",
    "test_vit",
)


def write_photos(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEG files of natural size: random crops (75–100% of each side) of the two
    sample photos, half of them mirrored, in two class folders."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % 2]
        height = int(photo.shape[0] * rng.uniform(0.75, 1))
        width = int(photo.shape[1] * rng.uniform(0.75, 1))
        top = rng.integers(0, photo.shape[0] - height + 1)
        left = rng.integers(0, photo.shape[1] - width + 1)
        crop = photo[top : top + height, left : left + width]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        target = folder / f"class{i % 2}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(target / f"{i:05d}.jpg", quality=90)


def seeded_weights(arch: str, folder: Path) -> Path:
    """A safetensors file of ``arch``'s seeded random weights (2 classes): every contender and
    every run then evaluates the same model (no hub is reachable for pretrained ones)."""
    from safetensors.torch import save_file

    path = folder / f"{arch}.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False, num_classes=2)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def study_config(folder: Path, models: dict[str, str], size: int, run: dict) -> dict:
    return {
        "models": [
            {
                "name": name,
                "spec": f"timm:{arch}",
                "params": {"weights": str(seeded_weights(arch, folder.parent)), "num_classes": 2},
                "preprocessing": {"input_size": [3, size, size]},
            }
            for name, arch in models.items()
        ],
        "datasets": [{"name": "photos", "spec": f"imagefolder:{folder}"}],
        "transforms": list(TRANSFORMS),
        "measures": list(MEASURES),
        "analyses": [],
        "run": run,
    }


def run_study(config: dict, out: Path) -> tuple[float, float, dict]:
    """(pass seconds summed over passes, end-to-end seconds, cells by key) of a fresh study."""
    started = time.perf_counter()
    Study(parse_config(config), out_dir=out, fresh=True, progress=False, echo=lambda _: None).run()
    wall = time.perf_counter() - started
    store = Store(out / STORE_NAME)
    cells = store.cells()
    store.close()
    passes = {}
    for cell in cells.values():
        passes[(cell.model, cell.dataset)] = cell.seconds
    return sum(passes.values()), wall, {key: cell.value for key, cell in cells.items()}


def preprocessed(folder: Path, model: invkit.LoadedModel, device: torch.device) -> torch.Tensor:
    """The folder's images as invkit's pipeline prepares them, on the device, as floats."""
    from invkit.inputs.data import PreparedDataset, as_float

    data = PreparedDataset(invkit.load_dataset(f"imagefolder:{folder}"), model.preprocessing)
    return as_float(torch.stack([data[i][0] for i in range(len(data))])).to(device)


def limit_rate(module, batches: list[torch.Tensor], images: int, amp: bool) -> float:
    """Images per second of forward passes and softmax alone, over batches holding the
    originals and all their views, already normalized."""
    started = time.perf_counter()
    with torch.inference_mode():
        for stacked in batches:
            with torch.autocast(stacked.device.type, dtype=torch.bfloat16, enabled=amp):
                module(stacked).float().softmax(dim=1)
        if batches[0].device.type == "cuda":
            torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def in_memory_rate(model, images_uint8, device, batch: int, workers: int, amp: bool) -> float:
    """Images per second of invkit's engine over uint8 images already at the model's size."""
    from torch.utils.data import Dataset

    from invkit.inputs.data import PreparedDataset, make_loader
    from invkit.run.engine import ModelRun, evaluate

    class InMemory(Dataset):
        def __len__(self):
            return len(images_uint8)

        def __getitem__(self, index):
            return images_uint8[index], index % 2

    measures = [(m, invkit.get_measure(m)) for m in MEASURES]
    transforms = {t: invkit.get_transform(t) for t in TRANSFORMS}
    at_size = dataclasses.replace(model.preprocessing, crop_pct=1.0)  # nothing to resize
    model = dataclasses.replace(model, preprocessing=at_size)
    loader = make_loader(
        PreparedDataset(InMemory(), at_size), batch, workers, device.type == "cuda"
    )
    run = ModelRun(model, {t: measures for t in TRANSFORMS})
    [evaluation] = evaluate([run], loader, transforms, device, amp=amp, progress=False)
    return evaluation.images / evaluation.seconds


def plain_rate(folder: Path, module, prep, device: torch.device, batch: int) -> float:
    """Images per second of the plain approach: a pass over the folder per view."""
    from torchvision import transforms as T

    size = prep.input_size[1]
    preprocess = T.Compose(
        [
            T.Resize(int(size / prep.crop_pct), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(prep.mean, prep.std),
        ]
    )
    files = sorted(folder.rglob("*.jpg"))
    views = {
        "original": lambda image: image,
        "rot90": lambda image: image.rotate(90, expand=True),
        "rot180": lambda image: image.rotate(180),
        "rot270": lambda image: image.rotate(270, expand=True),
        "gray": lambda image: image.convert("L").convert("RGB"),
    }
    started = time.perf_counter()
    probabilities = {}
    with torch.inference_mode():
        for name, view in views.items():
            outputs = []
            for start in range(0, len(files), batch):
                pixels = [
                    preprocess(view(Image.open(f).convert("RGB")))
                    for f in files[start : start + batch]
                ]
                outputs.append(module(torch.stack(pixels).to(device)).softmax(dim=1).cpu())
            probabilities[name] = torch.cat(outputs)
    original = probabilities["original"]
    for name in ("rot90", "rot180", "rot270", "gray"):
        for i in range(len(files)):  # EI per sample, as such scripts compute it
            a, b = original[i], probabilities[name][i]
            _ = float((a[a.argmax()] * b[b.argmax()]).sqrt()) if a.argmax() == b.argmax() else 0.0
    return len(files) / (time.perf_counter() - started)


def peak_memory(folder: Path, model: str, size: int, out: Path) -> tuple[float, float]:
    """Peak resident memory (MiB) of a study in a fresh process: of the process, and of the
    largest of its data-loader workers."""
    config = study_config(folder, {"m": model}, size, {"device": "cpu"})
    code = (
        "import json, resource, sys\n"
        "from invkit.config import parse_config\n"
        "from invkit.run.study import Study\n"
        "config = parse_config(json.loads(sys.argv[1]))\n"
        "Study(config, out_dir=sys.argv[2], fresh=True, progress=False, echo=print).run()\n"
        "status = open('/proc/self/status').read()\n"
        "own = int(status.split('VmHWM:')[1].split()[0])\n"  # ru_maxrss would include the
        # parent's size at fork: Linux keeps the high-water mark across fork and exec
        "workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(own / 1024, workers / 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(config), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    own, workers = done.stdout.strip().splitlines()[-1].split()
    return float(own), float(workers)


def single_model(args, work: Path, arch: str, size: int, images: int, device) -> None:
    folder = work / f"photos{images}"
    if not folder.exists():
        write_photos(folder, images)
    batch, amp = args.batch_size, device.type == "cuda"
    weights = seeded_weights(arch, work)
    model = invkit.load_model(f"timm:{arch}", weights=str(weights), num_classes=2)
    model.preprocessing = type(model.preprocessing)(
        **{**vars(model.preprocessing), "input_size": (3, size, size)}
    )
    module = model.module.to(device).eval()
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    prep = model.preprocessing
    mean = torch.tensor(prep.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, -1, 1, 1)
    images_at_size = preprocessed(folder, model, device)
    views = [images_at_size]
    for transform in TRANSFORMS:
        views += invkit.get_transform(transform)(images_at_size)
    batches = [
        (torch.cat([v[start : start + batch] for v in views]) - mean) / std
        for start in range(0, images, batch)
    ] * LONGER
    if device.type == "cuda":
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    uint8 = (images_at_size * 255).round().to(torch.uint8).cpu().repeat(LONGER, 1, 1, 1)
    run = {"device": str(device), "batch_size": batch, "amp": amp}
    config = study_config(folder, {arch: arch}, size, run)
    reduced = study_config(folder, {arch: arch}, size, {**run, "reduced_decoding": True})
    cells: dict = {}

    def invkit_folder(config=config, key="full"):
        seconds, wall, values = run_study(config, work / f"out-{key}")
        cells[key] = values
        return images / seconds, images / wall

    contenders = {
        "limit": lambda: limit_rate(module, batches, images * LONGER, amp),
        "invkit, JPEG folder": invkit_folder,
        "invkit, JPEG folder, reduced decoding": lambda: invkit_folder(reduced, "reduced"),
        "invkit, in memory": lambda: in_memory_rate(model, uint8, device, batch, 0, amp),
        "plain": lambda: plain_rate(folder, module, prep, device, batch),
    }
    for contender in contenders.values():  # warm-up: caches, allocator, thread pools
        contender()
    rounds: dict = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, contender in contenders.items():
            rounds[name].append(contender())
    limit = statistics.median(rounds["limit"])
    print(f"\n{arch} at {size} px, {images} JPEG photos, batch {batch}, on {device}")
    print(f"  {'contender':<40} {'img/s':>8} {'× limit':>8} {'× plain':>8}")
    plain = statistics.median(rounds["plain"])
    for name, values in rounds.items():
        rate = statistics.median(v[0] if isinstance(v, tuple) else v for v in values)
        print(f"  {name:<40} {rate:8.1f} {rate / limit:8.2f} {rate / plain:8.2f}")
        if isinstance(values[0], tuple):
            wall = statistics.median(v[1] for v in values)
            print(f"  {'  end to end (loading, store, report)':<40} {wall:8.1f}")
    differences = [abs(cells["full"][k] - cells["reduced"][k]) for k in cells["full"]]
    print(f"  reduced decoding changes the cells by at most {max(differences):.2e}")


def many_models(args, work: Path, images: int) -> None:
    folder = work / f"photos{images}"
    if not folder.exists():
        write_photos(folder, images)
    models = {name: name for name in MANY}
    timings: dict = {}

    def study(models_per_pass):
        run = {"device": args.device, "batch_size": args.batch_size}
        config = study_config(folder, models, 64, {**run, "models_per_pass": models_per_pass})
        _, wall, values = run_study(config, work / f"out-many-{models_per_pass}")
        timings.setdefault(models_per_pass, []).append(wall)
        return values

    study("auto")  # warm-up
    for _ in range(args.repeats):
        shared, alone = study("auto"), study(1)
    assert shared == alone, "decode-once changed results"
    once, each = statistics.median(timings["auto"][1:]), statistics.median(timings[1])
    print(f"\n8 timm test models at 64 px, {images} JPEG photos, end to end")
    print(f"  decode once (models_per_pass = auto)   {once:8.1f} s")
    print(f"  decode per model (models_per_pass = 1) {each:8.1f} s   ({each / once:.2f} × slower)")
    print("  cells identical: yes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--models",
        default="mobilenetv3_small_050:64:200,resnet18:224:40",
        help="arch:size:images, comma-separated",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--many-images", type=int, default=200)
    parser.add_argument("--memory-images", type=int, default=100)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(
        f"invkit {invkit.__version__}, torch {torch.__version__}, timm {timm.__version__}, "
        f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        for item in args.models.split(","):
            arch, size, images = item.split(":")
            single_model(args, work, arch, int(size), int(images), device)
        many_models(args, work, args.many_images)
        if args.memory_images:
            small = work / f"photos{args.memory_images}"
            large = work / f"photos{args.memory_images * 10}"
            for folder, count in ((small, args.memory_images), (large, 10 * args.memory_images)):
                if not folder.exists():
                    write_photos(folder, count)
            one = peak_memory(small, "mobilenetv3_small_050", 64, work / "memory-1")
            ten = peak_memory(large, "mobilenetv3_small_050", 64, work / "memory-10")
            print("\npeak memory of a study, mobilenetv3_small_050 at 64 px on the CPU")
            print(f"  {'images':>8} {'study process':>14} {'largest worker':>15}")
            for count, (own, worker) in ((args.memory_images, one), (10 * args.memory_images, ten)):
                print(f"  {count:>8} {own:>10.0f} MiB {worker:>11.0f} MiB")
            print(f"  growth from 1× to 10×: {ten[0] / one[0] - 1:+.1%} (process)")


if __name__ == "__main__":
    main()
