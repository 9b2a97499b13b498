"""Energy report: hand-computed MAC/SOP/energy figures, exact spike counts in both modes, range use and the CLI."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, detection_model, randomize_, run
from torch import nn

from ibra_yolo.cli import energy as energy_cli
from ibra_yolo.energy import COUNTING_RULES, PRESETS, EnergyMeter, codes_from_outputs, energy_constants, measure
from ibra_yolo.errors import IbraYoloError, MissingFileError
from ibra_yolo.neurons import IBLIF, IBRALIF, ILIF, IntegerLIF
from ibra_yolo.nn import (
    SPPF,
    AllConvBlock,
    ConvBlock,
    Downsample,
    NeuronConv,
    RepConv,
    SepRep,
    TimeRepeat,
)
from ibra_yolo.sources import image_batches, list_images

E_MAC, E_AC = 4.6, 0.9  # the default preset, 45nm-fp32 (Horowitz 2014)
CURRENTS = (-0.3, 1.0, 3.2, 7.6)  # first-layer outputs, one per channel; with M = 7, N = 1: codes 0, 1, 3, 7


def tiny(second: nn.Module, neuron: nn.Module, T: int = 1, currents=CURRENTS) -> nn.Sequential:
    """image -> MAC conv 3->4 (3x3, pad 1; zero weights, so its output is its bias) -> neuron -> ``second``."""
    first = nn.Conv2d(3, 4, 3, 1, 1)
    with torch.no_grad():
        first.weight.zero_()
        first.bias.copy_(torch.tensor(currents))
    return nn.Sequential(TimeRepeat(T), NeuronConv(None, first), NeuronConv(neuron, second)).eval()


def images(n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1  # in [0.1, 1]: no 0s


def lif7(encoding: str = "binary", T: int = 1) -> IntegerLIF:
    return IntegerLIF(max_code=7, scale=1.0, encoding=encoding, T=T)


@pytest.fixture(scope="module")
def ibra_n():
    return randomize_(detection_model("ibra"), seed=0)


# ----------------------------------------------------------------------------------------------------------------------
# Hand-computed counts
# ----------------------------------------------------------------------------------------------------------------------
def test_conv_macs_sops_energy_by_hand():
    # 2 images of 8x8, T = 1.
    # Layer 0 (MAC, real image in): Conv 3->4, k3, s1, p1 -> 8x8 out: F = 3*4*9*64 = 6912 MACs;
    #   E = 4.6*6912 = 31795.2 pJ.
    # Layer 1 (AC): Conv 4->6, k3, s2, p1, groups 2 -> out (8+2-3)//2+1 = 4, 4x4: F = (4/2)*6*9*16 = 1728.
    #   Its input codes per channel are 0, 1, 3, 7 -> popcounts 0, 1, 2, 3: s = 6/4 = 1.5 spikes per neuron;
    #   SOP = 1728*1.5 = 2592; E = 0.9*2592 = 2332.8 pJ. Total 34128 pJ = 3.4128e-5 mJ.
    #   ANN twin: 4.6*(6912+1728) = 39744 pJ; ANN/SNN = 39744/34128.
    model = tiny(nn.Conv2d(4, 6, 3, 2, 1, groups=2, bias=False), lif7())
    r = measure(model, images(), batch=1, progress=False)
    first, conv = r.layers
    assert (first.input, first.neuron, first.dense_macs, first.macs, first.sops) == ("MAC", "image", 6912, 6912, 0)
    assert first.energy_pj == pytest.approx(E_MAC * 6912) == 31795.2
    assert (conv.input, conv.dense_macs, conv.macs, conv.spikes_per_neuron) == ("AC", 1728, 0, 1.5)
    assert conv.sops == 2592 and conv.energy_pj == pytest.approx(E_AC * 2592) == 2332.8
    assert conv.spikes_total == 2 * 64 * 6  # 2 images x 8x8 input pixels x (0+1+2+3) spikes over the 4 channels
    s = r.summary()
    assert s["energy_mJ"] == pytest.approx(3.4128e-5) and s["ann_energy_mJ"] == pytest.approx(3.9744e-5)
    assert s["ann_snn_ratio"] == pytest.approx(39744 / 34128)
    # range use of the neuron: mean code (0+1+3+7)/4 = 2.75, one channel of four silent, one at M = 7
    assert (conv.firing_rate, conv.zero_share, conv.clipped_share, conv.max_code_seen) == (2.75, 0.25, 0.25, 7)
    assert conv.code_histogram == [128, 128, 0, 128, 0, 0, 0, 128]  # 2 images x 64 pixels per channel
    # NeuroBench: sparsity 1/4; Effective_MACs = all image MACs (no zero pixel); Dense = 6912 + 1728;
    # Footprint = (3*4*9 + 4 + 2*6*9) float32 parameters = 220 * 4 bytes.
    nb = r.neurobench()
    assert nb["ActivationSparsity"] == 0.25 and nb["Footprint"] == 880
    assert nb["SynapticOperations"] == {"Effective_MACs": 6912, "Effective_ACs": 2592, "Dense": 8640}
    assert r.meta["mode"] == "integer" and r.constants.name == "45nm-fp32"


def test_timesteps_and_unary_by_hand():
    # T = 2, beta 0.25: the constant currents give the same codes at both timesteps (7.6 -> 7, residue 0.15, then
    # 7.75 -> 7; 3.2 -> 3, then 3.25 -> 3; -0.3 -> 0, then -0.375 -> 0), so s = 2 * 1.5 = 3.
    # MAC layer runs once per timestep: 2 * 6912 = 13824 MACs; SOP = 1728 * 3 = 5184.
    # E = 4.6*13824 + 0.9*5184 = 63590.4 + 4665.6 = 68256 pJ; the ANN twin (one pass) stays 39744 pJ.
    r = measure(tiny(nn.Conv2d(4, 6, 3, 2, 1, groups=2, bias=False), lif7(T=2), T=2), images(), progress=False)
    first, conv = r.layers
    assert (first.macs, conv.spikes_per_neuron, conv.sops, r.meta["T"]) == (13824, 3.0, 5184, 2)
    s = r.summary()
    assert s["energy_mJ"] == pytest.approx(6.8256e-5) and s["ann_energy_mJ"] == pytest.approx(3.9744e-5)
    assert r.neurobench()["SynapticOperations"]["Dense"] == 2 * 8640
    # Unary (I-LIF style) sends the code itself: s = (0+1+3+7)/4 = 2.75; SOP = 1728*2.75 = 4752.
    r = measure(tiny(nn.Conv2d(4, 6, 3, 2, 1, groups=2, bias=False), lif7("unary")), images(), progress=False)
    assert (r.layers[1].spikes_per_neuron, r.layers[1].sops) == (2.75, 4752)


def fold_by_probing(op: nn.Module, c1: int, k: int = 3) -> nn.Conv2d:
    """The single k x k conv (padding k//2) an affine op equals, read off its response to impulses."""
    with torch.no_grad():
        probes = torch.zeros(c1 * k * k + 1, c1, k, k)  # the last probe is all zeros: gives the bias
        for n in range(c1 * k * k):
            probes[n].view(-1)[n] = 1.0
        centre = op(probes)[:, :, k // 2, k // 2]
        bias = centre[-1]
        conv = nn.Conv2d(c1, centre.shape[1], k, padding=k // 2)
        conv.weight.copy_((centre[:-1] - bias).T.reshape(-1, c1, k, k))
        conv.bias.copy_(bias)
    return conv


@pytest.mark.parametrize("cls", [RepConv, SepRep])
def test_reparameterisable_ops_count_as_their_folded_conv(cls):
    # RepConv(4, 6) and SepRep(4, 6) equal one 3x3 conv 4->6 (checked numerically below, borders included), so on
    # an 8x8 map they count 4*6*9*64 = 13824 MACs (not the 1x1 + depthwise + 1x1 they execute unfolded).
    op = randomize_(cls(4, 6)).eval()
    folded = fold_by_probing(op, 4)
    x = torch.rand(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(op(x), folded(x), atol=1e-5)
    unit = NeuronConv(lif7(), op)
    assert unit.macs_per_pixel() == 4 * 6 * 9
    r = measure(tiny(op, lif7()), images(), progress=False)
    assert r.layers[1].dense_macs == 13824 and r.layers[1].sops == 13824 * 1.5
    assert "folded" in r.layers[1].geometry


def test_presets_and_custom_constants():
    assert (PRESETS["45nm-fp32"].e_mac, PRESETS["45nm-fp32"].e_ac) == (4.6, 0.9)
    assert (PRESETS["45nm-int8"].e_mac, PRESETS["45nm-int8"].e_ac) == (0.3, 0.1)  # int8 mult 0.2 + int32 add 0.1
    model = tiny(nn.Conv2d(4, 6, 3, 2, 1, groups=2, bias=False), lif7())
    r = measure(model, images(), preset="45nm-int8", progress=False)
    assert r.summary()["energy_mJ"] == pytest.approx((0.3 * 6912 + 0.1 * 2592) * 1e-9)
    r = measure(model, images(), e_ac=0.5, progress=False)  # E_MAC stays 4.6 from the default preset
    assert r.constants.name == "custom" and r.summary()["energy_mJ"] == pytest.approx((4.6 * 6912 + 0.5 * 2592) * 1e-9)
    assert "counting_rules" in r.to_dict()["meta"] and "custom" in r.table()
    with pytest.raises(IbraYoloError, match="unknown"):
        energy_constants("7nm-magic")
    with pytest.raises(IbraYoloError, match="positive"):
        energy_constants(e_mac=-1.0)
    # 1e308 pJ per operation made the totals inf and the ratio NaN, and the figure crashed: at most 1e6 pJ (1 uJ)
    with pytest.raises(IbraYoloError, match=r"^e_ac=1e\+308 is invalid: .* in \[1e-06, 1e\+06\]"):
        energy_constants(e_ac=1e308)
    with pytest.raises(IbraYoloError, match=r"^e_mac=1e-320 is invalid"):  # subnormal: rounded 11 % off
        energy_constants(e_mac=1e-320)


def test_range_use_ibra_uses_high_codes_iblif_does_not():
    # Currents of unit scale 0.5, 1.7, 2.9, 4.2: IBRA-LIF (N = 100, M = 511) codes 50, 170, 290, 420 (half of them
    # above M//2 = 255); IB-LIF (9 bits, N = 1) codes 0, 2, 3, 4 (round half to even) out of the same 0..511.
    currents = (0.5, 1.7, 2.9, 4.2)
    conv = nn.Conv2d(4, 4, 1, bias=False)
    ibra = measure(tiny(conv, IBRALIF(), currents=currents), images(), progress=False).layers[1]
    iblif = measure(tiny(conv, IBLIF(bits=9), currents=currents), images(), progress=False).layers[1]
    assert (ibra.max_code_seen, ibra.high_share, ibra.firing_rate) == (420, 0.5, 232.5)
    assert (iblif.max_code_seen, iblif.high_share, iblif.zero_share) == (4, 0.0, 0.25)
    assert len(ibra.code_histogram) == 512 and ibra.code_histogram[290] == 128
    # a range too large for a dense bincount (M = 2**17 - 1) keeps an exact sparse one
    wide = measure(tiny(conv, IBLIF(bits=17), currents=currents), images(), progress=False)
    assert wide.layers[1].code_histogram == {0: 128, 2: 128, 3: 128, 4: 128}
    codes, counts, max_code = wide.code_histogram()
    assert codes.tolist() == [0, 2, 3, 4] and counts.tolist() == [128] * 4 and max_code == 2**17 - 1


# ----------------------------------------------------------------------------------------------------------------------
# Whole models
# ----------------------------------------------------------------------------------------------------------------------
def independent_dense_macs(model: nn.Module, x: torch.Tensor) -> float:
    """Dense MACs per image and timestep from the tensors the convs actually see (our definition, counted anew).

    Definition: the sum over the convolutions of the folded model of Cin/groups * Cout * kh * kw * Hout * Wout; a
    RepConv/SepRep is one k x k conv from its input channels to its output channels (k: its depthwise kernel) at
    its output size; the detect head's DFL (a fixed 1x1 conv that decodes, not a learned layer) is excluded.
    """
    total, reps, hooks = 0, [m for m in model.modules() if isinstance(m, (RepConv, SepRep))], []
    inside = {id(c) for r in reps for c in r.modules()}

    def conv_hook(m, args, out):
        nonlocal total
        total += m.weight.numel() * out[0, 0].numel()  # Cout*Cin/g*kh*kw per output pixel, per image & timestep

    def rep_hook(m, args, out):
        nonlocal total
        k = m.dw.kernel_size[0]
        total += args[0].shape[1] * out.shape[1] * k * k * out[0, 0].numel()

    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in inside and "dfl" not in _name(model, m):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, (RepConv, SepRep)):
            hooks.append(m.register_forward_hook(rep_hook))
    with torch.no_grad():
        model(x[:1])  # one image, T = 1: every conv runs once on a batch of 1
    for h in hooks:
        h.remove()
    return float(total)


def _name(model: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def test_model_dense_macs_first_layer_and_ann_twin(ibra_n):
    x = torch.rand(2, 3, 64, 32)  # not square: Hout != Wout everywhere
    r = measure(ibra_n, x, batch=2, progress=False)
    assert r.summary()["dense_MACs"] == independent_dense_macs(ibra_n, x)
    first, rest = r.layers[0], r.layers[1:]
    assert (first.name, first.input, first.neuron) == ("model.1.conv", "MAC", "image")  # the only MAC layer
    assert all(layer.input == "AC" and layer.neuron == "IBRALIF" for layer in rest) and len(rest) == 88
    assert r.summary()["MACs"] == first.dense_macs and r.summary()["ann_snn_ratio"] > 1
    ann = detection_model("ann")
    a = measure(ann, x, batch=2, progress=False)
    s = a.summary()
    assert all(layer.input == "MAC" for layer in a.layers) and s["SOPs"] == 0
    assert s["dense_MACs"] == r.summary()["dense_MACs"]  # same architecture, same count
    assert s["energy_mJ"] == pytest.approx(s["ann_energy_mJ"]) and s["ann_snn_ratio"] == pytest.approx(1.0)
    assert 0 < s["ActivationSparsity"] < 1 and a.meta["mode"] == "ANN (real-valued)"
    with pytest.raises(IbraYoloError, match="spike-driven"):
        measure(ann, x, spike_driven=True, progress=False)


@pytest.mark.parametrize("family", ["ibra", "ilif"])
def test_spike_counts_from_codes_planes_and_report_agree(family):
    # Binary IBRA-LIF and unary I-LIF at T = 2, in float64 (so that every pass sees the same codes in every layer; in
    # float32 one rounding-edge flip would change later layers' inputs). In one spike-driven run, hooks here count
    # independently of the meter (a) the spikes each spike-fed conv's input needs, recomputed from its codes
    # (popcount for binary, the code for unary), and (b) the ones of every {0,1} plane its Synapse receives. The
    # report must equal both, layer by layer; an integer-mode run, counting from the codes, must equal them too.
    model = randomize_(detection_model(family, T=2), seed=0).double()
    x = torch.rand(2, 3, 64, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    names = {m: n for n, m in model.named_modules()}
    units = [m for m in model.modules() if isinstance(m, NeuronConv) and m.spiking]
    from_codes, from_planes, hooks = {}, {}, []

    def add(counts: dict, name: str, n: int) -> None:
        counts[name] = counts.get(name, 0) + n

    for unit in units:
        hooks.append(
            unit.register_forward_pre_hook(
                lambda m, a: add(from_codes, names[m], int(m.neuron.spikes_per_code(m.neuron.codes(a[0])).sum()))
            )
        )
        hooks.append(unit.synapse.register_forward_pre_hook(
            lambda m, a, unit=unit: add(from_planes, names[unit], int(a[0].sum()))))  # fmt: skip
    driven = measure(model, x, batch=2, spike_driven=True, progress=False)
    for h in hooks:
        h.remove()
    got = {layer.name: layer.spikes_total for layer in driven.layers if layer.input == "AC"}
    assert driven.meta["mode"] == "spike-driven" and not any(u.spike_driven for u in units)  # mode restored
    assert got == from_codes == from_planes and len(got) == len(units) and sum(got.values()) > 0
    integer = measure(model, x, batch=1, progress=False)
    assert integer.meta["mode"] == "integer"
    assert [layer.spikes_total for layer in integer.layers] == [layer.spikes_total for layer in driven.layers]
    # the histograms too: read from S = code / N in integer mode, from the codes themselves in spike-driven mode
    assert [layer.code_histogram for layer in integer.layers] == [layer.code_histogram for layer in driven.layers]


def mini(neuron, T: int) -> nn.Sequential:
    """A small spiking backbone with every op kind: MAC Downsample, SepConv, 3x3 SConvs, RepConvs, SPPF."""
    return nn.Sequential(
        TimeRepeat(T),
        Downsample(3, 8, 3, 2, 1, first=True),
        AllConvBlock(8, r=2, neuron=neuron),
        Downsample(8, 16, 3, 2, 1, neuron=neuron),
        ConvBlock(16, r=2, neuron=neuron),
        SPPF(16, 16, neuron=neuron),
    )


@pytest.mark.parametrize("neuron, T", [(lambda: ILIF(D=4, T=2), 2), (lambda: IBRALIF(T=1), 1)])
def test_integer_and_spike_driven_reports_agree_exactly(neuron, T):
    # Unary I-LIF with T = 2 and binary IBRA-LIF, in float64 (so that both runs see the same codes): integer-mode
    # counts from the codes equal spike-driven counts of the planes, layer by layer, and so do SOPs and energies.
    model = randomize_(mini(neuron, T), seed=1).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a = measure(model, x, batch=2, progress=False)
    b = measure(model, x, batch=1, spike_driven=True, progress=False)
    assert (a.meta["mode"], b.meta["mode"], a.meta["T"]) == ("integer", "spike-driven", T)
    assert [layer.spikes_total for layer in a.layers] == [layer.spikes_total for layer in b.layers]
    assert [layer.sops for layer in a.layers] == [layer.sops for layer in b.layers]
    assert a.summary()["SOPs"] > 0 and a.summary()["energy_mJ"] == b.summary()["energy_mJ"]
    assert {layer.op for layer in a.layers} == {"Conv2d", "SepRep", "RepConv"}


def test_report_dict_is_json_and_no_model_errors():
    r = measure(tiny(nn.Conv2d(4, 6, 1, bias=False), lif7()), images(), progress=False)
    d = json.loads(json.dumps(r.to_dict()))
    assert set(d) == {"meta", "summary", "neurobench", "layers"}
    assert set(d["neurobench"]["SynapticOperations"]) == {"Effective_MACs", "Effective_ACs", "Dense"}
    assert d["meta"]["energy_constants"]["name"] == "45nm-fp32" and math.isfinite(d["summary"]["ann_snn_ratio"])
    with pytest.raises(IbraYoloError, match="no NeuronConv"):
        measure(nn.Sequential(nn.Conv2d(3, 4, 3)), images(), progress=False)


# ----------------------------------------------------------------------------------------------------------------------
# The meter observes; the report re-prices; the rules are written once
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "neuron, dtype",
    [
        (IBRALIF(), torch.float32),
        (IBRALIF(), torch.float16),  # M = 511: 511 * (2**-10 + 3 * 2**-23) < 1
        (IBRALIF(), torch.float64),
        (IBRALIF(D=5.11, N=37.3), torch.float32),  # N not a power of ten: M = round(190.603) = 191
        (IBRALIF(D=5.11, N=37.3), torch.float16),
        (IBLIF(bits=10), torch.float16),  # M = 1023, the largest range float16 carries exactly
        (ILIF(D=4), torch.bfloat16),
        (IntegerLIF(2**20 - 1, 1000.0), torch.float32),  # about a million codes
    ],
    ids=lambda v: str(v).split("(")[0].removeprefix("torch."),
)
def test_codes_read_back_exactly_from_neuron_outputs(neuron, dtype):
    # The meter reads codes from the neuron's output S = code / N as round(S * N) (it never runs the neuron again).
    # The meter's own histogram of these outputs (interleaved sub-histograms where the bound allows) must count
    # exactly these codes too.
    # For every code 0..M, S is produced by the neuron itself in `dtype` (inputs code / N, the neuron computing in
    # float32 as always) and must give back exactly the code the neuron's codes() reports for that input.
    m = neuron.max_code
    u = (torch.arange(m + 1, dtype=torch.float64) / neuron.scale).to(dtype)[None]  # [T = 1, M + 1]
    expected = neuron.codes(u)
    assert set(expected.flatten().tolist()) == set(range(m + 1))  # every code occurs
    s = neuron.eval()(u)
    assert torch.equal(codes_from_outputs(s, neuron.scale, m), expected)
    if m < 2**16:  # the meter's dense histogram
        meter = EnergyMeter(NeuronConv(neuron, nn.Conv2d(1, 1, 1)))
        counted = meter.counters[0]._count_codes(s.reshape(-1))
        hist = meter.counters[0].histogram()
        assert hist == torch.bincount(expected.flatten().long(), minlength=m + 1).tolist()
        assert int(counted) == int(neuron.spikes_per_code(expected).sum())


def test_codes_refused_where_the_dtype_cannot_carry_them():
    # bfloat16 has 8 significant bits: code/100 for codes up to 511 is not recoverable (M * eps = 511 / 128 > 1).
    s = IBRALIF()(torch.rand(1, 8).to(torch.bfloat16))
    with pytest.raises(IbraYoloError, match="cannot be read back exactly from bfloat16"):
        codes_from_outputs(s, 100.0, 511)
    with pytest.raises(IbraYoloError, match="from float16"):  # M = 2047 > 1023
        codes_from_outputs(torch.zeros(4, dtype=torch.float16), 1.0, 2047)


@pytest.mark.parametrize("spike_driven", [False, True])
def test_meter_never_runs_a_neuron_again(spike_driven):
    # measure() costs one forward because the meter only observes: over 3 batches every integer neuron runs exactly
    # as in a plain forward: integer mode calls its forward 3 times and spike_codes() never; spike-driven mode calls
    # spike_codes() 3 times (the spike-driven forward's own) and its forward never.
    model = randomize_(mini(lambda: IBRALIF(T=1), 1), seed=1)
    neurons = [m for m in model.modules() if isinstance(m, IntegerLIF)]
    calls = {id(n): {"forward": 0, "codes": 0} for n in neurons}
    hooks = [n.register_forward_pre_hook(lambda m, a: calls[id(m)].__setitem__("forward", calls[id(m)]["forward"] + 1))
             for n in neurons]  # fmt: skip
    for n in neurons:

        def codes(x, n=n):
            calls[id(n)]["codes"] += 1
            return IntegerLIF.spike_codes(n, x)

        n.spike_codes = codes  # an instance attribute: counts the calls, then defers to the method
    measure(model, torch.rand(6, 3, 32, 32), batch=2, spike_driven=spike_driven, progress=False)
    for h in hooks:
        h.remove()
    for n in neurons:
        del n.spike_codes
    expected = {"forward": 0, "codes": 3} if spike_driven else {"forward": 3, "codes": 0}
    # mini: AllConvBlock 5 neurons, Downsample 1, ConvBlock 5, SPPF 2
    assert len(neurons) == 13 and all(c == expected for c in calls.values())


@pytest.mark.parametrize("spike_driven", [False, True])
def test_counts_do_not_depend_on_the_meters_chunks(monkeypatch, spike_driven):
    # The meter reads each observed tensor in chunks of CHUNK elements (2**18: the whole tensor here). With chunks of
    # 1000 elements, which split every layer's input at odd places, every count must be the same, to the last code.
    import ibra_yolo.energy.meter as meter

    model = randomize_(mini(lambda: IBRALIF(T=1), 1), seed=1).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    whole = measure(model, x, spike_driven=spike_driven, progress=False).to_dict()
    monkeypatch.setattr(meter, "CHUNK", 1000)
    chunked = measure(model, x, spike_driven=spike_driven, progress=False).to_dict()
    assert chunked == whole and whole["summary"]["SOPs"] > 0 and 0 < whole["summary"]["ActivationSparsity"] < 1


def test_price_gives_other_constants_without_running_the_model():
    # A report keeps its raw counts: priced with another preset it equals a new measurement with that preset, field
    # for field, and the original report is unchanged. Custom values replace the current constants' (E_MAC 4.6 kept).
    model = tiny(nn.Conv2d(4, 6, 3, 2, 1, groups=2, bias=False), lif7())
    r = measure(model, images(), progress=False)
    before = r.to_dict()
    int8 = r.price("45nm-int8")
    assert int8.to_dict() == measure(model, images(), preset="45nm-int8", progress=False).to_dict()
    assert int8.summary()["energy_mJ"] == pytest.approx((0.3 * 6912 + 0.1 * 2592) * 1e-9)
    assert r.to_dict() == before
    custom = r.price(e_ac=0.5)
    assert (custom.constants.name, custom.constants.e_mac, custom.constants.e_ac) == ("custom", 4.6, 0.5)
    assert custom.summary()["energy_mJ"] == pytest.approx((4.6 * 6912 + 0.5 * 2592) * 1e-9)
    with pytest.raises(IbraYoloError, match="positive"):
        r.price(e_mac=0)
    # numpy numbers are the numbers they hold: np.float32 was refused (np.float64, a float subclass, was taken)
    as_np = r.price(e_mac=np.float32(4.5), e_ac=np.float32(0.5))
    assert (as_np.constants.e_mac, as_np.constants.e_ac) == (float(np.float32(4.5)), 0.5)


def test_counting_rules_written_once_and_mode_stated():
    # The JSON and the text table state the counting mode and the very same rules (COUNTING_RULES, the one place they
    # are written); an unknown counting mode is refused by name.
    model = tiny(nn.Conv2d(4, 6, 1, bias=False), lif7())
    r = measure(model, images(), progress=False)
    d = r.to_dict()
    assert d["meta"]["counting"] == d["summary"]["counting"] == "folded"
    assert d["meta"]["counting_rules"] == list(COUNTING_RULES["folded"]) and len(COUNTING_RULES["folded"]) == 7
    text = " ".join(r.table().split())  # the table wraps the rules over lines
    assert "counting rules (folded):" in text and all(
        " ".join(rule.split()) in text for rule in COUNTING_RULES["folded"]
    )
    with pytest.raises(IbraYoloError, match="counting='bogus' is unknown: choose one of folded, executed"):
        EnergyMeter(model, counting="bogus")


def test_data_yaml_by_name_resolves_as_yolo_val_does(monkeypatch, tmp_path):
    # `coco.yaml` is not a file here: as for `yolo val data=coco.yaml`, Ultralytics' check_det_dataset finds its own
    # coco.yaml and looks for the val list under the settings' datasets folder, without downloading. Offline and
    # without COCO, that is one line naming exactly that path.
    from ultralytics.utils import SETTINGS

    monkeypatch.chdir(tmp_path)
    model = tiny(nn.Conv2d(4, 6, 1, bias=False), lif7())
    with pytest.raises(MissingFileError) as e:
        measure(model, "coco.yaml", progress=False)
    assert str(Path(SETTINGS["datasets_dir"]) / "coco" / "val2017.txt") in str(e.value) and "\n" not in str(e.value)


def test_sources_listed_as_ultralytics_lists_them(tmp_path):
    # A data YAML's split, as a folder with images in sub-folders or as a .txt list of ./-relative paths, gives exactly
    # the files Ultralytics' YOLODataset validates (its lister, BaseDataset.get_img_files); a folder given directly is
    # read as `yolo predict source=<folder>` reads it: its own images, not those of sub-folders.
    from ultralytics.data.base import BaseDataset

    val = tmp_path / "images" / "val"
    for rel in ("3.png", "a/1.png", "b/2.jpg"):
        (val / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(val / rel), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "val.txt").write_text("./images/val/a/1.png\n./images/val/3.png\n")
    lister = SimpleNamespace(prefix="", fraction=1.0)
    for split, name in (("images/val", "folder.yaml"), ("val.txt", "list.yaml")):
        (tmp_path / name).write_text(f"path: {tmp_path}\ntrain: {split}\nval: {split}\nnames: {{0: a}}\n")
        expected = BaseDataset.get_img_files(lister, str(tmp_path / split))
        assert list_images(tmp_path / name) == expected and len(expected) == (3 if split == "images/val" else 2)
    assert list_images(val) == [str(val / "3.png")]


def test_a_file_named_like_a_glob_is_measured_once(tmp_path):
    # `--source 'dir/a*b.png'` lists a*b.png and axxb.png; the images are then read from that list, and Ultralytics'
    # loader globs every entry holding a "*": a*b.png matched both files again, so 2 images were measured as 3
    # (battery 16, EN-glob). Each listed file is read exactly once: 2 images, the two files.
    for name in ("a*b.png", "axxb.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    files = list_images(str(tmp_path / "a*b.png"))
    assert sorted(Path(f).name for f in files) == ["a*b.png", "axxb.png"]
    assert sum(len(b) for b in image_batches(files, 32, 4)) == 2
    model = tiny(nn.Conv2d(4, 6, 1, bias=False), lif7())
    assert measure(model, str(tmp_path / "a*b.png"), imgsz=32, progress=False).summary()["images"] == 2
    # a pattern that matches nothing but is the name of an image or folder (the [1] of img[1]*.png matches only "1")
    # is that image or folder, not "No images found" (battery 19, E06); a folder named set[1] is a folder
    folder = tmp_path / "set[1]" / "x*"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "img[1]*.png"), np.zeros((8, 8, 3), np.uint8))
    assert list_images(str(folder / "img[1]*.png")) == [str(folder / "img[1]*.png")]
    assert list_images(str(folder)) == [str(folder / "img[1]*.png")]
    (tmp_path / "d.yaml").write_text(f"path: {tmp_path / 'set[1]'}\ntrain: x*\nval: x*\nnames: {{0: a}}\n")
    assert list_images(tmp_path / "d.yaml") == [str(folder / "img[1]*.png")]


def test_sources_holding_a_device_or_a_missing_split_are_named(tmp_path, shapes_data):
    # battery 28, N20: an image in the source folder that is a link to /dev/zero was "error: .../zero.png does not
    # exist" (Ultralytics' reader tests isfile); E20: a split the dataset lacks was worded twice ("dataset X: dataset X
    # is not usable: ..."), the plugin's dataset check wrapped again by ours.
    folder = tmp_path / "src"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (folder / "zero.png").symlink_to("/dev/zero")
    says = rf"^image {re.escape(str(folder / 'zero.png'))} of {re.escape(str(folder))} is not a regular file \(a dev"
    with pytest.raises(IbraYoloError, match=says):
        list_images(folder)
    says = rf"^dataset {re.escape(str(shapes_data))} is not usable: {re.escape(str(shapes_data))} 'test:' images not"
    with pytest.raises(MissingFileError, match=says):
        list_images(shapes_data, split="test")


# ----------------------------------------------------------------------------------------------------------------------
# Data and CLI
# ----------------------------------------------------------------------------------------------------------------------
def test_cli_writes_files_and_refuses_to_overwrite(shapes_data, tmp_path, python, capsys):
    assert len(list_images(shapes_data)) == 16  # a data YAML means its val split
    out = tmp_path / "out"
    args = ["--weights", "spike-yolo-ibra-n.yaml", "--source", str(shapes_data), "--imgsz", "32", "--batch", "2"]
    p = run([python, "tools/energy.py", *args, "--max-images", "2", "--out", str(out)], cwd=ROOT)
    assert "ANN/SNN" in p.stdout and "45nm-fp32" in p.stdout
    files = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    assert set(files) == {"energy.json", "energy_layers.csv", "energy.png"}
    d = json.loads((out / "energy.json").read_text())
    assert d["summary"]["images"] == 2 and len(d["layers"]) == 89
    assert len((out / "energy_layers.csv").read_text().splitlines()) == 1 + 89
    cli = energy_cli
    assert cli.main([*args, "--max-images", "1", "--out", str(out)]) == 2  # exists: refused before measuring
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "exist" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == files
    assert cli.main([*args, "--max-images", "1", "--out", str(out), "--overwrite", "--preset", "45nm-int8"]) == 0
    assert json.loads((out / "energy.json").read_text())["summary"]["preset"] == "45nm-int8"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--weights", "missing.pt", "--source", "DATA"], "missing.pt does not exist"),
        (["--weights", "spike-yolo-ibra-n.yaml", "--source", "no/such/dir"], "does not exist"),
        (["--weights", "nothing.yaml", "--source", "DATA"], "does not exist"),
        (["--weights", "README.md", "--source", "DATA"], "must be a .pt checkpoint or a model .yaml"),
        (["--weights", "x.pt", "--source", "DATA", "--imgsz", "100"], "multiple of 32"),
        (["--weights", "x.pt", "--source", "DATA", "--preset", "7nm"], "invalid choice"),
        (["--weights", "x.pt", "--source", "DATA", "--e-ac", "-1"], "positive"),
        (["--source", "DATA"], "--weights"),
    ],
)
def test_cli_errors_are_one_line(argv, message, shapes_data, capsys, tmp_path):
    cli = energy_cli
    argv = [str(shapes_data) if a == "DATA" else a for a in argv]
    try:
        status = cli.main([*argv, "--out", str(tmp_path / "o")])
    except SystemExit as e:  # argument errors exit from the parser
        status = e.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
