"""The integer neurons: quantiser tables, dynamics, gradients, autocast, planes, export and parameter checks."""

import copy
import io
import re

import numpy as np
import pytest
import torch

from ibra_yolo.neurons import (
    IBLIF,
    IBRALIF,
    ILIF,
    IntegerLIF,
    NonFiniteError,
    from_planes,
    make_neuron,
    plane,
    plane_weights,
    to_planes,
)


def t1(values):
    """A [T=1, N] float32 input."""
    return torch.tensor([values], dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------- quantiser tables
# IBRA-LIF (D=5.11, N=100, M=511): code = clip(round(100*U), 0, 511). 0.49 -> 0, 0.51 -> 1, 510.4 -> 510,
# 510.6 -> 511, 1e8 -> clipped to 511, -300 -> 0; 0.125 -> 12.5 -> 12 and 0.135 -> 13.5 -> 14 (round half to even).
IBRA_TABLE = [(0.0049, 0), (0.0051, 1), (5.104, 510), (5.106, 511), (1e6, 511), (-3.0, 0), (0.125, 12), (0.135, 14)]
# IB-LIF (bits=3, M=7): code = clip(round(U), 0, 7): no range alignment, so U in [0, 1) only reaches codes 0 and 1.
IBLIF_TABLE = [(0.49, 0), (0.51, 1), (2.5, 2), (3.5, 4), (6.4, 6), (6.6, 7), (9.0, 7), (-3.0, 0), (0.9, 1)]
# I-LIF (D=4): code = round(clip(U, 0, 4)).
ILIF_TABLE = [(0.49, 0), (0.51, 1), (2.5, 2), (3.49, 3), (3.51, 4), (4.6, 4), (1e6, 4), (-3.0, 0)]


@pytest.mark.parametrize(
    "neuron, table, scale",
    [(IBRALIF(), IBRA_TABLE, 100.0), (IBLIF(bits=3), IBLIF_TABLE, 1.0), (ILIF(), ILIF_TABLE, 1.0)],
    ids=["IBRA-LIF", "IB-LIF", "I-LIF"],
)
def test_codes_table(neuron, table, scale):
    u, expected = t1([x for x, _ in table]), torch.tensor([[c for _, c in table]], dtype=torch.int32)
    assert torch.equal(neuron.codes(u), expected)
    assert torch.equal(neuron(u), expected.float() / scale)  # output is the real value code / N


def test_neuron_attributes():
    n = IBRALIF()
    assert (n.max_code, n.bits, n.encoding, n.scale, n.num_planes) == (511, 9, "binary", 100.0, 9)
    assert abs(n.D - 5.11) < 1e-12
    b = IBLIF(bits=6)
    assert (b.max_code, b.bits, b.encoding, b.scale, b.num_planes) == (63, 6, "binary", 1.0, 6)
    i = ILIF(D=4)
    assert (i.max_code, i.bits, i.encoding, i.scale, i.num_planes) == (4, 3, "unary", 1.0, 4)


@pytest.mark.parametrize(
    "make, generic",
    [
        (lambda T: IBRALIF(D=2.55, N=100, T=T, beta=0.5), lambda T: IntegerLIF(255, 100.0, "binary", T, 0.5)),
        (lambda T: IBLIF(bits=3, T=T), lambda T: IntegerLIF(7, 1.0, "binary", T)),
        (lambda T: ILIF(D=3, T=T), lambda T: IntegerLIF(3, 1.0, "unary", T)),
    ],
    ids=["IBRA-LIF", "IB-LIF", "I-LIF"],
)
def test_families_only_translate_parameters(make, generic):
    # The three neurons are IntegerLIF with their (M, N, encoding): IBRA-LIF(D=2.55, N=100) is M = round(255.0) = 255,
    # IB-LIF(3 bits) is M = 7, N = 1, I-LIF(D=3) is M = 3, unary. Same outputs, codes, planes, spike counts and
    # gradients as the generic neuron at T = 3, on inputs that cross the clip bounds and the rounding steps.
    x = (torch.randn(3, 2, 50, generator=torch.Generator().manual_seed(0)) * 4).requires_grad_()
    a, b = make(3).train(), generic(3).train()
    assert isinstance(a, IntegerLIF) and type(a) is not IntegerLIF
    out_a, out_b = a(x), b(x)
    (ga,) = torch.autograd.grad(out_a.sum(), x)
    (gb,) = torch.autograd.grad(out_b.sum(), x)
    assert torch.equal(out_a, out_b) and torch.equal(ga, gb)
    codes = a.codes(x.detach())
    assert torch.equal(codes, b.codes(x.detach())) and 0 < int(codes.max()) == a.max_code  # clipping reached
    assert torch.equal(a.to_planes(codes), b.to_planes(codes))
    assert torch.equal(a.spikes_per_code(codes), b.spikes_per_code(codes))


# ---------------------------------------------------------------------------------------------------- dynamics
def test_three_step_trace_ibra():
    # U1 = 0.123 -> 12.3 -> code 12, S = 0.12, H1 = 0.25 * (0.123 - 0.12) = 0.00075
    # U2 = 0.00075 + 0.456 = 0.45675 -> 45.675 -> 46, S = 0.46, H2 = 0.25 * (0.45675 - 0.46) = -0.0008125
    # U3 = -0.0008125 + 5.2 = 5.1991875 -> 519.9 -> clipped to 511, S = 5.11
    n = IBRALIF(T=3)
    x = torch.tensor([[0.123], [0.456], [5.2]])
    assert n.codes(x).flatten().tolist() == [12, 46, 511]
    assert torch.allclose(n(x).flatten(), torch.tensor([0.12, 0.46, 5.11]))


def test_three_step_trace_ilif():
    # U1 = 1.6 -> 2, H1 = 0.25 * (1.6 - 2) = -0.1; U2 = -0.1 + 0.3 = 0.2 -> 0, H2 = 0.05; U3 = 5.05 -> clipped to 4
    n = ILIF(D=4, T=3)
    x = torch.tensor([[1.6], [0.3], [5.0]])
    assert n(x).flatten().tolist() == [2.0, 0.0, 4.0]


def test_leak_beta_matters():
    # beta = 0 is a reset-to-zero neuron with no memory: each step is just Q(X[t]).
    x = torch.tensor([[0.4], [0.4]])
    assert ILIF(T=2, beta=0.0)(x).flatten().tolist() == [0.0, 0.0]
    # beta = 1: H1 = 0.4, U2 = 0.8 -> 1
    assert ILIF(T=2, beta=1.0)(x).flatten().tolist() == [0.0, 1.0]


def test_no_state_between_calls_and_deepcopy():
    n = IBRALIF(T=2)
    x = torch.rand(2, 3, 4, requires_grad=True)
    a = n.train()(x)
    a.sum().backward()
    assert not [k for k, v in vars(n).items() if isinstance(v, torch.Tensor)]
    assert len(n.state_dict()) == 0
    m = copy.deepcopy(n)  # works after a forward with gradients (EMA, checkpoints, export copy models)
    assert torch.equal(m(x.detach()), n(x.detach()))
    assert torch.equal(n(x.detach()), a.detach())  # a second call sees no leftover membrane


def test_time_dimension_checked():
    with pytest.raises(ValueError, match=r"T=2"):
        IBRALIF(T=2)(torch.zeros(3, 4))


# ---------------------------------------------------------------------------------------------------- gradients
def test_gradient_window():
    # STE: dS/dU = 1 inside the representable range [0, M/N] = [0, 5.11], else 0.
    n = IBRALIF().train()
    u = t1([-0.01, 0.0, 2.0, 5.109, 5.111, 100.0]).requires_grad_()
    n(u).sum().backward()
    assert u.grad.flatten().tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    i = ILIF(D=4).train()
    u = t1([-0.5, 0.2, 3.9, 4.1]).requires_grad_()
    i(u).sum().backward()
    assert u.grad.flatten().tolist() == [0.0, 1.0, 1.0, 0.0]


def test_gradient_through_membrane():
    # S2 depends on X1 through H1 = beta * (U1 - S1.detach()): dS2/dX1 = beta = 0.25, so dX1 = 1 + 0.25.
    n = IBRALIF(T=2).train()
    x = torch.tensor([[0.5], [0.5]], requires_grad=True)
    n(x).sum().backward()
    assert torch.allclose(x.grad.flatten(), torch.tensor([1.25, 1.0]))


# ---------------------------------------------------------------------------------------------------- autocast
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_codes_exact(dtype):
    # Every representable low-precision value in [-0.2, 5.3]: the codes must equal round(100 * u) computed in
    # float32 from that same value. Computing 100 * u in the low precision itself gets some of them wrong.
    u = torch.arange(-0.2, 5.3, 1e-4).to(dtype).unique()
    reference = torch.clamp(torch.round(u.float() * 100), 0, 511).to(torch.int32)
    naive = torch.clamp(torch.round(u * 100), 0, 511).to(torch.int32)
    assert (naive != reference).any(), "the low-precision product should be wrong somewhere (else the test is vacuous)"
    n = IBRALIF()
    with torch.autocast("cpu", dtype=dtype):
        codes = n.codes(u[None])
        out = n.train()(u[None].requires_grad_())
    assert torch.equal(codes[0], reference)
    assert out.dtype == dtype  # same dtype as the input, as autocast expects
    assert torch.equal(out[0], (reference.float() / 100).to(dtype))


def test_autocast_through_conv():
    conv = torch.nn.Conv2d(3, 8, 3)
    x = torch.randn(2, 3, 16, 16)
    n = IBRALIF()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        assert y.dtype == torch.bfloat16
        codes = n.codes(y[None])
    assert torch.equal(codes[0], torch.clamp(torch.round(y.float() * 100), 0, 511).to(torch.int32))


# ---------------------------------------------------------------------------------------------------- planes
@pytest.mark.parametrize("neuron", [IBRALIF(), IBLIF(bits=4), ILIF(D=4), ILIF(D=7)], ids=lambda n: repr(n))
def test_planes_round_trip_all_codes(neuron):
    codes = torch.arange(neuron.max_code + 1, dtype=torch.int32)
    planes = neuron.to_planes(codes)
    assert planes.shape == (neuron.num_planes, neuron.max_code + 1)
    assert set(planes.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(neuron.from_planes(planes).to(torch.int32), codes)
    # weighted planes give the neuron's real output code / N
    w = torch.tensor(neuron.plane_weights(), dtype=torch.float64)
    assert torch.allclose(torch.tensordot(w, planes.double(), dims=1), codes.double() / neuron.scale, atol=1e-12)
    # spikes per code: popcount (binary) or the code (unary)
    expected = (
        [bin(c).count("1") for c in range(neuron.max_code + 1)] if neuron.encoding == "binary" else codes.tolist()
    )
    assert neuron.spikes_per_code(codes).tolist() == expected


def test_plane_helpers_by_hand():
    # 5 = 0b101 -> binary planes [1, 0, 1]; unary (M=4) thermometer [1, 1, 1, 1] for 4, [1, 1, 0, 0] for 2
    assert to_planes(torch.tensor([5]), 7, "binary").flatten().tolist() == [1, 0, 1]
    assert to_planes(torch.tensor([4, 2]), 4, "unary").tolist() == [[1, 1], [1, 1], [1, 0], [1, 0]]
    assert from_planes(torch.tensor([[1.0], [0.0], [1.0]]), "binary").tolist() == [5.0]
    assert plane_weights(511, "binary", 100) == [2**j / 100 for j in range(9)]
    assert plane_weights(4, "unary") == [1.0] * 4


# ---------------------------------------------------------------------------------------------------- export
EDGE_INPUT = torch.tensor([[[0.0049, 0.0051, 5.104, 5.106, 1e6, -3.0, 0.125, 0.135]]])


@pytest.mark.parametrize("neuron", [IBRALIF(T=2), ILIF(T=2)], ids=["IBRA-LIF", "I-LIF"])
def test_onnx_export_matches_torch(neuron):
    import onnx
    import onnxruntime as ort

    neuron.eval()
    x = torch.randn(2, 1, 64) * 3
    f = io.BytesIO()
    torch.onnx.export(neuron, (x,), f, input_names=["x"], output_names=["s"], opset_version=17, dynamo=False)
    proto = onnx.load_from_string(f.getvalue())
    ops = {node.op_type for node in proto.graph.node}
    assert {"Round", "Clip"} <= ops and not any("Python" in op for op in ops), ops
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    probe = torch.cat([torch.randn(2, 1, 56) * 3, EDGE_INPUT.expand(2, 1, 8)], -1)
    (out,) = session.run(None, {"x": probe.numpy()})
    np.testing.assert_array_equal(out, neuron(probe).numpy())  # same float32 ops: bit-identical


def test_torchscript_trace():
    n = IBRALIF(T=2).eval()
    traced = torch.jit.trace(n, torch.randn(2, 3, 5))
    x = torch.randn(2, 3, 5) * 4
    assert torch.equal(traced(x), n(x))


# ---------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: IBRALIF(N=0), "N"),
        (lambda: IBRALIF(N=-100), "N"),
        (lambda: IBRALIF(D=0), "D"),
        (lambda: IBRALIF(D=-1.0), "D"),
        (lambda: IBRALIF(T=0), "T"),
        (lambda: IBRALIF(beta=1.5), "beta"),
        (lambda: ILIF(beta=-0.1), "beta"),
        (lambda: ILIF(D=4.5), "D"),
        (lambda: ILIF(D=0), "D"),
        (lambda: IBLIF(bits=0), "bits"),
        (lambda: IBLIF(bits=2.5), "bits"),
        # codes are computed in float32, which holds every integer only up to 2**24: larger ranges are refused
        (lambda: IBLIF(bits=25), "bits"),
        (lambda: IBLIF(bits=40), "bits"),
        (lambda: IBLIF(bits=True), "bits"),  # a boolean is not a number of bits
        (lambda: IntegerLIF(max_code=True), r"max_code \(M\)"),
        (lambda: IntegerLIF(max_code=2**70), r"max_code \(M\)"),
        (lambda: IntegerLIF(max_code=2**24 + 1), r"max_code \(M\)"),
        (lambda: IBRALIF(D=2e5, N=100), r"N\*D"),  # M = 2e7 > 2**24
        (lambda: IBRALIF(D=1e300, N=1e30), r"N\*D"),  # N*D overflows to inf
        # N is multiplied in float32: 1e39 is inf there, and 0 * inf = NaN made every zero membrane NaN
        (lambda: IBRALIF(D=1e-38, N=1e39), "N"),
        (lambda: IntegerLIF(max_code=10, scale=1e39), r"scale \(N\)"),
        # 1e-46 is 0 in float32: codes / 0 made every output NaN
        (lambda: IntegerLIF(max_code=10, scale=1e-46), r"scale \(N\)"),
        (lambda: IBRALIF(D=1e46, N=1e-46), "N"),
        # N = 1.2e-38 fits float32, but M / N = 2**24 / 1.2e-38 = 1.4e45 does not: the top output would be inf
        (lambda: IntegerLIF(max_code=2**24, scale=1.2e-38), r"M / N"),
        (lambda: ILIF(D=2**25), "D"),
        # an int beyond float64: math.isfinite raised OverflowError, naming no parameter (battery 28, PA04)
        (lambda: IBRALIF(D=10**400), "D"),
        (lambda: IBRALIF(N=10**400), "N"),
        (lambda: IBRALIF(ste_above=-0.1), "ste_above"),
        (lambda: IBRALIF(ste_above=1.5), "ste_above"),
        (lambda: ILIF(ste_above=float("nan")), "ste_above"),
    ],
)
def test_invalid_parameters(make, name):
    with pytest.raises(ValueError, match=rf"^{name}=") as e:
        make()
    assert "must be" in str(e.value)  # names the allowed range


