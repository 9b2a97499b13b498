"""The integer neurons' functional core (pure torch): the quantiser, the multi-step LIF dynamics and the ``{0, 1}``
spike planes that carry a code over virtual timesteps.

``ibra_yolo.neurons`` builds its modules on these functions and re-exports the public ones; they live here so that
the modules stay one job each (SPEC §2.1 for the maths).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Callable

import torch

from ibra_yolo import bitmask

__all__ = (
    "quantize_codes",
    "lif_multistep",
    "to_planes",
    "from_planes",
    "check_codes",
    "plane",
    "plane_weights",
    "num_planes",
    "is_number",
    "is_int",
    "plain_number",
)

NAN_CODE = -1  # what IntegerLIF.spike_codes() gives a NaN or infinite membrane: not a code (valid codes are 0..M)
ENCODINGS = ("binary", "unary")  # bit planes (weights 2**j) or thermometer planes (weight 1)


def _check_encoding(encoding) -> None:
    if encoding not in ENCODINGS:  # anything else was read as unary
        raise ValueError(f"encoding={encoding!r} is invalid: encoding must be one of {ENCODINGS}")


FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # N beyond it is inf in float32, and 0 * inf = NaN
FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)  # N below it is 0 (or subnormal) in float32: codes / 0 = NaN
MAX_PLANES = 2**24  # the most virtual timesteps plane_weights lists: unary codes up to the neurons' largest M


def is_number(v) -> bool:
    """A finite real number, Python or numpy (not a bool): the argument checks of the neurons and these helpers."""
    if not isinstance(v, Real) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond float64 (10**400): not a number the neurons can hold
        return False


def plain_number(v):
    """A numpy number as the Python ``int``/``float`` it holds (what a module is built with and pickled as); a bool,
    a Python number or anything else unchanged."""
    if isinstance(v, bool) or type(v) in (int, float):
        return v
    return int(v) if is_int(v) else float(v) if isinstance(v, Real) else v


def is_int(v) -> bool:
    """An integer, Python or numpy (not a bool)."""
    return isinstance(v, Integral) and not isinstance(v, bool)


def _check_max_code(max_code) -> None:
    """A static check (no host sync): ``max_code`` is a whole number >= 0 (a bool, 511.5, NaN or -3 gave codes outside
    ``0..M`` or none)."""
    if not (is_number(max_code) and 0 <= max_code <= 2**53 and max_code == int(max_code)):  # 2**70: torch OverflowError
        raise ValueError(f"max_code={max_code!r} is invalid: it must be a whole number in 0..2**53")


def _check_scale(scale) -> None:
    """A finite number > 0 that float32 holds (the quantiser multiplies in float32: 1e300 * 0 gave NaN)."""
    if not (is_number(scale) and 0 < scale <= FLOAT32_MAX):
        raise ValueError(f"scale={scale!r} is invalid: it must be a finite number > 0 (at most {FLOAT32_MAX:.4g})")


def quantize_codes(u: torch.Tensor, scale: float, max_code: int) -> torch.Tensor:
    """Return the integer codes ``clip(round(scale * u), 0, max_code)`` as a float tensor of whole numbers; NaN for a
    NaN or infinite ``u``, which has no code (an overflowed current is not a saturated one: it is not passed on as
    ``M`` or 0 without a word, as a ReLU passes inf on to the boxes).

    The product is formed in float32 (float64 for float64 input) whatever the input dtype (an fp16 ``100 * u`` would
    round codes above 256 wrongly), and ``torch.round`` rounds half to even. Clipping before rounding gives the same
    codes because the bounds are integers.
    """
    _check_max_code(max_code)
    _check_scale(scale)
    scale = float(scale)  # a Fraction or Decimal: torch's TypeError
    if not isinstance(u, torch.Tensor) or u.is_complex():  # a numpy array: AttributeError; complex: imaginary dropped
        what = f"a {u.dtype} tensor" if isinstance(u, torch.Tensor) else f"a {type(u).__name__}"
        raise ValueError(f"u is {what}: membrane potentials are a real (float or integer) torch tensor")
    codes = _scaled(u, scale).clamp_(0, max_code).round_()
    # an infinite membrane has no code either (see NAN_CODE): u * 0 is 0, or NaN for inf/NaN, and adding it is exact;
    # one multiply-add costs +3 % of the n model's eval step, where masked_fill(isinf) cost +12 % (320 px, 1 thread)
    return codes.add_(u.mul(0))


def _scaled(u: torch.Tensor, scale: float) -> torch.Tensor:
    """A new float32 (float64 for float64 input) tensor ``scale * u``: the quantiser never computes in fp16/bf16."""
    wide = u if u.dtype in (torch.float32, torch.float64) else u.float()
    return wide * scale if scale != 1 else wide.clone()


def _codes_to_values(codes: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """Map codes (float32/float64, a tensor this function may overwrite) to the real output ``code / scale``."""
    out = codes if scale == 1 else codes.div_(scale)
    return out.to(dtype)


class _QuantizeSTE(torch.autograd.Function):
    """Quantiser with a straight-through gradient: 1 where ``0 <= scale*u <= max_code``, ``above`` where
    ``scale*u > max_code`` (0 by default: the rectangular window), and 0 below 0 (and for NaN).

    Saves the window as a bit-packed mask (1 bit per element, ``ibra_yolo.bitmask``) instead of the float input, plus a
    second one only when ``above`` is not 0, and reuses one buffer for the clip, round and division. Under
    ``torch.compile`` the masks go to inductor unpacked: its partitioner decides what backward keeps, and recomputes
    the window from tensors it keeps anyway (the BN input before the neuron) fused into the backward kernel. Packing
    there only added work: inductor kept the bytes nowhere and ran pack + unpack inside that kernel, gathering 8
    elements across its channels-last layout per byte (compiled n-model step 1.39x the ANN twin's; issue 14).
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, scale: float, max_code: int, above: float = 0.0) -> torch.Tensor:
        scaled = _scaled(u, scale)
        codes = scaled.clamp(0, max_code)
        masks = (codes == scaled,) if above == 0 else (codes == scaled, scaled > max_code)  # inside; above the range
        ctx.packed = not torch.compiler.is_compiling()
        ctx.save_for_backward(*(bitmask.pack(m) for m in masks) if ctx.packed else masks)
        ctx.shape, ctx.above = u.shape, above
        return _codes_to_values(codes.round_(), scale, u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inside, *over = (bitmask.unpack(p, ctx.shape) if ctx.packed else p for p in ctx.saved_tensors)
        if not over:
            return grad * inside, None, None, None
        return torch.where(inside, grad, grad * ctx.above * over[0]), None, None, None


def lif_multistep(
    x: torch.Tensor, fire: Callable[[torch.Tensor], torch.Tensor], beta: float, steps: int | None = None
) -> torch.Tensor:
    """Run the multi-step LIF dynamics over the leading time dimension of ``x``.

    ``U[t] = H[t-1] + X[t]``, ``S[t] = fire(U[t])``, ``H[t] = beta * (U[t] - S[t].detach())`` with ``H[0] = 0``.

    Args:
        x (torch.Tensor): Input currents ``[T, B, ...]``.
        fire (Callable): The quantiser ``U -> S``.
        beta (float): Membrane decay in ``[0, 1]``.
        steps (int, optional): ``T`` when known in advance (keeps traces free of shape-dependent branches).

    Returns:
        (torch.Tensor): Outputs ``S`` with the shape of ``x``.

    Raises:
        TypeError: ``fire`` is not callable.
        ValueError: A bad ``beta``, ``x`` or ``steps``, or a ``fire`` that changes the shape or returns a tensor that
            is not floating point (a bool or integer mask; any float dtype is taken, as ``(u > th).float()`` gives
            float32 for a float16 membrane under autocast, and torch promotes ``U - S``).
    """
    if not (is_number(beta) and 0 <= beta <= 1):  # NaN, a string or a tensor too (a tensor 5.0 was taken)
        raise ValueError(f"beta={beta!r:.80} is invalid: the membrane decay must be a number in [0, 1]")
    tracing = torch.jit.is_tracing()  # shapes are fixed in a trace: a check on them would only emit TracerWarnings
    if not isinstance(x, torch.Tensor) or (not tracing and (x.dim() < 1 or x.shape[0] < 1)):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x of shape {shape} has no timesteps: expected a tensor [T, B, ...] with T >= 1")
    if steps is not None and not tracing and not (is_int(steps) and steps == x.shape[0]):  # steps=1 ran 1 of 3 steps
        raise ValueError(f"steps={steps!r} is invalid: x of shape {tuple(x.shape)} holds {x.shape[0]} timesteps")
    if not callable(fire):
        raise TypeError(f"fire={fire!r:.80} is not callable: pass the quantiser U -> S")

    def fired(u: torch.Tensor) -> torch.Tensor:
        s = fire(u)
        if not tracing and (not isinstance(s, torch.Tensor) or s.shape != u.shape):  # S[t] replaces U[t]
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"fire returned {got} for a membrane of shape {tuple(u.shape)}: it must keep the shape")
        if not s.is_floating_point():  # a bool mask (u > th) was torch's NotImplementedError at U - S (battery 26, P42)
            name = str(getattr(fire, "__qualname__", type(fire).__name__)).rpartition("<locals>.")[2]
            raise ValueError(
                f"fire={name:.80} returned a {s.dtype} tensor for a {u.dtype} membrane: spikes must be floating "
                f"point (e.g. (u > th).to(u.dtype))"
            )
        return s

    if (x.shape[0] if steps is None else steps) == 1:
        return fired(x)
    h, out = None, []
    for xt in x.unbind(0):
        u = xt if h is None else h + xt
        s = fired(u)
        h = beta * (u - s.detach())
        out.append(s)
    return torch.stack(out)


