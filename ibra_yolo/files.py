"""Output files written safely: never over an existing file unless asked, and atomically (whole or not at all).

Every file ibra-yolo writes goes through ``write_atomic``: the content is written to a uniquely named temporary file
in the destination folder and moved onto the destination, so a crash or a full disk never leaves a half-written file,
two writers never share a temporary file, and a file of the user's is never taken for a temporary one. Every command
checks all its output paths with ``check_output``/``check_outputs`` before any work starts, by creating and removing a
file (or folder) of its own there: ``/proc`` or a read-only mount passes every permission check of root.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Callable

from ibra_yolo.errors import IbraYoloError, NonFiniteError, OutputExistsError, PathError

__all__ = (
    "as_path",
    "check_output",
    "check_outputs",
    "check_folder",
    "write_atomic",
    "write_json",
    "describe_os_error",
)


def as_path(value, name: str) -> Path:
    """``value`` as a ``Path``, or one line naming the argument ``name`` when it is not a file path.

    Args:
        value (str | os.PathLike): What the caller passed.
        name (str): The argument's name, for the message.

    Raises:
        TypeError: ``value`` is not a str or path-like object (``None``, a number, bytes, a list).
        PathError: ``value`` is empty, which would name the current folder.
    """
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str):  # None, a number, bytes (also from a path-like object)
        raise TypeError(f"{name}={value!r:.80} is invalid: a file path (str or Path)")
    if text == "":
        raise PathError(f"{name}='' is invalid: an empty path names the current folder, not a file")
    if "\x00" in text:  # the OS refuses it: os's "embedded null byte", which names no argument
        raise PathError(f"{name}={text!r:.80} is invalid: a path cannot hold a NUL character")
    return Path(text)


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (created if missing): an ancestor that is a file, no permission, or a
    folder where creating fails (``/proc``, a read-only mount: the process may run as root, whom every permission bit
    lets pass, so only trying proves it; see `_probe`)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"permission denied: cannot write in {existing}"
    return _probe(existing, folder=existing != folder)


def _probe(where: Path, folder: bool) -> str | None:
    """Create and remove a new, uniquely named file in ``where`` (or a folder, when the output's folder is still to be
    made there): None if that works, else why not. Created exclusively, so no existing file is ever opened; removed
    also when something fails after it was made."""
    probe = where / f".ibra-yolo-probe.{os.getpid()}.{uuid.uuid4().hex[:12]}"
    made = False
    try:
        if folder:
            probe.mkdir()
        else:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        made = True
    except OSError as e:
        return f"cannot create a {'folder' if folder else 'file'} in {where}: {e.strerror or type(e).__name__}"
    finally:
        if made:
            with contextlib.suppress(OSError):
                probe.rmdir() if folder else probe.unlink()
    return None


def check_folder(path: str | Path, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be created or written in, before any work; return it as a ``Path``.

    Args:
        path (str | Path): The output folder (it need not exist).
        flag (str): The option or argument that names it, for the message.

    Raises:
        PathError: ``path`` or a parent is a file, or nothing can be created in the nearest existing one.
    """
    path = Path(path)
    problem = _folder_problem(path)
    if problem:
        raise PathError(f"{flag} {path}: {problem}")
    return path


