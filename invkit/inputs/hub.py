"""Where a model's pretrained weights would come from, known before anything downloads: a
study on a machine that cannot reach the hub says so at once, for every model, instead of
spending a minute per model in download retries."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from invkit.errors import InvkitError

CONNECT_TIMEOUT_S = 3.0
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` set (as huggingface_hub reads it): use the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def reachable(host: str) -> bool:
    """Whether a TCP connection to ``host`` on port 443 opens within 3 s (asked once per run)."""
    try:
        socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def timm_weights_source(name: str) -> tuple[str, str, bool]:
    """Where timm takes ``name``'s pretrained weights from (``hf-hub:timm/…`` or a URL), the
    host it would download from, and whether they are already in the local cache."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return "", "", True  # no pretrained weights: timm says so itself
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        cached = any(
            isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str)
            for filename in HUB_FILES
        )
        return f"hf-hub:{cfg.hf_hub_id}", "huggingface.co", cached
    if cfg.url:
        import torch.hub

        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        return cfg.url, urlparse(cfg.url).hostname or "", local.is_file()
    return "", "", True


def check_downloadable(spec: str, source: str, host: str) -> None:
    """Refuse at once weights that are not cached and cannot be downloaded here."""
    fix = (
        'pass a local file with weights = "path/to/weights.safetensors", run once where the hub '
        "is reachable to fill the local cache, or set pretrained = false (random weights)"
    )
    if offline():
        raise InvkitError(
            f"{spec} would download its weights from {source}, which are not in the local cache, "
            f"and HF_HUB_OFFLINE is set; {fix}"
        )
    if not reachable(host):
        raise InvkitError(
            f"{spec} would download its weights from {source}, which are not in the local cache, "
            f"and this machine cannot reach {host} (no connection within "
            f"{CONNECT_TIMEOUT_S:g} s); {fix}"
        )
