"""Built-in model loaders: ``timm:``, ``torchvision:``, ``torchscript:`` and ``python:`` specs.

Each returns an ``invkit.LoadedModel``: the module (normalized images → logits) and its
``Preprocessing``. ``docs/models.md`` documents every option.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invkit.errors import InvkitError
from invkit.inputs.checkpoints import (
    existing_file,
    load_into,
    readable_safetensors,
    shape_mismatch_error,
)
from invkit.inputs.usercode import import_factory, python_spec_fingerprint, split_python_spec
from invkit.paths import resolve_path
from invkit.plugin.components import LoadedModel, Preprocessing
from invkit.plugin.hookspecs import hookimpl

if TYPE_CHECKING:  # torch loads when a component first runs, not when it is listed
    pass


def imagenet_class_names(num_classes: int | None) -> list[str] | None:
    """The ImageNet-1k WordNet ids (``n01440764``, …) in model index order, from timm's lists."""
    if num_classes != 1000:
        return None
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def _check_hub_weights(rest: str) -> None:
    """Weights timm would download: refused at once where they cannot be, announced where
    they will be (a study on 150 models should not discover the network 150 times)."""
    import warnings

    from invkit.errors import InvkitWarning
    from invkit.inputs.hub import check_downloadable, timm_weights_source

    source, host, cached = timm_weights_source(rest)
    if not cached:
        check_downloadable(f"timm:{rest}", source, host)
        warnings.warn(
            InvkitWarning(f"timm:{rest} downloads its weights from {source} (not in the cache)"),
            stacklevel=2,
        )


