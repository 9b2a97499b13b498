"""Energy, spike statistics and range use of ibra-yolo models, measured by running them over images (SPEC §2.4, §5).

``measure(model, images)`` streams images through a model in batches and counts, per ``NeuronConv`` (a neuron and
the conv it feeds), the dense MACs, the spikes its input carries and the synaptic operations they cause, then prices
them with energy constants (a preset such as Horowitz' 45 nm fp32 values, or custom ones). The counting rules are in
``COUNTING_RULES`` and travel with every report.

Examples:
    >>> from ultralytics import YOLO
    >>> from ibra_yolo.energy import measure
    >>> report = measure(YOLO("best.pt"), "coco/images/val2017", imgsz=640, batch=8, max_images=500)
    >>> print(report.table())
    >>> report.summary()["energy_mJ"], report.summary()["ann_snn_ratio"]
    >>> report.save("runs/energy")   # energy.json, energy_layers.csv, energy.png
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ibra_yolo.errors import IbraYoloError
from ibra_yolo.neurons import IntegerLIF
from ibra_yolo.nn.blocks import NeuronConv, Synapse
from ibra_yolo.spike_mode import spike_driven as spike_driven_mode
from ibra_yolo.spike_mode import torch_model

__all__ = (
    "EnergyPreset",
    "PRESETS",
    "DEFAULT_PRESET",
    "COUNTING_RULES",
    "LayerReport",
    "EnergyReport",
    "EnergyMeter",
    "energy_constants",
    "list_images",
    "iter_image_batches",
    "load_model",
    "measure",
    "output_paths",
)

IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".jp2", ".dng", ".mpo"}
DENSE_HISTOGRAM_MAX = 2**16  # codes 0..M kept as a dense bincount up to this many bins, else as an exact sparse one
PJ_PER_MJ = 1e9


# ----------------------------------------------------------------------------------------------------------------------
# Energy constants
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnergyPreset:
    """Energy per operation in picojoules.

    Attributes:
        name (str): Preset name (``"custom"`` for user values).
        e_mac (float): Energy of one multiply-accumulate (real-valued input), pJ.
        e_ac (float): Energy of one accumulate (a spike arriving at a synapse), pJ.
        source (str): Where the values come from.
    """

    name: str
    e_mac: float
    e_ac: float
    source: str


_HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014, 45 nm, 0.9 V"
_OPS = {  # preset: (multiply, pJ), (accumulator add, pJ); a MAC is one of each, an AC (a spike) one add
    "45nm-fp32": (("fp32 mult", 3.7), ("fp32 add", 0.9)),
    "45nm-fp16": (("fp16 mult", 1.1), ("fp16 add", 0.4)),
    "45nm-int8": (("int8 mult", 0.2), ("int32 add", 0.1)),  # int8 weights and activations, 32-bit accumulator
    "45nm-int32": (("int32 mult", 3.1), ("int32 add", 0.1)),
}


def _preset(name: str, mult: tuple, add: tuple) -> EnergyPreset:
    (m, e_m), (a, e_a) = mult, add
    return EnergyPreset(
        name, round(e_m + e_a, 6), e_a, f"{_HOROWITZ}: MAC = {m} {e_m} + {a} {e_a} pJ; AC = {a} {e_a} pJ"
    )


PRESETS: dict[str, EnergyPreset] = {name: _preset(name, *ops) for name, ops in _OPS.items()}
DEFAULT_PRESET = "45nm-fp32"

COUNTING_RULES = (
    "All figures are per image: sums over the measured images divided by their number.",
    "Dense MACs F_l of a conv = Cin/groups * Cout * kh * kw * Hout * Wout for ONE timestep (one pass of the ANN twin). "
    "RepConv and SepRep count as the single k x k conv they fold into. BN, biases, pooling, upsampling, concat, "
    "residual adds, the mean over T and the detect head's DFL/decoding are free.",
    "MAC layer (real-valued input: the first conv on the image; every conv of the ANN twin): "
    "MACs_l = F_l * T (it runs once per timestep), E_l = E_MAC * MACs_l.",
    "AC layer (fed by an integer spiking neuron): s_l = spikes per input neuron per image, summed over the T "
    "timesteps and the virtual timesteps (popcount of the code for binary encoding, the code itself for unary); "
    "SOP_l = F_l * s_l (accumulated per batch as spikes * F_l / (Cin*Hin*Win)); E_l = E_AC * SOP_l.",
    "The per-plane scaling (2^j/N) and the bias of spike-driven execution happen once per output, not per synapse, "
    "and are not counted.",
    "ANN twin energy = E_MAC * sum_l F_l (same architecture, real activations, one pass); ANN/SNN = that / energy.",
    "Firing rate = mean integer code per neuron per timestep; spikes per neuron = s_l. Spikes come from the integer "
    "codes (integer mode) or from the 1s of every {0,1} plane a Synapse receives (spike-driven mode); both are exact.",
    "NeuroBench names: ActivationSparsity = share of zero neuron outputs (all neurons, all timesteps); "
    "SynapticOperations: Effective_MACs = MACs_l * share of non-zero inputs, Effective_ACs = sum SOP_l, "
    "Dense = sum_l F_l * T; Footprint = bytes of parameters and buffers.",
)


def energy_constants(
    preset: str | EnergyPreset = DEFAULT_PRESET, e_mac: float | None = None, e_ac: float | None = None
) -> EnergyPreset:
    """Return the energy constants of ``preset``, with ``e_mac`` / ``e_ac`` (pJ) replacing its values when given.

    Args:
        preset (str): A key of ``PRESETS``.
        e_mac (float, optional): Custom MAC energy in pJ.
        e_ac (float, optional): Custom AC energy in pJ.

    Returns:
        (EnergyPreset): The constants; named ``"custom"`` when a value was replaced.

    Raises:
        IbraYoloError: Unknown preset or a value that is not a positive finite number.
    """
    if isinstance(preset, EnergyPreset):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise IbraYoloError(f"energy preset {preset!r} is unknown: choose one of {', '.join(PRESETS)}")
    for name, v in (("e_mac", e_mac), ("e_ac", e_ac)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise IbraYoloError(f"{name}={v!r} is invalid: it must be a positive number of picojoules")
    if e_mac is None and e_ac is None:
        return base
    mac, ac = base.e_mac if e_mac is None else float(e_mac), base.e_ac if e_ac is None else float(e_ac)
    return EnergyPreset("custom", mac, ac, f"user values E_MAC={mac} pJ, E_AC={ac} pJ (unset values from {base.name})")


# ----------------------------------------------------------------------------------------------------------------------
# Per-layer counting
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class LayerReport:
    """What one ``NeuronConv`` costs per image (see ``COUNTING_RULES``); range-use fields are None for MAC layers.

    Attributes:
        index (int): Position among the model's NeuronConv units.
        name (str): Module path, e.g. ``model.2.sep.pw1``.
        op (str): ``Conv2d``, ``RepConv`` or ``SepRep``.
        geometry (str): Channels, kernel, stride and groups of the (folded) conv.
        input (str): ``MAC`` (real-valued input) or ``AC`` (spikes).
        neuron (str): Short name of the feeding neuron (``image`` for the first layer).
        neuron_config (dict | None): The neuron's parameters.
        T (int): Timesteps the layer ran.
        dense_macs (float): F_l, dense MACs of one timestep.
        macs (float): MACs executed (MAC layers).
        sops (float): Synaptic operations (AC layers).
        effective_macs (float): MACs with a non-zero input.
        energy_pj (float): Energy in picojoules.
        neuron_outputs (float): Outputs of the feeding neuron (all timesteps), 0 for the image input.
        zero_share (float | None): Share of zero neuron outputs.
        firing_rate (float | None): Mean integer code per neuron per timestep.
        spikes_per_neuron (float | None): s_l, spikes per input neuron summed over T and virtual timesteps.
        spikes_total (int | None): Exact number of spikes over all measured images (not per image).
        clipped_share (float | None): Share of codes clipped at ``max_code``.
        high_share (float | None): Share of codes in the upper half of the range (``code > max_code // 2``).
        max_code_seen (int | None): Largest code emitted.
        max_code (int | None): Largest code the neuron can emit (M).
        code_histogram (list | dict | None): Counts of codes 0..M over all measured images (a ``{code: count}``
            mapping for ranges above 65536 codes).
    """

    index: int
    name: str
    op: str
    geometry: str
    input: str
    neuron: str
    neuron_config: dict | None
    T: int
    dense_macs: float
    macs: float
    sops: float
    effective_macs: float
    energy_pj: float
    neuron_outputs: float = 0.0
    zero_share: float | None = None
    firing_rate: float | None = None
    spikes_per_neuron: float | None = None
    spikes_total: int | None = None
    clipped_share: float | None = None
    high_share: float | None = None
    max_code_seen: int | None = None
    max_code: int | None = None
    code_histogram: list | dict | None = field(default=None, repr=False)


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


class _Histogram:
    """Exact counts of the integer codes 0..M: a dense bincount, or a ``{code: count}`` dict for huge M."""

    def __init__(self, max_code: int):
        self.max_code = max_code
        self.dense = torch.zeros(max_code + 1, dtype=torch.int64) if max_code < DENSE_HISTOGRAM_MAX else None
        self.sparse: dict[int, int] = {}

    def add(self, codes: torch.Tensor) -> None:
        flat = codes.flatten()
        if self.dense is not None:
            self.dense += torch.bincount(flat, minlength=self.max_code + 1).cpu()
            return
        values, counts = torch.unique(flat, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            self.sparse[v] = self.sparse.get(v, 0) + c

    def counts(self) -> list[int] | dict[int, int]:
        return self.dense.tolist() if self.dense is not None else dict(sorted(self.sparse.items()))

    def max_seen(self) -> int:
        if self.dense is not None:
            used = torch.nonzero(self.dense).flatten()
            return int(used[-1]) if len(used) else 0
        return max(self.sparse, default=0)


class _LayerCounter:
    """Hooks of one NeuronConv: accumulates shapes, codes and spikes over all batches."""

    def __init__(self, index: int, name: str, unit: NeuronConv):
        self.index, self.name, self.unit = index, name, unit
        self.spiking = unit.spiking
        self.max_code = unit.neuron.max_code if self.spiking else None
        self.hist = _Histogram(self.max_code) if self.spiking else None
        self.mpp = unit.macs_per_pixel()
        self.from_planes = False  # True: spikes are counted by the Synapse hooks (spike-driven mode)
        self.T = 1
        self.dense = self.macs = self.sops = self.effective_macs = 0.0
        self.outputs = self.zeros = self.code_sum = self.spikes = self.clipped = self.high = 0
        self._pending_spikes = 0
        self._neurons = 1  # input neurons of one image and timestep (C*H*W)
        self._nonzero_share = 1.0

    def attach(self) -> list:
        """Register the hooks; returns their handles."""
        return [
            self.unit.register_forward_pre_hook(self.before),
            self.unit.synapse.register_forward_pre_hook(self.on_plane),
            self.unit.register_forward_hook(self.after),
        ]

    def before(self, module: NeuronConv, args: tuple) -> None:
        x = args[0]
        self.T = x.shape[0]
        self._neurons = x[0, 0].numel()
        self._pending_spikes = 0
        self.from_planes = bool(module.spike_driven and module.spiking and not module.training)
        if module.neuron is None:
            self._nonzero_share = torch.count_nonzero(x).item() / x.numel()
        elif self.spiking:
            self._observe_codes(module.neuron, module.neuron.codes(x))
        else:  # the ANN twin's real-valued activation
            zeros = x.numel() - torch.count_nonzero(module.neuron(x)).item()
            self.outputs += x.numel()
            self.zeros += zeros
            self._nonzero_share = 1 - zeros / x.numel()

    def _observe_codes(self, neuron: IntegerLIF, codes: torch.Tensor) -> None:
        n = codes.numel()
        zeros = n - torch.count_nonzero(codes).item()
        self.outputs += n
        self.zeros += zeros
        self.code_sum += int(codes.sum(dtype=torch.int64))
        self.clipped += int((codes == self.max_code).sum())
        self.high += int((codes > self.max_code // 2).sum())
        self.hist.add(codes)
        if not self.from_planes:
            self._pending_spikes = int(neuron.spikes_per_code(codes).sum(dtype=torch.int64))

    def on_plane(self, module: Synapse, args: tuple) -> None:
        # A {0, 1} plane: its number of spikes is its number of ones (count_nonzero is exact at any size; a float32
        # sum is not above 2**24).
        self._pending_spikes += torch.count_nonzero(args[0]).item()

    def after(self, module: NeuronConv, args: tuple, out: torch.Tensor) -> None:
        T, B, _, h, w = out.shape
        dense = float(self.mpp * h * w * B)  # one timestep, all images of the batch
        self.dense += dense
        if self.spiking:
            self.spikes += self._pending_spikes
            self.sops += self._pending_spikes * (self.mpp * h * w) / self._neurons
        else:
            self.macs += dense * T
            self.effective_macs += dense * T * self._nonzero_share
        self._pending_spikes = 0

    def report(self, images: int, constants: EnergyPreset) -> LayerReport:
        """Per-image figures after ``images`` images."""
        unit, per = self.unit, 1 / images
        energy = constants.e_mac * self.macs + constants.e_ac * self.sops
        layer = LayerReport(
            index=self.index,
            name=self.name,
            op=type(unit.op).__name__,
            geometry=_geometry(unit.op),
            input="AC" if self.spiking else "MAC",
            neuron=_neuron_name(unit.neuron),
            neuron_config=_neuron_config(unit.neuron),
            T=self.T,
            dense_macs=self.dense * per,
            macs=self.macs * per,
            sops=self.sops * per,
            effective_macs=self.effective_macs * per,
            energy_pj=energy * per,
            neuron_outputs=self.outputs * per,
        )
        if unit.neuron is not None and self.outputs:
            layer.zero_share = self.zeros / self.outputs
        if self.spiking and self.outputs:
            layer.firing_rate = self.code_sum / self.outputs
            layer.spikes_per_neuron = self.spikes * self.T / self.outputs
            layer.spikes_total = self.spikes
            layer.clipped_share = self.clipped / self.outputs
            layer.high_share = self.high / self.outputs
            layer.max_code_seen = self.hist.max_seen()
            layer.max_code = self.max_code
            layer.code_histogram = self.hist.counts()
        return layer


class EnergyMeter:
    """Counts MACs, spikes and SOPs of every ``NeuronConv`` of a model while it runs (a context manager).

    Args:
        model (nn.Module): An ibra-yolo model (spiking or ANN twin), or any module containing ``NeuronConv`` units.

    Raises:
        IbraYoloError: The model has no ``NeuronConv`` units (e.g. a stock Ultralytics model).
    """

    def __init__(self, model: nn.Module):
        units = [(n, m) for n, m in model.named_modules() if isinstance(m, NeuronConv)]
        if not units:
            raise IbraYoloError(
                f"{type(model).__name__} has no NeuronConv layers: energy counting supports ibra-yolo models "
                "(spiking ones and the ANN twin), not stock Ultralytics models"
            )
        self.counters = [_LayerCounter(i, name, unit) for i, (name, unit) in enumerate(units)]
        self._handles: list = []

    def __enter__(self) -> EnergyMeter:
        for c in self.counters:
            self._handles += c.attach()
        return self

    def __exit__(self, *exc) -> bool:
        for h in self._handles:
            h.remove()
        self._handles = []
        return False

    @property
    def spike_driven(self) -> bool:
        """True when the spikes were counted on the {0, 1} planes of spike-driven execution."""
        spiking = [c for c in self.counters if c.spiking]
        return bool(spiking) and all(c.from_planes for c in spiking)

    def layers(self, images: int, constants: EnergyPreset) -> list[LayerReport]:
        """Per-image reports of all layers after ``images`` images."""
        if images < 1:
            raise IbraYoloError("no images were measured")
        return [c.report(images, constants) for c in self.counters]


# ----------------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class EnergyReport:
    """Per-layer and whole-model energy and spike statistics, per image.

    Attributes:
        layers (list[LayerReport]): One entry per ``NeuronConv``, in model order.
        constants (EnergyPreset): Energy constants used.
        meta (dict): Model, data, mode and settings of the measurement.
        footprint (int): Bytes of parameters and buffers.
        params (int): Number of parameters.
    """

    layers: list[LayerReport]
    constants: EnergyPreset
    meta: dict
    footprint: int
    params: int

    def _sum(self, key: str) -> float:
        return float(sum(getattr(layer, key) for layer in self.layers))

    def totals(self) -> dict:
        """Whole-model totals per image (MACs, SOPs, energies in mJ, ANN/SNN ratio, mean firing statistics)."""
        c = self.constants
        macs, sops, dense = self._sum("macs"), self._sum("sops"), self._sum("dense_macs")
        energy = (c.e_mac * macs + c.e_ac * sops) / PJ_PER_MJ
        ann = c.e_mac * dense / PJ_PER_MJ
        spiking = [layer for layer in self.layers if layer.input == "AC" and layer.firing_rate is not None]
        neurons = [layer.neuron_outputs / layer.T for layer in spiking]  # neurons per image and timestep
        total_neurons = sum(neurons)
        return {
            "MACs": macs,
            "SOPs": sops,
            "dense_MACs": dense,
            "energy_mJ": energy,
            "mac_energy_mJ": c.e_mac * macs / PJ_PER_MJ,
            "ac_energy_mJ": c.e_ac * sops / PJ_PER_MJ,
            "ann_energy_mJ": ann,
            "ann_snn_ratio": ann / energy if energy > 0 else math.inf,
            "firing_rate": _weighted([layer.firing_rate for layer in spiking], neurons, total_neurons),
            "spikes_per_neuron": _weighted([layer.spikes_per_neuron for layer in spiking], neurons, total_neurons),
        }

    def neurobench(self) -> dict:
        """Whole-model metrics under NeuroBench's names."""
        with_neuron = [layer for layer in self.layers if layer.zero_share is not None]
        outputs = sum(layer.neuron_outputs for layer in with_neuron)
        zeros = sum(layer.neuron_outputs * layer.zero_share for layer in with_neuron)
        return {
            "ActivationSparsity": zeros / outputs if outputs else 0.0,
            "SynapticOperations": {
                "Effective_MACs": self._sum("effective_macs"),
                "Effective_ACs": self._sum("sops"),
                "Dense": float(sum(layer.dense_macs * layer.T for layer in self.layers)),
            },
            "Footprint": self.footprint,
        }

    def summary(self) -> dict:
        """Flat dict: settings, totals and NeuroBench metrics (what ``eval_coco`` prints and logs)."""
        nb = self.neurobench()
        return {
            "images": self.meta["images"],
            "imgsz": self.meta["imgsz"],
            "T": self.meta["T"],
            "mode": self.meta["mode"],
            "preset": self.constants.name,
            "E_MAC_pJ": self.constants.e_mac,
            "E_AC_pJ": self.constants.e_ac,
            **self.totals(),
            "ActivationSparsity": nb["ActivationSparsity"],
            **nb["SynapticOperations"],
            "Footprint": nb["Footprint"],
            "params": self.params,
        }

    def to_dict(self) -> dict:
        """Everything, JSON-serialisable: meta (with counting rules), summary, NeuroBench metrics, layers."""
        return {
            "meta": {**self.meta, "energy_constants": asdict(self.constants), "counting_rules": list(COUNTING_RULES)},
            "summary": self.summary(),
            "neurobench": self.neurobench(),
            "layers": [asdict(layer) for layer in self.layers],
        }

    # ------------------------------------------------------------------------------------------------------------------
    # Text, files and figure
    # ------------------------------------------------------------------------------------------------------------------
    def table(self) -> str:
        """The per-layer table and the totals as text."""
        head = (
            f"{'#':>3} {'layer':<26} {'op':<7} {'geometry':<24} {'in':<3} {'neuron':<8} {'dense MMAC':>10} "
            f"{'MMAC':>8} {'MSOP':>8} {'uJ':>8} {'rate':>7} {'spk/n':>7} {'zero%':>6} {'clip%':>6} {'hi%':>6} "
            f"{'max':>5}"
        )
        lines = [*self._header(), "", head, "-" * len(head)]
        lines += [self._row(layer) for layer in self.layers]
        lines += ["-" * len(head), *self._footer()]
        return "\n".join(lines)

    def _header(self) -> list[str]:
        m, c = self.meta, self.constants
        neurons = "; ".join(_short_config(cfg) for cfg in m["neurons"]) or "none"
        return [
            f"model: {m['model']}   images: {m['images']} from {m['source']}   imgsz: {m['imgsz'] or 'as given'}   "
            f"T: {m['T']}   "
            f"mode: {m['mode']}",
            f"neurons: {neurons}",
            f"energy preset: {c.name}: E_MAC = {c.e_mac} pJ, E_AC = {c.e_ac} pJ ({c.source})",
            "counting: per image; F_l = Cin/g*Cout*k*k*Hout*Wout per timestep (Rep convs folded; BN, pooling, DFL "
            "free); "
            "MAC layers E_MAC*F_l*T; spike-fed layers E_AC*F_l*s_l, s_l = spikes per neuron over T and virtual "
            "timesteps; ANN twin E_MAC*sum F_l",
            "columns: rate = mean code per neuron per timestep; spk/n = s_l; zero%/clip%/hi% = codes at 0 / at M / "
            "above M//2; max = largest code seen",
        ]

    @staticmethod
    def _row(layer: LayerReport) -> str:
        def opt(v, fmt):
            return format(v, fmt) if v is not None else "-"

        pct = lambda v: opt(None if v is None else 100 * v, ".1f")  # noqa: E731
        name = layer.name if len(layer.name) <= 26 else "~" + layer.name[-25:]
        return (
            f"{layer.index:>3} {name:<26} {layer.op:<7} {layer.geometry:<24} {layer.input:<3} {layer.neuron:<8} "
            f"{layer.dense_macs / 1e6:>10.2f} {layer.macs / 1e6:>8.2f} {layer.sops / 1e6:>8.2f} "
            f"{layer.energy_pj / 1e6:>8.2f} {opt(layer.firing_rate, '.3f'):>7} "
            f"{opt(layer.spikes_per_neuron, '.3f'):>7} "
            f"{pct(layer.zero_share):>6} {pct(layer.clipped_share):>6} {pct(layer.high_share):>6} "
            f"{opt(layer.max_code_seen, 'd'):>5}"
        )

    def _footer(self) -> list[str]:
        s = self.summary()
        return [
            f"totals per image: MACs {_si(s['MACs'])}   SOPs {_si(s['SOPs'])}   dense MACs {_si(s['dense_MACs'])}   "
            f"params {_si(s['params'])}",
            f"energy {s['energy_mJ']:.4g} mJ/image (MAC {s['mac_energy_mJ']:.4g} + AC {s['ac_energy_mJ']:.4g})   "
            f"ANN twin {s['ann_energy_mJ']:.4g} mJ   ANN/SNN {s['ann_snn_ratio']:.2f}x",
            f"firing rate {_fmt(s['firing_rate'])} (mean code)   spikes/neuron {_fmt(s['spikes_per_neuron'])}",
            f"NeuroBench: ActivationSparsity {s['ActivationSparsity']:.4f}   SynapticOperations: Effective_MACs "
            f"{_si(s['Effective_MACs'])}, Effective_ACs {_si(s['Effective_ACs'])}, Dense {_si(s['Dense'])}   "
            f"Footprint {s['Footprint']} bytes",
        ]

    def save(self, out_dir: str | Path, overwrite: bool = False, stem: str = "energy") -> dict[str, Path]:
        """Write JSON, CSV and PNG into ``out_dir``; returns their paths.

        Raises:
            IbraYoloError: One of the files exists and ``overwrite`` is False (nothing is written then).
        """
        paths = output_paths(out_dir, stem, overwrite)
        paths["json"].parent.mkdir(parents=True, exist_ok=True)
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1))
        self.to_csv(paths["csv"])
        self.plot(paths["png"])
        return paths

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per layer (no histograms; those are in the JSON)."""
        rows = [asdict(layer) for layer in self.layers]
        fields = [k for k in rows[0] if k not in ("code_histogram", "neuron_config")]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        return Path(path)

    def plot(self, path: str | Path) -> Path:
        """Save a PNG: energy per layer, firing per layer and (spiking models) the histogram of the codes used.

        Drawn on a matplotlib ``Figure`` with the Agg canvas: no pyplot, and the caller's backend is left alone.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        spiking = any(layer.input == "AC" for layer in self.layers)
        rows = [3.0, 3.4, 0.7] + ([2.6] if spiking else [])  # inches: energy, firing, layer names, codes
        width, height = max(10.0, 0.17 * len(self.layers) + 2.5), sum(rows) + 2.0
        fig = Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(
            len(rows),
            1,
            height_ratios=rows,
            hspace=0.3,
            left=0.9 / width,
            right=1 - 0.9 / width,
            top=1 - 0.75 / height,
            bottom=0.6 / height,
        )  # fixed margins: much faster than a constrained layout for ~90 rotated labels
        ax_e = fig.add_subplot(grid[0])
        ax_f = fig.add_subplot(grid[1], sharex=ax_e)
        self._plot_energy(ax_e)
        self._plot_firing(ax_f)
        if spiking:
            self._plot_codes(fig.add_subplot(grid[3]))
        fig.savefig(path, dpi=110)
        return Path(path)

    def _plot_energy(self, ax) -> None:
        s, x = self.summary(), np.arange(len(self.layers))
        colors = ["tab:orange" if layer.input == "MAC" else "tab:blue" for layer in self.layers]
        energy = np.array([layer.energy_pj / 1e6 for layer in self.layers])
        ax.bar(x, np.where(energy > 0, energy, np.nan), color=colors, width=0.8)  # silent layers: no bar
        ax.set_yscale("log")
        if (energy > 0).any():
            ax.set_ylim(bottom=energy[energy > 0].min() / 3)
        ax.set_ylabel("energy per image (µJ, log)")
        ax.set_title(
            f"{self.meta['model']}: {s['energy_mJ']:.4g} mJ/image ({self.constants.name}; {self.meta['mode']}), "
            f"ANN twin {s['ann_energy_mJ']:.4g} mJ, ANN/SNN {s['ann_snn_ratio']:.2f}x\n"
            "orange: MAC layer (real-valued input), blue: AC layer (spike input)",
            fontsize=10,
        )
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelbottom=False)

    def _plot_firing(self, ax) -> None:
        x = np.arange(len(self.layers))
        nan = float("nan")
        if any(layer.input == "AC" for layer in self.layers):
            spk = [nan if layer.spikes_per_neuron is None else layer.spikes_per_neuron for layer in self.layers]
            rate = [nan if layer.firing_rate is None else layer.firing_rate for layer in self.layers]
            ax.bar(x, spk, color="tab:green", width=0.8, label="spikes per neuron (s_l, over T and virtual timesteps)")
            ax.set_ylabel("spikes per neuron per image")
            twin = ax.twinx()
            twin.plot(x, rate, "o", color="tab:red", markersize=3.5, label="firing rate (mean code per timestep)")
            twin.set_ylabel("mean code", color="tab:red")
            handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
            ax.legend(handles=handles, loc="upper right", fontsize=8)
        else:
            dense = [nan if layer.zero_share is None else 1 - layer.zero_share for layer in self.layers]
            ax.bar(x, dense, color="tab:green", width=0.8)
            ax.set_ylabel("share of non-zero activations")
        ax.grid(axis="y", alpha=0.3)
        labels = [layer.name.removeprefix("model.").removesuffix(".conv") for layer in self.layers]
        ax.set_xticks(x, labels, rotation=90, fontsize=6.5)
        ax.set_xlim(-0.7, len(x) - 0.3)

    def _plot_codes(self, ax) -> None:
        codes, counts, max_code = self.code_histogram()
        bins = min(max_code + 1, 512)  # one bin per code up to M = 511; coarser beyond
        weights = counts / max(counts.sum(), 1)
        share, edges = np.histogram(codes, bins=bins, range=(-0.5, max_code + 0.5), weights=weights)
        used = share > 0
        ax.bar(((edges[:-1] + edges[1:]) / 2)[used], share[used], width=edges[1] - edges[0], color="tab:purple")
        ax.set_yscale("log")
        ax.set_xlim(-0.5, max_code + 0.5)
        ax.axvline(max_code, color="k", ls="--", lw=0.8)
        per_bin = "" if bins == max_code + 1 else f", {edges[1] - edges[0]:.0f} codes per bin"
        ax.set_xlabel(f"integer code (0..M = {max_code}; dashed line: M{per_bin})")
        ax.set_ylabel("share of neuron outputs")
        ax.set_title("range use: codes emitted by all spiking layers together")
        ax.grid(axis="y", alpha=0.3)

    def code_histogram(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Codes used and how often, summed over all spiking layers (all images, all timesteps).

        Returns:
            (tuple): ``(codes, counts, M)``: the codes that occurred (ascending), their counts, and the largest
            ``max_code`` of the layers.
        """
        total: dict[int, int] = {}
        spiking = [layer for layer in self.layers if layer.max_code is not None]
        for layer in spiking:
            hist = layer.code_histogram
            pairs = hist.items() if isinstance(hist, dict) else enumerate(hist)
            for code, count in pairs:
                if count:
                    total[int(code)] = total.get(int(code), 0) + count
        codes = np.array(sorted(total), dtype=np.int64)
        counts = np.array([total[c] for c in codes], dtype=np.float64)
        return codes, counts, max((layer.max_code for layer in spiking), default=0)


def _weighted(values: list, weights: list, total: float) -> float | None:
    if not values or not total:
        return None
    return float(sum(v * w for v, w in zip(values, weights)) / total)


def _si(v: float) -> str:
    """``1.234 G`` style: three or four significant digits and a decimal prefix."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor:
            return f"{v / factor:.4g} {prefix}"
    return f"{v:.4g}"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _short_config(cfg: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "kind")
    return f"{cfg['kind']}({args})" if args else cfg["kind"]


def output_paths(out_dir: str | Path, stem: str = "energy", overwrite: bool = False) -> dict[str, Path]:
    """Paths of the JSON, CSV and PNG a report writes; checks that none exists unless ``overwrite``.

    Raises:
        IbraYoloError: A file exists and ``overwrite`` is False, or ``out_dir`` is a file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise IbraYoloError(f"--out {out} is a file, not a folder")
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}_layers.csv", "png": out / f"{stem}.png"}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        verb = "already exists" if len(existing) == 1 else "already exist"
        raise IbraYoloError(f"{', '.join(existing)} {verb}: choose another --out folder or pass --overwrite")
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------------
def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _images_in_list(txt: Path) -> list[Path]:
    """Images named in a list file (one path a line; relative paths are relative to the list's folder)."""
    out = []
    for line in txt.read_text().splitlines():
        line = line.strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else (txt.parent / p).resolve())
    return out


def _dataset_root(d: dict, yaml_file: Path) -> Path:
    root = Path(d.get("path") or ".")
    if root.is_absolute():
        return root
    for base in (yaml_file.parent, Path.cwd()):
        if (base / root).exists():
            return (base / root).resolve()
    try:
        from ultralytics.utils import SETTINGS  # the stock datasets_dir; reading it downloads nothing

        return Path(SETTINGS["datasets_dir"]) / root
    except Exception:  # noqa: BLE001 - fall back to the YAML's folder
        return yaml_file.parent / root


def _val_images(yaml_file: Path) -> list[Path]:
    """Images of the ``val`` split of an Ultralytics data YAML (folders or list files)."""
    import yaml

    try:
        d = yaml.safe_load(yaml_file.read_text())
    except yaml.YAMLError as e:
        raise IbraYoloError(f"{yaml_file} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict) or not d.get("val"):
        raise IbraYoloError(f"{yaml_file} has no 'val' split: expected an Ultralytics data YAML with a 'val:' key")
    root = _dataset_root(d, yaml_file)
    files = []
    for entry in d["val"] if isinstance(d["val"], list) else [d["val"]]:
        p = Path(entry) if Path(entry).is_absolute() else root / entry
        if p.is_dir():
            files += _images_in(p)
        elif p.is_file() and p.suffix == ".txt":
            files += _images_in_list(p)
        else:
            raise IbraYoloError(f"val split {p} of {yaml_file} does not exist (the dataset is not there?)")
    return files


def list_images(source: str | Path | Iterable) -> list[Path]:
    """Image files of ``source``: a folder (searched recursively), an image, a ``.txt`` list, a data YAML (its
    ``val`` split) or a list of image paths.

    Raises:
        IbraYoloError: The source does not exist, holds no images, or is not one of these.
    """
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
    else:
        p = Path(source)
        if not p.exists():
            raise IbraYoloError(f"source {p} does not exist: pass an image folder, an image or a data YAML")
        if p.is_dir():
            files = _images_in(p)
        elif p.suffix.lower() in (".yaml", ".yml"):
            files = _val_images(p)
        elif p.suffix.lower() == ".txt":
            files = _images_in_list(p)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            files = [p]
        else:
            raise IbraYoloError(f"source {p} is not an image folder, an image, a .txt list or a data YAML")
    if not files:
        raise IbraYoloError(f"no images found in {source}")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise IbraYoloError(f"{len(missing)} image(s) of {source} do not exist, e.g. {missing[0]}")
    return files


def _load_image(path: Path, imgsz: int):
    import cv2
    from ultralytics.data.augment import LetterBox  # the letterbox Ultralytics validates with (grey padding)

    img = cv2.imread(str(path))
    if img is None:
        raise IbraYoloError(f"cannot read image {path}")
    img = LetterBox((imgsz, imgsz), auto=False)(image=img)
    return torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)))


