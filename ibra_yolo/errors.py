"""Errors ibra-yolo raises for bad user input: each message is one line that says what is wrong and how to fix it.

Our command-line tools print them as one ``error: ...`` line (``ibra_yolo.cli``); a Python caller gets a normal
exception with that message. Only errors that a caller may want to tell apart have their own class; the two file
errors are also the matching built-in errors, so ``except FileNotFoundError`` works as usual (``PathError`` is an
``OSError``).
"""

__all__ = (
    "IbraYoloError",
    "ModelConfigError",
    "CheckpointError",
    "UnsafePickleError",
    "MissingFileError",
    "DatasetError",
    "OutputExistsError",
    "FoldedModelError",
    "NonFiniteError",
    "PathError",
    "one_line",
)


def one_line(text: str) -> str:
    """``text`` with its line breaks written as ``\\n`` / ``\\r``, so that it prints as one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class IbraYoloError(Exception):
    """Base class of ibra-yolo's user-facing errors: the message says what is wrong and how to fix it.

    The message is one line whatever it quotes: a line break inside it (a file name may hold one) reads as ``\\n``.
    """

    def __str__(self) -> str:
        return one_line(super().__str__())


class ModelConfigError(IbraYoloError, ValueError):
    """A model YAML that cannot be built (bad neuron, scale, row, argument or connection)."""


class CheckpointError(IbraYoloError, ValueError):
    """A checkpoint that cannot be read or converted (wrong format, unexpected content, a tensor that does not fit)."""


class UnsafePickleError(CheckpointError):
    """A checkpoint whose pickle names a function or module it may not use; nothing it names is ever called."""


class MissingFileError(IbraYoloError, FileNotFoundError):
    """An input file (weights, dataset, annotations, predictions, images) that does not exist."""


class DatasetError(IbraYoloError, ValueError):
    """A dataset YAML that Ultralytics cannot use (a key missing, ``names`` and ``nc`` that disagree, a wrong type)."""


class OutputExistsError(IbraYoloError, FileExistsError):
    """An output file that exists, when overwriting it was not asked for."""


class FoldedModelError(IbraYoloError):
    """A model folded for inference (``fuse()`` or ``ibra_yolo.deploy()``) used where its training graph is needed."""


class NonFiniteError(IbraYoloError, ValueError):
    """A NaN or infinite number where only finite ones are valid (an image, a box, a score, a membrane potential)."""


class PathError(IbraYoloError, OSError):
    """A path that cannot be used: a file where a folder is needed (or the reverse), no permission, a failed write."""


class SourceError(IbraYoloError, TypeError):
    """A prediction source of a type Ultralytics does not read (``predict(object())``, a list holding a number)."""


class StreamError(IbraYoloError, ConnectionError):
    """A stream or camera source (``rtsp://...``, a webcam index, a ``.streams`` list) that cannot be opened."""


class ExportError(IbraYoloError, ValueError):
    """An export that Ultralytics' exporter refuses for its arguments (``half=True`` on the CPU, an unknown format)."""


class MissingPackageError(IbraYoloError, ModuleNotFoundError):
    """A Python package that an export format needs, not installed (Ultralytics installs it only when online)."""
