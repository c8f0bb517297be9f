"""Reading a study back (``invkit.open_study``): how fast its cells answer, and that per-sample
values stream without being held.

    python benchmarks/notebook.py                          # 150 models × 6 sets; 10 M samples
    python benchmarks/notebook.py --samples 1000000        # a quick look

1. A synthetic store of ``--models`` models × ``--datasets`` sets × 2 transforms × 3 measures
   (cells only), written through the store's own ``write_pass``: it times ``open_study`` and
   its ``cells`` DataFrame together (the target: under 1 s), and ``models`` and ``datasets``.
2. A second store with ``--samples`` per-sample rows: it streams ``per_sample(chunksize=...)``
   through a running sum, with the peak of Python's allocations (``tracemalloc``) against the
   rows' size in memory were they held at once; then writes per_sample.parquet and times it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

import invkit
from invkit.plugin.passes import Cell
from invkit.report.per_sample import write_parquet
from invkit.results.store import STORE_NAME, Store

TRANSFORMS, MEASURES = ("rotation", "grayscale"), ("ei", "agreement", "js")
ROW_BYTES = 6 * 8 + 40  # a per-sample row held in a DataFrame: six columns, the texts' share


def make_store(folder: Path, models: int, datasets: int, images: int, per_sample: bool) -> Store:
    """A store of ``models`` × ``datasets`` passes, each with its 6 cells (and their
    per-sample values of ``images`` images when ``per_sample``), and the config naming them."""
    rng = np.random.default_rng(0)
    store = Store(folder / STORE_NAME)
    model_names = [f"model-{m:03d}" for m in range(models)]
    dataset_names = [f"set-{d}" for d in range(datasets)]
    store.set_config({
        "models": [{"name": name, "spec": f"timm:{name}"} for name in model_names],
        "datasets": [{"name": name, "spec": "digits"} for name in dataset_names],
        "transforms": [{"name": name} for name in TRANSFORMS],
        "measures": [{"name": name} for name in MEASURES],
        "analyses": [],
    })  # fmt: skip
    indices = list(range(images))
    for model in model_names:
        for dataset in dataset_names:
            cells, samples = [], {}
            for transform in TRANSFORMS:
                for measure in MEASURES:
                    values = rng.random(images)
                    cell = Cell(model, dataset, transform, measure, "fingerprint",
                                float(values.mean()), None, None, float(rng.random()), images,
                                images, 0, measure != "js", per_sample, 0.1)  # fmt: skip
                    cells.append(cell)
                    if per_sample:
                        samples[cell.key] = (indices, values.tolist())
            preprocessing = {"input_size": [3, 224, 224], "num_classes": 1000}
            store.write_pass(cells, samples, preprocessing=preprocessing)
    return store


def cells_only(models: int, datasets: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        make_store(Path(folder), models, datasets, 1, per_sample=False).close()
        made = time.perf_counter() - start
        start = time.perf_counter()
        study = invkit.open_study(folder)
        cells = study.cells
        answered = time.perf_counter() - start
        start = time.perf_counter()
        shapes = (study.models.shape, study.datasets.shape)
        metadata = time.perf_counter() - start
    print(f"{models} models × {datasets} sets × {len(TRANSFORMS) * len(MEASURES)} cells each: "
          f"store made in {made:.1f} s")  # fmt: skip
    print(f"  open_study + cells ({len(cells):,} rows): {answered:.3f} s (target: under 1 s)  "
          f"{'ok' if answered < 1 else 'SLOW'}")  # fmt: skip
    print(f"  models {shapes[0]} and datasets {shapes[1]}: {metadata:.3f} s")


def streamed(samples: int, chunksize: int) -> None:
    models, datasets = 10, 2
    images = samples // (models * datasets * len(TRANSFORMS) * len(MEASURES))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        store = make_store(Path(folder), models, datasets, images, per_sample=True)
        made = time.perf_counter() - start
        total = models * datasets * len(TRANSFORMS) * len(MEASURES) * images
        print(f"{total:,} per-sample rows ({models} models × {datasets} sets × "
              f"{images:,} images × 6 cells): store made in {made:.0f} s")  # fmt: skip
        study = invkit.open_study(folder)
        tracemalloc.start()
        start = time.perf_counter()
        rows, running = 0, 0.0
        for chunk in study.per_sample(chunksize=chunksize):
            rows += len(chunk)
            running += float(chunk["value"].sum())
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        held = total * ROW_BYTES
        print(f"  per_sample(chunksize={chunksize:,}): {rows:,} rows in {seconds:.1f} s "
              f"({rows / seconds:,.0f} rows/s), peak {peak / 2**20:,.0f} MiB; held at once "
              f"they would take about {held / 2**20:,.0f} MiB  "
              f"{'ok' if rows == total and peak < held / 4 else 'HELD'}")  # fmt: skip
        start = time.perf_counter()
        path = write_parquet(Path(folder), store, store.config())
        seconds = time.perf_counter() - start
        size = path.stat().st_size if path else 0
        print(f"  per_sample.parquet written in {seconds:.1f} s ({size / 2**20:,.0f} MiB)")
        start = time.perf_counter()
        write_parquet(Path(folder), store, store.config())
        print(f"  and skipped when nothing changed: {time.perf_counter() - start:.2f} s")
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=150)
    parser.add_argument("--datasets", type=int, default=6)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--chunksize", type=int, default=1_000_000)
    args = parser.parse_args()
    cells_only(args.models, args.datasets)
    streamed(args.samples, args.chunksize)


if __name__ == "__main__":
    main()
