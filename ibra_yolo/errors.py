"""Errors ibra-yolo raises for bad user input; the CLI shows them as one line (see ``ibra_yolo.plugin``)."""

__all__ = ("IbraYoloError", "ModelConfigError")


class IbraYoloError(Exception):
    """Base class of ibra-yolo's user-facing errors: the message says what is wrong and how to fix it."""


class ModelConfigError(IbraYoloError, ValueError):
    """A model YAML that cannot be built (bad neuron, scale, row, argument or connection)."""
