"""What kept outputs buy and cost: a new top-1 measure from kept outputs against forward passes,
pass throughput with ``summary`` outputs kept against ``none``, and bytes per image per view.

1. The demo's study (12 models × 10 test sets, rotation and grayscale) runs with ``ei`` and
   ``js`` twice, into two folders: one keeping ``summary`` outputs, one keeping ``none``. Then
   ``agreement`` is added to both: its 240 cells come from kept outputs in the first and from
   forward passes in the second. The analyses are left out, so each run's time is its cells'.
2. One pass of a timm model with 1,000 classes (ImageNet's K: the top-k and the file work
   grow with K), repeated with each level, alternating, so the ratio is within one run.
3. What the files hold, apart: per pass (the K × K matrix PᵀP kept for the nuclear norm, 8 MB
   at K = 1,000, and the header), per image (indices and targets) and per image per view; and
   the projection for the paper's study (150 models × 6 sets = 900 passes, × 50,000 images,
   × 5 views), each part extrapolated by its own count.

    python benchmarks/kept_outputs.py --device auto --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from invkit.config import ComponentEntry, parse_config
from invkit.demo import demo_config_dict
from invkit.demo.training import trained_models
from invkit.results.outputs import read_header, write_file
from invkit.run.passes import run_pass
from invkit.run.plan import StudyPlan
from invkit.run.study import Study

PAPER_PASSES = 150 * 6
PAPER_IMAGES = PAPER_PASSES * 50_000  # model × image
PAPER_IMAGE_VIEWS = PAPER_IMAGES * 5


@dataclasses.dataclass
class Breakdown:
    """A kept outputs file's bytes, by what they grow with."""

    per_pass: float  # PᵀP and the header
    per_image: float  # indices and targets
    per_image_view: float  # the top-k, log-sum-exp, entropy (and logits) of each view

    def paper(self) -> float:
        return (
            PAPER_PASSES * self.per_pass
            + PAPER_IMAGES * self.per_image
            + PAPER_IMAGE_VIEWS * self.per_image_view
        )


def breakdown(array_bytes: dict[str, int], total: int, images: int, views: int) -> Breakdown:
    """Split a file of ``total`` bytes whose arrays take ``array_bytes`` (by name)."""
    per_pass = array_bytes.get("v0.gram", 0) + (total - sum(array_bytes.values()))  # + header
    per_image = array_bytes["indices"] + array_bytes["targets"]
    rest = total - per_pass - per_image
    return Breakdown(per_pass, per_image / images, rest / (images * views))


def timed_study(config, out: Path) -> tuple[float, object]:
    started = time.perf_counter()
    outcome = Study(config, out_dir=out, progress=False, echo=lambda _: None).run()
    return time.perf_counter() - started, outcome


def new_measure(device: str, folder: Path) -> None:
    raw = demo_config_dict(trained_models(echo=print))
    raw["run"] = {"device": device, "batch_size": 128}
    raw["analyses"] = []
    raw["measures"] = ["ei", "js"]
    times = {}
    for level in ("summary", "none"):
        raw["run"]["outputs"] = level
        first = parse_config(raw)
        timed_study(first, folder / level)
        idle, _ = timed_study(first, folder / level)  # planning, checks, report: no cell
        added = dataclasses.replace(
            first, measures=(*first.measures, ComponentEntry("agreement", "agreement"))
        )
        seconds, outcome = timed_study(added, folder / level)
        cells = outcome.from_outputs + outcome.computed
        times[level] = seconds - idle
        print(
            f"  outputs = {level!r:9}: {cells} agreement cells in {seconds:6.2f} s, "
            f"{seconds - idle:6.2f} s beyond a run with nothing to compute ({idle:.2f} s); "
            f"{outcome.from_outputs} from kept outputs, {outcome.forward_images:,} images "
            "through the models"
        )
    print(f"  those cells from kept outputs: {times['none'] / times['summary']:.1f}× faster")
    files = list((folder / "summary" / "outputs").glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files) / 2**20
    print(f"  kept: {len(files)} summary files, {size:.2f} MiB")


