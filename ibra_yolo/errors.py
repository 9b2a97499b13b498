"""Errors ibra-yolo raises for bad user input; the CLI shows them as one line (see ``ibra_yolo.plugin``)."""

__all__ = ("IbraYoloError", "ModelConfigError", "CheckpointError", "UnsafePickleError")


class IbraYoloError(Exception):
    """Base class of ibra-yolo's user-facing errors: the message says what is wrong and how to fix it."""


class ModelConfigError(IbraYoloError, ValueError):
    """A model YAML that cannot be built (bad neuron, scale, row, argument or connection)."""


class CheckpointError(IbraYoloError, ValueError):
    """A checkpoint that cannot be read or converted (wrong format, unexpected content, a tensor that does not fit)."""


class UnsafePickleError(CheckpointError):
    """A checkpoint whose pickle names a function or module it may not use; nothing it names is ever called."""
