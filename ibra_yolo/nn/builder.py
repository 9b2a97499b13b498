"""Build a spiking model from its YAML dict: our blocks plus concat, upsample and the detect head.

Ultralytics' own ``parse_model`` keeps its channel bookkeeping private and resolves names in its own namespace, so
spiking YAMLs (those with a ``neuron:`` key) are built here instead; every other YAML stays with the stock parser.
The YAML format is Ultralytics' (``nc``, ``scales``, ``backbone``/``head`` rows of ``[from, repeats, module, args]``)
plus these keys:

- ``neuron``: the neuron of every spiking layer, e.g. ``{kind: IBRALIF, D: 5.11, N: 100, beta: 0.25}``;
- ``T``: timesteps (default 1);
- ``scale``: the default scale when the file name does not pick one;
- ``scale_args``: named per-scale values usable in layer args, e.g. ``{p5_ratio: {n: 1, s: 1, m: 2, l: 2}}``.

Errors are raised at build time as one line naming the YAML row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from torch import nn
from ultralytics.utils.ops import make_divisible

from ibra_yolo.errors import FoldedModelError, ModelConfigError
from ibra_yolo.neurons import make_neuron
from ibra_yolo.nn.blocks import (
    SPPF,
    AllConvBlock,
    Concat,
    ConvBlock,
    Downsample,
    SConv,
    TimeRepeat,
    Upsample,
)
from ibra_yolo.nn.head import SpikeDetect

__all__ = ("MODULES", "FOLDED_KEY", "is_spiking_yaml", "build_spiking_model", "model_scale")

LOGGER = logging.getLogger("ultralytics")  # print the layer table where Ultralytics prints its own

MODULES: dict[str, type[nn.Module]] = {
    m.__name__: m for m in (TimeRepeat, Downsample, AllConvBlock, ConvBlock, SConv, SPPF, Upsample, Concat, SpikeDetect)
}
REPEATABLE = (AllConvBlock, ConvBlock)
FOLDED_KEY = "folded"  # set by ibra_yolo.deployment in a folded model's YAML dict: "bn" (fuse) or "all" (deploy)


def is_spiking_yaml(d) -> bool:
    """Return True for model dicts this builder owns (they carry a ``neuron`` key)."""
    return isinstance(d, dict) and "neuron" in d


def model_scale(d: dict) -> str | None:
    """The scale a model dict selects: ``d['scale']``, or the first of ``d['scales']``."""
    scales = d.get("scales") or {}
    return d.get("scale") or next(iter(scales), None)


@dataclass
class _Out:
    """What the builder knows about a layer's output."""

    c: int  # channels
    stride: float  # spatial reduction relative to the input image
    timed: bool  # has the leading T dimension


@dataclass
class _Context:
    """What every row of one model is built with: the scale, the neuron factory and the outputs built so far."""

    names: dict  # names usable in row args: nc and the scale_args of the selected scale
    depth: float  # repeat multiplier of the scale
    width: float  # channel multiplier of the scale
    max_channels: float  # channel cap of the scale (before width)
    ch: int  # input image channels
    neuron: Callable[[], nn.Module]  # a fresh neuron per call
    T: int  # timesteps
    outs: list = field(default_factory=list)  # _Out of every layer built so far


def _row_name(d: dict, i: int, n_backbone: int, row) -> str:
    section, j = ("backbone", i) if i < n_backbone else ("head", i - n_backbone)
    name = d.get("yaml_file") or "model YAML"
    return f"{name} {section} row {j} (layer {i}) {row}"


