"""The energy meter: while a model runs, hooks count what every ``NeuronConv`` receives (raw counts, no pricing).

The meter observes; it never computes a layer again. Each ``NeuronConv`` passes what its op is fed through its
parameter-free ``tap`` and, in spike-driven mode, every ``{0, 1}`` plane through its ``synapse``. Hooks on these two
modules and on the unit's output count, per layer:

- dense MACs: the layer's MACs per output pixel under the counting mode (``folded``: re-parameterisable ops as the
  single conv they fold into) times its output pixels, for one timestep;
- exact spikes: from the histogram of the integer codes (popcount per code for binary encoding, the code for unary),
  or in spike-driven mode the ones of every plane a ``Synapse`` receives;
- synaptic operations: each call's spikes times the layer's fan-out (MACs per input element); for layers fed by real
  values, the non-zero inputs times the fan-out instead (NeuroBench's effective MACs);
- the histogram of codes ``0..M`` (range use) and the non-zero inputs.

In integer mode the tap sees the neuron's real output ``S = code / N``; ``codes_from_outputs`` recovers the codes from
it exactly. The meter reads each observed tensor once, in chunks small enough that their temporaries stay in cache
(two elementwise passes and a ``bincount`` over interleaved sub-histograms per chunk of codes; ``sign``, ``abs`` and
a sum, branch-free, to count the non-zero real inputs), and keeps its running sums on the model's device until
``counts()``. Pricing, per-image
figures and NeuroBench metrics are the report's job (``ibra_yolo.energy.report``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from ibra_yolo.errors import IbraYoloError, NonFiniteError
from ibra_yolo.neurons import IntegerLIF
from ibra_yolo.nn.blocks import NeuronConv, RepConv, SepRep, Synapse, Tap, conv_macs_per_pixel

__all__ = ("COUNTING_MODES", "LayerCounts", "EnergyMeter", "codes_from_outputs", "executed_macs_per_pixel")

DENSE_HISTOGRAM_MAX = 2**16  # codes 0..M kept as a dense bincount up to this many bins, else as an exact sparse one
CHUNK = 2**18  # elements the meter handles at a time (1 MiB of float32): its temporaries stay in cache
LANES = 8  # interleaved sub-histograms per bincount (see _LayerCounter._histogram_of_outputs)

# How a layer's dense MACs per output pixel are counted: mode -> f(unit, BN after it or None) -> (synaptic, stages),
# the MACs per output pixel of the stage its neuron feeds (ACs for a spiking input) and of the real-valued stages
# around it (always MACs). Each mode's rules are in ``report.COUNTING_RULES``.
#   "folded" (SPEC §5, the default for a model with something to fold): a RepConv or SepRep counts as the single k x k
#       conv it folds into, BNs are free.
#   "executed": every stage as it runs. A deployed network (``ibra_yolo.deploy``) is counted this way: it has nothing
#       left to fold, so its executed count is the training graph's folded count (tested layer by layer).
COUNTING_MODES = {
    "folded": lambda unit, bn: (unit.macs_per_pixel(), 0),
    "executed": lambda unit, bn: executed_macs_per_pixel(unit, bn),
}
_STAGES = {RepConv: ("pw1", "bn1", "dw", "pw2", "bn2"), SepRep: ("bn", "pw", "dw")}  # forward order


def _stage_macs(m: nn.Module) -> int:
    """MACs per output pixel of one stage: a conv's, one per channel for a BatchNorm, none for a folded BN."""
    if isinstance(m, nn.Conv2d):
        return conv_macs_per_pixel(m)
    return m.num_features if isinstance(m, nn.BatchNorm2d) else 0


