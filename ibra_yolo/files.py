"""Output files written safely: never over an existing file unless asked, and atomically (whole or not at all).

Every file ibra-yolo writes goes through ``write_atomic``: the content is written to a uniquely named temporary file
in the destination folder and moved over the destination with ``os.replace``, so a crash or a full disk never leaves
a half-written file, and two writers never share a temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from ibra_yolo.errors import IbraYoloError, OutputExistsError

__all__ = ("check_output", "write_atomic", "write_json")


def check_output(path: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse an output path that exists (unless ``overwrite``) or that is a folder; return it as a ``Path``.

    Args:
        path (str | Path): The output file.
        overwrite (bool): Allow replacing an existing file.
        flag (str): The command-line option that names the file, for the message.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        IbraYoloError: ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise IbraYoloError(f"{path} is a folder: {flag} must name a file")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists: choose another {flag} or pass --overwrite")
    return path


def write_atomic(path: str | Path, write: Callable[[Path], object], overwrite: bool = False) -> Path:
    """Create ``path`` by calling ``write(tmp)`` on a unique temporary file beside it, then moving it into place.

    Args:
        path (str | Path): The destination; its folder is created if needed.
        write (Callable[[Path], object]): Writes the whole content to the path it is given.
        overwrite (bool): Allow replacing an existing file (checked before writing).

    Returns:
        (Path): ``path``.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON with ``write_atomic`` (values JSON cannot hold are written as strings)."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)), overwrite)