def num_planes(max_code: int, encoding: str) -> int:
    """Number of virtual timesteps needed to send codes ``0..max_code``: ``bit_length`` (binary) or ``max_code``."""
    _check_encoding(encoding)
    _check_max_code(max_code)
    return int(max_code).bit_length() if encoding == "binary" else int(max_code)


def plane(codes: torch.Tensor, j: int, encoding: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return virtual timestep ``j`` of ``codes`` as a ``{0, 1}`` tensor.

    Binary: bit ``j`` of the code (weight ``2**j``). Unary (thermometer): 1 where ``code > j`` (weight 1).

    Raises:
        ValueError: ``j`` is not an integer >= 0, or a code is not a whole number >= 0 (NaN, 3.7, -1 have no planes).
    """
    if not is_int(j) or j < 0:  # a numpy integer is an integer
        raise ValueError(f"plane index j={j!r} is invalid: it must be an integer >= 0")
    check_codes(codes, 2**62 - 1)
    return _plane(codes, int(j), encoding, dtype, wide=True)


def _plane(
    codes: torch.Tensor, j: int, encoding: str, dtype: torch.dtype | None = None, wide: bool = False
) -> torch.Tensor:
    """``plane`` without its checks (no host sync): for codes the neuron made, e.g. on a device's queue. The bits are
    taken in int32 (a neuron's codes are at most 2**31 - 1), or in int64 where ``wide`` (any checked code)."""
    _check_encoding(encoding)
    c = codes.to(torch.int64 if wide else torch.int32)
    b = (c >> j) & 1 if encoding == "binary" else (c > j)
    if dtype is None:
        dtype = codes.dtype if codes.is_floating_point() else torch.float32
    return b.to(dtype)


def plane_weights(max_code: int, encoding: str, scale: float = 1.0) -> list[float]:
    """Weights ``w_j`` with ``code / scale == sum_j w_j * plane_j``: ``2**j / scale`` (binary) or ``1 / scale``."""
    _check_scale(scale)
    p = num_planes(max_code, encoding)
    if p > MAX_PLANES:  # a unary M of 2**40 filled the memory with weights
        raise ValueError(f"max_code={max_code!r} needs {p} {encoding} planes: at most {MAX_PLANES} (2**24, as codes)")
    return [(2**j if encoding == "binary" else 1) / scale for j in range(p)]


def with_values(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t``, refused on the meta device: it holds shapes only (a forward runs on it), and counting codes reads values
    (battery 29, PA09: torch's "Tensor.item() cannot be called on meta tensors")."""
    if t.is_meta:
        raise ValueError(f"{what}: the tensor is on the meta device, which holds no values to count: pass a cpu or "
                         f"cuda tensor")  # fmt: skip
    return t


def check_codes(codes: torch.Tensor, max_code: int, what: str = "codes") -> tuple[int, int]:
    """``(min, max)`` of ``codes``, checked to be whole numbers in ``0..max_code`` (one host sync).

    Raises:
        NonFiniteError: NaN or inf, or ``NAN_CODE`` (-1: a NaN membrane, see ``IntegerLIF.spike_codes``).
        ValueError: Not a real tensor, a fraction, or a code outside ``0..max_code``.
    """
    from ibra_yolo.errors import NonFiniteError

    if codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"{what} must be a real integer or float tensor of codes 0..{max_code}, got {codes.dtype}")
    with_values(codes, what)
    if codes.is_floating_point():
        if not torch.isfinite(codes).all():
            raise NonFiniteError(f"{what} hold NaN or inf; valid codes are integers 0..{max_code}")
        if (codes != codes.round()).any():
            bad = codes[codes != codes.round()].flatten()[0].item()
            raise ValueError(f"{what} hold {bad!r}, not a whole number; valid codes are integers 0..{max_code}")
    if not codes.numel():
        return 0, 0
    lo, hi = int(codes.min()), int(codes.max())
    if lo == NAN_CODE:
        raise NonFiniteError(
            f"{what} hold {NAN_CODE}, outside 0..{max_code}: it is NAN_CODE, what spike_codes() gives a NaN membrane"
        )
    if lo < 0 or hi > max_code:
        raise ValueError(f"{what}: code {lo if lo < 0 else hi} is outside 0..{max_code}")
    return lo, hi


def to_planes(codes: torch.Tensor, max_code: int, encoding: str) -> torch.Tensor:
    """Encode integer codes as ``[P, *codes.shape]`` ``{0, 1}`` planes (all planes at once; see ``plane``).
    ``max_code`` 0 gives ``P = 0`` planes (every code is 0, which takes no spike), as ``num_planes`` counts.

    Raises:
        ValueError: A code that is not a whole number in ``0..max_code`` (``check_codes``): it has no planes.
    """
    check_codes(codes, max_code)
    planes = [_plane(codes, j, encoding, wide=True) for j in range(num_planes(max_code, encoding))]
    return torch.stack(planes) if planes else _plane(codes, 0, encoding, wide=True)[None][:0]


def from_planes(planes: torch.Tensor, encoding: str) -> torch.Tensor:
    """Decode ``[P, ...]`` planes back to ``int64`` codes: ``sum_j 2**j b_j`` (binary) or ``sum_j b_j`` (unary).

    Planes may be of any real dtype (bool too); the sum is formed in int64, so no plane count overflows it.

    Raises:
        ValueError: An unknown encoding, no plane dimension, more than 62 binary planes, or a plane value other than
            0 or 1 (spikes are binary).
    """
    _check_encoding(encoding)
    if not isinstance(planes, torch.Tensor) or planes.dim() < 1 or planes.is_complex() or planes.is_sparse:
        what = f"{planes.dtype} {tuple(planes.shape)}" if isinstance(planes, torch.Tensor) else type(planes).__name__
        raise ValueError(f"planes must be a real [P, ...] tensor of 0s and 1s, got {what}")
    if encoding == "binary" and planes.shape[0] > 62:
        raise ValueError(f"{planes.shape[0]} binary planes: codes of more than 62 bits do not fit int64")
    off = planes[(planes != 0) & (planes != 1)]
    if off.numel():
        raise ValueError(f"planes hold {off.flatten()[0].item()!r}: spikes are 0 or 1")
    bits = planes.to(torch.int64)
    if encoding == "binary":
        weights = torch.tensor([1 << j for j in range(planes.shape[0])], dtype=torch.int64, device=planes.device)
        return (bits * weights.view(-1, *[1] * (planes.dim() - 1))).sum(0)
    return bits.sum(0)
