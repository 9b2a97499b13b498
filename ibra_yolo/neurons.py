"""Integer spiking neurons: IBRA-LIF, IB-LIF and I-LIF as one parameterised multi-step LIF (pure torch).

All three neurons share the dynamics of SPEC §2.1 and differ only in their quantiser
``Q(U) = clip(round(N * U), 0, M) / N``:

==========  =====================  ====  ============  ========
neuron      M (``max_code``)       N     range D=M/N   encoding
==========  =====================  ====  ============  ========
IBRA-LIF    round(N * D)           N     D             binary
IB-LIF      2**bits - 1            1     2**bits - 1   binary
I-LIF       D (an integer)         1     D             unary
==========  =====================  ====  ============  ========

During training a neuron emits the real value ``code / N``; at inference the same integer code can be sent as
``{0, 1}`` spikes over virtual timesteps (binary bit planes or unary thermometer planes), see ``to_planes``.
The module keeps no state between calls: the membrane is a local variable of ``forward``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping

import torch
from torch import nn

from ibra_yolo import precision
from ibra_yolo.coding import (  # the functional core, re-exported here
    ENCODINGS,
    FLOAT32_MAX,
    FLOAT32_TINY,
    NAN_CODE,
    _codes_to_values,
    _QuantizeSTE,
    check_codes,
    from_planes,
    is_int,
    is_number,
    lif_multistep,
    num_planes,
    plane,
    plane_weights,
    quantize_codes,
    to_planes,
    with_values,
)
from ibra_yolo.errors import NonFiniteError  # a NaN membrane has no code; also ibra_yolo.neurons.NonFiniteError
from ibra_yolo.yaml_files import looks_numeric, yaml_number_hint

__all__ = (
    "IntegerLIF",
    "Activation",
    "NAN_CODE",
    "IBRALIF",
    "IBLIF",
    "ILIF",
    "NEURON_KINDS",
    "make_neuron",
    "is_spiking_neuron",
    "quantize_codes",
    "lif_multistep",
    "to_planes",
    "from_planes",
    "plane",
    "plane_weights",
    "num_planes",
)

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # input currents the neurons take
_FLOAT32_RANGE = f"a number in [{FLOAT32_TINY:.4g}, {FLOAT32_MAX:.4g}] (float32 holds it)"  # N, and a ReLU's D
MAX_CODE_LIMIT = 2**24  # float32 holds every integer up to 2**24 exactly: the quantiser computes codes in float32


# ----------------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------------
_REPR = reprlib.Repr()  # a value is quoted in bounded size (at most 4**2 items), whatever YAML aliases built
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 80, 80


def _check(name: str, value, ok: bool, allowed: str) -> None:
    """Raise a ValueError naming the parameter, its value and the allowed range."""
    if not ok:
        raise ValueError(f"{name}={_REPR.repr(value)} is invalid: {name} must be {allowed}")


class IntegerLIF(nn.Module):
    """Multi-step integer LIF neuron, the one implementation behind IBRA-LIF, IB-LIF and I-LIF.

    Input and output are ``[T, B, ...]``; the output is the real value ``code / scale``.

    Args:
        max_code (int): Largest integer code ``M`` (codes are ``0..M``).
        scale (float): Levels per unit ``N`` (range alignment factor); the representable range is ``[0, M / N]``.
        encoding (str): ``"binary"`` (bit planes) or ``"unary"`` (thermometer planes) for spike-driven inference.
        T (int): Number of timesteps the input carries in its leading dimension.
        beta (float): Membrane decay in ``[0, 1]``.
        ste_above (float): Straight-through gradient where ``N * U > M`` (above the range), in ``[0, 1]``. 0 (default)
            is the rectangular window of the paper and SpikeYOLO: gradient 1 on ``[0, D]`` and 0 outside.

    A NaN membrane has no code: the real-valued output is NaN (it propagates, as through ReLU, so a non-finite loss
    or box shows it), and ``codes()`` raises ``NonFiniteError``. ``+inf`` is clipped to ``M`` and ``-inf`` to 0.

    Examples:
        >>> n = IntegerLIF(max_code=511, scale=100.0)
        >>> n(torch.tensor([[0.0049, 0.0051, 5.104, 5.106, 1e6, -3.0]]))
        tensor([[0.0000, 0.0100, 5.1000, 5.1100, 5.1100, 0.0000]])
    """

    ste_above = 0.0  # class default: checkpoints pickled before the option existed load with the paper's window

    def __init__(
        self,
        max_code: int,
        scale: float = 1.0,
        encoding: str = "binary",
        T: int = 1,
        beta: float = 0.25,
        ste_above: float = 0.0,
    ):
        super().__init__()
        # the quantiser multiplies by N and divides codes by N in float32: N, and the top level M / N, must fit it
        _check("scale (N)", scale, is_number(scale) and FLOAT32_TINY <= scale <= FLOAT32_MAX, _FLOAT32_RANGE)
        limit = f"an integer in [1, 2**24 = {MAX_CODE_LIMIT}] (codes are exact float32 integers)"
        _check("max_code (M)", max_code, is_int(max_code) and 1 <= max_code <= MAX_CODE_LIMIT, limit)
        top = max_code / scale
        _check("M / N", top, top <= FLOAT32_MAX, f"<= {FLOAT32_MAX:.4g}: the largest output must fit float32")
        _check("T", T, is_int(T) and T >= 1, "an integer >= 1")
        _check("beta", beta, is_number(beta) and 0 <= beta <= 1, "a number in [0, 1]")
        _check("encoding", encoding, encoding in ENCODINGS, f"one of {ENCODINGS}")
        _check("ste_above", ste_above, is_number(ste_above) and 0 <= ste_above <= 1, "a number in [0, 1]")
        self.max_code = int(max_code)
        self.scale = float(scale)
        self.encoding = encoding
        self.T = int(T)
        self.beta = float(beta)
        self.ste_above = float(ste_above)

    @property
    def bits(self) -> int:
        """Bits ``K`` needed for a code: ``bit_length(M)``."""
        return self.max_code.bit_length()

    @property
    def D(self) -> float:
        """Representable real range ``M / N``; the straight-through gradient is 1 on ``[0, D]``."""
        return self.max_code / self.scale

    @property
    def num_planes(self) -> int:
        """Virtual timesteps per timestep at inference: ``K`` (binary) or ``M`` (unary)."""
        return num_planes(self.max_code, self.encoding)

    def planes_used(self, codes: torch.Tensor) -> int:
        """Virtual timesteps that carry spikes for these codes: ``bit_length(max code)`` (binary) or the max code.

        Raises:
            ValueError: A code outside ``0..M``.
        """
        top = self._check_codes(codes)[1]
        return top.bit_length() if self.encoding == "binary" else top

    def _check_codes(self, codes: torch.Tensor) -> tuple[int, int]:
        """``(min, max)`` of codes, checked to be whole numbers in ``0..M`` (counting never counts invalid ones)."""
        return check_codes(codes, self.max_code, f"{type(self).__name__}: codes")

    def plane_weights(self) -> list[float]:
        """Weights ``w_j`` such that ``output = sum_j w_j * plane_j``."""
        return plane_weights(self.max_code, self.encoding, self.scale)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.layout != torch.strided:
            what = f"a {x.layout} tensor" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
            raise ValueError(f"{type(self).__name__} expects a dense torch.Tensor of input currents, got {what}")
        if x.dtype not in _FLOAT_DTYPES:  # int would cut 5.11 to 5, complex drop j, float8 (3 bits) round 5.11 to 5
            raise ValueError(f"{type(self).__name__} expects float16/32/64 or bfloat16 input currents, got {x.dtype}")
        if torch.jit.is_tracing():  # shapes are fixed in a trace; a Python check would only emit TracerWarnings
            return
        if x.dim() < 1 or x.shape[0] != self.T:
            raise ValueError(
                f"{type(self).__name__} expects input [T={self.T}, B, ...] but got shape {tuple(x.shape)}; "
                f"the leading dimension must be the {self.T} timestep(s)"
            )

    def _fire(self, u: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and u.requires_grad:
            return _QuantizeSTE.apply(u, self.scale, self.max_code, self.ste_above)
        return _codes_to_values(quantize_codes(u, self.scale, self.max_code), self.scale, u.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the neuron outputs ``S = code / N`` for input currents ``x`` of shape ``[T, B, ...]``."""
        self._check_input(x)
        low = precision.low_precision_dtype(x)
        if low is not None:  # float16/bfloat16 output or autocast: warn once if it merges levels (ibra_yolo.precision)
            precision.check_levels(type(self).__name__, self.max_code, self.scale, low)
        return lif_multistep(x, self._fire, self.beta, self.T)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Return the integer codes (``int32``, ``[T, B, ...]``) the neuron emits for input currents ``x``.

        Raises:
            NonFiniteError: A membrane potential is NaN or infinite (it has no code).
        """
        codes = with_values(self.spike_codes(x), f"{type(self).__name__}.codes")
        bad = int((codes < 0).sum())
        if bad:
            raise NonFiniteError(
                f"{type(self).__name__}: {bad} membrane potential(s) are NaN or infinite and have no code (the input "
                f"currents hold NaN or inf: check the image and the weights, or an fp16 overflow)"
            )
        return codes

    def spike_codes(self, x: torch.Tensor) -> torch.Tensor:
        """``codes(x)`` without the check, for spike-driven execution: no host sync, so it runs on a device's queue.

        A NaN or infinite membrane gets ``NAN_CODE`` (-1), outside ``0..M``: the caller must not send it as spikes
        (``NeuronConv`` makes that sample's output NaN, as the integer path would), and every counting path refuses it.
        """
        self._check_input(x)
        codes = []

        def fire(u):
            c = quantize_codes(u, self.scale, self.max_code)
            codes.append(c.to(torch.int32).masked_fill_(c.isnan(), NAN_CODE))  # quantize_codes: NaN for NaN/inf
            return _codes_to_values(c, self.scale, u.dtype)  # NaN stays NaN in the membrane

        lif_multistep(x, fire, self.beta, self.T)
        return torch.stack(codes).reshape(x.shape)

    def to_planes(self, codes: torch.Tensor) -> torch.Tensor:
        """Encode codes as ``[P, ...]`` ``{0, 1}`` planes (``P = num_planes``)."""
        return to_planes(codes, self.max_code, self.encoding)

    def from_planes(self, planes: torch.Tensor) -> torch.Tensor:
        """Decode ``[P, ...]`` planes (``P = num_planes``) back to integer codes ``0..M``.

        Raises:
            ValueError: Another number of planes, planes that are not 0/1, or a decoded code above ``M``.
        """
        if isinstance(planes, torch.Tensor) and planes.dim() and planes.shape[0] != self.num_planes:
            raise ValueError(f"{type(self).__name__} sends {self.num_planes} planes, got {planes.shape[0]}")
        codes = from_planes(planes, self.encoding)
        self._check_codes(codes)
        return codes

    def spikes_per_code(self, codes: torch.Tensor) -> torch.Tensor:
        """Spikes needed to send each code: popcount (binary) or the code itself (unary).

        Raises:
            ValueError: A code outside ``0..M``.
        """
        self._check_codes(codes)
        c = codes.to(torch.int32)
        if self.encoding == "unary":
            return c
        count = torch.zeros_like(c)
        for j in range(self.bits):
            count += (c >> j) & 1
        return count

    def config(self) -> dict:
        """The YAML ``neuron:`` mapping that rebuilds this neuron (``T`` is a model-level key)."""
        extra = {"ste_above": self.ste_above} if self.ste_above else {}
        return {"kind": type(self).__name__, **self._public_args(), "beta": self.beta, **extra}

    def _public_args(self) -> dict:
        return {"max_code": self.max_code, "scale": self.scale, "encoding": self.encoding}

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._public_args().items())
        extra = f", ste_above={self.ste_above}" if self.ste_above else ""
        return f"{args}, M={self.max_code}, K={self.bits}, {self.encoding}, T={self.T}, beta={self.beta}{extra}"


class IBRALIF(IntegerLIF):
    """IBRA-LIF: integer binary LIF with range alignment (arXiv 2506.05679, reconstructed; see README).

    ``S = clip(round(N * U), 0, M) / N`` with ``M = round(N * D)``; codes are sent as ``K = bit_length(M)`` bit planes.

    Args:
        D (float): Real-valued range ``> 0``.
        N (float): Levels per unit ``> 0`` (the range-alignment factor).
        T (int): Timesteps.
        beta (float): Membrane decay in ``[0, 1]``.
        ste_above (float): Straight-through gradient above ``D`` (0: the paper's rectangular window).

    Examples:
        >>> n = IBRALIF()  # D=5.11, N=100 -> M=511, K=9
        >>> n.max_code, n.bits, n.encoding
        (511, 9, 'binary')
    """

    def __init__(self, D: float = 5.11, N: float = 100, T: int = 1, beta: float = 0.25, ste_above: float = 0.0):
        _check("D", D, is_number(D) and D > 0, "a finite number > 0")
        _check("N", N, is_number(N) and FLOAT32_TINY <= N <= FLOAT32_MAX, _FLOAT32_RANGE)
        nd = N * D
        _check("N*D", nd, nd <= MAX_CODE_LIMIT + 0.5, f"at most 2**24 = {MAX_CODE_LIMIT} (exact float32 integers)")
        m = round(nd)
        _check("D", D, m >= 1, f"large enough that round(N*D) >= 1 (N={N} gives {m})")
        super().__init__(max_code=int(m), scale=float(N), encoding="binary", T=T, beta=beta, ste_above=ste_above)
        self.range = float(D)

    def _public_args(self) -> dict:
        return {"D": self.range, "N": self.scale}


class IBLIF(IntegerLIF):
    """IB-LIF: integer binary LIF without range alignment, ``S = clip(round(U), 0, 2**bits - 1)``.

    The ablation of IBRA-LIF: with ``bits=9`` it has the same 512 codes but inputs of unit scale only reach the
    lowest ones.

    Args:
        bits (int): Bit planes ``K`` in ``[1, 24]``.
        T (int): Timesteps.
        beta (float): Membrane decay in ``[0, 1]``.
        ste_above (float): Straight-through gradient above ``2**bits - 1`` (0: rectangular window).
    """

    def __init__(self, bits: int = 9, T: int = 1, beta: float = 0.25, ste_above: float = 0.0):
        _check("bits", bits, is_int(bits) and 1 <= bits <= 24, "an integer in [1, 24] (exact float32 integers)")
        super().__init__(max_code=2 ** int(bits) - 1, scale=1.0, encoding="binary", T=T, beta=beta, ste_above=ste_above)

    def _public_args(self) -> dict:
        return {"bits": self.bits}


class ILIF(IntegerLIF):
    """I-LIF of SpikeYOLO: ``S = round(clip(U, 0, D))`` with integer ``D``, sent as ``D`` unary virtual timesteps.

    Args:
        D (int): Largest spike count, an integer ``>= 1``.
        T (int): Timesteps.
        beta (float): Membrane decay in ``[0, 1]``.
        ste_above (float): Straight-through gradient above ``D`` (0: SpikeYOLO's rectangular window).
    """

    def __init__(self, D: int = 4, T: int = 1, beta: float = 0.25, ste_above: float = 0.0):
        is_int = is_number(D) and float(D).is_integer()
        _check("D", D, is_int and 1 <= D <= MAX_CODE_LIMIT, "an integer >= 1 for I-LIF (its unary virtual timesteps)")
        super().__init__(max_code=int(D), scale=1.0, encoding="unary", T=T, beta=beta, ste_above=ste_above)

    def _public_args(self) -> dict:
        return {"D": self.max_code}


class Activation(nn.Module):
    """Real-valued activation of the ANN twin (same architecture, no spikes); never in-place, because block inputs
    are reused by residual adds.

    Args:
        kind (str): ``"ReLU"``, ``"SiLU"`` or ``"Identity"``.
        T (int): Timesteps of the model (kept for the same interface as the neurons).
        D (float, optional): ReLU only: clip the output at ``D`` (``min(max(x, 0), D)``, gradient 1 on ``(0, D)``),
            the real-valued twin of a neuron's range ``[0, D]`` without its quantisation.
    """

    _FUNCS = {"ReLU": torch.relu, "SiLU": nn.functional.silu, "Identity": lambda x: x}
    D = None  # class default: checkpoints pickled before the option existed load unclipped

    def __init__(self, kind: str = "ReLU", T: int = 1, D: float | None = None):
        super().__init__()
        _check("activation kind", kind, kind in self._FUNCS, f"one of {sorted(self._FUNCS)}")
        _check("T", T, is_int(T) and T >= 1, "an integer >= 1")
        if D is not None:
            _check("D", D, kind == "ReLU", "unset: only ReLU takes a clip value D")
            _check("D", D, is_number(D) and FLOAT32_TINY <= D <= FLOAT32_MAX, _FLOAT32_RANGE)  # 1e-320: 0 in float32
            D = float(D)
        self.kind = kind
        self.T = int(T)
        self.D = D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.D is not None:
            return x.clamp(0, self.D)
        return self._FUNCS[self.kind](x)

    def config(self) -> dict:
        return {"kind": self.kind} if self.D is None else {"kind": self.kind, "D": self.D}

    def extra_repr(self) -> str:
        return self.kind if self.D is None else f"{self.kind}, D={self.D}"


# ----------------------------------------------------------------------------------------------------------------------
# Factory
# ----------------------------------------------------------------------------------------------------------------------
NEURON_KINDS: dict[str, type[nn.Module]] = {
    "IBRALIF": IBRALIF,
    "IBLIF": IBLIF,
    "ILIF": ILIF,
    "IntegerLIF": IntegerLIF,
}
ACTIVATION_KINDS = tuple(Activation._FUNCS)  # real-valued activations for the ANN twin


def is_spiking_neuron(m: nn.Module) -> bool:
    """Return True for integer spiking neurons (not the ANN twin's real-valued activations)."""
    return isinstance(m, IntegerLIF)


def make_neuron(spec: dict, T: int = 1) -> nn.Module:
    """Build a neuron from a YAML ``neuron:`` mapping such as ``{kind: IBRALIF, D: 5.11, N: 100, beta: 0.25}``.

    Args:
        spec (dict): ``kind`` plus the neuron's keyword arguments.
        T (int): Timesteps of the model.

    Returns:
        (nn.Module): A fresh neuron (or activation, for the ANN twin).

    Raises:
        ValueError: Unknown kind, unknown parameter or a parameter outside its range.
    """
    if not isinstance(spec, Mapping) or "kind" not in spec:  # a dict, or any read-only mapping
        raise ValueError(f"neuron={spec!r} is invalid: expected a mapping with a 'kind' key, e.g. {{kind: IBRALIF}}")
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    for k, v in kwargs.items():
        if isinstance(v, str) and looks_numeric(v):
            raise ValueError(f"{k}={v!r} is a string, not a number: {yaml_number_hint(v)}")
    kind = spec["kind"]
    key = str(kind).lower().replace("-", "").replace("_", "")
    activation = {k.lower(): k for k in ACTIVATION_KINDS}.get(key)
    if activation:
        allowed = {"D"} if activation == "ReLU" else set()
        if set(kwargs) - allowed:
            what = "takes only D (its clip value)" if allowed else "takes no parameters"
            raise ValueError(f"neuron kind={kind!r} is a real-valued activation and {what}, got {sorted(kwargs)}")
        return Activation(activation, T=T, **kwargs)
    cls = {k.lower(): v for k, v in NEURON_KINDS.items()}.get(key)
    if cls is None:
        kinds = ", ".join((*NEURON_KINDS, *ACTIVATION_KINDS))
        raise ValueError(f"neuron kind={kind!r} is unknown: choose one of {kinds}")
    import inspect

    params = inspect.signature(cls.__init__).parameters
    allowed = set(params) - {"self", "T"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"neuron parameter(s) {unknown} unknown for kind={kind!r}: allowed {sorted(allowed)}")
    missing = [k for k in sorted(allowed - set(kwargs)) if params[k].default is inspect.Parameter.empty]
    if missing:
        raise ValueError(
            f"neuron kind={kind!r} needs {', '.join(missing)} (no default), e.g. {{kind: {kind}, max_code: 511}}"
        )
    return cls(**kwargs, T=T)
