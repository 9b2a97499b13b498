"""Folding maths on single layers: a BatchNorm into the conv before or after it, a chain of convs into one conv.

Every fold is computed in float64 and stored in the layer's dtype; a result that does not fit that dtype (a BN scale
too large to fold) is refused, never stored as inf. These functions build new convs and change nothing they are given;
``ibra_yolo.deployment`` applies them to whole models (SPEC §2.5).
"""

from __future__ import annotations

import torch
from torch import nn

from ibra_yolo.errors import IbraYoloError, NonFiniteError
from ibra_yolo.nn.blocks import BNPad

__all__ = ("check_bn", "fold_bn_after", "fold_bn_before", "merge_convs")


def check_bn(bn: nn.BatchNorm2d, name: str) -> None:
    """Refuse a BN whose eval-mode scale ``weight / sqrt(running_var + eps)`` or shift is not a finite number.

    Raises:
        NonFiniteError: Naming the BN (``name``), the first broken channel and its statistics.
    """
    if bn.running_var is None or bn.running_mean is None:
        raise IbraYoloError(
            f"cannot fold {name}: it keeps no running statistics (track_running_stats=False), so it normalises every "
            f"batch by that batch's own statistics, which no conv can hold"
        )
    weight, bias = _bn_weight_bias(bn)
    var = bn.running_var.double() + bn.eps
    broken = ~(var > 0) | ~var.isfinite()  # ~(NaN > 0) is True too
    for t in (weight, bias, bn.running_mean):
        broken |= ~t.isfinite()
    if bool(broken.any()):
        c = int(broken.nonzero()[0])
        values = f"weight {float(weight[c]):g}, bias {float(bias[c]):g}, running_mean {float(bn.running_mean[c]):g}"
        raise NonFiniteError(
            f"cannot fold {name}: channel {c} has {values}, running_var + eps {float(var[c]):g} (all must be finite, "
            "running_var + eps > 0): the BN statistics are broken"
        )


