"""Mixed precision: every neuron family trains under float16/bfloat16 autocast, the quantiser keeps computing in
float32, a low precision that merges a neuron's levels is named once, and Ultralytics' own CPU limits are pinned."""

import warnings

import pytest
import torch
from conftest import tiny_model_yaml

from ibra_yolo import precision
from ibra_yolo.neurons import IBLIF, IBRALIF, ILIF, IntegerLIF, quantize_codes


def build(family: str):
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(tiny_model_yaml(family), nc=3, verbose=False).train()
    model.args = get_cfg()
    return model


def batch(n: int = 2, imgsz: int = 32) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(n).repeat_interleave(2).float(),
        "cls": torch.randint(0, 3, (2 * n, 1), generator=g).float(),
        "bboxes": torch.rand(2 * n, 4, generator=g) * 0.4 + 0.3,
    }


@pytest.mark.parametrize(
    "family, dtype",
    [*((f, torch.bfloat16) for f in ("ibra", "ilif", "iblif", "ann")), ("ibra", torch.float16)],
)
def test_training_step_under_autocast(family, dtype):
    # One forward + loss + backward under CPU autocast, as Ultralytics runs a step on a GPU (CPU float16/bfloat16 convs
    # are slow reference loops here: every family under bfloat16, float16 once). Every neuron receives the
    # low-precision membrane and returns its codes / N in that dtype, computed from the float32 membrane: for each
    # neuron, output == (clip(round(N * float32(u)), 0, M) / N).to(dtype) exactly.
    model = build(family)
    seen = []

    def check(m, args, out):
        (u,) = args
        assert u.dtype == dtype and out.dtype == dtype
        codes = quantize_codes(u.float(), m.scale, m.max_code)
        assert torch.equal(out, (codes / m.scale).to(dtype))
        seen.append(m)

    neurons = [m for m in model.modules() if isinstance(m, IntegerLIF)]
    hooks = [m.register_forward_hook(check) for m in neurons]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the level warning has its own test
        with torch.autocast("cpu", dtype=dtype):
            loss, items = model(batch())
        loss.sum().backward()
    for h in hooks:
        h.remove()
    assert torch.isfinite(loss).all() and loss.sum() > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # every neuron of the tiny model ran once: AllConvBlock 5 (SepConv 3 + 2 SConv), Downsample 1, ConvBlock 5,
    # Downsample 1, SPPF 2, two SConv 2, head 2 levels x 2 branches x 3 = 12: 28
    assert len(seen) == len(neurons) == (0 if family == "ann" else 28)


# ---------------------------------------------------------------------------------------------------- levels
@pytest.mark.parametrize(
    "neuron, fp16, bf16",
    [
        # IBRA-LIF: levels k / 100 up to 5.11. float16 spacing in [4, 8) is 2**-8 = 0.0039 < 0.01: all apart.
        # bfloat16 spacing there is 2**-5 = 0.031 > 0.01: merged.
        (IBRALIF(), True, False),
        # I-LIF codes 0..4 and IB-LIF 8 bits (0..255) are exact integers in both.
        (ILIF(D=4), True, True),
        (IBLIF(bits=8), True, True),
        # 9 bits: 257 is not a bfloat16 (8 significant bits hold integers exactly only up to 256).
        (IBLIF(bits=9), True, False),
        # 12 bits: 2049 is not a float16 (11 significant bits: exact integers up to 2048).
        (IBLIF(bits=12), False, False),
    ],
    ids=["IBRA-LIF", "I-LIF", "IB-LIF-8", "IB-LIF-9", "IB-LIF-12"],
)
def test_which_precisions_hold_the_levels(neuron, fp16, bf16):
    assert precision.holds_levels(neuron.max_code, neuron.scale, torch.float16) is fp16
    assert precision.holds_levels(neuron.max_code, neuron.scale, torch.bfloat16) is bf16


def test_bfloat16_merging_levels_warns_once(monkeypatch):
    # IBRA-LIF under bfloat16 autocast: one warning naming the neuron, the dtype and the worst rounding, 1.5 levels
    # (bfloat16 spacing near 5.11 is 2**-5 = 0.03125, half of it is 0.0156 = 1.56 levels of 0.01; the largest
    # |rounded - exact| over all 512 codes is exactly 1.5 levels). Further calls, other IBRA-LIF instances and float16
    # stay silent; I-LIF under bfloat16 too (its levels are exact).
    monkeypatch.setattr(precision, "_warned", set())
    x = torch.rand(1, 2, 8) * 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            IBRALIF()(x)
            IBRALIF()(x)
            ILIF()(x)
        with torch.autocast("cpu", dtype=torch.float16):
            IBRALIF()(x)
        IBRALIF()(x.bfloat16())  # a bfloat16 model without autocast: the same condition, already reported
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert messages[0].startswith("IBRALIF (codes 0..511, 100 levels per unit) runs under bfloat16")
    assert "rounded by up to 1.5 levels" in messages[0] and "amp=True (float16)" in messages[0]


# ---------------------------------------------------------------------------------------------------- Ultralytics
def test_ultralytics_amp_on_cpu():
    # What `yolo train device=cpu amp=...` does in Ultralytics 8.4 (the README states it): its autocast helper refuses
    # bfloat16 off CUDA (the trainer calls it at the first batch, so amp='bf16' stops there), and check_amp turns
    # amp=True (float16) off on a CPU, so CPU training runs in float32.
    from ultralytics.utils.checks import check_amp
    from ultralytics.utils.torch_utils import autocast

    with pytest.raises(RuntimeError, match="bfloat16 autocast requires CUDA"):
        autocast(torch.bfloat16, device="cpu")
    assert check_amp(torch.nn.Conv2d(3, 3, 1)) is False


def test_level_warning_costs_no_graph_break(monkeypatch):
    # The check runs while torch.compile traces (assume_constant_result), not inside the graph: a conv -> IBRA-LIF ->
    # conv stack under bfloat16 autocast traces as one graph and still warns, once.
    monkeypatch.setattr(precision, "_warned", set())
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Unflatten(0, (1, 2)), IBRALIF(),
                              torch.nn.Flatten(0, 1), torch.nn.Conv2d(4, 2, 1))  # fmt: skip
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught, torch.autocast("cpu", dtype=torch.bfloat16):
        warnings.simplefilter("always")
        e = torch._dynamo.explain(net)(torch.rand(2, 3, 8, 8))
    assert (e.graph_count, e.graph_break_count) == (1, 0)
    assert len(caught) == 1 and "runs under bfloat16" in str(caught[0].message)
