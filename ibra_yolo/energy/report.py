"""The energy report: the meter's raw counts priced with energy constants, per layer and in total, per image.

A report keeps the raw counts it was made from, so ``price()`` shows it under other constants without running the
model again. The counting rules are written once, here (``COUNTING_RULES``): the JSON and the text table both print
them. Rendering (table, CSV, plot) lives in ``ibra_yolo.energy.render``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ibra_yolo.energy.meter import LayerCounts
from ibra_yolo.energy.presets import EnergyPreset, energy_constants
from ibra_yolo.errors import IbraYoloError

__all__ = ("COUNTING_RULES", "LayerReport", "EnergyReport")

PJ_PER_MJ = 1e9

COUNTING_RULES: dict[str, tuple[str, ...]] = {  # counting mode -> the rules every report of that mode states
    "folded": (
        "All figures are per image: sums over the measured images divided by their number.",
        "Dense MACs F_l of a conv = Cin/groups * Cout * kh * kw * Hout * Wout for ONE timestep (one pass of the ANN "
        "twin). RepConv and SepRep count as the single k x k conv they fold into. BN, biases, pooling, upsampling, "
        "concat, residual adds, the mean over T and the detect head's DFL/decoding are free.",
        "MAC layer (real-valued input: the first conv on the image; every conv of the ANN twin): MACs_l = F_l * T "
        "(it runs once per timestep), E_l = E_MAC * MACs_l.",
        "AC layer (fed by an integer spiking neuron): s_l = spikes per input neuron per image, summed over the T "
        "timesteps and the virtual timesteps (popcount of the code for binary encoding, the code itself for unary); "
        "SOP_l = F_l * s_l; E_l = E_AC * SOP_l. The per-plane scaling (2^j/N) and the bias of spike-driven execution "
        "happen once per output, not per synapse, and are not counted.",
        "ANN twin energy = E_MAC * sum_l F_l (same architecture, real activations, one pass); ANN/SNN = that / energy.",
        "Firing rate = mean integer code per neuron per timestep; spikes per neuron = s_l. Spikes are exact: counted "
        "from the integer codes (integer mode) or as the ones of every {0,1} plane a Synapse receives (spike-driven).",
        "NeuroBench names: ActivationSparsity = share of zero neuron outputs (all neurons, all timesteps); "
        "SynapticOperations: Effective_MACs = MACs with a non-zero input, Effective_ACs = sum_l SOP_l, "
        "Dense = sum_l F_l * T; Footprint = bytes of parameters and buffers.",
    ),
    "executed": (
        "All figures are per image: sums over the measured images divided by their number.",
        "Every stage is counted as it executes (the training graph as built, or a deployed network, which is the "
        "folded network itself). Dense MACs of a conv = Cin/groups * Cout * kh * kw * Hout * Wout for ONE timestep; "
        "a BatchNorm = one MAC per output element; a BN folded away, biases, pooling, upsampling, concat, residual "
        "adds, the mean over T and the detect head's DFL/decoding are free. F_l = the sum over the layer's stages.",
        "Synaptic stage: the conv the neuron's output enters first. Fed by an integer spiking neuron it is AC: SOP = "
        "s_l * its fan-out (s_l = spikes per input neuron per image over the T timesteps and the virtual timesteps), "
        "E = E_AC * SOP. Fed by real values (the image; the ANN twin) it is MAC: F * T. A BN before it (SepRep's "
        "BNPad) makes its input real-valued: the whole layer is then MAC.",
        "Real-valued stages (depthwise and 1x1 convs on summed currents inside RepConv/SepRep, every BN): MACs = F * "
        "T (they run once per timestep), E = E_MAC * MACs.",
        "ANN twin energy = E_MAC * sum_l F_l (same architecture, real activations, one pass); ANN/SNN = that / energy.",
        "Firing rate = mean integer code per neuron per timestep; spikes per neuron = s_l. Spikes are exact: counted "
        "from the integer codes (integer mode) or as the ones of every {0,1} plane a Synapse receives (spike-driven).",
        "NeuroBench names: ActivationSparsity = share of zero neuron outputs (all neurons, all timesteps); "
        "SynapticOperations: Effective_MACs = MACs with a non-zero input, Effective_ACs = sum_l SOP_l, "
        "Dense = sum_l F_l * T; Footprint = bytes of parameters and buffers.",
    ),
}


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
        effective_macs (float): MACs with a non-zero input (MAC layers).
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


def _histogram_items(hist: list | dict) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, counts)`` of a dense or sparse histogram, zero counts left out (``int64`` arrays)."""
    if isinstance(hist, dict):
        codes = np.fromiter(hist.keys(), dtype=np.int64, count=len(hist))
        counts = np.fromiter(hist.values(), dtype=np.int64, count=len(hist))
    else:
        counts = np.asarray(hist, dtype=np.int64)
        codes = np.arange(len(counts), dtype=np.int64)
    used = counts > 0
    return codes[used], counts[used]