def iter_image_batches(files: list[Path], imgsz: int, batch: int) -> Iterator[torch.Tensor]:
    """Yield ``uint8`` batches ``[B, 3, imgsz, imgsz]`` (RGB, letterboxed to a square) reading images lazily."""
    for i in range(0, len(files), batch):
        yield torch.stack([_load_image(p, imgsz) for p in files[i : i + batch]])


def _batches(images, imgsz: int, batch: int, max_images: int | None) -> tuple[Iterable[torch.Tensor], int, str]:
    """(batches, number of images, description) for a tensor, an iterable of tensors or an image source."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise IbraYoloError(f"an image tensor must be [N, 3, H, W], got shape {tuple(images.shape)}")
        images = images[:max_images] if max_images else images
        return list(images.split(batch)), len(images), f"tensor {tuple(images.shape)}"
    if _is_tensor_list(images):
        return images, sum(len(x) for x in images), f"{len(images)} tensor batches"
    files = list_images(images)
    files = files[:max_images] if max_images else files
    source = f"{len(images)} image files" if isinstance(images, (list, tuple)) else str(images)
    return iter_image_batches(files, imgsz, batch), len(files), source


def _check_positive(name: str, value, minimum: int = 1) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise IbraYoloError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}")


# ----------------------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------------------
def load_model(weights: str | Path) -> nn.Module:
    """Load a trained checkpoint (``.pt``) or build an untrained model from an ibra-yolo YAML (path or name).

    Raises:
        IbraYoloError: The file is missing, not an ibra-yolo YAML, or cannot be loaded.
    """
    from ultralytics import YOLO

    from ibra_yolo.plugin import model_yaml_path

    p = Path(weights)
    suffix = p.suffix.lower()
    if suffix == ".pt":
        if not p.is_file():
            raise IbraYoloError(
                f"weights file {p} does not exist"
            )  # checked first: YOLO() would try to download a name
    elif suffix in (".yaml", ".yml"):
        if model_yaml_path(p) is None:
            what = "is not an ibra-yolo model YAML (no 'neuron:' key)" if p.is_file() else "does not exist"
            raise IbraYoloError(f"model {p} {what}: pass a .pt checkpoint or e.g. spike-yolo-ibra-n.yaml")
    else:
        raise IbraYoloError(f"--weights {p} must be a .pt checkpoint or a model .yaml")
    try:
        return YOLO(str(p)).model
    except IbraYoloError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one line, not a traceback
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise IbraYoloError(f"cannot load {p}: {type(e).__name__}: {first_line}") from None


def measure(
    model,
    images,
    imgsz: int | None = 640,
    batch: int = 8,
    spike_driven: bool | None = False,
    preset: str = DEFAULT_PRESET,
    e_mac: float | None = None,
    e_ac: float | None = None,
    max_images: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    name: str | None = None,
) -> EnergyReport:
    """Run ``model`` over ``images`` in batches and report energy, spikes and range use per layer and in total.

    Memory stays constant: images are read lazily and every statistic is a running sum (code histograms are
    ``M + 1`` counters per layer).

    Args:
        model (YOLO | nn.Module): An ibra-yolo model (spiking or its ANN twin), or a ``YOLO`` object holding one.
        images: A folder, an image, a ``.txt`` list, a data YAML (its val split), a list of paths, an image tensor
            ``[N, 3, H, W]`` (``uint8`` or floats in ``[0, 1]``, used as given) or a list of such batches.
        imgsz (int): Square size images are letterboxed to (rounded up to a multiple of 32); ignored for tensors.
        batch (int): Images per forward pass.
        spike_driven (bool | None): Count spikes on the {0, 1} planes of spike-driven execution (True), from the
            integer codes (False), or in whatever mode the model is set to (None).
        preset (str): Energy constants, a key of ``PRESETS``.
        e_mac (float, optional): Custom MAC energy (pJ), replacing the preset's.
        e_ac (float, optional): Custom AC energy (pJ), replacing the preset's.
        max_images (int, optional): Use at most this many images.
        device (str | torch.device, optional): Where to run (``cpu``, ``cuda:0``, or Ultralytics' ``0``); default
            where the model is. The model is moved back afterwards.
        progress (bool): Show a progress bar.
        name (str, optional): Model name in the report (default: its YAML file).

    Returns:
        (EnergyReport): Per-image figures; ``summary()`` for the totals, ``to_dict()`` for everything.

    Raises:
        IbraYoloError: Bad arguments, no images, a model without ``NeuronConv`` units, or spike-driven mode asked
            of a model without spiking neurons.
    """
    net = torch_model(model)
    constants = energy_constants(preset, e_mac, e_ac)
    _check_positive("batch", batch)
    if max_images is not None:
        _check_positive("max_images", max_images)
    tensors = isinstance(images, torch.Tensor) or _is_tensor_list(images)
    if not tensors:
        _check_positive("imgsz", imgsz, 1)
        imgsz = -(-imgsz // 32) * 32  # up to a multiple of the largest stride, as Ultralytics does
    batches, total, source = _batches(images, imgsz, batch, max_images)
    meter = EnergyMeter(net)
    seen = _run(net, meter, batches, total, spike_driven, device, progress)
    layers = meter.layers(seen, constants)
    meta = {
        "model": name or _model_name(net),
        "source": source,
        "images": seen,
        "imgsz": None if tensors else imgsz,
        "batch": batch,
        "T": max(layer.T for layer in layers),
        **_mode(meter),
        "neurons": _distinct([layer.neuron_config for layer in layers if layer.neuron_config is not None]),
        "dtype": str(next(net.parameters()).dtype).removeprefix("torch."),
    }
    footprint = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
    return EnergyReport(layers, constants, meta, footprint, sum(p.numel() for p in net.parameters()))


def _run(net: nn.Module, meter: EnergyMeter, batches, total: int, spike_driven, device, progress: bool) -> int:
    """Run ``net`` in eval mode over the batches with the meter attached; returns the number of images.

    The model's mode (training/eval, integer/spike-driven) and device are restored afterwards.
    """
    spiking = any(c.spiking for c in meter.counters)
    if spike_driven and not spiking:
        raise IbraYoloError("spike-driven counting needs integer spiking neurons; this model has none (an ANN twin?)")
    param = next(net.parameters())
    device = _device(device) if device is not None else param.device
    was_training, was_device, seen = net.training, param.device, 0
    switch = spiking and spike_driven is not None
    mode = spike_driven_mode(net, spike_driven) if switch else contextlib.nullcontext()
    try:
        with mode, meter, torch.no_grad():
            net.to(device).eval()
            for x in _progress(batches, total, progress):
                x = x.to(device)
                net(x.to(param.dtype) / 255 if x.dtype == torch.uint8 else x.to(param.dtype))
                seen += len(x)
    finally:
        net.to(was_device).train(was_training)
    return seen


def _mode(meter: EnergyMeter) -> dict:
    """How the model ran and how its spikes were counted."""
    if meter.spike_driven:
        return {"mode": "spike-driven", "spike_counting": "the ones of every {0,1} plane a Synapse receives"}
    if any(c.spiking for c in meter.counters):
        return {"mode": "integer", "spike_counting": "from the integer codes: popcount (binary) or the code (unary)"}
    return {"mode": "ANN (real-valued)", "spike_counting": "none: no spiking neurons"}


def _device(spec: str | int | torch.device) -> torch.device:
    """A torch device from ``cpu``, ``cuda:1``, a ``torch.device``, or Ultralytics' ``0`` / ``0,1`` (first GPU)."""
    text = str(spec).strip().lower()
    if text.split(",")[0].isdigit():
        text = f"cuda:{text.split(',')[0]}"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise IbraYoloError(f"device={spec!r} is invalid: use cpu, cuda:0 or a GPU index such as 0") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IbraYoloError(f"device={spec!r} is not available: this machine has no CUDA GPU (use cpu)")
    return device


def _is_tensor_list(images) -> bool:
    return isinstance(images, (list, tuple)) and bool(images) and isinstance(images[0], torch.Tensor)


def _progress(batches: Iterable, total: int, enabled: bool) -> Iterator[torch.Tensor]:
    if not enabled:
        yield from batches
        return
    from ultralytics.utils import TQDM

    with TQDM(total=total, desc="energy", unit="img") as bar:
        for x in batches:
            yield x
            bar.update(len(x))


def _model_name(net: nn.Module) -> str:
    d = getattr(net, "yaml", None)
    return str(d.get("yaml_file") or type(net).__name__) if isinstance(d, dict) else type(net).__name__


def _distinct(configs: list[dict]) -> list[dict]:
    out = []
    for cfg in configs:
        if cfg not in out:
            out.append(cfg)
    return out
