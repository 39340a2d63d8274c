"""Atomic file output: write to a temporary file in the same folder, then rename.

A reader never sees a half-written file and a failed run leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from linssl.errors import LinsslError


def check_output_path(path: str | os.PathLike, figure: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written: a folder, a path under a file,
    or (``figure``) a suffix matplotlib cannot save. Missing parent folders are fine (created)."""
    path = Path(path)
    if path.is_dir():
        raise LinsslError(f"cannot write {path}: it is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise LinsslError(f"cannot write {path}: {parent} is not a folder")
    if figure and path.suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if path.suffix.lstrip(".").lower() not in formats:
            raise LinsslError(f"cannot save a figure as {path.suffix!r}; use one of {', '.join(sorted(formats))}")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``; clean up on failure."""
    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    except OSError as exc:
        raise LinsslError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays (and dataclasses) into plain JSON types."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    text = json.dumps(to_jsonable(data), indent=2, allow_nan=False)

    def _write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text + "\n")

    return atomic_write(path, _write)


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Atomically save a matplotlib figure (format from the suffix)."""
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs))