def _bn_weight_bias(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The BN's affine weight and bias in float64 (1 and 0 for a BN without them, ``affine=False``)."""
    ones = torch.ones(bn.num_features, dtype=torch.float64, device=bn.running_var.device)
    weight = ones if bn.weight is None else bn.weight.double()
    return weight, torch.zeros_like(ones) if bn.bias is None else bn.bias.double()


def _bn_affine64(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``a * x + b`` per channel, in float64 (``check_bn`` first: never a NaN or inf scale)."""
    check_bn(bn, repr(bn))
    weight, bias = _bn_weight_bias(bn)
    a = weight / torch.sqrt(bn.running_var.double() + bn.eps)
    return a, bias - bn.running_mean.double() * a


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, padding=None) -> nn.Conv2d:
    """A new ``Conv2d`` with ``conv``'s geometry, dtype and device and the given float64 weight and bias."""
    out = nn.utils.skip_init(  # no random initialisation: every value is overwritten
        nn.Conv2d,
        weight.shape[1] * conv.groups,
        weight.shape[0],
        weight.shape[2:],
        stride=conv.stride,
        padding=conv.padding if padding is None else padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    return _filled(out, weight, bias, conv.weight.requires_grad)


def _filled(out: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, requires_grad: bool) -> nn.Conv2d:
    """``out`` holding ``weight`` and ``bias`` (float64) in its dtype; values beyond that dtype's range are refused.

    Raises:
        NonFiniteError: A value that becomes inf in ``out``'s dtype (e.g. a BN with a tiny running_var and a large
            weight: its fold is finite in float64 but not in float32).
    """
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    for what, t, exact in (("weight", out.weight, weight), ("bias", out.bias, bias)):
        if not bool(t.isfinite().all()):
            big = float(exact.abs().max())
            raise NonFiniteError(
                f"the folded {what} reaches {big:.3g}, beyond {str(t.dtype).removeprefix('torch.')} "
                f"(max {torch.finfo(t.dtype).max:.3g}): a BN scale or shift too large to fold"
            )
    out.requires_grad_(requires_grad)
    return out


def _bias64(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        return torch.zeros(conv.out_channels, dtype=torch.float64, device=conv.weight.device)
    return conv.bias.double()


def _check_plain(conv: nn.Conv2d, what: str) -> None:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise IbraYoloError(f"cannot fold {what}: {conv} must use numeric zero padding")


def fold_bn_after(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """``conv`` followed by BN as one conv with bias: ``BN(conv(x)) == new(x)`` (eval mode).

    Args:
        conv (nn.Conv2d): The conv.
        bn (nn.Module): A ``BatchNorm2d`` (not a ``BNPad``: its border is not a conv output), or ``nn.Identity``
            (already folded; ``conv`` is returned).

    Returns:
        (nn.Conv2d): The folded conv.
    """
    if isinstance(bn, nn.Identity):
        return conv
    if isinstance(bn, BNPad) and bn.pad:
        raise IbraYoloError(f"cannot fold {bn} into the conv before it: its padded border is not that conv's output")
    a, b = _bn_affine64(bn)
    return _conv_like(conv, conv.weight.double() * a.view(-1, 1, 1, 1), _bias64(conv) * a + b)


def fold_bn_before(bn: nn.Module, conv: nn.Conv2d) -> nn.Conv2d:
    """``BNPad`` (or BN) followed by ``conv`` as one conv: ``conv(BNPad(x)) == new(x)`` (eval mode).

    ``BNPad(x) == BN(zero_pad(x))``, so the BN scales the conv's input channels, its shift enters the bias, and the new
    conv zero-pads its input by the BNPad border. ``conv`` must not pad (its padding would use zeros, not BN(0)).

    Args:
        bn (nn.Module): ``BNPad``/``BatchNorm2d``, or ``nn.Identity`` (already folded; ``conv`` is returned).
        conv (nn.Conv2d): The conv after it, any groups.

    Returns:
        (nn.Conv2d): The folded conv.
    """
    if isinstance(bn, nn.Identity):
        return conv
    _check_plain(conv, f"{bn} into the conv after it")
    if any(conv.padding):
        raise IbraYoloError(f"cannot fold {bn} into {conv}: the conv pads its input with zeros, not with BN(0)")
    a, b = _bn_affine64(bn)
    w = conv.weight.double()
    g, (co, cig) = conv.groups, w.shape[:2]
    wg = w.view(g, co // g, cig, *w.shape[2:])  # input channel of wg[i, :, j] is i * cig + j
    w_new = (wg * a.view(g, 1, cig, 1, 1)).view_as(w)
    bias = _bias64(conv) + (wg * b.view(g, 1, cig, 1, 1)).sum((2, 3, 4)).reshape(co)
    pad = getattr(bn, "pad", 0)
    return _conv_like(conv, w_new, bias, padding=(pad, pad))


def _dense(w: torch.Tensor, groups: int) -> torch.Tensor:
    """Grouped conv weight ``[co, ci/g, k, k]`` as the dense ``[co, ci, k, k]`` weight of the same conv."""
    if groups == 1:
        return w
    co, cig = w.shape[:2]
    out = w.new_zeros(co, cig * groups, *w.shape[2:])
    for i in range(groups):
        rows = slice(i * co // groups, (i + 1) * co // groups)
        out[rows, i * cig : (i + 1) * cig] = w[rows]
    return out


def _compose(wa: torch.Tensor, ba: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense unpadded conv ``(wa, ba)`` followed by unpadded ``conv``, as one dense kernel and bias (float64).

    ``K[o, i, u + v] = sum_m B[o, m, v] * A[m, i, u]`` (a full 2-D convolution of the kernels) and
    ``b[o] = b_B[o] + sum_{m, v} B[o, m, v] * b_A[m]``; a depthwise ``conv`` (``m == o``) is used as it is.
    """
    wb, (kh, kw) = conv.weight.double(), conv.kernel_size
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    if not depthwise:
        wb = _dense(wb, conv.groups)
    ka = wa.shape[2:]
    out = wa.new_zeros(wb.shape[0], wa.shape[1], ka[0] + kh - 1, ka[1] + kw - 1)
    for v in range(kh):
        for u in range(kw):
            b_vu = wb[:, :, v, u]  # [o, 1] (depthwise) or [o, m]
            term = b_vu.view(-1, 1, 1, 1) * wa if depthwise else torch.einsum("om,mikl->oikl", b_vu, wa)
            out[:, :, v : v + ka[0], u : u + ka[1]] += term
    shift = wb.sum((1, 2, 3)) * ba if depthwise else wb.sum((2, 3)) @ ba
    return out, _bias64(conv) + shift


def merge_convs(convs: list[nn.Conv2d]) -> nn.Conv2d:
    """A chain of stride-1 convs as one dense conv with bias: ``convs[-1](...convs[0](x)) == new(x)``.

    At most one conv of the chain may pad, and every conv before it must be a bias-free 1x1 (these commute with zero
    padding), so the chain is a chain of unpadded convs on the zero-padded input, which compose pairwise (``_compose``).

    Args:
        convs (list[nn.Conv2d]): The chain, in forward order.

    Returns:
        (nn.Conv2d): One conv with ``groups=1``, stride 1 and the chain's padding.
    """
    padded = [i for i, c in enumerate(convs) if any(c.padding)]
    for c in convs:
        _check_plain(c, "a conv chain")
        if c.stride != (1, 1) or c.dilation != (1, 1):
            raise IbraYoloError(f"cannot merge {c}: only stride-1, undilated convs merge")
    if len(padded) > 1:
        raise IbraYoloError(f"cannot merge {len(padded)} padded convs of one chain exactly")
    pad = convs[padded[0]].padding if padded else (0, 0)
    for c in convs[: padded[0] if padded else 0]:
        if c.kernel_size != (1, 1) or c.bias is not None:
            raise IbraYoloError(f"cannot merge {c}: only a bias-free 1x1 conv may come before the padded conv")
    w, b = _dense(convs[0].weight.double(), convs[0].groups), _bias64(convs[0])
    for c in convs[1:]:
        w, b = _compose(w, b, c)
    first = convs[0]
    out = nn.utils.skip_init(
        nn.Conv2d, w.shape[1], w.shape[0], w.shape[2:], padding=pad, device=w.device, dtype=first.weight.dtype
    )
    return _filled(out, w, b, first.weight.requires_grad)