def throughput(device: str, repeats: int, images: int, folder: Path) -> None:
    folder.mkdir(parents=True)
    config = parse_config(
        {
            "models": [
                {
                    "name": "resnet18",
                    "spec": "timm:resnet18",
                    "params": {"pretrained": False},
                    "preprocessing": {"input_size": [3, 64, 64], "crop_pct": 1.0},
                }
            ],
            "datasets": [
                {
                    "name": "digits",
                    "spec": "digits",
                    "params": {"size": 64},
                    "limit": images,  # classes 0 … 9: ImageNet outputs 0 … 9, by index
                }
            ],
            "transforms": ["rotation", "grayscale"],
            "measures": ["ei", "agreement", "js"],
            "run": {"device": device, "batch_size": 64, "workers": 0, "out": str(folder)},
        }
    )
    staging = folder / "outputs" / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    rates: dict[str, list[float]] = {"none": [], "summary": [], "full": []}
    sizes: dict[str, Breakdown] = {}
    for repeat in range(repeats + 1):  # the first round warms up
        for level in rates:
            run = dataclasses.replace(config.run, outputs=level)
            plan = StudyPlan(dataclasses.replace(config, run=run))
            [spec] = plan.passes({}, set())[0]
            spec = dataclasses.replace(spec, staging=str(staging))
            started = time.perf_counter()
            result = run_pass(spec)
            seconds = time.perf_counter() - started
            if repeat:
                rates[level].append(result.images / seconds)
            kept = result.kept
            if kept is not None:
                views = len(json.loads(kept.metadata["views"]))
                path = folder / f"{level}.safetensors"
                if kept.arrays is not None:  # the driver writes these: as it would
                    path.unlink(missing_ok=True)
                    write_file(path, kept.arrays, kept.metadata)
                else:
                    (staging / kept.staged).replace(path)
                header, _ = read_header(path)
                arrays = {
                    name: entry["data_offsets"][1] - entry["data_offsets"][0]
                    for name, entry in header.items()
                    if name != "__metadata__"
                }
                sizes[level] = breakdown(arrays, path.stat().st_size, result.images, views)
    base = statistics.median(rates["none"])
    for level, values in rates.items():
        rate = statistics.median(values)
        print(
            f"  outputs = {level!r:9}: {rate:8,.0f} img/s (median of {repeats}), "
            f"{rate / base:.3f}× 'none'"
        )
    for level in ("summary", "full"):
        part = sizes[level]
        print(
            f"  {level!r}: {part.per_pass / 1e6:,.2f} MB per pass (PᵀP and header), "
            f"{part.per_image:,.0f} bytes per image, {part.per_image_view:,.1f} bytes per image "
            f"per view; the paper's study: {part.paper() / 1e9:,.1f} GB "
            f"({PAPER_PASSES:,} passes × {part.per_pass / 1e6:,.2f} MB = "
            f"{PAPER_PASSES * part.per_pass / 1e9:,.1f} GB, {PAPER_IMAGES:,} images × "
            f"{part.per_image:,.0f} B = {PAPER_IMAGES * part.per_image / 1e9:,.2f} GB, "
            f"{PAPER_IMAGE_VIEWS:,} image views × {part.per_image_view:,.1f} B = "
            f"{PAPER_IMAGE_VIEWS * part.per_image_view / 1e9:,.1f} GB; K = 1000)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--pass-only", action="store_true", help="skip part 1 (the demo)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as folder:
        if not args.pass_only:
            print("1. adding agreement to the demo's finished study (240 cells):")
            new_measure(args.device, Path(folder) / "demo")
        print(f"2. one pass of resnet18 (K = 1000) on {args.images} images, 5 views:")
        throughput(args.device, args.repeats, args.images, Path(folder) / "pass")


if __name__ == "__main__":
    main()