def executed_macs_per_pixel(unit: NeuronConv, bn_after: nn.Module | None = None) -> tuple[int, int]:
    """``(synaptic, stages)``: MACs per output pixel of a unit's stages as they execute (``"executed"`` counting).

    The first stage is synaptic when it is a conv (it receives the neuron's output: spikes for an integer neuron); a
    BN that comes first (``SepRep``'s ``BNPad``) multiplies the input by real numbers, and then every stage is. All
    later stages (depthwise and 1x1 convs on real-valued sums, BNs, and the block's BN after the unit) are MACs.
    """
    op = unit.op
    stages = [op] if isinstance(op, nn.Conv2d) else [getattr(op, name) for name in _STAGES[type(op)]]
    stages = [m for m in (*stages, bn_after) if m is not None and not isinstance(m, nn.Identity)]
    macs = [_stage_macs(m) for m in stages]
    if isinstance(stages[0], nn.Conv2d):
        return macs[0], sum(macs[1:])
    return 0, sum(macs)


def _precision(dtype: torch.dtype, max_code: int, offset: int = 0) -> torch.dtype | None:
    """The working precision in which outputs of ``dtype`` give back codes ``0..max_code`` exactly, with whole numbers
    up to ``offset`` added in the same pass; None where they cannot (see ``codes_from_outputs`` for the bound)."""
    work = torch.float64 if dtype == torch.float64 else torch.float32
    bound = max_code * torch.finfo(dtype).eps + (4 * max_code + offset + 1) * torch.finfo(work).eps
    return work if bound < 1 else None


def codes_from_outputs(
    s: torch.Tensor, scale: float, max_code: int, out: torch.Tensor | None = None, work: torch.Tensor | None = None
) -> torch.Tensor:
    """Recover the integer codes ``c`` from a neuron's output ``S = c / scale``, exactly.

    Proof of exactness: the neuron divides ``c`` by ``scale`` in float32 (float64 for float64 inputs), a rounding of
    relative size ``eps_w / 2`` with ``scale`` itself another ``eps_w / 2`` off as a float32 divisor, and casts the
    result to the output dtype, ``eps_S / 2`` (machine epsilons ``eps_S`` of ``S``'s dtype and ``eps_w`` of the working
    precision, float32 or float64). So ``|S * scale - c| <= M * (eps_S / 2 + eps_w)`` for ``c <= M``. Forming
    ``S * scale + 1/2`` in the working precision rounds the product and the sum, ``(2 * M + 1) * eps_w / 2`` at most.
    The total stays below 1/2 when ``M * eps_S + (4 * M + 1) * eps_w < 1``, and then truncating ``S * scale + 1/2``
    (never negative) gives ``c``. That holds for every ``M`` up to 1.6 million in float32, 1023 in float16 and 127
    in bfloat16 (checked here). With ``scale == 1`` float32/float64 outputs are the codes themselves, whole numbers.

    Args:
        s (torch.Tensor): Neuron outputs (any shape, floating point).
        scale (float): The neuron's ``N``.
        max_code (int): The neuron's ``M``.
        out (torch.Tensor, optional): An ``int32`` tensor of ``s``'s shape to write the codes into.
        work (torch.Tensor, optional): A tensor of ``s``'s shape in the working precision, for the scaled outputs.

    Returns:
        (torch.Tensor): ``int32`` codes, the shape of ``s`` (``out`` when given).

    Raises:
        IbraYoloError: ``M`` is too large for ``s``'s dtype to carry every code exactly.
    """
    out = torch.empty(s.shape, dtype=torch.int32, device=s.device) if out is None else out
    if scale == 1 and s.dtype in (torch.float32, torch.float64):  # whole numbers below 2**24 (neurons' MAX_CODE_LIMIT)
        return out.copy_(s)
    precision = _precision(s.dtype, max_code)
    if precision is None:
        wider = "float32" if s.dtype in (torch.float16, torch.bfloat16) else "float64 (model.double())"
        raise IbraYoloError(
            f"codes 0..{max_code} cannot be read back exactly from {str(s.dtype).removeprefix('torch.')} neuron "
            f"outputs: measure the model in {wider}"
        )
    work = torch.empty(s.shape, dtype=precision, device=s.device) if work is None else work
    if s.dtype != precision:  # float16 / bfloat16: widen first, so that the product is formed in float32
        s = work.copy_(s)
    half = torch.tensor(0.5, dtype=precision, device=s.device)
    torch.add(half, s, alpha=scale, out=work)  # S * N + 1/2 in one pass
    return out.copy_(work)  # truncation of S * N + 1/2 >= 0: the nearest integer