def build_spiking_model(d: dict, ch: int = 3, verbose: bool = True) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a spiking model dict.

    Args:
        d (dict): Model dict (see module docstring).
        ch (int): Input image channels.
        verbose (bool): Log the layer table.

    Returns:
        (nn.Sequential): The layers, each tagged with ``i`` (index), ``f`` (from), ``type`` and ``np`` (params).
        (list[int]): Indices of layers whose outputs later layers read.

    Raises:
        ModelConfigError: A bad neuron, scale, row, argument or connection, naming the YAML key or row.
        FoldedModelError: The dict is a folded model's (training it, or resuming from it, would lose its weights).
    """
    if d.get(FOLDED_KEY):
        raise FoldedModelError(
            f"{d.get('yaml_file') or 'this model'} is folded for inference ({FOLDED_KEY}: {d[FOLDED_KEY]}, by fuse() "
            "or deploy): its BNs and re-parameterisable branches are gone, so it cannot be trained or rebuilt; train "
            "or resume from the checkpoint it was folded from"
        )
    T = d.get("T", 1)
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ModelConfigError(f"T={T!r} is invalid: the number of timesteps must be an integer >= 1")
    try:
        make_neuron(d["neuron"], T)  # validate once, with a message that names the key
    except ValueError as e:
        raise ModelConfigError(f"neuron: {e}") from None
    neuron_spec = dict(d["neuron"])

    def neuron() -> nn.Module:
        return make_neuron(neuron_spec, T)

    nc = d.get("nc")
    if not isinstance(nc, int) or nc < 1:
        raise ModelConfigError(f"nc={nc!r} is invalid: the number of classes must be an integer >= 1")
    depth, width, max_channels = 1.0, 1.0, float("inf")
    scales, scale = d.get("scales"), model_scale(d)
    names = {"nc": nc}
    if scales:
        if scale not in scales:
            raise ModelConfigError(f"scale={scale!r} is not in this model's scales {sorted(scales)}")
        depth, width, max_channels = scales[scale]
        for key, per_scale in (d.get("scale_args") or {}).items():
            if not isinstance(per_scale, dict) or scale not in per_scale:
                raise ModelConfigError(f"scale_args.{key} must map every scale to a value; missing '{scale}'")
            names[key] = per_scale[scale]

    rows = list(d.get("backbone") or []) + list(d.get("head") or [])
    if not rows:
        raise ModelConfigError("the model YAML has no 'backbone'/'head' rows")
    n_backbone = len(d.get("backbone") or [])
    ctx = _Context(names, depth, width, max_channels, ch, neuron, T)
    layers, save = [], []
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<20}{'arguments':<30}")
    for i, row in enumerate(rows):
        where = _row_name(d, i, n_backbone, row)
        try:
            module, out, args, n = _build_row(ctx, i, row)
        except ModelConfigError as e:
            raise ModelConfigError(f"{where}: {e}") from None
        except (ValueError, TypeError, RuntimeError) as e:
            raise ModelConfigError(f"{where}: {type(e).__name__}: {e}") from None
        if isinstance(module, SpikeDetect) and i != len(rows) - 1:
            raise ModelConfigError(f"{where}: SpikeDetect must be the last row")
        f = row[0]
        module.np = sum(p.numel() for p in module.parameters())
        module.i, module.f, module.type = i, f, type(module if n == 1 else module[0]).__name__
        if verbose:
            LOGGER.info(f"{i:>3}{f!s:>20}{n:>3}{module.np:10.0f}  {module.type:<20}{args!s:<30}")
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        ctx.outs.append(out)
    if not isinstance(layers[-1], SpikeDetect):
        raise ModelConfigError(f"{_row_name(d, len(rows) - 1, n_backbone, rows[-1])}: the last row must be SpikeDetect")
    return nn.Sequential(*layers), sorted(save)


def _resolve(a, names: dict):
    return names[a] if isinstance(a, str) and a in names else a


def _build_row(ctx: _Context, i: int, row):
    """Return (module, output info, args shown, repeats) for YAML row ``i``."""
    if not isinstance(row, (list, tuple)) or len(row) != 4:
        raise ModelConfigError("a row must be [from, repeats, module, args]")
    f, n, name, args = row
    if name not in MODULES:
        raise ModelConfigError(f"module {name!r} is unknown: spiking YAMLs may use {', '.join(MODULES)}")
    if not isinstance(n, int) or n < 1:
        raise ModelConfigError(f"repeats={n!r} must be an integer >= 1")
    args = [_resolve(a, ctx.names) for a in (args or [])]
    unknown = [a for a in args if isinstance(a, str)]
    if unknown:
        raise ModelConfigError(f"unknown name(s) {unknown} in args: known names are {sorted(ctx.names)}")
    m = MODULES[name]

    # inputs
    sources = [f] if isinstance(f, int) else list(f) if isinstance(f, (list, tuple)) else None
    if not sources or not all(isinstance(x, int) for x in sources):
        raise ModelConfigError(f"from={f!r} must be an int or a list of ints")
    if i == 0:
        if sources != [-1]:
            raise ModelConfigError("the first row must read the input image (from=-1)")
        ins = [_Out(ctx.ch, 1, False)]
    else:
        ins = []
        for x in sources:
            j = i + x if x < 0 else x
            if not 0 <= j < i:
                raise ModelConfigError(f"from index {x} does not name an earlier layer (valid: 0..{i - 1} or -1..-{i})")
            ins.append(ctx.outs[j])
    if m is not TimeRepeat and not all(o.timed for o in ins):
        raise ModelConfigError(f"{name} needs [T, B, C, H, W] input: put TimeRepeat before the first spiking layer")
    if m not in (Concat, SpikeDetect) and len(ins) != 1:
        raise ModelConfigError(f"{name} takes one input, got from={f}")
    c1, s1 = ins[0].c, ins[0].stride

    n_eff = max(round(n * ctx.depth), 1) if n > 1 else n
    if n_eff > 1 and m not in REPEATABLE:
        raise ModelConfigError(f"{name} cannot be repeated (repeats={n})")

    def channels(c):
        c = int(c)
        if c < 1:
            raise ModelConfigError(f"scaled channels {c} < 1 (width {ctx.width})")
        return c

    if m is TimeRepeat:
        if ins[0].timed:
            raise ModelConfigError("TimeRepeat input already has a time dimension")
        module, out = m(ctx.T), _Out(c1, s1, True)
    elif m is Downsample:
        c2 = channels(args[0] * ctx.width)
        module = m(c1, c2, *args[1:], neuron=ctx.neuron)
        out = _Out(c2, s1 * module.conv.op.stride[0], True)
    elif m in REPEATABLE:
        blocks = [m(c1, *args, neuron=ctx.neuron) for _ in range(n_eff)]
        module = blocks[0] if n_eff == 1 else nn.Sequential(*blocks)
        out = _Out(c1, s1, True)
    elif m is SConv:
        c2 = channels(min(args[0] * ctx.width, ctx.max_channels * ctx.width))
        module = m(c1, c2, *args[1:], neuron=ctx.neuron)
        out = _Out(c2, s1 * module.conv.op.stride[0], True)
    elif m is SPPF:
        c2 = make_divisible(min(args[0], ctx.max_channels) * ctx.width, 8)  # Ultralytics' rule for SPPF widths
        if c1 < 2:
            raise ModelConfigError(f"SPPF needs at least 2 input channels, got {c1}")
        module, out = m(c1, c2, *args[1:], neuron=ctx.neuron), _Out(c2, s1, True)
    elif m is Upsample:
        module = m(*args)
        out = _Out(c1, s1 / module.scale, True)
    elif m is Concat:
        if len({o.stride for o in ins}) != 1:
            strides = ", ".join(f"{x}: /{o.stride:g}" for x, o in zip(sources, ins))
            raise ModelConfigError(f"Concat inputs have different spatial strides ({strides})")
        module, out = m(), _Out(sum(o.c for o in ins), s1, True)
    else:  # SpikeDetect
        args = [*args, [o.c for o in ins]]
        module, out = m(*args, neuron=ctx.neuron), _Out(0, s1, False)
    return module, out, args, n_eff
