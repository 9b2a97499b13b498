"""The straight-through gradient's saved mask: bit-packed, exact, and 1/32 of a float32 activation."""

import pytest
import torch

from ibra_yolo import bitmask
from ibra_yolo.neurons import IBLIF, IBRALIF, ILIF, IntegerLIF, quantize_codes


# ---------------------------------------------------------------------------------------------------- bit packing
@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 1001])
def test_pack_round_trip_any_length(n):
    # Lengths that are and are not multiples of 8: the last byte is padded with zero bits and unpack drops them.
    # The numpy path (CPU, eager) and the tensor-op path (GPU, torch.compile) write the same bytes and read each
    # other's.
    g = torch.Generator().manual_seed(n)
    mask = torch.rand(n, generator=g) < 0.5
    packed = bitmask.pack(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8 == bitmask.packed_nbytes(n)
    assert torch.equal(bitmask._pack_torch(mask), packed)
    assert torch.equal(bitmask.unpack(packed, mask.shape), mask)
    assert torch.equal(bitmask._unpack_torch(packed, n), mask)


def test_pack_bit_order_by_hand():
    # Element i goes to bit i % 8 of byte i // 8: [1,0,1,1,0,0,0,0] -> 1 + 4 + 8 = 13; a ninth True -> second byte 1.
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.bool)
    assert bitmask.pack(mask).tolist() == [13, 1] == bitmask._pack_torch(mask).tolist()
    assert bitmask.pack(torch.ones(16, dtype=torch.bool)).tolist() == [255, 255]


