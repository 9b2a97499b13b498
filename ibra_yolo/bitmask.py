"""Boolean masks packed 8 to a byte, for what a straight-through gradient keeps between forward and backward.

A ``torch.bool`` tensor costs one byte per element; ``pack`` stores the same mask in ``ceil(n / 8)`` bytes
(``uint8``, element ``i`` in bit ``i % 8`` of byte ``i // 8``, numpy's ``bitorder="little"``) and ``unpack`` restores
it exactly. Two implementations write the same bytes: numpy's ``packbits``/``unpackbits`` for CPU tensors in eager
mode (one pass over the mask), and plain tensor ops everywhere else (GPU, and under ``torch.compile``, which fuses them
with their neighbours; neither reads a value on the host).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ("pack", "unpack", "packed_nbytes")


def packed_nbytes(numel: int) -> int:
    """Bytes that ``pack`` uses for a mask of ``numel`` elements: ``ceil(numel / 8)``."""
    if isinstance(numel, (bool, float)) or numel < 0:  # an int or torch.compile's symbolic int
        raise ValueError(f"numel={numel!r} is invalid: a mask has a whole number >= 0 of elements")
    return (numel + 7) // 8


def _use_numpy(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _bit_values(device: torch.device) -> torch.Tensor:
    return torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device)


def _pack_torch(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.reshape(-1).to(torch.uint8)
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat((flat, flat.new_zeros(pad)))
    return (flat.view(-1, 8) * _bit_values(flat.device)).sum(1, dtype=torch.uint8)


def _unpack_torch(packed: torch.Tensor, numel: int) -> torch.Tensor:
    return packed.unsqueeze(1).bitwise_and(_bit_values(packed.device)).ne(0).view(-1)[:numel]


def pack(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean mask (any shape) into a flat ``uint8`` tensor of ``ceil(mask.numel() / 8)`` bytes.

    Args:
        mask (torch.Tensor): A ``torch.bool`` tensor.

    Returns:
        (torch.Tensor): Bytes holding bit ``i % 8`` of byte ``i // 8`` = ``mask.flatten()[i]``; pad bits are 0.

    Examples:
        >>> pack(torch.tensor([True, False, True, True, False, False, False, False, True])).tolist()
        [13, 1]
    """
    if _use_numpy(mask):
        return torch.from_numpy(np.packbits(mask.reshape(-1).numpy(), bitorder="little"))
    return _pack_torch(mask)


def unpack(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Restore the boolean mask of ``shape`` that ``pack`` stored in ``packed``.

    Args:
        packed (torch.Tensor): The ``uint8`` bytes from ``pack``.
        shape (torch.Size | tuple[int, ...]): Shape of the original mask.

    Returns:
        (torch.Tensor): A ``torch.bool`` tensor of ``shape``.

    Raises:
        ValueError: ``packed`` is not the flat ``uint8`` tensor ``pack`` makes for a mask of ``shape``.
    """
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or len(packed) != packed_nbytes(numel):  # invented bits
        raise ValueError(
            f"packed holds {packed.numel()} {packed.dtype} values of shape {tuple(packed.shape)}: a mask of shape "
            f"{tuple(shape)} is packed in {packed_nbytes(numel)} uint8 bytes (a flat tensor from pack())"
        )
    if _use_numpy(packed):
        bits = torch.from_numpy(np.unpackbits(packed.numpy(), count=numel, bitorder="little")).view(torch.bool)
    else:
        bits = _unpack_torch(packed, numel)
    return bits.view(shape)
