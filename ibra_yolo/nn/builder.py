"""Build a spiking model from its YAML dict: our blocks plus concat, upsample and the detect head.

Ultralytics' own ``parse_model`` keeps its channel bookkeeping private and resolves names in its own namespace, so
spiking YAMLs (those with a ``neuron:`` key) are built here instead; every other YAML stays with the stock parser.
The YAML format is Ultralytics' (``nc``, ``scales``, ``backbone``/``head`` rows of ``[from, repeats, module, args]``)
plus these keys:

- ``neuron``: the neuron of every spiking layer, e.g. ``{kind: IBRALIF, D: 5.11, N: 100, beta: 0.25}``;
- ``T``: timesteps (default 1);
- ``scale``: the default scale when the file name does not pick one;
- ``scale_args``: named per-scale values usable in layer args, e.g. ``{p5_ratio: {n: 1, s: 1, m: 2, l: 2}}``.

Every row is checked first, on its own and against the rows before it (``ibra_yolo.nn.rows``: per-module argument
schemas, channel and stride bookkeeping); errors are one ``ModelConfigError`` line naming the YAML key or row.
"""

from __future__ import annotations

import logging

from torch import nn

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
from ibra_yolo.nn.rows import SCHEMAS, plan_model

__all__ = ("MODULES", "FOLDED_KEY", "is_spiking_yaml", "build_spiking_model", "model_scale")

LOGGER = logging.getLogger("ultralytics")  # print the layer table where Ultralytics prints its own

MODULES: dict[str, type[nn.Module]] = {
    m.__name__: m for m in (TimeRepeat, Downsample, AllConvBlock, ConvBlock, SConv, SPPF, Upsample, Concat, SpikeDetect)
}
FOLDED_KEY = "folded"  # set by ibra_yolo.deployment in a folded model's YAML dict: "bn" (fuse) or "all" (deploy)
if set(MODULES) != set(SCHEMAS):  # pragma: no cover - a module without a schema is a bug of ours
    raise ImportError(f"modules {set(MODULES) ^ set(SCHEMAS)} lack an argument schema or a class")


def is_spiking_yaml(d) -> bool:
    """Return True for model dicts this builder owns (they carry a ``neuron`` key)."""
    return isinstance(d, dict) and "neuron" in d


def model_scale(d: dict) -> str | None:
    """The scale a model dict selects: ``d['scale']``, or the first of ``d['scales']``."""
    scales = d.get("scales") or {}
    return d.get("scale") or next(iter(scales), None)


def dict_name(d: dict) -> str | None:
    """What errors call a model dict read from a file: that file was checked when read, so a dict that fails now has
    changed since, or is a checkpoint's copy. None for a dict that never came from a file."""
    file = d.get("yaml_file")
    return f"the model dict of {file} (a checkpoint's copy, or changed after loading)" if file else None


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
    plan = plan_model(d, ch, dict_name(d))

    def neuron() -> nn.Module:
        return make_neuron(plan.neuron, plan.T)

    layers, save = [], []
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<20}{'arguments':<30}")
    for i, (where, row, p) in enumerate(plan.rows):
        m = MODULES[p.module]
        try:
            if m is TimeRepeat:
                module = m(plan.T)
            elif m is Concat:
                module = m()
            elif m is Upsample:
                module = m(*p.args)
            else:
                blocks = [m(*([] if m is SpikeDetect else [p.c1]), *p.args, neuron=neuron) for _ in range(p.n)]
                module = blocks[0] if p.n == 1 else nn.Sequential(*blocks)
        except (ValueError, TypeError, RuntimeError) as e:  # a rule the plan does not know yet: still one line
            raise ModelConfigError(f"{where}: {type(e).__name__}: {e}") from None
        f = row[0]
        module.np = sum(x.numel() for x in module.parameters())
        module.i, module.f, module.type = i, f, p.module
        if verbose:
            LOGGER.info(f"{i:>3}{f!s:>20}{p.n:>3}{module.np:10.0f}  {module.type:<20}{[p.c1, *p.args]!s:<30}")
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
    return nn.Sequential(*layers), sorted(save)