def test_make_neuron():
    n = make_neuron({"kind": "IBRALIF", "D": 5.11, "N": 100, "beta": 0.25}, T=2)
    assert isinstance(n, IBRALIF) and n.T == 2 and n.max_code == 511
    assert isinstance(make_neuron({"kind": "i-lif", "D": 4}), ILIF)  # case and dashes do not matter
    with pytest.raises(ValueError, match="kind='LIF9' is unknown"):
        make_neuron({"kind": "LIF9"})
    with pytest.raises(ValueError, match=r"\['K'\] unknown"):
        make_neuron({"kind": "IBLIF", "K": 4})
    relu = make_neuron({"kind": "ReLU"})
    x = torch.tensor([-1.0, 2.0])
    assert relu(x).tolist() == [0.0, 2.0] and x.tolist() == [-1.0, 2.0]  # never in-place


def test_largest_float32_scale_still_gives_finite_outputs():
    # N = 3e38 < float32 max (3.4e38) is accepted: 0 * N = 0, and any positive membrane clips to M = round(3e38 * 1e-38)
    n = IBRALIF(D=1e-38, N=3e38)
    assert n.max_code == 3
    out = n(t1([0.0, 1.0, -1.0]))
    assert torch.isfinite(out).all() and n.codes(t1([0.0, 1.0, -1.0])).tolist() == [[0, 3, 0]]


