"""Files in and out, all of them untrusted: atomic output, output paths checked before any work, input
paths checked for their kind, one comma-list parser, and the one reader of matrix files.

Atomic output writes to a temporary file in the same folder, then renames: a reader never sees a
half-written file and a failed run leaves the previous file intact.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from linssl.errors import LinsslError


def path_kind(path: str | os.PathLike) -> str | None:
    """What is at ``path`` (links followed): ``"a file"``, ``"a folder"``, ``"a device"``, ``"a named pipe"``,
    ``"a socket"``, or None when nothing is (also under a file). Never opens it: a device cannot hang this."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:  # a link loop, a name too long, a NUL byte
        raise LinsslError(f"cannot use {os.fspath(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a regular file; else a one-line error saying what is there instead."""
    kind = path_kind(path)
    if kind is None:
        raise LinsslError(f"{what} {os.fspath(path)} does not exist")
    if kind != "a file":
        raise LinsslError(f"{what} {os.fspath(path)} is {kind}, not a file")
    return Path(path)


def require_folder(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``path`` if it is a folder; else a one-line error saying what is there instead."""
    kind = path_kind(path)
    if kind != "a folder":
        state = "does not exist" if kind is None else f"is {kind}, not a folder"
        raise LinsslError(f"{what} {os.fspath(path)} {state}{'; ' + hint if hint else ''}")
    return Path(path)


def _check_can_create_in(path: Path) -> None:
    """Probe the nearest existing folder above ``path`` by creating (and removing) a temporary file in it:
    the only truthful test (permissions, read-only mounts, /proc, a full disk, root's access())."""
    folder = path.parent
    while path_kind(folder) is None and folder != folder.parent:
        folder = folder.parent
    kind = path_kind(folder)
    if kind != "a folder":
        raise LinsslError(f"cannot write {path}: {folder} is {kind or 'missing'}, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".linssl-probe-", dir=folder)
    except OSError as exc:
        why = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EROFS: "it is on a read-only file system", errno.ENOSPC: "the disk is full",
               errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno, "it does not accept new files")
        raise LinsslError(f"cannot write {path}: cannot create files in {folder} ({why})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_path(path: str | os.PathLike, figure: bool = False, flag: str = "output path") -> Path:
    """Refuse, before any work, an output path that cannot be written: empty, a folder or another non-file,
    a path under a file, a folder that does not accept new files, or (``figure``) a suffix matplotlib cannot
    save. Missing parent folders are fine (created)."""
    if os.fspath(path) == "":
        raise LinsslError(f"{flag} is empty; give a file name")
    path = Path(path)
    kind = path_kind(path)
    if kind == "a folder":
        raise LinsslError(f"cannot write {path}: it is a folder; give a file name")
    if kind not in (None, "a file"):  # renaming onto a device node would replace it
        raise LinsslError(f"cannot write {path}: it is {kind}, not a regular file")
    _check_can_create_in(path)
    if figure and path.suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if path.suffix.lstrip(".").lower() not in formats:
            raise LinsslError(f"cannot save a figure as {path.suffix!r}; use one of {', '.join(sorted(formats))}")
    return path


def check_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """Refuse, before any work, an output folder that is empty, names a file (or device, ...), or lies where
    no folder can be created. A missing folder is fine (created)."""
    if os.fspath(path) == "":
        raise LinsslError(f"{flag} is empty; give a folder")
    path = Path(path)
    kind = path_kind(path)
    if kind not in (None, "a folder"):
        raise LinsslError(f"{flag} {path} is {kind}, not a folder")
    _check_can_create_in(path / "x")
    return path


def check_distinct_outputs(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Two outputs of one run (``{"--json": ..., "--plot": ...}``) must not name the same file."""
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if path is None or os.fspath(path) == "":
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise LinsslError(f"{seen[key]} and {flag} name the same file {os.fspath(path)}; give two paths")
        seen[key] = flag


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


def parse_list(text: str, flag: str, kind: type = float) -> tuple:
    """The one comma-list parser: ``'0.1, 0.5,2'`` -> ``(0.1, 0.5, 2.0)``.

    ``kind`` float (finite numbers), int (whole numbers, ``1e3`` included) or str (names). Every item must
    be present: ``'0.1,,1'`` and a trailing comma are refused, never silently dropped.
    """
    what = {float: "numbers", int: "integers", str: "names"}[kind]
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(item == "" for item in items):
        raise LinsslError(f"{flag} must be a comma-separated list of {what} without empty items, got {text!r}")
    if kind is str:
        return tuple(items)
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise LinsslError(f"{flag} must be a comma-separated list of {what}, got {item!r} in {text!r}") from None
        if not math.isfinite(value) or (kind is int and value != int(value)):
            raise LinsslError(f"{flag} must be a comma-separated list of finite {what}, got {item!r} in {text!r}")
        values.append(int(value) if kind is int else value)
    return tuple(values)


#: largest text matrix read: MAX_DIM² numbers of ~30 characters (a d = 1024 matrix written by numpy.savetxt
#: with full precision takes 26 MB)
MAX_TEXT_MATRIX_BYTES = 64 * 2**20
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def read_matrix(path: str | os.PathLike, flag: str, max_dim: int) -> Any:
    """A real square matrix of side <= ``max_dim`` from ``.npy`` or a whitespace-separated text file, as float64.

    Nothing is allocated before it is known to fit: the path must be a regular file (a device or pipe is
    refused unopened); a ``.npy`` header's shape, dtype (real integers or floats only; no objects, strings,
    complex numbers or records) and the file size are checked before the data is read; a text file's size
    is bounded and each entry must be a plain decimal number, every row as long as the first.
    """
    import numpy as np

    path = require_file(path, flag)
    size = path.stat().st_size
    where = f"{flag} {path}"
    if path.suffix == ".npy":
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f".npy format version {version} is not read here")
                _check_matrix_shape(where, shape, max_dim)
                if dtype.kind not in "iuf" or dtype.fields is not None or dtype.subdtype is not None:
                    raise LinsslError(f"{where} holds {dtype} values; give a matrix of real numbers")
                expected = int(np.prod(shape)) * dtype.itemsize
                if size - fh.tell() != expected:
                    raise LinsslError(f"{where} has {size - fh.tell()} bytes of data, its header promises {expected} "
                                      "(truncated or padded file)")
                flat = np.frombuffer(fh.read(expected), dtype=dtype)
        except (ValueError, EOFError) as exc:  # not a .npy file: bad magic, bad header
            raise LinsslError(f"{where} is not a valid .npy file ({str(exc).splitlines()[0]})") from None
        matrix = flat.reshape(shape, order="F" if fortran else "C").astype(np.float64)
    else:
        if size > MAX_TEXT_MATRIX_BYTES:
            raise LinsslError(f"{where} has {size} bytes; a text matrix is read up to {MAX_TEXT_MATRIX_BYTES} bytes "
                              "(save larger ones as .npy)")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LinsslError(f"{where} is not UTF-8 text (byte {exc.start}); "
                              "give a text matrix or a .npy file") from None
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            bad = next((f for f in fields if not _NUMBER.fullmatch(f)), None)
            if bad is not None:
                raise LinsslError(f"{where}: line {number} holds {bad[:20]!r}, not a real number")
            if rows and len(fields) != len(rows[0]):
                raise LinsslError(f"{where}: line {number} has {len(fields)} numbers, the first row {len(rows[0])}")
            rows.append(fields)
            _check_matrix_shape(where, (len(rows), len(rows[0])), max_dim, partial=True)
        if not rows:
            raise LinsslError(f"{where} holds no numbers")
        _check_matrix_shape(where, (len(rows), len(rows[0])), max_dim)
        matrix = np.array([[float(f) for f in row] for row in rows], dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise LinsslError(f"{where} holds non-finite numbers (inf or nan)")
    return matrix


def _check_matrix_shape(where: str, shape: tuple[int, ...], max_dim: int, partial: bool = False) -> None:
    if partial:  # while reading text: only the bounds
        if max(shape) > max_dim:
            raise LinsslError(f"{where} is larger than {max_dim}×{max_dim} (the largest d this command takes)")
        return
    if len(shape) != 2:
        raise LinsslError(f"{where} holds a {len(shape)}-D array of shape {tuple(shape)}; give a square matrix")
    if shape[0] != shape[1] or shape[0] < 1:
        raise LinsslError(f"{where} is {shape[0]}×{shape[1]}; give a square matrix")
    if shape[0] > max_dim:
        raise LinsslError(f"{where} is {shape[0]}×{shape[1]}; this command takes d <= {max_dim}")
