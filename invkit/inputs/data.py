"""From a dataset to batches a model can take: pixels at the model's input size, with the
model's channel count (1: luminance, 3: RGB).

Reading, decoding, resizing and cropping happen here, in data-loader workers, on 8-bit pixels
when the images are 8-bit (a quarter of the bytes of float32 to move, and torchvision's uint8
resize is several times faster); conversion to float, transforms, normalization and the
forward pass happen on the device (``invkit.run.engine``). Images that are float or deeper than
8 bits stay float. Dataset shifts (for dataset-centric studies) are applied here too, on float
pixels, seeded per image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from invkit.errors import InvkitError
from invkit.plugin.components import Preprocessing, Shift

PIPELINE_VERSION = 2  # part of every cell's fingerprint: raised when the pixels models get change
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")
HIGH_DEPTH_MAX = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


def _high_depth_pixels(image: Any, where: str) -> torch.Tensor:
    """A 16-bit (or 32-bit integer, or float) grayscale PIL image as float ``(1, H, W)`` in
    [0, 1], scaled by its bit depth (PIL's convert("L") would clip it to white)."""
    array = np.asarray(image).astype(np.float64)
    if image.mode in HIGH_DEPTH_MAX:
        scale = HIGH_DEPTH_MAX[image.mode]
    elif image.mode == "I" and array.min() >= 0 and array.max() <= 65535:
        scale = 65535  # 16-bit files that PIL opens as 32-bit integers
    elif image.mode == "F" and array.min() >= 0 and array.max() <= 1:
        scale = 1
    else:
        raise InvkitError(
            f"{where}: a {image.mode!r} image with values {array.min():g} to {array.max():g} has "
            "no known pixel range; save it as 8- or 16-bit PNG"
        )
    return torch.from_numpy(array / scale).float().unsqueeze(0)


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels as float in [0, 1]: 8-bit values divided by 255, exactly as
    ``pil_to_tensor(image).float() / 255`` (float pixels pass unchanged)."""
    return pixels.float().div_(255) if pixels.dtype == torch.uint8 else pixels


def to_pixels(image: Any, channels: int, where: str) -> torch.Tensor:
    """A PIL image or tensor → ``(channels, H, W)`` pixels: uint8 when the image is 8-bit,
    float in [0, 1] otherwise (float tensors, 16-bit files, luminance of a uint8 RGB tensor).

    For 3 channels, gray becomes RGB and alpha is dropped. For 1 channel, colour becomes
    luminance exactly as PIL's ``convert("L")`` makes it, and a gray image passes unchanged.
    """
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 and not image.is_floating_point():
            raise InvkitError(
                f"{where}: a tensor image must be uint8 (0 to 255) or float (0 to 1); got "
                f"{image.dtype}"
            )
        tensor = image
    elif getattr(image, "mode", "") in (*HIGH_DEPTH_MAX, "I", "F"):
        tensor = _high_depth_pixels(image, where)
    else:
        from torchvision.transforms.functional import pil_to_tensor

        mode = "L" if channels == 1 else "RGB"
        if image.mode != mode:
            image = image.convert(mode)
        tensor = pil_to_tensor(image)
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 3:
        raise InvkitError(f"{where}: an image must be (C, H, W); got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 4:
        tensor = tensor[:3]
    if tensor.shape[0] not in (1, 3):
        raise InvkitError(f"{where}: an image must have 1, 3 or 4 channels; got {tensor.shape[0]}")
    if tensor.shape[0] == channels:
        return tensor
    if channels == 3:
        return tensor.expand(3, -1, -1)
    tensor = as_float(tensor)
    weights = torch.tensor(LUMA, dtype=tensor.dtype).view(3, 1, 1)
    return (tensor * weights).sum(dim=0, keepdim=True)


def to_tensor(image: Any, channels: int, where: str) -> torch.Tensor:
    """A PIL image or tensor → float ``(channels, H, W)`` in [0, 1] (see ``to_pixels``)."""
    return as_float(to_pixels(image, channels, where))


def resize_size(height: int, width: int, preprocessing: Preprocessing) -> int:
    """The shorter side an image is resized to before the centre crop (timm's evaluation
    recipe: the crop's shorter side / crop_pct)."""
    return math.floor(min(height, width) / preprocessing.crop_pct)


def resize_and_crop(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """timm's evaluation recipe: shorter side to size / crop_pct, then a centre crop. uint8
    pixels stay uint8 (rounded; within one level of resizing them as float); float pixels are
    clipped to [0, 1] after bicubic overshoot."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    _, height, width = preprocessing.input_size
    if image.shape[-2:] == (height, width) and preprocessing.crop_pct >= 1.0:
        return image
    mode = InterpolationMode(preprocessing.interpolation)
    resized = F.resize(
        image, [resize_size(height, width, preprocessing)], interpolation=mode, antialias=True
    )
    cropped = F.center_crop(resized, [height, width])
    return cropped if cropped.dtype == torch.uint8 else cropped.clamp(0, 1)


def collate(items: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """A batch of ``PreparedDataset`` items; a batch mixing 8-bit and deeper images becomes
    float (the 8-bit ones divided by 255, as everywhere)."""
    from torch.utils.data import default_collate

    if len({item[0].dtype for item in items}) > 1:
        items = [(as_float(item[0]), *item[1:]) for item in items]
    return default_collate(items)


class PreparedDataset(Dataset):
    """A dataset's items ready for models with one preprocessing: pixels ``(C, H, W)`` at its
    input size, the dataset's label, the dataset index, and the read error and upsampling flag
    of ``__getitem__``. Labels stay the dataset's: each model maps them to its own outputs.

    With ``reduced_decoding``, a dataset that offers ``read_reduced(index, shorter_side)``
    (``imagefolder`` does, for JPEG files) decodes each image at the smallest scale whose
    shorter side still reaches the resize's, which is faster but not identical (see
    docs/performance.md)."""

    def __init__(
        self,
        dataset: Dataset,
        preprocessing: Preprocessing,
        indices: list[int] | None = None,
        shift: Shift | None = None,
        seed: int = 0,
        reduced_decoding: bool = False,
    ):
        self.dataset = dataset
        self.preprocessing = preprocessing
        self.indices = indices if indices is not None else list(range(len(dataset)))  # type: ignore[arg-type]
        self.shift = shift
        self.seed = seed
        self.reduced = reduced_decoding and hasattr(dataset, "read_reduced")
        _, height, width = preprocessing.input_size
        self.shorter_side = resize_size(height, width, preprocessing)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int, str, bool]:
        """``(pixels, label, index, error, upsampled)``: ``error`` is "" unless the image could
        not be read (then the pixels are a placeholder the engine drops, and the pass reports
        every such image at its end); ``upsampled`` says the image was smaller than the model's
        input."""
        index = self.indices[position]
        where = getattr(self.dataset, "describe", lambda i: f"image {i}")(index)
        try:
            shorter_side = self.shorter_side if self.reduced else None
            original, label = read_pixels(
                self.dataset, index, self.preprocessing.input_size[0], where, shorter_side
            )
            pixels = resize_and_crop(original, self.preprocessing)
        except InvkitError as error:
            problem = str(error)
        except (OSError, ValueError, SyntaxError) as error:
            problem = f"cannot read {where}: {type(error).__name__}: {error}"
        else:
            if self.shift is not None:
                pixels = self.shift(as_float(pixels), image_seed(self.seed, index))
            upsampled = any(
                have < want
                for have, want in zip(original.shape[-2:], pixels.shape[-2:], strict=True)
            )
            return pixels, int(label), index, "", upsampled
        placeholder = torch.zeros(self.preprocessing.input_size, dtype=torch.uint8)
        return placeholder, -1, index, problem, False


def read_pixels(
    dataset: Any, index: int, channels: int, where: str, shorter_side: int | None = None
) -> tuple[torch.Tensor, Any]:
    """One item's pixels (``to_pixels``) and label: the decoding every pass and ``invkit check
    --images`` share, so that check refuses exactly the images a study would. With
    ``shorter_side``, a dataset's ``read_reduced`` decodes at a reduced scale."""
    if shorter_side is not None:
        image, label = dataset.read_reduced(index, shorter_side)
    else:
        image, label = dataset[index]
    return to_pixels(image, channels, where), label


def image_seed(dataset_seed: int, index: int) -> int:
    """The seed a shift gets for one image: the same image, the same shift, in any batch."""
    return dataset_seed * 1_000_003 + index


def subset_indices(size: int, limit: int | None, seed: int) -> list[int] | None:
    """A seeded random subset of ``limit`` indices (in order), or ``None`` for all."""
    if limit is None or limit >= size:
        return None
    chosen = np.random.default_rng(seed).choice(size, size=limit, replace=False)
    return sorted(int(i) for i in chosen)


def make_loader(dataset: PreparedDataset, batch_size: int, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=False,
        collate_fn=collate,
    )
