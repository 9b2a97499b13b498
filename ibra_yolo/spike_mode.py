"""Spike-driven inference on the same weights: every neuron's integer code is sent as ``{0, 1}`` planes.

In this mode each ``NeuronConv`` (a neuron and the conv it feeds) convolves one plane at a time without bias,
accumulates with weights ``2**j / N`` (binary) or ``1 / N`` (unary) and adds bias/BN once after the sum, so every
conv fed by a neuron receives only 0s and 1s. It applies in eval mode; in training mode the integer path runs (it
computes the same values and defines the gradients).

Examples:
    >>> from ultralytics import YOLO
    >>> from ibra_yolo import set_spike_driven, spike_driven
    >>> model = YOLO("best.pt")
    >>> with spike_driven(model):      # spike-driven inside the block, the previous mode restored after it
    ...     results = model("bus.jpg")
    >>> set_spike_driven(model)        # or switch on for good (returns the model)
    >>> set_spike_driven(model, False)  # back to integer mode

``spike_driven(model)`` switches at once, so it also works as a plain call; it returns a context object (whose
``__enter__`` gives the model), not the model: use ``set_spike_driven`` where the model itself is wanted.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ibra_yolo.errors import IbraYoloError, MissingFileError
from ibra_yolo.files import as_path, check_output, write_atomic
from ibra_yolo.nn.blocks import NeuronConv

__all__ = (
    "spike_driven",
    "set_spike_driven",
    "is_spike_driven",
    "spike_driven_units",
    "convert_checkpoint",
    "torch_model",
)


_WRAPPERS = ("ultralytics.engine.model", "ultralytics.nn.autobackend")  # YOLO and AutoBackend, matched by module


def torch_model(model) -> nn.Module:
    """The ``nn.Module`` whose forward takes images: unwraps Ultralytics' ``YOLO`` and ``AutoBackend`` wrappers.

    Any other module is returned as it is (a custom wrapper is not searched for an attribute named ``model``).

    Raises:
        IbraYoloError: ``model`` is not a torch module.
    """
    while any(c.__module__ in _WRAPPERS for c in type(model).__mro__):  # YOLO -> DetectionModel; AutoBackend -> ...
        model = model.model
    if isinstance(model, nn.Module):
        return model
    raise IbraYoloError(f"expected a YOLO object or a torch model, got {type(model).__name__}")


def spike_driven_units(model) -> list[NeuronConv]:
    """The ``NeuronConv`` units of ``model`` whose input is an integer spiking neuron.

    For a ``YOLO`` object this includes the copy of the model its cached predictor holds.
    """
    models = [torch_model(model)]
    predictor = model.__dict__.get("predictor")  # YOLO objects only (a torch model's getattr would raise)
    if getattr(predictor, "model", None) is not None:
        models.append(torch_model(predictor.model))
    units = {id(m): m for model in models for m in model.modules() if isinstance(m, NeuronConv) and m.spiking}
    return list(units.values())


def set_spike_driven(model, enabled: bool = True):
    """Switch every spike-fed conv of ``model`` to spike-driven (``True``) or integer (``False``) execution.

    Args:
        model (YOLO | nn.Module): A spiking model (any neuron family, any T).
        enabled (bool): The mode.

    Returns:
        The same ``model``.

    Raises:
        IbraYoloError: ``enabled`` is True but the model has no spiking neurons (e.g. the ANN twin or a stock YOLO
            model; ``False`` leaves such a model as it is), or ``enabled`` is not a bool (``'no'`` would read as true).
    """
    if not isinstance(enabled, bool):
        raise IbraYoloError(f"enabled={enabled!r} is invalid: pass True (spike-driven) or False (integer)")
    units = spike_driven_units(model)
    if not units and enabled:  # switching off a model without spikes changes nothing (deploy of the ANN twin)
        raise IbraYoloError(
            "this model has no integer spiking neurons (an ANN twin or a stock model?): spike-driven mode needs "
            "an IBRA-LIF, IB-LIF or I-LIF model"
        )
    for m in units:
        m.spike_driven = bool(enabled)
    return model


def is_spike_driven(model) -> bool:
    """True when every spike-fed conv of ``model`` runs spike-driven."""
    units = spike_driven_units(model)
    return bool(units) and all(m.spike_driven for m in units)


class spike_driven:  # noqa: N801 - reads as a function call or a context manager
    """Switch a model to spike-driven execution at once; as a context manager, restore the previous mode on exit.

    Calling it returns this context object, not the model (``with spike_driven(model) as m`` binds the model);
    ``set_spike_driven`` returns the model.

    Args:
        model (YOLO | nn.Module): A spiking model.
        enabled (bool): The mode to switch to.

    Raises:
        IbraYoloError: The model has no spiking neurons.
    """

    def __init__(self, model, enabled: bool = True):
        self.model = model
        self.previous = {m: m.spike_driven for m in spike_driven_units(model)}
        set_spike_driven(model, enabled)

    def __enter__(self):
        return self.model

    def __exit__(self, *exc):
        for m, mode in self.previous.items():
            m.spike_driven = mode
        return False


def convert_checkpoint(src: str | Path, dst: str | Path, enabled: bool = True, overwrite: bool = False) -> Path:
    """Write a copy of checkpoint ``src`` whose model runs spike-driven, e.g. for ``yolo predict model=<dst>``.

    The weights are unchanged; only the execution mode is stored. ``src`` is never modified, and it is read without
    running any of its code (``ibra_yolo.checkpoints.load_checkpoint``). Only an Ultralytics checkpoint holding an
    ibra-yolo model with integer spiking neurons is accepted.

    Args:
        src (str | Path): Ultralytics checkpoint (``best.pt``).
        dst (str | Path): Output checkpoint (``.pt``); checked before ``src`` is read.
        enabled (bool): Spike-driven (True) or integer (False).
        overwrite (bool): Replace an existing ``dst``.

    Returns:
        (Path): ``dst``.

    Raises:
        MissingFileError: ``src`` does not exist.
        OutputExistsError: ``dst`` exists and ``overwrite`` is False.
        UnsafePickleError: ``src``'s pickle names a function or class outside the allow-list (nothing was run).
        CheckpointError: ``src`` is not an Ultralytics checkpoint of a spiking ibra-yolo model.
        IbraYoloError: ``dst`` is ``src``, or cannot be written there.
    """
    import torch

    from ibra_yolo.checkpoints import checkpoint_model, load_checkpoint

    if not isinstance(enabled, bool):  # before any work ('no' would read as true)
        raise IbraYoloError(f"enabled={enabled!r} is invalid: pass True (spike-driven) or False (integer)")

    src, dst = as_path(src, "src"), as_path(dst, "dst")
    if not src.exists():
        raise MissingFileError(f"checkpoint {src} does not exist")
    if dst.suffix.lower() != ".pt":
        raise IbraYoloError(f"output {dst} must end in .pt (Ultralytics loads checkpoints by that suffix)")
    check_output(dst, overwrite, flag="output file name", inputs=(src,))
    ckpt = load_checkpoint(src)
    checkpoint_model(ckpt, src, need="spiking")
    for key in ("model", "ema"):
        if isinstance(ckpt.get(key), nn.Module):
            set_spike_driven(ckpt[key], enabled)
    return write_atomic(dst, lambda tmp: torch.save(ckpt, tmp), overwrite)  # a crash never leaves a half-written dst