@pytest.mark.parametrize(
    "spec, T, says",
    [
        ({"kind": "ReLU"}, 0, "T=0 is invalid: T must be an integer >= 1"),  # the ANN twin refused nothing before
        ({"kind": "SiLU"}, "x", "T='x' is invalid"),
        # IntegerLIF has no default max_code: a TypeError from its constructor escaped every check before
        ({"kind": "IntegerLIF"}, 1, "neuron kind='IntegerLIF' needs max_code (no default)"),
    ],
)
def test_make_neuron_refuses_what_the_class_would_not_say(spec, T, says):
    with pytest.raises(ValueError) as e:
        make_neuron(spec, T=T)
    assert says in str(e.value)


@pytest.mark.parametrize(
    "x",
    [
        torch.tensor([[1, 2, 7]]),  # int64: the output was cast back to int, 5.11 -> 5
        torch.tensor([[255, 3]], dtype=torch.uint8),
        torch.tensor([[True, False]]),
        torch.tensor([[1 + 2j, 3 - 1j]]),  # complex: the imaginary part was dropped with only a torch warning
        torch.tensor([[0.03, 5.11, 2.5]]).to(torch.float8_e4m3fn),  # 3 mantissa bits: 5.11 became 5.0 without a word
    ],
)
def test_input_currents_must_be_real_floats(x):
    for call in (IBRALIF(), IBRALIF().codes, IBRALIF().spike_codes):
        with pytest.raises(
            ValueError, match=rf"^IBRALIF expects float16/32/64 or bfloat16 input currents, got {x.dtype}$"
        ):
            call(x)