def _layer_report(c: LayerCounts, images: int, k: EnergyPreset) -> LayerReport:
    """Per-image figures of one layer's counts, priced with ``k``."""
    per = 1 / images
    macs = (0 if c.spiking else c.dense_macs * c.T) + c.stage_macs * c.T  # real-valued stages run every timestep
    layer = LayerReport(
        index=c.index,
        name=c.name,
        op=c.op,
        geometry=c.geometry,
        input="AC" if c.spiking else "MAC",
        neuron=c.neuron,
        neuron_config=c.neuron_config,
        T=c.T,
        dense_macs=(c.dense_macs + c.stage_macs) * per,
        macs=macs * per,
        sops=c.synaptic_ops * per,
        effective_macs=c.nonzero_macs * per,
        energy_pj=(k.e_mac * macs + k.e_ac * c.synaptic_ops) * per,
        neuron_outputs=c.inputs * per if c.neuron_config is not None else 0.0,
    )
    if c.neuron_config is not None and c.inputs:
        layer.zero_share = (c.inputs - c.nonzero_inputs) / c.inputs
    if c.spiking and c.inputs:
        (codes, counts), m = _histogram_items(c.histogram), c.max_code
        layer.firing_rate = int((codes * counts).sum()) / c.inputs  # exact integer sums, one division
        layer.spikes_per_neuron = c.spikes * c.T / c.inputs
        layer.spikes_total = c.spikes
        layer.clipped_share = int(counts[codes == m].sum()) / c.inputs
        layer.high_share = int(counts[codes > m // 2].sum()) / c.inputs
        layer.max_code_seen = int(codes.max()) if len(codes) else 0
        layer.max_code = m
        layer.code_histogram = c.histogram
    return layer


def _weighted(values: list, weights: list, total: float) -> float | None:
    if not values or not total:
        return None
    return float(sum(v * w for v, w in zip(values, weights)) / total)


@dataclass
class EnergyReport:
    """Per-layer and whole-model energy and spike statistics, per image.

    Attributes:
        counts (list[LayerCounts]): The meter's raw counts, one entry per ``NeuronConv`` in model order.
        constants (EnergyPreset): Energy constants the figures are priced with.
        meta (dict): Model, data, mode, counting mode and settings of the measurement (``images`` is required).
        footprint (int): Bytes of parameters and buffers.
        params (int): Number of parameters.
        layers (list[LayerReport]): Per-image figures of every layer (derived from the counts and constants).

    Raises:
        IbraYoloError: ``meta["images"]`` is not a positive number.
    """

    counts: list[LayerCounts]
    constants: EnergyPreset
    meta: dict
    footprint: int
    params: int
    layers: list[LayerReport] = field(init=False)

    def __post_init__(self):
        if not self.meta.get("images", 0) >= 1:
            raise IbraYoloError("no images were measured")
        self.layers = [_layer_report(c, self.meta["images"], self.constants) for c in self.counts]

    @property
    def counting(self) -> str:
        """The counting mode of the measurement (``"folded"``: SPEC §5)."""
        return self.counts[0].counting if self.counts else "folded"

    def price(
        self, preset: str | EnergyPreset | None = None, e_mac: float | None = None, e_ac: float | None = None
    ) -> EnergyReport:
        """The same counts priced with other constants, without running the model again.

        Args:
            preset (str | EnergyPreset, optional): A preset name (see ``PRESETS``) or constants; default: this report's.
            e_mac (float, optional): Custom MAC energy in pJ, replacing the preset's.
            e_ac (float, optional): Custom AC energy in pJ, replacing the preset's.

        Returns:
            (EnergyReport): A new report; this one is unchanged.
        """
        constants = energy_constants(self.constants if preset is None else preset, e_mac, e_ac)
        return EnergyReport(self.counts, constants, dict(self.meta), self.footprint, self.params)

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
        """Flat dict: settings, totals and NeuroBench metrics (what ``ibra-yolo eval`` prints and logs)."""
        nb = self.neurobench()
        return {
            "images": self.meta["images"],
            "imgsz": self.meta.get("imgsz"),
            "T": self.meta.get("T"),
            "mode": self.meta.get("mode"),
            "counting": self.counting,
            "preset": self.constants.name,
            "E_MAC_pJ": self.constants.e_mac,
            "E_AC_pJ": self.constants.e_ac,
            **self.totals(),
            "ActivationSparsity": nb["ActivationSparsity"],
            **nb["SynapticOperations"],
            "Footprint": nb["Footprint"],
            "params": self.params,
        }

    def rules(self) -> tuple[str, ...]:
        """The counting rules of this report's counting mode."""
        return COUNTING_RULES[self.counting]

    def to_dict(self) -> dict:
        """Everything, JSON-serialisable: meta (with constants and counting rules), summary, NeuroBench, layers."""
        meta = {**self.meta, "counting": self.counting, "energy_constants": asdict(self.constants)}
        return {
            "meta": {**meta, "counting_rules": list(self.rules())},
            "summary": self.summary(),
            "neurobench": self.neurobench(),
            "layers": [asdict(layer) for layer in self.layers],
        }

    def code_histogram(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Codes used and how often, summed over all spiking layers (all images, all timesteps).

        Returns:
            (tuple): ``(codes, counts, M)``: the codes that occurred (ascending), their counts, and the largest
            ``max_code`` of the layers.
        """
        total: dict[int, int] = {}
        spiking = [layer for layer in self.layers if layer.max_code is not None]
        for layer in spiking:
            for code, count in zip(*_histogram_items(layer.code_histogram)):
                total[int(code)] = total.get(int(code), 0) + int(count)
        codes = np.array(sorted(total), dtype=np.int64)
        counts = np.array([total[c] for c in codes], dtype=np.float64)
        return codes, counts, max((layer.max_code for layer in spiking), default=0)

    # Rendering, in ibra_yolo.energy.render
    def table(self) -> str:
        """The per-layer table and the totals as text (``render.table``)."""
        from ibra_yolo.energy import render

        return render.table(self)

    def to_csv(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write one row per layer (``render.to_csv``)."""
        from ibra_yolo.energy import render

        return render.to_csv(self, path, overwrite)

    def plot(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the energy / firing / range-use figure as a PNG (``render.plot``)."""
        from ibra_yolo.energy import render

        return render.plot(self, path, overwrite)

    def save(self, out_dir: str | Path, overwrite: bool = False, stem: str = "energy", inputs=()) -> dict[str, Path]:
        """Write ``<stem>.json``, ``<stem>_layers.csv`` and ``<stem>.png`` into ``out_dir`` (``render.save``; none
        may be one of ``inputs``, e.g. the measured images, even with ``overwrite``)."""
        from ibra_yolo.energy import render

        return render.save(self, out_dir, overwrite, stem, inputs)