@functools.cache
def _spike_table(max_code: int, encoding: str) -> torch.Tensor:
    """Spikes needed to send each code ``0..M`` (the neurons' ``spikes_per_code``), ``int64``, once per range."""
    return IntegerLIF(max_code, 1.0, encoding).spikes_per_code(torch.arange(max_code + 1)).to(torch.int64)


class _Scratch:
    """Chunk-sized buffers reused by every chunk, layer and batch (fresh temporaries would cost allocations)."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def like(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A tensor of ``x``'s shape, ``dtype`` and device whose memory is reused by the next call."""
        key, n = (dtype, x.device), x.numel()
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = self.buffers[key] = torch.empty(n, dtype=dtype, device=x.device)
        return buf[:n].view(x.shape)


@dataclass
class LayerCounts:
    """What the meter counted for one ``NeuronConv`` over all measured images (raw counts: not per image, not priced).

    Attributes:
        index (int): Position among the model's NeuronConv units.
        name (str): Module path, e.g. ``model.2.sep.pw1``.
        op (str): ``Conv2d``, ``RepConv`` or ``SepRep``.
        geometry (str): Channels, kernel, stride and groups of the (folded) conv.
        neuron (str): Short name of the feeding neuron (``image`` for the first layer).
        neuron_config (dict | None): The neuron's parameters.
        spiking (bool): Fed by an integer spiking neuron (an AC layer); else by real values (a MAC layer).
        counting (str): The counting mode, a key of ``COUNTING_MODES``.
        T (int): Timesteps the layer ran.
        dense_macs (int): Sum over images of the dense MACs ``F_l`` of one timestep.
        inputs (int): Input elements the layer received (all images and timesteps).
        nonzero_inputs (int): Of these, the non-zero ones.
        synaptic_ops (float): Spikes times fan-out (AC layers), i.e. synaptic operations; 0 for MAC layers.
        nonzero_macs (float): Non-zero inputs times fan-out (MAC layers): MACs with a non-zero input; 0 for AC layers.
        spikes (int | None): Exact number of spikes received (AC layers).
        spikes_from (str | None): ``"codes"`` (counted from the integer codes) or ``"planes"`` (the ones of the
            ``{0, 1}`` planes of spike-driven execution).
        max_code (int | None): Largest code the neuron can emit (``M``).
        histogram (list | dict | None): Counts of codes ``0..M`` (a ``{code: count}`` mapping above 65536 codes).
        stage_macs (int): Dense MACs of one timestep of the real-valued stages around the synaptic one (``executed``
            counting; 0 when folded). ``dense_macs`` counts the synaptic stage only.
    """

    index: int
    name: str
    op: str
    geometry: str
    neuron: str
    neuron_config: dict | None
    spiking: bool
    counting: str
    T: int
    dense_macs: int
    inputs: int
    nonzero_inputs: int
    synaptic_ops: float
    nonzero_macs: float
    spikes: int | None = None
    spikes_from: str | None = None
    max_code: int | None = None
    histogram: list | dict | None = field(default=None, repr=False)
    stage_macs: int = 0


def _geometry(op: nn.Module) -> str:
    if isinstance(op, nn.Conv2d):
        (k, _), (s, _) = op.kernel_size, op.stride
        return f"{op.in_channels}>{op.out_channels} k{k} s{s}" + (f" g{op.groups}" if op.groups > 1 else "")
    convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
    k = max(m.kernel_size[0] for m in convs)
    return f"{convs[0].in_channels}>{convs[-1].out_channels} k{k} s1 (folded)"


