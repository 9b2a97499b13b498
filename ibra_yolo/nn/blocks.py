"""Meta-spiking YOLOv8 blocks (SpikeYOLO architecture) on ``[T, B, C, H, W]`` tensors.

Blocks pass real-valued pre-activations between each other ("membrane shortcut"); spikes exist only between a neuron
and the linear layer it feeds. Every such pair is a ``NeuronConv``, the one place where spike-driven execution
(``{0, 1}`` planes over virtual timesteps) happens. Blocks take their neuron as a factory (``neuron=callable``)
supplied by the model builder; the default factory is the paper's neuron, ``IBRALIF`` with its released defaults
(``D = 5.11, N = 100, T = 1``), so that e.g. ``SConv(3, 8)`` works on its own.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules.conv import autopad

from ibra_yolo.coding import _plane
from ibra_yolo.neurons import IBRALIF, is_spiking_neuron, num_planes
from ibra_yolo.nn.ops import _bn_affine, _conv_kwargs, conv_macs_per_pixel, recording_graph

__all__ = (
    "BNPad",
    "SepRep",
    "RepConv",
    "Tap",
    "Synapse",
    "NeuronConv",
    "TimeRepeat",
    "Downsample",
    "SConv",
    "SepConv",
    "AllConvBlock",
    "ConvBlock",
    "SPPF",
    "Upsample",
    "Concat",
)

NeuronFactory = Callable[[], nn.Module]
DEFAULT_NEURON: NeuronFactory = IBRALIF  # the paper's neuron with its released defaults (D = 5.11, N = 100, T = 1)


def step(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-image module to every timestep of ``x`` ``[T, B, ...]`` at once (``T*B`` batch)."""
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


# ----------------------------------------------------------------------------------------------------------------------
# Linear ops fed by spikes. Each provides ``synaptic()`` (the first linear stage as a conv: weight, bias, kwargs) and
# ``post()`` (the remaining linear stages), so that op(x) == post(conv(x, weight) + bias) in eval mode.
# ----------------------------------------------------------------------------------------------------------------------
class BNPad(nn.BatchNorm2d):
    """BatchNorm that pads its output with the BN's own value for a zero input, so it folds into the next conv.

    ``BNPad(x) == BN(zero_pad(x))`` in eval mode, hence ``conv(BNPad(x))`` is a conv on zero-padded ``x`` with BN
    folded into its weights and bias.

    Args:
        c (int): Channels.
        pad (int): Border pixels.
    """

    def __init__(self, c: int, pad: int = 1, eps: float = 1e-3, momentum: float = 0.03):
        super().__init__(c, eps=eps, momentum=momentum)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.pad == 0:
            return y
        p = self.pad
        with torch.no_grad():
            v = _bn_affine(self)[1].to(y.dtype).view(1, -1, 1, 1)  # the BN's output for a zero input
        y = F.pad(y, [p, p, p, p])
        y[:, :, :p, :] = v
        y[:, :, -p:, :] = v
        y[:, :, p:-p, :p] = v
        y[:, :, p:-p, -p:] = v
        return y


