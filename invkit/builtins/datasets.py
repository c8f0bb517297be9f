"""Built-in dataset loaders: ``imagefolder:``, ``torchvision:`` and ``digits``.

A dataset yields ``(image, label)``: a PIL image or a float tensor ``(C, H, W)`` in [0, 1], and
an index into the dataset's ``classes`` (or -1 when unlabeled). Matching those classes to a
model's classes happens in ``invkit.inputs.classes``; resizing in ``invkit.inputs.data``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invkit.errors import InvkitError
from invkit.paths import resolve_path
from invkit.plugin.hookspecs import hookimpl

if TYPE_CHECKING:  # torch loads when a dataset is opened, not when it is listed
    import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


MAX_PIXELS = 89_478_485  # Pillow's own default: about 0.25 GiB for a 24-bit image


@contextmanager
def _no_pillow_pixel_limit() -> Iterator[None]:
    """Pillow's global bomb check off for one open: the dataset's own ``max_pixels`` decides,
    with a message that names the file."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


class ImageFolder:
    """Images in class subfolders (``DIR/<class>/*.jpg``), as ImageNet and its test sets ship.

    Folder names are the classes (matched to a model's classes by name, e.g. ImageNet WordNet
    ids, by index when all are integers, or through a class map). A folder of images without
    subfolders is unlabeled. Images over ``max_pixels`` pixels are refused unread.
    """

    name = "imagefolder"
    resolve_spec = staticmethod(resolve_path)

    def __init__(self, rest: str, labeled: bool = True, max_pixels: int = MAX_PIXELS):
        if max_pixels < 1:
            raise InvkitError(f"imagefolder max_pixels must be positive; got {max_pixels}")
        self.max_pixels = max_pixels
        root = Path(rest).expanduser()
        if not rest or not root.is_dir():
            raise InvkitError(f"image folder {rest!r} does not exist or is not a folder")
        self.root = root
        subfolders = sorted(p for p in root.iterdir() if p.is_dir())
        if subfolders and labeled:
            self.classes: list[str] | None = [p.name for p in subfolders]
            self.samples = [
                (path, i) for i, folder in enumerate(subfolders) for path in _images_in(folder)
            ]
        else:
            self.classes = None
            self.samples = [(path, -1) for path in _images_in(root)]
        if not self.samples:
            raise InvkitError(
                f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self._read(index, None)

    def read_reduced(self, index: int, shorter_side: int) -> tuple[Any, int]:
        """The item decoded at a reduced scale where the format allows it (JPEG's DCT scaling,
        by 1/2, 1/4 or 1/8), never below ``shorter_side`` pixels on the shorter side; used
        with ``run.reduced_decoding``."""
        return self._read(index, shorter_side)

    def _read(self, index: int, shorter_side: int | None) -> tuple[Any, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with _no_pillow_pixel_limit(), Image.open(path) as image:
                if image.width * image.height > self.max_pixels:
                    raise InvkitError(
                        f"image {str(path)!r} is {image.width}×{image.height} pixels, over the "
                        f"limit of {self.max_pixels:,} (a guard against decompression bombs; "
                        "raise it with the dataset's params.max_pixels if the file is genuine)"
                    )
                if shorter_side is not None and image.format == "JPEG":
                    factor = shorter_side / min(image.width, image.height)
                    image.draft(
                        None, (math.ceil(image.width * factor), math.ceil(image.height * factor))
                    )
                image.load()
                return image, label
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise InvkitError(f"cannot read image {str(path)!r}: {error}") from None

    def describe(self, index: int) -> str:
        return str(self.samples[index][0])


class TorchvisionDataset:
    """A torchvision dataset: ``torchvision:CIFAR10`` with ``root``; never downloads unless asked.

    ``train`` or ``split`` pick the part (whichever the dataset takes); labels are used as class
    indices in the dataset's own order.
    """

    name = "torchvision"

    def __init__(
        self,
        rest: str,
        root: Path,
        train: bool | None = False,
        split: str | None = None,
        download: bool = False,
    ):
        import inspect

        import torchvision

        cls = getattr(torchvision.datasets, rest, None)
        if not isinstance(cls, type):
            raise InvkitError(f"torchvision has no dataset {rest!r} (see torchvision.datasets)")
        takes = inspect.signature(cls).parameters
        kwargs: dict[str, Any] = {"download": download}
        if "train" in takes and train is not None:
            kwargs["train"] = train
        if "split" in takes and split is not None:
            kwargs["split"] = split
        try:
            self.dataset = cls(str(root), **kwargs)
        except RuntimeError as error:
            raise InvkitError(
                f"cannot open torchvision dataset {rest} under {str(root)!r}: {error} "
                "(invkit never downloads unless params.download = true)"
            ) from None
        classes = getattr(self.dataset, "classes", None)
        self.classes = list(classes) if classes else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return image, int(label)


class Digits:
    """scikit-learn's 1,797 real 8×8 handwritten digits, upsampled, optionally coloured.

    With ``colored`` each image gets a seeded random foreground and background colour (as
    Colored MNIST does), so that grayscale changes the input. ``split`` takes a seeded,
    stratified ``train`` or ``test`` part (``test_fraction`` of each class), or ``all``.
    """

    name = "digits"

    def __init__(
        self,
        rest: str = "",
        split: str = "test",
        size: int = 32,
        colored: bool = True,
        labeled: bool = True,
        test_fraction: float = 0.3,
        seed: int = 0,
    ):
        import numpy as np
        import torch
        from sklearn.datasets import load_digits

        if split not in ("train", "test", "all"):
            raise InvkitError(f"digits split must be train, test or all; got {split!r}")
        if size < 8:
            raise InvkitError(f"digits size must be at least 8 (the originals are 8×8); got {size}")
        digits = load_digits()
        pixels = torch.from_numpy(digits.images / 16.0).float()  # (N, 8, 8) in [0, 1]
        targets = digits.target
        rng = np.random.default_rng(seed)
        test = np.zeros(len(targets), dtype=bool)
        for digit in range(10):
            members = np.flatnonzero(targets == digit)
            chosen = rng.choice(members, size=round(len(members) * test_fraction), replace=False)
            test[chosen] = True
        keep = {"train": ~test, "test": test, "all": np.ones_like(test)}[split]
        indices = np.flatnonzero(keep)
        gray = torch.nn.functional.interpolate(
            pixels[indices].unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False
        ).clamp(0, 1)
        if colored:
            color_rng = torch.Generator().manual_seed(seed + 1)
            colors = torch.rand(len(targets), 2, 3, generator=color_rng)[indices]
            foreground = colors[:, 0, :, None, None]
            background = colors[:, 1, :, None, None]
            self.images = background + (foreground - background) * gray
        else:
            self.images = gray.expand(-1, 3, -1, -1).contiguous()
        self.labels = torch.from_numpy(targets[indices]).long() if labeled else None
        self.classes = [str(d) for d in range(10)] if labeled else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = int(self.labels[index]) if self.labels is not None else -1
        return self.images[index], label


@hookimpl
def register_datasets(register):
    register(ImageFolder)
    register(TorchvisionDataset)
    register(Digits)