def test_a_huge_aliased_value_is_quoted_briefly():
    # YAML aliases can build a value of 9**6 items from a few lines; quoting it in full never ended
    bomb = [1] * 9
    for _ in range(6):
        bomb = [bomb] * 9
    with pytest.raises(ValueError) as e:
        make_neuron({"kind": "IBRALIF", "beta": bomb})
    assert str(e.value).startswith("beta=[[[...], [...], [...], [...], ...], ") and len(str(e.value)) < 400, str(
        e.value
    )


def test_meta_tensors_pass_shape_only():
    # a meta tensor has no autocast state; the neuron must still propagate shapes (used to trace model sizes)
    out = IBRALIF()(torch.empty(1, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (1, 3)


@pytest.mark.parametrize(
    "codes, error, says",
    [
        (torch.tensor([600, 3]), ValueError, "code 600 is outside 0..511"),  # bit 9 was silently dropped
        (torch.tensor([-3, 3]), ValueError, "code -3 is outside 0..511"),  # became all ones
        (torch.tensor([-1]), NonFiniteError, "NAN_CODE"),  # a NaN membrane's mark
        (torch.tensor([3.7]), ValueError, "hold 3.7"),  # a fraction was truncated to 3
        (torch.tensor([float("nan")]), NonFiniteError, "hold NaN or inf"),
        (torch.tensor([1 + 1j]), ValueError, "complex64"),
    ],
)
def test_to_planes_refuses_invalid_codes(codes, error, says):
    with pytest.raises(error, match=re.escape(says)):
        to_planes(codes, 511, "binary")
    with pytest.raises(error, match=re.escape(says)):
        IBRALIF().planes_used(codes)


def test_public_plane_helpers_take_wide_codes_and_check_their_arguments():
    # to_planes/plane took their bits in int32 while accepting codes up to 2**62: 2**33 + 5 came back as 5 and bit 32
    # of 2**32 read 0. The checked helpers work in int64; the neurons' own hot path keeps int32 (codes <= 2**31 - 1).
    from ibra_yolo.neurons import lif_multistep, num_planes, quantize_codes

    codes = torch.tensor([2**33 + 5, 2**40])
    assert from_planes(to_planes(codes, 2**40, "binary"), "binary").tolist() == [2**33 + 5, 2**40]
    assert plane(torch.tensor([2**32]), 32, "binary").tolist() == [1.0]
    # max_code must be a whole number >= 0: 511.5 let a code of 512 through, NaN gave NaN codes, True read as 1
    # (and 2**70: torch's OverflowError inside clamp, battery 25 P11)
    for bad in (511.5, float("nan"), True, -3, "511", 2**70):
        says = f"max_code={bad!r} is invalid: it must be a whole number in 0..2**53"
        with pytest.raises(ValueError, match=re.escape(says)):
            quantize_codes(torch.tensor([600.0]), 1.0, bad)
        with pytest.raises(ValueError, match=re.escape(f"max_code={bad!r} is invalid")):
            num_planes(bad, "binary")
    assert quantize_codes(torch.tensor([600.0, 2.4]), 1.0, 511.0).tolist() == [511.0, 2.0]  # a whole float is fine
    for scale in (0, -1.0, float("inf")):  # scale 0 divided by zero inside
        with pytest.raises(ValueError, match=re.escape(f"scale={scale!r} is invalid: it must be a finite number > 0")):
            plane_weights(511, "binary", scale)
    fire = torch.relu
    with pytest.raises(ValueError, match=r"x of shape \(0, 2\) has no timesteps"):  # torch.stack of nothing
        lif_multistep(torch.ones(0, 2), fire, 0.25)
    for beta in (1.5, "0.5", torch.tensor(5.0)):  # a string was torch's TypeError, a tensor 5.0 was used as it is
        with pytest.raises(ValueError, match=rf"^beta={re.escape(repr(beta))} is invalid: the membrane decay must be"):
            lif_multistep(torch.ones(2, 1), fire, beta)
    # steps is T, known in advance: steps=1 on 3 timesteps ran the first only and gave [0, 0, 0]
    with pytest.raises(ValueError, match=r"^steps=1 is invalid: x of shape \(3, 1\) holds 3 timesteps"):
        lif_multistep(torch.ones(3, 1), fire, 0.5, steps=1)
    with pytest.raises(ValueError, match=r"^x of shape list has no timesteps: expected a tensor"):
        lif_multistep([1.0, 2.0], fire, 0.5)
    # fire=None was "'NoneType' object is not callable" inside; a fire that drops elements returned shape (3, 1) for
    # an input of (3, 2) (battery 12, A34/A48)
    with pytest.raises(TypeError, match=r"^fire=None is not callable: pass the quantiser U -> S"):
        lif_multistep(torch.ones(3, 2), None, 0.5)
    with pytest.raises(ValueError, match=r"^fire returned \(1,\) for a membrane of shape \(2,\): it must keep"):
        lif_multistep(torch.ones(3, 2), lambda u: u[:1], 0.5)
    # a bool spike mask (a natural threshold, u > 0.5) was torch's NotImplementedError from U - S inside coding.py, not
    # naming fire (battery 26, P42); an integer mask would give integer outputs. Any float dtype is taken:
    # (u > th).float() is float32 for a float16 membrane under autocast
    for mask in (lambda u: u > 0.5, lambda u: (u > 0.5).long()):
        says = r"^fire=.*<lambda> returned a torch\.(bool|int64) tensor for a torch\.float32 membrane: spikes must be"
        with pytest.raises(ValueError, match=says + r" floating point"):
            lif_multistep(torch.ones(2, 3), mask, 0.5)
    with pytest.raises(ValueError, match=r"returned a torch\.bool tensor"):  # T = 1 returns S as it is: checked too
        lif_multistep(torch.ones(1, 3), lambda u: u > 0.5, 0.5)
    half = lif_multistep(torch.ones(2, 1, dtype=torch.float16), lambda u: (u > 0.5).float(), 0.5)
    assert half.tolist() == [[1.0], [1.0]]  # U1 = 1, S1 = 1, H1 = 0; U2 = 1, S2 = 1
    # a numpy array was "'numpy.ndarray' object has no attribute 'float'"; complex input dropped its imaginary part
    with pytest.raises(ValueError, match=r"^u is a ndarray: membrane potentials are a real .* torch tensor"):
        quantize_codes(np.array([1.0]), 100.0, 511)
    with pytest.raises(ValueError, match=r"^u is a torch\.complex64 tensor: membrane potentials are a real"):
        quantize_codes(torch.tensor([5.11 + 3j]), 100.0, 511)
    assert plane(torch.tensor([5]), np.int64(2), "binary").tolist() == [1]  # 5 = 0b101: bit 2 is 1
    # battery 11: a scale float32 cannot hold gave NaN codes (1e300 * 0); a Fraction was torch's TypeError; a unary
    # M of 2**40 filled the memory with plane weights; an int8 bits overflowed 2**bits (np.int8(9) gave M = -1)
    with pytest.raises(ValueError, match=r"^scale=1e\+300 is invalid: it must be a finite number > 0 \(at most 3\.4"):
        quantize_codes(torch.tensor([0.0, 1.0]), 1e300, 511)
    from fractions import Fraction

    assert quantize_codes(torch.tensor([0.5]), Fraction(100, 1), 511).tolist() == [50.0]  # 100 * 0.5
    with pytest.raises(ValueError, match=r"^max_code=1099511627776 needs 1099511627776 unary planes: at most 16777216"):
        plane_weights(2**40, "unary")
    assert IBLIF(bits=np.int8(9)).max_code == 511  # 2**9 - 1
    with pytest.raises(NonFiniteError, match=r"hold -1, outside 0\.\.511: it is NAN_CODE, what spike_codes\(\) gives"):
        IBRALIF().to_planes(torch.tensor([-1, 3]))
    # two steps with beta 0.5 and fire = relu: U1 = 1, S1 = 1, H1 = 0; U2 = 0 + 1, S2 = 1
    assert lif_multistep(torch.ones(2, 1), fire, 0.5).tolist() == [[1.0], [1.0]]


def test_numpy_numbers_are_taken_and_stored_as_python_numbers():
    # np.int64(100) was refused as "N must be a number in [...]", a message the value satisfies; they are stored as
    # Python numbers, so a checkpoint pickles plain numbers (weights_only loading refuses numpy scalars)
    n = IBRALIF(D=np.float64(8.0), N=np.int64(100), T=np.int64(2), beta=np.float32(0.5))
    assert (n.max_code, n.scale, n.T, n.beta) == (800, 100.0, 2, 0.5)
    assert [type(v) for v in (n.max_code, n.scale, n.T, n.beta)] == [int, float, int, float]
    assert IBLIF(bits=np.int64(8)).max_code == 255 and type(IBLIF(bits=np.int64(8)).max_code) is int
    assert make_neuron({"kind": "ReLU"}, T=np.int64(2)).T == 2
    from ibra_yolo.neurons import quantize_codes

    with pytest.raises(ValueError, match=r"^scale=-1\.0 is invalid: it must be a finite number > 0"):
        quantize_codes(torch.tensor([1.0, 2.0]), -1.0, 7)  # gave [0, 0]


def test_make_neuron_takes_any_mapping():
    # a read-only mapping (types.MappingProxyType) was refused as "expected a mapping with a 'kind' key"
    from types import MappingProxyType

    neuron = make_neuron(MappingProxyType({"kind": "IBRALIF", "D": 8.0}))
    assert isinstance(neuron, IBRALIF) and neuron.max_code == 800  # D * N = 8.0 * 100


def test_planes_decode_exactly_in_int64():
    # 17 float16 planes of ones: 2**17 - 1 = 131071, which float16 cannot hold (it gave inf); uint8 and int32 planes
    # overflowed in torch's dot product, and bool planes were refused. Codes are whole numbers: int64, any plane dtype.
    for dtype in (torch.float16, torch.uint8, torch.int32, torch.bool):
        assert from_planes(torch.ones(17, 1, dtype=dtype), "binary").tolist() == [2**17 - 1], dtype
        assert from_planes(torch.ones(17, 1, dtype=dtype), "binary").dtype == torch.int64
    assert from_planes(torch.ones(6, 2, dtype=torch.bool), "unary").tolist() == [6, 6]


def test_max_code_zero_has_zero_planes():
    # max_code 0 passes the helpers' check (a whole number >= 0) and num_planes(0) is 0; to_planes then stacked an
    # empty list: torch's "stack expects a non-empty TensorList" (battery 16, AC03). Codes 0..0 take no plane, and
    # those 0 planes decode back to the codes.
    for encoding in ("binary", "unary"):
        planes = to_planes(torch.zeros(2, 3, dtype=torch.int64), 0, encoding)
        assert planes.shape == (0, 2, 3) and planes.dtype == torch.float32
        assert from_planes(planes, encoding).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"^codes: code 1 is outside 0\.\.0$"):
        to_planes(torch.tensor([1]), 0, "binary")  # 1 is no code of 0..0


@pytest.mark.parametrize("encoding", ["Binary", "gray", None])
def test_unknown_encoding_is_refused(encoding):
    # any encoding but 'binary' was silently read as unary: from_planes(1, 1, 1, 'Binary') gave 3 instead of 7
    for call in (lambda: from_planes(torch.ones(3, 1), encoding), lambda: to_planes(torch.tensor([3]), 7, encoding)):
        with pytest.raises(ValueError, match=rf"^encoding={encoding!r} is invalid"):
            call()


@pytest.mark.parametrize(
    "codes, j, says",
    [
        (torch.tensor([5]), -1, "plane index j=-1 is invalid"),  # gave 0.0
        (torch.tensor([3.7]), 0, "hold 3.7"),  # gave 1.0: 3.7 was cut to code 3
        (torch.tensor([float("nan")]), 0, "hold NaN or inf"),  # a NaN code sent a 0 spike
    ],
)
def test_plane_checks_its_arguments(codes, j, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        plane(codes, j, "binary")
    assert plane(torch.tensor([5.0]), 2, "binary").tolist() == [1.0]  # 5 = 0b101: bit 2 is set


def test_a_neuron_decodes_only_its_own_planes():
    # IBRA-LIF sends 9 planes (M = 511): 10 planes of ones decoded to 1023; I-LIF D=4 sends 4 (6 ones gave 6)
    with pytest.raises(ValueError, match=r"^IBRALIF sends 9 planes, got 10$"):
        IBRALIF().from_planes(torch.ones(10, 1))
    with pytest.raises(ValueError, match=r"^ILIF sends 4 planes, got 6$"):
        ILIF(D=4).from_planes(torch.ones(6, 1))
    codes = torch.tensor([0, 37, 511])
    assert IBRALIF().from_planes(IBRALIF().to_planes(codes)).tolist() == [0, 37, 511]


@pytest.mark.parametrize("x", [np.zeros((1, 3), np.float32), [[0.0, 1.0]], torch.zeros(1, 3).to_sparse()])
def test_input_must_be_a_dense_tensor(x):
    # a numpy array or a list was an AttributeError, a sparse tensor a 94-line NotImplementedError
    with pytest.raises(ValueError, match=r"^IBRALIF expects a dense torch.Tensor of input currents, got a "):
        IBRALIF()(x)


def test_from_planes_refuses_non_binary_planes():
    # spikes are 0 or 1: a 2 or a 0.5 was decoded as if it were one (2 * 1 + 0.5 * 2 = 3)
    with pytest.raises(ValueError, match=r"^planes hold 2\.0: spikes are 0 or 1$"):
        from_planes(torch.tensor([[2.0], [0.5]]), "binary")
    with pytest.raises(ValueError, match=r"^planes must be a real \[P, \.\.\.\] tensor"):
        from_planes(torch.tensor(1.0), "binary")
    assert from_planes(to_planes(torch.tensor([5, 511]), 511, "binary"), "binary").tolist() == [5, 511]


def test_planes_used():
    # Only planes up to the largest code carry spikes: 5 = 0b101 needs 3 bit planes; unary code 3 needs 3 steps.
    assert IBRALIF().planes_used(torch.tensor([0, 3, 5])) == 3
    assert IBRALIF().planes_used(torch.tensor([511])) == 9
    assert ILIF(D=4).planes_used(torch.tensor([0, 3, 1])) == 3
    assert ILIF(D=4).planes_used(torch.zeros(4, dtype=torch.int32)) == 0


def test_largest_allowed_range_is_exact():
    # M = 2**24 is the largest range: every code up to it is an exact float32 integer, so the top codes are exact.
    n = IntegerLIF(max_code=2**24)
    u = torch.tensor([[2.0**24 - 1, 2.0**24, 3e7]], dtype=torch.float64)
    assert n.codes(u).tolist() == [[2**24 - 1, 2**24, 2**24]]


# ---------------------------------------------------------------------------------------------------- non-finite
def test_nan_membrane_has_no_code():
    # The real-valued output propagates NaN (as ReLU does), so a non-finite loss or box shows it; the integer code
    # paths refuse it instead of casting NaN to int32 (which gives -2**31, a "code" outside 0..M).
    for n in (ILIF(), IBRALIF(), IBLIF(bits=4)):
        x = t1([float("nan"), 1.0])
        out = n(x)
        assert torch.isnan(out[0, 0]) and out[0, 1] == 1.0
        with pytest.raises(NonFiniteError, match=r"1 membrane potential\(s\) are NaN or infinite"):
            n.codes(x)
    # An infinite membrane (an overflowed current) has no code either: eval outputs NaN for it, as a ReLU passes inf
    # on, where clipping gave M (or 0) without a word (battery 18, P13); the code paths refuse it. A huge finite
    # current still saturates at M (I-LIF M = 4).
    for n in (ILIF(), IBRALIF()):
        x = t1([float("inf"), float("-inf"), 1e30])
        assert torch.isnan(n.eval()(x)[0, :2]).all() and n(x)[0, 2] == n.max_code / n.scale
        with pytest.raises(NonFiniteError, match=r"2 membrane potential\(s\) are NaN or infinite and have no code"):
            n.codes(x)
        assert n.spike_codes(x).tolist() == [[-1, -1, n.max_code]]  # NAN_CODE: spike-driven mode makes it NaN


def test_counting_helpers_refuse_codes_outside_the_range():
    # -5 and 9 are not codes of I-LIF (0..4); a NaN float code is not a code at all. Counting them would give a
    # wrong (even negative) number of spikes or planes.
    n = ILIF(D=4)
    for bad, msg in ((torch.tensor([0, -5]), "code -5 is outside 0..4"), (torch.tensor([9]), "code 9 is outside")):
        with pytest.raises(ValueError, match=msg):
            n.planes_used(bad)
        with pytest.raises(ValueError, match=msg):
            n.spikes_per_code(bad)
    with pytest.raises(NonFiniteError):
        IBRALIF().spikes_per_code(torch.tensor([1.0, float("nan")]))
    # valid codes still count: popcount of 5 = 0b101 is 2, of 511 is 9
    assert IBRALIF().spikes_per_code(torch.tensor([5, 511])).tolist() == [2, 9]


def test_numbers_written_as_strings_are_named():
    # PyYAML (YAML 1.1) reads `D: 1e9` as the string '1e9': say so and how to write it, instead of "must be a number".
    # YAML 1.1 needs both a decimal point and a signed exponent: '1.0e9' is text too (the old hint advised it)
    for text in ("1e9", "1.0e9", "1e+9"):
        with pytest.raises(
            ValueError, match=rf"^D='{re.escape(text)}' is a string, not a number: .* 1\.0e\+9; write that$"
        ):
            make_neuron({"kind": "IBRALIF", "D": text})
    import yaml

    assert yaml.safe_load("D: 1.0e+9")["D"] == 1e9 and isinstance(yaml.safe_load("D: 1.0e9")["D"], str)
    with pytest.raises(ValueError, match=r"^N='100' is a string, not a number: remove the quotes$"):
        make_neuron({"kind": "IBRALIF", "N": "100"})


# ---------------------------------------------------------------------------------------------------- ablation options
def test_ste_above_passes_a_reduced_gradient_above_the_range():
    # IBRA-LIF D=5.11: U = -1 (below 0), 2 (inside [0, D]), 6 and 50 (above D). The paper's window gives gradients
    # 0, 1, 0, 0; with ste_above = 0.25 the two inputs above D get 0.25. Reference: autograd of the piecewise-linear
    # function the STE differentiates, f(U) = 0 below 0, U on [0, D], D + a (U - D) above.
    u0 = torch.tensor([[-1.0, 2.0, 6.0, 50.0]], dtype=torch.float64)
    for a, expected in ((0.0, [0.0, 1.0, 0.0, 0.0]), (0.25, [0.0, 1.0, 0.25, 0.25])):
        u = u0.clone().requires_grad_()
        IBRALIF(ste_above=a)(u).sum().backward()
        assert u.grad.tolist() == [expected]
        ref = u0.clone().requires_grad_()
        D = 5.11
        torch.where(ref < 0, 0 * ref, torch.where(ref <= D, ref, D + a * (ref - D))).sum().backward()
        assert torch.equal(u.grad, ref.grad)
    # the forward (the codes) does not depend on the option
    assert torch.equal(IBRALIF(ste_above=1.0)(u0), IBRALIF()(u0))
    assert make_neuron({"kind": "IBRALIF", "ste_above": 0.5}).config()["ste_above"] == 0.5


def test_clipped_relu_twin():
    # The ANN twin's ReLU clipped at D = 5.11: min(max(x, 0), D), gradient 1 strictly inside (0, D), 0 outside.
    act = make_neuron({"kind": "ReLU", "D": 5.11})
    x = torch.tensor([-1.0, 3.0, 7.0], requires_grad=True)
    y = act(x)
    y.sum().backward()
    assert y.tolist() == pytest.approx([0.0, 3.0, 5.11]) and x.grad.tolist() == [0.0, 1.0, 0.0]
    assert act.config() == {"kind": "ReLU", "D": 5.11}
    with pytest.raises(ValueError, match="takes no parameters"):
        make_neuron({"kind": "SiLU", "D": 5.11})
    # a clip value float32 cannot hold: 1e-320 is 0 in float32, so every output was 0
    for D in (1e-320, 1e39):
        says = rf"^D={re.escape(repr(D))} is invalid: D must be a number in \[1\.175e-38, 3\.403e\+38\]"
        with pytest.raises(ValueError, match=says):
            make_neuron({"kind": "ReLU", "D": D})


def test_codes_of_a_meta_tensor_are_refused_forward_runs():
    # battery 29, PA09: codes() of a meta tensor was torch's "Tensor.item() cannot be called on meta tensors"; a meta
    # tensor holds shapes only: forward (shape inference) still runs on it, counting is refused in one line
    n = IBRALIF()
    x = torch.zeros(1, 2, 3, device="meta")
    assert n(x).shape == (1, 2, 3) and n(x).is_meta
    with pytest.raises(ValueError, match=r"^IBRALIF\.codes: the tensor is on the meta device, which holds no values"):
        n.codes(x)