def test_pack_under_torch_compile_writes_numpy_bytes():
    # Under torch.compile pack() takes the tensor-op path (inductor's C++ code on a CPU): it must write exactly the
    # bytes numpy's packbits writes for the same mask, padding included (lengths 1, 13 and 8003 are not multiples of
    # 8), and unpack them back, or a compiled training step would take another straight-through gradient than eager.
    pack_c = torch.compile(bitmask.pack, fullgraph=True, dynamic=False)
    unpack_c = torch.compile(bitmask.unpack, fullgraph=True, dynamic=False)
    for n in (1, 13, 8003):
        mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.3
        packed = pack_c(mask)
        assert packed.dtype == torch.uint8 and packed.shape == ((n + 7) // 8,)
        assert torch.equal(packed, bitmask.pack(mask))  # eager on a CPU: numpy
        assert torch.equal(unpack_c(packed, mask.shape), mask)


def test_unpack_refuses_bytes_of_another_mask():
    # one byte unpacked as a 100-element mask gave 8 set bits and 92 invented zeros (battery 15, AC12); a mask of 100
    # elements is packed in ceil(100 / 8) = 13 bytes, and only those unpack to it
    packed = bitmask.pack(torch.ones(100, dtype=torch.bool))
    assert len(packed) == 13 and bool(bitmask.unpack(packed, (100,)).all())
    for bad in (packed[:1], packed.to(torch.int32), packed.view(1, 13)):
        with pytest.raises(ValueError, match=r"a mask of shape \(100,\) is packed in 13 uint8 bytes"):
            bitmask.unpack(bad, (100,))
    with pytest.raises(ValueError, match=r"^numel=-1 is invalid"):
        bitmask.packed_nbytes(-1)


def test_pack_keeps_shape_through_unpack():
    mask = torch.rand(3, 5, 7) > 0.3  # 105 elements: 14 bytes (13 full + 1 with one used bit)
    packed = bitmask.pack(mask)
    assert packed.numel() == 14
    assert torch.equal(bitmask.unpack(packed, mask.shape), mask)


# ---------------------------------------------------------------------------------------------------- exact gradient
def widened(u: torch.Tensor) -> torch.Tensor:
    """``u`` in the precision the quantiser computes in: float64 stays, everything else becomes float32."""
    return u if u.dtype == torch.float64 else u.float()


def reference_grad(u: torch.Tensor, scale: float, max_code: int, above: float, weights: torch.Tensor) -> torch.Tensor:
    """Autograd of the function the STE differentiates, written from the rule, for loss = sum(weights * S).

    In scaled units ``v = scale * u`` (formed in float32, float64 for float64 input, as the quantiser does): slope 1
    where ``0 <= v <= max_code``, ``above`` where ``v > max_code``, 0 below 0 and for NaN.
    """
    u = u.detach().clone().requires_grad_()
    wide = widened(u)
    v = (wide * scale).detach()
    inside, over = (v >= 0) & (v <= max_code), v > max_code
    f = torch.where(inside, wide, torch.where(over, above * wide, 0 * wide)).to(u.dtype)
    (f.float() * weights).sum().backward()
    return u.grad


def edge_inputs(shape, scale, max_code, dtype, seed):
    """Random membranes over [-1, M + 1] in scaled units with exact zeros, values at M / N and two NaN planted."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(shape, generator=g, dtype=torch.float64) * (max_code + 2) - 1
    flat = v.view(-1)
    k = flat.numel()
    flat[torch.randperm(k, generator=g)[: max(k // 10, 4)]] = 0.0  # the lower boundary
    flat[torch.randperm(k, generator=g)[: max(k // 10, 4)]] = float(max_code)  # the upper boundary (see below)
    flat[torch.randperm(k, generator=g)[:2]] = float("nan")
    return (v / scale).to(dtype)


NEURONS = [IBRALIF(), IBRALIF(D=5.11, N=100, ste_above=0.25), IBLIF(bits=4), ILIF(D=4), ILIF(D=4, ste_above=1.0)]


@pytest.mark.parametrize("neuron", NEURONS, ids=lambda n: f"{type(n).__name__}-ste{n.ste_above}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (1, 1001), (1, 2, 8, 8)])  # 105 and 1001 elements: not a multiple of 8
def test_gradient_equals_reference(neuron, dtype, shape):
    u = edge_inputs(shape, neuron.scale, neuron.max_code, dtype, seed=sum(shape))
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    x = u.clone().requires_grad_()
    out = neuron.train()(x)
    (out.float() * w).sum().backward()
    expected = reference_grad(u, neuron.scale, neuron.max_code, neuron.ste_above, w)
    assert torch.equal(x.grad, expected)
    # Both boundaries count as inside: the gradient there is the weight itself. 0 is always exact. M / N survives
    # the round trip through the dtype for N = 1 (and for IBRA-LIF in float32: 5.11f * 100 rounds to 511.0), but not
    # for IBRA-LIF in float64 (5.11 * 100 = 511.00000000000006, just above the range: gradient 0 on both sides).
    v = widened(u) * neuron.scale
    at_zero, at_top = v == 0, v == neuron.max_code
    assert at_zero.any() and torch.equal(x.grad[at_zero], w.to(dtype)[at_zero])
    assert at_top.any() or (neuron.scale != 1 and dtype == torch.float64)
    assert torch.equal(x.grad[at_top], w.to(dtype)[at_top])
    assert (x.grad[torch.isnan(u)] == 0).all()


@pytest.mark.parametrize("neuron", [IBRALIF(), IBRALIF(ste_above=0.25)], ids=["window", "ste_above"])
def test_compiled_gradient_equals_reference(neuron):
    # Under torch.compile the window is not bit-packed (inductor's partitioner decides what backward keeps, and it
    # recomputes the window from the tensors it keeps anyway): the gradient must still be the reference rule exactly,
    # boundaries and NaN included. A BN in front, as in the model, so the window is recomputed from a fused producer.
    shape = (1, 2, 3, 9, 7)  # 378 elements: not a multiple of 8
    u = edge_inputs(shape, neuron.scale, neuron.max_code, torch.float32, seed=3)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    bn = torch.nn.BatchNorm2d(3, affine=False, track_running_stats=False)

    def loss(x, net):
        # BN fused in front; x itself reaches the neuron (0 * finite + x is x, NaN included)
        return (net(bn(x[0].nan_to_num(0.0)).unsqueeze(0) * 0 + x) * w).sum()

    x = u.clone().requires_grad_()
    torch.compile(loss, fullgraph=True, dynamic=False)(x, neuron.train()).backward()
    assert torch.equal(x.grad, reference_grad(u, neuron.scale, neuron.max_code, neuron.ste_above, w))


@pytest.mark.parametrize("neuron", [IBRALIF(T=3), IBRALIF(T=2, ste_above=0.5)], ids=["window", "ste_above"])
def test_gradient_equals_reference_over_time(neuron):
    # T > 1: the membrane carries H[t] = beta * (U[t] - S[t].detach()); the gradient reaches X[t-1] through U[t] with
    # weight beta. Reference: the same recurrence with the reference function in place of the quantiser's gradient.
    T, n = neuron.T, 1001
    x = torch.randn(T, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    w = torch.randn(T, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = x.clone().requires_grad_()
    (neuron.train()(a) * w).sum().backward()

    b = x.clone().requires_grad_()
    n_, m_ = neuron.scale, neuron.max_code
    h, outs = None, []
    for t in range(T):
        u = b[t] if h is None else h + b[t]
        v = (u * n_).detach()
        slope = torch.where((v >= 0) & (v <= m_), 1.0, torch.where(v > m_, neuron.ste_above, 0.0))
        s = quantize_codes(u.detach(), n_, m_) / n_ + slope * (u - u.detach())  # value code / N, gradient slope
        h = neuron.beta * (u - s.detach())
        outs.append(s)
    (torch.stack(outs) * w).sum().backward()
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("above", [0.0, 0.3])
def test_gradient_equals_reference_under_autocast(dtype, above):
    # Under autocast the neuron gets a low-precision membrane (a conv output) and still decides the window in float32.
    conv = torch.nn.Conv2d(3, 5, 3)
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0)) * 3  # 2 * 5 * 7 * 7 = 490 outputs
    n = IBRALIF(ste_above=above).train()
    with torch.autocast("cpu", dtype=dtype):
        u = conv(x)[None].detach()
    assert u.dtype == dtype
    w = torch.randn(u.shape, generator=torch.Generator().manual_seed(1))
    a = u.clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        out = n(a)
    (out.float() * w).sum().backward()
    assert torch.equal(a.grad, reference_grad(u, n.scale, n.max_code, above, w))


# ---------------------------------------------------------------------------------------------------- memory
def saved_bytes(fn, x) -> int:
    """Bytes autograd keeps for the backward of ``fn(x)`` (each storage once)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(seen.values())


@pytest.mark.parametrize("n", [1000, 1001])
def test_saved_memory_is_one_bit_per_element(n):
    # The window mask: ceil(n / 8) bytes (125 for 1000, 126 for 1001), against 4 bytes per element for the float32
    # input and 1 byte for a bool mask. With ste_above a second mask: twice that.
    x = torch.randn(1, n, requires_grad=True)
    assert saved_bytes(IBRALIF().train(), x) == (n + 7) // 8
    assert saved_bytes(IBRALIF(ste_above=0.5).train(), x) == 2 * ((n + 7) // 8)
    assert saved_bytes(IntegerLIF(max_code=7).train(), x) == (n + 7) // 8