def _resolved(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise PathError(
            f"{what} {path} cannot be resolved: {describe_os_error(e) if isinstance(e, OSError) else e}"
        ) from None


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, None if it does not exist (yet): two names of one file share it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_output(path: str | Path, overwrite: bool = False, flag: str = "--out", inputs=()) -> Path:
    """Refuse an output path that cannot be written: it exists (unless ``overwrite``), is a folder, is one of the
    command's inputs (even with ``overwrite``), or its folder cannot be created or written. Return it as a ``Path``.
    Call it before any work starts.

    Args:
        path (str | Path): The output file.
        overwrite (bool): Allow replacing an existing file.
        flag (str): The command-line option that names the file, for the message.
        inputs (Iterable[str | Path | None]): The files the command reads (None entries are skipped).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        IbraYoloError: ``path`` is a folder, a device or FIFO, or an input.
        PathError: A folder above ``path`` is a file, or its folder is not writable.
    """
    if isinstance(path, str) and path.endswith(("/", os.sep)):  # Path() drops the slash and would write a file there
        raise IbraYoloError(f"{flag} {path} ends in a slash, so it names a folder: {flag} must name a file")
    path = Path(path)
    sources = [Path(i) for i in inputs if i is not None]
    target, target_id = (_resolved(path, flag), _file_id(path)) if sources else (None, None)  # once: eval passes
    for source in sources:  # every image and label of a split
        same = target_id is not None and _file_id(source) == target_id  # also a hard link
        if same or _resolved(source, "input") == target:
            raise IbraYoloError(f"{flag} {path} is an input of this command: choose another {flag}")
    if path.is_dir():
        raise IbraYoloError(f"{path} is a folder: {flag} must name a file")
    if path.exists() and not path.is_file():  # a device or FIFO: --overwrite would replace the node itself
        raise IbraYoloError(f"{path} is not a regular file (a device or FIFO): {flag} must name a file")
    problem = _folder_problem(path.parent)
    if problem:
        raise PathError(f"cannot write {path}: {problem}")
    if (path.exists() or path.is_symlink()) and not overwrite:  # a dangling link too: the final move refuses it
        raise OutputExistsError(f"{path} exists: choose another {flag} or pass --overwrite")
    return path


def check_outputs(paths, overwrite: bool = False, flag: str = "--out", inputs=()) -> list[Path]:
    """``check_output`` for every file a command will write, naming all those that exist in one message.

    Raises:
        OutputExistsError: Some exist and ``overwrite`` is False.
        IbraYoloError: One cannot be written, or is one of ``inputs`` (see ``check_output``).
    """
    paths = [Path(p) for p in paths]
    existing = [str(p) for p in paths if (p.exists() and not p.is_dir()) or (p.is_symlink() and not p.exists())]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        raise OutputExistsError(f"{', '.join(existing)} {verb}: choose another {flag} or pass --overwrite")
    inputs = list(inputs)
    return [check_output(p, overwrite, flag, inputs) for p in paths]


def write_atomic(path: str | Path, write: Callable[[Path], object], overwrite: bool = False) -> Path:
    """Create ``path`` by calling ``write(tmp)`` on a unique temporary file beside it, then moving it into place.

    Without ``overwrite`` the move is a hard link, which fails if ``path`` appeared meanwhile (another writer), so an
    existing file is never replaced; with it, ``os.replace``. No file of the user's is ever read or removed: the
    temporary name is new (process id and a random part, created exclusively).

    Args:
        path (str | Path): The destination; its folder is created if needed.
        write (Callable[[Path], object]): Writes the whole content to the path it is given.
        overwrite (bool): Allow replacing an existing file (checked before writing).

    Returns:
        (Path): ``path``.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        IbraYoloError: The file cannot be written there (a file-system error, in one line).
    """
    path = check_output(path, overwrite)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb"):  # x: a new file, never one that exists; its mode follows the umask like any output
            pass
    except OSError as e:
        raise IbraYoloError(f"cannot write {path}: {describe_os_error(e)}") from None
    try:
        write(tmp)
        _move(tmp, path, overwrite)
    except IbraYoloError:  # OutputExistsError is also an OSError
        raise
    except OSError as e:
        raise IbraYoloError(f"cannot write {path}: {describe_os_error(e)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _move(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists: never replaces a file that appeared while we worked
    except FileExistsError:
        raise OutputExistsError(f"{path} exists: choose another name or pass --overwrite") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise OutputExistsError(f"{path} exists: choose another name or pass --overwrite") from None
        os.replace(tmp, path)


def describe_os_error(e: OSError) -> str:
    """A file-system error in one line: ``<reason>: <file>`` (e.g. ``Permission denied: /data/x.json``)."""
    reason = e.strerror or " ".join(str(e).split()) or type(e).__name__
    return f"{reason}: {e.filename}" if e.filename else reason


def _json_name(key) -> str | None:
    """The name ``json.dumps`` writes for a dict key; None for a key it refuses itself (a tuple, a huge int)."""
    if isinstance(key, str) or key is None or isinstance(key, bool):
        return key if isinstance(key, str) else {None: "null", True: "true", False: "false"}[key]
    try:
        return int.__repr__(key) if isinstance(key, int) else float.__repr__(key) if isinstance(key, float) else None
    except ValueError:  # an int beyond Python's 4300-digit limit
        return None


def _check_json_keys(obj, path) -> None:
    """Refuse a dict with two keys JSON writes as one name (``1`` and ``"1"``), at any depth. A dict's keys are
    distinct, so a name written twice is a collision; only dicts with a key that is no str can have one."""
    todo, seen = [obj], set()
    while todo:
        item = todo.pop()
        if not isinstance(item, (dict, list, tuple)) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            if not all(type(k) is str for k in item):
                names: dict[str, object] = {}
                for key in item:
                    name = _json_name(key)
                    if name is not None and name in names:
                        raise IbraYoloError(
                            f"{path}: an object has the keys {names[name]!r:.40} and {key!r:.40}, which JSON writes as "
                            f'the same name "{name:.40}" (a reader keeps one): not written; use distinct keys'
                        )
                    names[name] = key
            todo.extend(item.values())
        else:
            todo.extend(item)


def write_json(path: str | Path, obj, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON with ``write_atomic`` (values JSON cannot hold are written as strings).

    Raises:
        NonFiniteError: ``obj`` holds NaN or infinity, which JSON has no numbers for (Python would write ``NaN``, which
            other JSON readers refuse); nothing is written.
        IbraYoloError: A dict has two keys JSON writes as one name (``1`` and ``"1"``, ``True`` and ``"true"``): the
            file would repeat it and a reader keep only one; nothing is written.
    """
    _check_json_keys(obj, path)
    try:
        text = json.dumps(obj, indent=2, default=str, allow_nan=False)
    except ValueError as e:
        if "Exceeds the limit" in str(e):  # Python writes ints of at most 4300 digits
            raise IbraYoloError(
                f"{path}: the data holds an integer of more than {sys.get_int_max_str_digits()} digits, which Python "
                f"does not write as text: not written"
            ) from None
        if "Out of range float" not in str(e):  # e.g. a circular reference: not ours to rename
            raise
        raise NonFiniteError(f"{path}: the data holds NaN or infinity, which JSON cannot hold: not written") from None
    return write_atomic(path, lambda tmp: tmp.write_text(text), overwrite)
