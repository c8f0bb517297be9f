"""Loading weights files safely, and fingerprinting them.

Checkpoints load as safetensors or with ``torch.load(weights_only=True)``: a pickle that needs
to run code to load is refused, never executed.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invkit.errors import InvkitError

if TYPE_CHECKING:  # torch loads when a component first runs, not when it is listed
    import torch

_TRUSTED: ContextVar[bool] = ContextVar("invkit_trusted_checkpoints", default=False)


@contextmanager
def trusted_checkpoints(enabled: bool = True) -> Iterator[None]:
    """Within this block, checkpoints that need arbitrary code to unpickle are loaded.

    Only for files from a source you trust: unpickling can run any code. The study enables it
    with ``--trust-checkpoints`` (``run.trust_checkpoints``).
    """
    token = _TRUSTED.set(enabled)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "module")


def existing_file(path: str | Path, what: str) -> Path:
    """``path`` resolved, if it is a file; else an error that names it (and where it led)."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_file():
        return resolved
    shown = repr(str(path)) + ("" if str(resolved) == str(path) else f" (resolved to {resolved})")
    if resolved.is_dir():
        raise InvkitError(f"{what} {shown} is a folder, not a file; name the file inside it")
    raise InvkitError(f"{what} {shown} does not exist")


@contextmanager
def readable_safetensors(path: Path) -> Iterator[None]:
    """Turn safetensors' own error on a damaged file into one that names the file."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as error:
        raise InvkitError(
            f"{str(path)!r} is not a readable .safetensors file ({error}); re-export the weights"
        ) from None


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file of tensors.

    A checkpoint that wraps the state dict (``{"state_dict": ...}``, ``{"model": ...}``) is
    unwrapped. Pickles that would execute code are refused with an explanation.
    """
    import torch

    path = existing_file(path, "checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        with readable_safetensors(path):
            return load_file(str(path), device="cpu")
    trusted = _TRUSTED.get()
    if trusted:
        warnings.warn(
            f"unpickling {path} with arbitrary code allowed (--trust-checkpoints)", stacklevel=2
        )
    try:
        loaded: Any = torch.load(str(path), map_location="cpu", weights_only=not trusted)
    except Exception as error:  # weights_only refusals are UnpicklingError, others vary
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise InvkitError(
            f"cannot load checkpoint {str(path)!r} safely: {type(error).__name__}: {first_line}. "
            "invkit loads only tensors (torch.load(weights_only=True)) because unpickling can "
            "run arbitrary code: re-save the weights with torch.save(model.state_dict(), ...) "
            "or as .safetensors, or, only if you trust the file's source, pass "
            "--trust-checkpoints (run.trust_checkpoints = true)"
        ) from None
    if isinstance(loaded, torch.nn.Module):  # a whole pickled model (trusted only)
        loaded = loaded.state_dict()
    if isinstance(loaded, dict):
        for key in STATE_DICT_KEYS:
            if key in loaded and isinstance(loaded[key], dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise InvkitError(
            f"checkpoint {str(path)!r} holds no state dict (a mapping of names to tensors)"
        )
    return {k.removeprefix("module."): v for k, v in loaded.items()}


MISMATCH = re.compile(
    r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) "
    r"from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)"
)


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(",") if n.strip())


def shape_mismatch_error(
    error: RuntimeError, path: str | Path, keys_differ: bool = False
) -> InvkitError | None:
    """torch's multi-line ``load_state_dict`` shape error in one line of invkit's words. When
    only the classifier differs (its first dimension, and no parameter name differs:
    ``keys_differ``), it names the fix: ``num_classes``."""
    found = [(k, _shape(c), _shape(m)) for k, c, m in MISMATCH.findall(str(error))]
    if not found:
        return None
    keys_differ = keys_differ or any(  # as a strict load (timm's) says so
        text in str(error) for text in ("Missing key(s) in state_dict", "Unexpected key(s)")
    )
    key, checkpoint, model = found[0]
    summary = (
        f"checkpoint {str(path)!r} does not match the architecture: {len(found)} parameter(s) "
        f"differ in shape, e.g. {key}: {checkpoint} in the checkpoint, {model} in the model"
    )
    classifier = all(c and m and c[1:] == m[1:] and c[0] != m[0] for _, c, m in found)
    classes = {(c[0], m[0]) for _, c, m in found if c and m}
    if classifier and len(classes) == 1 and len(found) <= 2 and not keys_differ:
        outputs, built = classes.pop()
        return InvkitError(
            f"{summary}. The checkpoint's classifier has {outputs} outputs and the model {built}: "
            f"set params.num_classes = {outputs}"
        )
    return InvkitError(
        f"{summary} — check that the checkpoint belongs to this model and its options"
    )


def load_into(module: torch.nn.Module, path: str | Path) -> None:
    """Load a checkpoint into a module, with a summary of mismatched keys on failure."""
    state = load_state_dict(path)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        keys_differ = set(state) != set(module.state_dict())
        raise shape_mismatch_error(error, path, keys_differ) or error from None
    problems = []
    if result.missing_keys:
        problems.append(
            f"{len(result.missing_keys)} missing (e.g. {', '.join(result.missing_keys[:3])})"
        )
    if result.unexpected_keys:
        problems.append(
            f"{len(result.unexpected_keys)} unexpected "
            f"(e.g. {', '.join(result.unexpected_keys[:3])})"
        )
    if problems:
        raise InvkitError(
            f"checkpoint {str(path)!r} does not match the architecture: keys "
            + "; ".join(problems)
            + " — check that the checkpoint belongs to this model and its options (num_classes)"
        )
