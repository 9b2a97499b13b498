"""Small helpers on convolutions and graph recording that the spiking blocks, deployment and the energy meter share."""

from __future__ import annotations

import torch
from torch import nn

from ibra_yolo.errors import IbraYoloError

__all__ = ("conv_macs_per_pixel", "recording_graph")


def _conv_kwargs(conv: nn.Conv2d) -> dict:
    return {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``a * x + b`` per channel."""
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return a, bn.bias - bn.running_mean * a


def conv_macs_per_pixel(conv: nn.Conv2d) -> int:
    """Dense multiply-accumulates per output pixel of a conv: ``Cin/g * Cout * kh * kw``."""
    kh, kw = conv.kernel_size
    return conv.in_channels // conv.groups * conv.out_channels * kh * kw


_fx = torch.fx._symbolic_trace
_is_fx_symbolic_tracing = getattr(_fx, "is_fx_symbolic_tracing", _fx.is_fx_tracing)  # the first is newer, quieter


def recording_graph() -> bool:
    """True while a graph is recorded (``torch.jit.trace``, ONNX export, ``torch.compile``/``torch.export``).

    A recorded graph keeps Python decisions fixed, so no decision may then depend on the values of a tensor.

    Raises:
        IbraYoloError: An FX symbolic trace, which cannot record spike-driven execution.
    """
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return True
    if _is_fx_symbolic_tracing():
        raise IbraYoloError(
            "spike-driven layers cannot be FX-traced (their codes are data): trace with torch.jit.trace, "
            "torch.onnx.export, torch.export or torch.compile, or switch spike-driven mode off"
        )
    return False