class SepRep(nn.Module):
    """Re-parameterisable separable tail: BNPad -> 1x1 conv c1->c2 -> depthwise kxk (foldable into one kxk conv).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Depthwise kernel.
    """

    def __init__(self, c1: int, c2: int, k: int = 3):
        super().__init__()
        self.bn = BNPad(c1, pad=(k - 1) // 2)
        self.pw = nn.Conv2d(c1, c2, 1, bias=False)
        self.dw = nn.Conv2d(c2, c2, k, groups=c2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(self.bn(x)))

    def synaptic(self):
        """BN folded into the 1x1 conv, which zero-pads its input by the BNPad border."""
        if not isinstance(self.bn, BNPad):  # folded for good by ibra_yolo.deployment.fuse_bn: pw pads and has the bias
            return self.pw.weight, self.pw.bias, _conv_kwargs(self.pw)
        a, b = _bn_affine(self.bn)
        w = self.pw.weight
        return w * a.view(1, -1, 1, 1), w.flatten(1) @ b, {"padding": self.bn.pad}

    def post(self, y: torch.Tensor) -> torch.Tensor:
        return self.dw(y)

    def macs_per_pixel(self) -> int:
        """Counted as its folded conv: ``c1 * c2 * k * k``."""
        k = self.dw.kernel_size[0]
        return self.pw.in_channels * self.pw.out_channels * k * k


class RepConv(nn.Module):
    """Re-parameterisable conv: 1x1 c1->c1 -> BNPad -> depthwise 3x3 -> 1x1 c1->c2 -> BN (foldable into one 3x3).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Depthwise kernel.
    """

    def __init__(self, c1: int, c2: int, k: int = 3):
        super().__init__()
        self.pw1 = nn.Conv2d(c1, c1, 1, bias=False)
        self.bn1 = BNPad(c1, pad=(k - 1) // 2)
        self.dw = nn.Conv2d(c1, c1, k, groups=c1, bias=False)
        self.pw2 = nn.Conv2d(c1, c2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.pw1(x))

    def synaptic(self):
        return self.pw1.weight, None, {}

    def post(self, y: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.pw2(self.dw(self.bn1(y))))

    def macs_per_pixel(self) -> int:
        """Counted as its folded conv: ``c1 * c2 * k * k``."""
        k = self.dw.kernel_size[0]
        return self.pw1.in_channels * self.pw2.out_channels * k * k


class Tap(nn.Module):
    """Identity on what a ``NeuronConv``'s op is fed, ``[T, B, C, H, W]``: parameter-free, it exists to be observed.

    Hooks read here what the forward produced instead of computing it again (the energy meter counts codes here): in
    integer mode the neuron's output (``S = code / N`` for an integer neuron, the ANN twin's activation, the image for
    the first layer); in spike-driven mode the integer codes that the ``{0, 1}`` planes are cut from.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Synapse(nn.Module):
    """Convolution of one ``{0, 1}`` spike plane (no bias): the accumulate-only synaptic operation.

    Parameter-free; it exists so that hooks can observe exactly what a spike-fed conv receives.
    """

    def forward(self, spikes: torch.Tensor, weight: torch.Tensor, **kwargs) -> torch.Tensor:
        return F.conv2d(spikes, weight, None, **kwargs)


class NeuronConv(nn.Module):
    """A neuron followed by the linear op it feeds, on ``[T, B, C, H, W]`` tensors.

    Integer mode (default): ``op(neuron(x))``. Spike-driven mode (``spike_driven = True``, in eval mode): the neuron's
    integer codes are sent as ``{0, 1}`` planes, one virtual timestep at a time; each plane goes through the op's
    first conv without bias (``Synapse``), the results are summed with weights ``2**j / N`` (binary) or ``1 / N``
    (unary), and the bias and remaining linear stages are applied once after the sum. ``neuron=None`` makes an
    encoding layer fed by real values (the only multiply-accumulate layer of a spiking model). What the op is fed
    passes through ``tap`` and every plane through ``synapse``: two parameter-free modules for hooks to observe.

    How many planes run: in eager mode on the CPU, planes above the largest code present are empty and skipped. On an
    accelerator every plane runs (reading the largest code back would stall the device once per layer), and so does
    a recorded graph (``recording_graph``: trace, ONNX export, compile), so that it holds for any input.

    Args:
        neuron (nn.Module | None): The neuron (or the ANN twin's activation); None for a real-valued input.
        op (nn.Module): ``nn.Conv2d``, ``RepConv`` or ``SepRep``.
    """

    def __init__(self, neuron: nn.Module | None, op: nn.Module):
        super().__init__()
        self.neuron = neuron
        self.op = op
        self.tap = Tap()
        self.synapse = Synapse()
        self.spike_driven = False

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "tap" not in self._modules:  # a checkpoint pickled before the tap existed
            self.tap = Tap()

    @property
    def spiking(self) -> bool:
        """True when the input is an integer spiking neuron's output."""
        return self.neuron is not None and is_spiking_neuron(self.neuron)

    @property
    def runs_spike_driven(self) -> bool:
        """True when a forward call now sends ``{0, 1}`` planes: spike-driven mode set, spiking input, eval mode."""
        return self.spike_driven and self.spiking and not self.training

    def macs_per_pixel(self) -> int:
        """Dense MACs per output pixel of the op (re-parameterisable ops as their folded conv)."""
        return conv_macs_per_pixel(self.op) if isinstance(self.op, nn.Conv2d) else self.op.macs_per_pixel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_spike_driven:
            y = self._forward_spikes(x)
        else:
            y = self.op(self.tap(x if self.neuron is None else self.neuron(x)).flatten(0, 1))
        return y.unflatten(0, x.shape[:2])

    def _synaptic(self):
        if isinstance(self.op, nn.Conv2d):
            return self.op.weight, self.op.bias, _conv_kwargs(self.op), None
        weight, bias, kwargs = self.op.synaptic()
        return weight, bias, kwargs, self.op.post

    def _forward_spikes(self, x: torch.Tensor) -> torch.Tensor:
        n = self.neuron
        static = recording_graph()  # first: it refuses an FX trace with one line before the neuron would fail on it
        codes = self.tap(n.spike_codes(x)).flatten(0, 1)  # no host sync; NAN_CODE (-1) where a membrane is NaN
        weight, bias, kwargs, post = self._synaptic()
        acc = None
        weights = n.plane_weights()
        if not static and codes.device.type == "cpu":  # planes above the largest code are empty: no spikes, no work
            weights = weights[: max(num_planes(int(codes.max()), n.encoding), 1)]
        for j, w in enumerate(weights):
            y = self.synapse(_plane(codes, j, n.encoding, dtype=weight.dtype), weight, **kwargs)
            acc = y.mul_(w) if acc is None else acc.add_(y, alpha=w)
        # A NaN membrane has no spikes to send: its sample's output is NaN, so it never passes silently (as NaN does
        # through the integer path), decided on the device without a host sync.
        acc = acc.masked_fill((codes.flatten(1).amin(1) < 0).view(-1, 1, 1, 1), float("nan"))
        if bias is not None:
            acc = acc + bias.view(1, -1, 1, 1)
        return acc if post is None else post(acc)

    def extra_repr(self) -> str:
        return "spike_driven=True" if self.spike_driven else ""


# ----------------------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------------------
class TimeRepeat(nn.Module):
    """Direct encoding: repeat the image ``[B, C, H, W]`` over ``T`` timesteps -> ``[T, B, C, H, W]``.

    Args:
        T (int): Timesteps.
    """

    def __init__(self, T: int = 1):
        super().__init__()
        self.T = T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(0)
        return x if self.T == 1 else x.repeat(self.T, *([1] * (x.dim() - 1)))

    def extra_repr(self) -> str:
        return f"T={self.T}"


class Downsample(nn.Module):
    """[neuron unless first] -> conv k x k stride s (with bias) -> BN.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Kernel.
        s (int): Stride.
        p (int): Padding.
        first (bool): First layer, fed by the real image (no neuron).
        neuron (Callable): Neuron factory (default ``IBRALIF``, the paper's neuron).
    """

    def __init__(
        self, c1: int, c2: int, k: int = 3, s: int = 2, p: int = 1, first: bool = False, neuron=DEFAULT_NEURON
    ):
        super().__init__()
        self.conv = NeuronConv(None if first else neuron(), nn.Conv2d(c1, c2, k, s, p, bias=True))
        self.bn = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return step(self.bn, self.conv(x))


class SConv(nn.Module):
    """Spiking conv: neuron -> conv k x k stride s (no bias) -> BN.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Kernel.
        s (int): Stride.
        p (int, optional): Padding ('same' when None).
        g (int): Groups.
        neuron (Callable): Neuron factory (default ``IBRALIF``, the paper's neuron).
    """

    def __init__(
        self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, neuron=DEFAULT_NEURON
    ):
        super().__init__()
        self.conv = NeuronConv(neuron(), nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False))
        self.bn = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return step(self.bn, self.conv(x))


class SepConv(nn.Module):
    """Inverted separable conv (expansion e, kernel k): three neuron -> conv -> BN stages.

    neuron -> 1x1 c->e*c -> BN; neuron -> depthwise k x k -> BN; neuron -> SepRep(e*c -> c) -> BN.

    Args:
        c (int): Channels.
        k (int): Depthwise kernel.
        e (int): Expansion.
        neuron (Callable): Neuron factory (default ``IBRALIF``, the paper's neuron).
    """

    def __init__(self, c: int, k: int = 7, e: int = 2, neuron=DEFAULT_NEURON):
        super().__init__()
        ce = int(e * c)
        self.pw1 = NeuronConv(neuron(), nn.Conv2d(c, ce, 1, bias=False))
        self.bn1 = nn.BatchNorm2d(ce)
        self.dw = NeuronConv(neuron(), nn.Conv2d(ce, ce, k, padding=k // 2, groups=ce, bias=False))
        self.bn2 = nn.BatchNorm2d(ce)
        self.pw2 = NeuronConv(neuron(), SepRep(ce, c))
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = step(self.bn1, self.pw1(x))
        x = step(self.bn2, self.dw(x))
        return step(self.bn3, self.pw2(x))


class AllConvBlock(nn.Module):
    """Shallow-stage block: ``x = x + SepConv(x)``; ``x = x + SConv3x3(r*c -> c)(SConv3x3(c -> r*c)(x))``.

    Args:
        c (int): Channels (in = out).
        r (float): Expansion ratio of the conv pair.
        k (int): SepConv depthwise kernel.
        neuron (Callable): Neuron factory (default ``IBRALIF``, the paper's neuron).
    """

    def __init__(self, c: int, r: float = 4, k: int = 7, neuron=DEFAULT_NEURON):
        super().__init__()
        cr = int(c * r)
        self.sep = SepConv(c, k, neuron=neuron)
        self.conv1 = SConv(c, cr, 3, neuron=neuron)
        self.conv2 = SConv(cr, c, 3, neuron=neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.sep(x)
        return x + self.conv2(self.conv1(x))


class ConvBlock(nn.Module):
    """Deep-stage block: ``x = x + SepConv(x)``; ``x = x + BN(RepConv(r*c -> c)(n(BN(RepConv(c -> r*c)(n(x))))))``.

    Args:
        c (int): Channels (in = out).
        r (float): Expansion ratio of the RepConv pair.
        k (int): SepConv depthwise kernel.
        neuron (Callable): Neuron factory (default ``IBRALIF``, the paper's neuron).
    """

    def __init__(self, c: int, r: float = 4, k: int = 7, neuron=DEFAULT_NEURON):
        super().__init__()
        cr = int(c * r)
        self.sep = SepConv(c, k, neuron=neuron)
        self.conv1 = NeuronConv(neuron(), RepConv(c, cr))
        self.bn1 = nn.BatchNorm2d(cr)
        self.conv2 = NeuronConv(neuron(), RepConv(cr, c))
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.sep(x)
        return x + step(self.bn2, self.conv2(step(self.bn1, self.conv1(x))))


class SPPF(nn.Module):
    """Spiking SPPF: SConv 1x1 c1 -> c1/2, three chained k x k max-pools, concat, SConv 1x1 -> c2.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Pool kernel.
        neuron (Callable): Neuron factory (default ``IBRALIF``, the paper's neuron).
    """

    def __init__(self, c1: int, c2: int, k: int = 5, neuron=DEFAULT_NEURON):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = SConv(c1, c_, 1, neuron=neuron)
        self.cv2 = SConv(c_ * 4, c2, 1, neuron=neuron)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(step(self.pool, y[-1]))
        return self.cv2(torch.cat(y, 2))


class Upsample(nn.Module):
    """Nearest-neighbour spatial upsampling of ``[T, B, C, H, W]``.

    Args:
        scale (int): Spatial factor.
    """

    def __init__(self, scale: int = 2):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.flatten(0, 1), scale_factor=self.scale, mode="nearest").unflatten(0, x.shape[:2])

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class Concat(nn.Module):
    """Concatenate ``[T, B, C, H, W]`` tensors along channels."""

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, 2)