def _neuron_name(neuron: nn.Module | None) -> str:
    if neuron is None:
        return "image"
    return neuron.config()["kind"] if hasattr(neuron, "config") else type(neuron).__name__


def _neuron_config(neuron: nn.Module | None) -> dict | None:
    if neuron is None:
        return None
    cfg = dict(neuron.config()) if hasattr(neuron, "config") else {"kind": type(neuron).__name__}
    if isinstance(neuron, IntegerLIF):
        cfg.update(max_code=neuron.max_code, bits=neuron.bits, encoding=neuron.encoding, T=neuron.T)
    return cfg


class _LayerCounter:
    """The hooks of one NeuronConv and its running sums."""

    def __init__(
        self, index: int, name: str, unit: NeuronConv, counting: str, scratch: _Scratch, bn_after: nn.Module | None
    ):
        self.index, self.name, self.unit, self.counting, self.scratch = index, name, unit, counting, scratch
        self.spiking = unit.spiking
        self.neuron: IntegerLIF | None = unit.neuron if self.spiking else None
        self.mpp, self.stage_mpp = COUNTING_MODES[counting](unit, bn_after)  # dense MACs per output pixel
        self.stage = 0  # dense MACs of the real-valued stages, one timestep
        self.from_planes = False  # spikes counted by the Synapse hooks (spike-driven mode)
        self.T, self.dense, self.inputs = 1, 0, 0
        self.per_fanout: dict[tuple[int, int], torch.Tensor] = {}  # (MACs per image, input elements) -> count
        self.hist: torch.Tensor | None = None  # dense histogram, on the model's device
        self.sparse: dict[int, int] = {}  # histogram of very wide code ranges
        self.spike_table: torch.Tensor | None = None  # spikes needed per code
        self._pending: torch.Tensor | int = 0  # spikes (AC) or non-zero inputs (MAC) of the current call
        self._elements = 1  # input elements of one image and timestep (C*H*W) of the current call

    def attach(self) -> list:
        """Register the hooks; returns their handles."""
        return [
            self.unit.tap.register_forward_pre_hook(self.on_input),
            self.unit.synapse.register_forward_pre_hook(self.on_plane),
            self.unit.register_forward_hook(self.on_output),
        ]

    def on_input(self, module: Tap, args: tuple) -> None:
        x = args[0]  # [T, B, C, H, W]: the neuron's output, the codes (spike-driven) or the image
        self.T, self._elements = x.shape[0], x[0, 0].numel()
        self.inputs += x.numel()
        if not self.spiking:
            self._pending = self._count_nonzero(x.reshape(-1))
            return
        self.from_planes = self.unit.runs_spike_driven
        spikes = self._count_codes(x.reshape(-1))
        self._pending = 0 if self.from_planes else spikes

    def _count_nonzero(self, flat: torch.Tensor) -> torch.Tensor:
        """Non-zero real inputs, exactly and branch-free (``count_nonzero`` is slow on sparse data)."""
        total = torch.zeros((), dtype=torch.float64, device=flat.device)  # exact below 2**53
        for part in flat.split(CHUNK):
            w = torch.sign(part, out=self.scratch.like(part, part.dtype)).abs_()
            total += w.sum(dtype=torch.float32)  # a sum of at most 2**18 ones: exact
        return total

    def _count_codes(self, flat: torch.Tensor) -> torch.Tensor | int:
        """Add the codes of neuron outputs (or the codes themselves) to the histogram; return the spikes they need."""
        n = self.neuron
        if n.max_code >= DENSE_HISTOGRAM_MAX:
            codes = codes_from_outputs(flat, n.scale, n.max_code) if flat.is_floating_point() else flat
            values, counts = torch.unique(codes, return_counts=True)
            if len(values) and int(values[0]) < 0:  # the int cast of a NaN output
                raise self._non_finite()
            for v, c in zip(values.tolist(), counts.tolist()):
                self.sparse[v] = self.sparse.get(v, 0) + c
            return int((n.spikes_per_code(values).to(torch.int64) * counts).sum())
        hist = None  # of this call
        for part in flat.split(CHUNK):
            h = self._histogram_of_outputs(part) if part.is_floating_point() else self._bincount(part, n.max_code + 1)
            hist = h if hist is None else hist.add_(h)
        if self.hist is None:
            self.hist = torch.zeros_like(hist)
            self.spike_table = _spike_table(n.max_code, n.encoding).to(hist.device)
        self.hist += hist
        return (hist * self.spike_table).sum()

    def _histogram_of_outputs(self, s: torch.Tensor) -> torch.Tensor:
        """Histogram of the codes of one chunk of neuron outputs ``S = code / N``.

        Where the bound of ``codes_from_outputs`` allows it, element ``i`` is counted in lane ``i % LANES`` of
        interleaved sub-histograms (its code plus ``lane * (M + 1)``, added exactly in the same pass), so that runs of
        equal codes, zeros above all, do not queue on one counter; the lanes are summed afterwards.
        """
        n, bins = self.neuron, self.neuron.max_code + 1
        precision = _precision(s.dtype, n.max_code, (LANES - 1) * bins) if n.scale != 1 else None
        codes = self.scratch.like(s, torch.int32)
        if precision is None:  # N = 1 (the outputs are the codes: one pass fewer beats the lanes) or a tight dtype
            return self._bincount(codes_from_outputs(s, n.scale, n.max_code, codes), bins)
        work = self.scratch.like(s, precision)
        if s.dtype != precision:  # float16 / bfloat16: widen first
            s = work.copy_(s)
        key = ("lanes", bins, precision, s.device)
        offsets = self.scratch.buffers.get(key)
        if offsets is None or len(offsets) < len(s):  # lane * (M + 1) + 1/2 for every element of a chunk
            lanes = torch.arange(max(len(s), CHUNK), device=s.device) % LANES
            offsets = self.scratch.buffers[key] = (lanes * bins).to(precision).add_(0.5)
        torch.add(offsets[: len(s)], s, alpha=n.scale, out=work)  # lane * (M + 1) + S * N + 1/2 in one pass
        codes.copy_(work)  # truncation: lane * (M + 1) + code
        return self._bincount(codes, LANES * bins).view(LANES, bins).sum(0)

    def _bincount(self, codes: torch.Tensor, bins: int) -> torch.Tensor:
        """``bincount`` of codes; a negative code (a NaN output cast to int) is a ``NonFiniteError`` naming the layer.

        The check costs nothing on valid codes: ``bincount`` itself refuses negative values.
        """
        try:
            return torch.bincount(codes, minlength=bins)
        except RuntimeError:
            if bool((codes < 0).any()):
                raise self._non_finite() from None
            raise

    def _non_finite(self) -> NonFiniteError:
        return NonFiniteError(
            f"layer {self.index} ({self.name}): neuron outputs hold NaN and have no code (a non-finite image or "
            f"NaN/inf weights)"
        )

    def on_plane(self, module: Synapse, args: tuple) -> None:
        self._pending = self._pending + torch.count_nonzero(args[0])  # a {0, 1} plane: its spikes are its ones

    def on_output(self, module: NeuronConv, args: tuple, out: torch.Tensor) -> None:
        _, B, _, h, w = out.shape
        self.dense += self.mpp * h * w * B  # one timestep, all images of the batch
        self.stage += self.stage_mpp * h * w * B
        key = (self.mpp * h * w, self._elements)  # fan-out = MACs per image / input elements per image
        self.per_fanout[key] = self.per_fanout.get(key, 0) + self._pending
        self._pending = 0

    def histogram(self) -> list | dict | None:
        if not self.spiking:
            return None
        if self.neuron.max_code >= DENSE_HISTOGRAM_MAX:
            return dict(sorted(self.sparse.items()))
        return self.hist.tolist() if self.hist is not None else [0] * (self.neuron.max_code + 1)

    def counts(self) -> LayerCounts:
        unit = self.unit
        totals = {key: int(v) for key, v in self.per_fanout.items()}  # spikes (AC) or non-zero inputs (MAC)
        ops = float(sum(v * macs / elements for (macs, elements), v in totals.items()))
        hist = self.histogram()
        zeros = (hist.get(0, 0) if isinstance(hist, dict) else hist[0]) if hist is not None else None
        return LayerCounts(
            index=self.index,
            name=self.name,
            op=type(unit.op).__name__,
            geometry=_geometry(unit.op),
            neuron=_neuron_name(unit.neuron),
            neuron_config=_neuron_config(unit.neuron),
            spiking=self.spiking,
            counting=self.counting,
            T=self.T,
            dense_macs=self.dense,
            inputs=self.inputs,
            nonzero_inputs=self.inputs - zeros if self.spiking else sum(totals.values()),
            synaptic_ops=ops if self.spiking else 0.0,
            nonzero_macs=0.0 if self.spiking else ops,
            spikes=sum(totals.values()) if self.spiking else None,
            spikes_from=("planes" if self.from_planes else "codes") if self.spiking else None,
            max_code=self.neuron.max_code if self.spiking else None,
            histogram=hist,
            stage_macs=self.stage,
        )


