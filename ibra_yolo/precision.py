"""Which low-precision float types hold a neuron's output levels, and a one-time warning when one does not.

A neuron's output is ``code / N`` for codes ``0..M``. Under ``torch.autocast`` (``amp=True``: float16, ``amp='bf16'``:
bfloat16) the conv after the neuron sees that output in the low precision. float16 keeps 11 significant bits and holds
IBRA-LIF's 512 levels (``D = 5.11, N = 100``) apart; bfloat16 keeps 8, so above ``1.28`` neighbouring levels merge
(its spacing near ``5.11`` is ``0.03`` against the neuron's ``0.01``): the next conv sees codes rounded by up to about
1.5 levels. Training still works (see the README's precision table); the warning says what is lost.
"""

from __future__ import annotations

import functools
import warnings

import torch

__all__ = ("LOW_PRECISION", "low_precision_dtype", "holds_levels", "check_levels")

LOW_PRECISION = (torch.float16, torch.bfloat16)

_AUTOCAST_DEVICES = frozenset({"cpu", "cuda", "xpu", "mps", "hpu", "mtia"})  # others (meta) have no autocast state


def low_precision_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The low-precision dtype (float16/bfloat16) the conv after a neuron will see for its output, else None.

    That is ``x``'s own dtype when it is one, else the autocast dtype when autocast is on for ``x``'s device (it casts
    every conv input). Plain tensor-metadata checks: no graph break under ``torch.compile``.
    """
    if x.dtype in LOW_PRECISION:
        return x.dtype
    device = x.device.type
    if device in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        return dtype if dtype in LOW_PRECISION else None
    return None


@functools.cache
def holds_levels(max_code: int, scale: float, dtype: torch.dtype) -> bool:
    """True when ``dtype`` keeps the levels ``code / scale``, ``code = 0..max_code``, all distinct.

    Computed as the neuron computes its output (``code / scale`` in float32, then cast), so it is exact for this
    neuron: e.g. float16 holds IBRA-LIF's 512 levels and bfloat16 does not; bfloat16 holds I-LIF's 0..4.
    """
    levels = (torch.arange(max_code + 1, dtype=torch.float32) / scale).to(dtype)
    return bool((levels[1:] > levels[:-1]).all())  # increasing: no two neighbouring levels merged


_warned: set[tuple] = set()


@torch.compiler.assume_constant_result
def check_levels(name: str, max_code: int, scale: float, dtype: torch.dtype) -> bool:
    """Warn once per process and neuron setting when ``dtype`` merges some of its levels; returns ``holds_levels``.

    ``assume_constant_result`` makes ``torch.compile`` run it once while tracing, outside the compiled graph: the check
    and the warning cost no graph break.
    """
    ok = holds_levels(max_code, scale, dtype)
    key = (name, max_code, scale, dtype)
    if not ok and key not in _warned:
        _warned.add(key)
        kind = str(dtype).replace("torch.", "")
        warnings.warn(
            f"{name} (codes 0..{max_code}, {scale:g} levels per unit) runs under {kind}: {kind} cannot keep its "
            f"{max_code + 1} output levels apart, so the conv after it sees codes rounded by up to "
            f"{_worst_merge(max_code, scale, dtype):.1f} levels. Training works (see the README's precision table); "
            f"use amp=True (float16) or float32 to keep every code exact.",
            stacklevel=2,
        )
    return ok


def _worst_merge(max_code: int, scale: float, dtype: torch.dtype) -> float:
    """Largest ``|rounded level - exact level|`` over all codes, in levels (multiples of ``1 / scale``)."""
    codes = torch.arange(max_code + 1, dtype=torch.float64)
    rounded = (codes.float() / scale).to(dtype).double()
    return float(((rounded * scale - codes).abs()).max())
