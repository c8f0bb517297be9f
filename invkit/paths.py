"""Paths in configs are relative to the config file's folder."""

from __future__ import annotations

from pathlib import Path


def resolve_path(value: str, base_dir: Path) -> str:
    """``value`` as an absolute path, a relative one taken from ``base_dir`` (``~`` expanded).

    Loaders whose spec is a path set ``resolve_spec = resolve_path`` so that a study resolves
    it against the config's folder; parameters annotated ``pathlib.Path`` are resolved so too.
    """
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())