def timm_model(
    rest: str,
    pretrained: bool = True,
    weights: Path | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
) -> LoadedModel:
    """A timm model: ``timm:resnet50``; weights from the hub, or from a local file with ``weights``.

    ``weights`` goes through timm's ``pretrained_cfg_overlay=dict(file=...)``, so the model
    keeps its pretrained configuration (input size, mean, std, crop); the preprocessing is
    timm's resolved data config, with ``in_chans`` channels (1: grayscale input).
    """
    import timm
    from timm.data import ImageNetInfo, infer_imagenet_subset, resolve_model_data_config

    if not rest:
        raise InvkitError("timm model spec needs a model name, e.g. timm:resnet18")
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    if weights is not None:
        overlay: dict[str, Any] = {"file": str(existing_file(weights, "weights file"))}
        if num_classes is not None:  # the file's classifier has num_classes outputs: keep it
            overlay["num_classes"] = num_classes
        kwargs["pretrained_cfg_overlay"] = overlay
        pretrained = True
    elif pretrained:
        _check_hub_weights(rest)
    try:
        with readable_safetensors(Path(weights or "")):
            model = timm.create_model(rest, pretrained=pretrained, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            close = difflib.get_close_matches(rest.split(".")[0], timm.list_models(), n=5)
            raise InvkitError(
                f"timm has no model {rest!r}" + (f"; similar: {', '.join(close)}" if close else "")
            ) from None
        raise shape_mismatch_error(error, weights or rest) or error from None
    except OSError as error:  # no network, or no such weights on the hub
        raise InvkitError(
            f"could not fetch pretrained weights for timm:{rest} ({error}); pass a local file "
            'with weights = "path/to/weights.safetensors", or pretrained = false'
        ) from None
    config = resolve_model_data_config(model)
    subset = infer_imagenet_subset(model)
    class_names = None
    if subset and not num_classes:
        class_names = list(ImageNetInfo(subset).label_names())
    elif model.num_classes == 1000:
        class_names = imagenet_class_names(1000)
    input_size, mean, std = tuple(config["input_size"]), tuple(config["mean"]), tuple(config["std"])
    if in_chans is not None and in_chans != input_size[0]:  # timm's config keeps 3 channels
        input_size = (in_chans, *input_size[1:])
        if in_chans == 1 and len(set(mean)) == 1 and len(set(std)) == 1:
            mean, std = mean[:1], std[:1]  # the same for every channel: exact for one
    preprocessing = Preprocessing(
        input_size=input_size,
        interpolation=config.get("interpolation", "bilinear"),
        crop_pct=float(config.get("crop_pct", 0.875)),
        mean=mean,
        std=std,
        num_classes=model.num_classes,
        class_names=class_names if class_names and len(class_names) == model.num_classes else None,
    )
    return LoadedModel(model, preprocessing, f"timm:{rest}", random_weights=not pretrained)


timm_model.name = "timm"  # type: ignore[attr-defined]


def torchvision_model(
    rest: str,
    weights: str | None = "DEFAULT",
    weights_file: Path | None = None,
    num_classes: int | None = None,
) -> LoadedModel:
    """A torchvision model: ``torchvision:resnet18``; weights by enum name or from a local file.

    ``weights`` names torchvision weights (``DEFAULT``, ``IMAGENET1K_V1``; downloaded when
    online) and sets the preprocessing; with ``weights_file`` the architecture is built empty
    and that file's state dict loaded, while ``weights`` still supplies the preprocessing.
    """
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(rest)
    except (ValueError, KeyError):
        known = torchvision.models.list_models()
        close = difflib.get_close_matches(rest, known, n=3)
        raise InvkitError(
            f"torchvision has no model {rest!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        ) from None
    chosen = None
    if weights:  # "" or None: random initialization
        try:
            chosen = weights_enum[weights] if weights != "DEFAULT" else weights_enum.DEFAULT
        except KeyError:
            names = ", ".join(w.name for w in weights_enum)
            raise InvkitError(
                f"torchvision {rest} has no weights {weights!r}; known: DEFAULT, {names}"
            ) from None
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if weights_file is not None:
        model = torchvision.models.get_model(rest, weights=None, **kwargs)
        load_into(model, weights_file)
    else:
        try:
            model = torchvision.models.get_model(rest, weights=chosen, **kwargs)
        except (OSError, RuntimeError) as error:
            raise InvkitError(
                f"could not fetch torchvision weights {weights} for {rest} ({error}); pass "
                'weights_file = "path/to/state_dict.pt", or weights = "" for random init'
            ) from None
    preprocessing = Preprocessing()
    if chosen is not None:
        transform = chosen.transforms()
        crop, resize = transform.crop_size[0], transform.resize_size[0]
        categories = chosen.meta.get("categories") or []
        out_features = num_classes or len(categories) or None
        preprocessing = Preprocessing(
            input_size=(3, crop, crop),
            interpolation=transform.interpolation.value,
            crop_pct=crop / resize,
            mean=tuple(transform.mean),
            std=tuple(transform.std),
            num_classes=out_features,
            class_names=imagenet_class_names(out_features),
        )
    random = weights_file is None and chosen is None
    return LoadedModel(model, preprocessing, f"torchvision:{rest}", random_weights=random)


torchvision_model.name = "torchvision"  # type: ignore[attr-defined]


def torchscript_model(rest: str, num_classes: int | None = None) -> LoadedModel:
    """A TorchScript file: ``torchscript:model.pt`` (preprocessing from the config)."""
    import torch

    path = existing_file(rest, "TorchScript file")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise InvkitError(
            f"{str(path)!r} is not a TorchScript file: {str(error).splitlines()[0]}"
        ) from None
    return LoadedModel(module, Preprocessing(num_classes=num_classes), f"torchscript:{path}")


torchscript_model.name = "torchscript"  # type: ignore[attr-defined]
torchscript_model.resolve_spec = resolve_path  # type: ignore[attr-defined]


def _resolve_python_spec(rest: str, base_dir: Path) -> str:
    module_name, factory_name = split_python_spec(rest)
    if module_name.endswith(".py"):
        return f"{resolve_path(module_name, base_dir)}:{factory_name}"
    return rest


def python_model(
    rest: str,
    checkpoint: Path | None = None,
    kwargs: dict | None = None,
    num_classes: int | None = None,
) -> LoadedModel:
    """Your own architecture: ``python:MODULE:FACTORY`` (or ``python:file.py:FACTORY``).

    ``FACTORY(**kwargs)`` returns a ``torch.nn.Module`` (or an ``invkit.LoadedModel`` to set its
    own preprocessing); ``checkpoint`` (safetensors, or tensors saved with ``torch.save``) is
    loaded into it. Only the named module is imported, and only a model's code is accepted:
    see ``invkit.inputs.usercode``.
    """
    import torch

    factory = import_factory(rest)
    built = factory(**(kwargs or {}))
    if isinstance(built, LoadedModel):
        loaded = built
    elif isinstance(built, torch.nn.Module):
        loaded = LoadedModel(built, Preprocessing(num_classes=num_classes), f"python:{rest}")
    else:
        raise InvkitError(f"python:{rest} returned {type(built).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        load_into(loaded.module, checkpoint)
    return loaded


python_model.name = "python"  # type: ignore[attr-defined]
python_model.resolve_spec = _resolve_python_spec  # type: ignore[attr-defined]
python_model.spec_fingerprint = python_spec_fingerprint  # type: ignore[attr-defined]


@hookimpl
def register_models(register):
    register(timm_model)
    register(torchvision_model)
    register(torchscript_model)
    register(python_model)