class EnergyMeter:
    """Counts MACs, spikes, synaptic operations and codes of every ``NeuronConv`` while a model runs.

    A context manager: hooks are attached on entry and removed on exit; ``counts()`` returns what was counted.

    Args:
        model (nn.Module): An ibra-yolo model (spiking or ANN twin), or any module containing ``NeuronConv`` units.
        counting (str, optional): How dense MACs are counted, a key of ``COUNTING_MODES``. Default: ``"folded"``
            (SPEC §5), or ``"executed"`` for a deployed model (the two counts are the same there).

    Raises:
        IbraYoloError: Unknown counting mode, or the model has no ``NeuronConv`` units (e.g. a stock Ultralytics model).
    """

    def __init__(self, model: nn.Module, counting: str | None = None):
        from ibra_yolo.deployment import bn_after_units
        from ibra_yolo.nn.builder import FOLDED_KEY

        if counting is not None and counting not in COUNTING_MODES:
            raise IbraYoloError(f"counting={counting!r} is unknown: choose one of {', '.join(COUNTING_MODES)}")
        units = [(n, m) for n, m in model.named_modules() if isinstance(m, NeuronConv)]
        if not units:
            raise IbraYoloError(
                f"{type(model).__name__} has no NeuronConv layers: energy counting supports ibra-yolo models "
                "(spiking ones and the ANN twin), not stock Ultralytics models"
            )
        if counting is None:  # a deployed network (ibra_yolo.deploy marks its YAML) runs as it is counted folded
            deployed = isinstance(getattr(model, "yaml", None), dict) and model.yaml.get(FOLDED_KEY) == "all"
            counting = "executed" if deployed else "folded"
        self.counting = counting
        scratch = _Scratch()
        after = bn_after_units(model)
        self.counters = [
            _LayerCounter(i, name, unit, counting, scratch, after.get(id(unit))) for i, (name, unit) in enumerate(units)
        ]
        self._handles: list = []

    def __enter__(self) -> EnergyMeter:
        for c in self.counters:
            self._handles += c.attach()
        return self

    def __exit__(self, *exc) -> bool:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.counters:
            self.counters[0].scratch.buffers.clear()  # the buffers live only while the meter is attached
        return False

    @property
    def spiking(self) -> bool:
        """True when the model has integer spiking neurons."""
        return any(c.spiking for c in self.counters)

    @property
    def spike_driven(self) -> bool:
        """True when the spikes were counted on the ``{0, 1}`` planes of spike-driven execution."""
        spiking = [c for c in self.counters if c.spiking]
        return bool(spiking) and all(c.from_planes for c in spiking)

    def counts(self) -> list[LayerCounts]:
        """What was counted so far, one entry per ``NeuronConv`` in model order."""
        return [c.counts() for c in self.counters]
