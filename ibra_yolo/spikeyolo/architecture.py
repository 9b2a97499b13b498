"""A SpikeYOLO model's layer table, scale, timesteps and neuron, read from its checkpoint and written as our model dict.

A SpikeYOLO ``DetectionModel`` keeps the YAML dict it was built from (``model.yaml``): its rows name its fork's
blocks (``MS_DownSampling``, ``MS_AllConvBlock``, ...) with their arguments, and its ``scales`` give depth, width and
max channels. Each row translates to the block of ours that computes the same thing (`to_our_row`), with the same
``from`` indices, repeats and scaling rules, so every scale and width and any per-row ratio (SpikeYOLO's 69M model sets
row 25 to ratio 2) builds the same layers. The loader then checks every tensor against the built model, so a row this
translation got wrong cannot pass silently.

What the YAML does not hold is read from the modules: ``T`` from ``MS_GetT`` and the neuron's range ``D`` from the
class of every ``mem_update``'s quantiser (``MultiSpike4``: ``round(clamp(x, 0, 4))``, our I-LIF ``D = 4``). Its
membrane decay is a module constant of SpikeYOLO's code (``decay = 0.25``), not stored; it only matters for ``T > 1``.
"""

from __future__ import annotations

import ast
import contextlib
import re

from ibra_yolo.errors import CheckpointError
from ibra_yolo.unpickle import StandIn

__all__ = ("SPIKEYOLO_DECAY", "spikeyolo_neuron", "spikeyolo_timesteps", "to_our_row", "to_our_model_dict")

SPIKEYOLO_DECAY = 0.25  # `decay` in SpikeYOLO's yolo_spikformer.py (a module constant, not in its checkpoints)
_QUANTISER = re.compile(r"^MultiSpike(\d+)$")

# SpikeYOLO row module -> its YAML arguments' defaults (its constructors' signatures after the input channels).
_DEFAULTS = {
    "MS_GetT": {"c2": 1, "T": 4},
    "MS_DownSampling": {"c2": 256, "k": 3, "s": 2, "p": 1, "first": True},
    "MS_AllConvBlock": {"r": 4.0, "k": 7, "group": False},
    "MS_ConvBlock": {"r": 4.0, "k": 7, "full": False},
    "SpikeSPPF": {"c2": None, "k": 5},
    "MS_StandardConv": {"c2": None, "k": 1, "s": 1, "p": None, "g": 1, "d": 1},
    "nn.Upsample": {"size": None, "scale": None, "mode": "nearest"},
    "Concat": {"dim": 1},
    "SpikeDetect": {"nc": 80},
}


def _named_args(module: str, args: list, nc: int) -> dict:
    """SpikeYOLO's YAML arguments by name, resolved as its parse_model does ('nc', Python literals), with defaults."""
    names = list(_DEFAULTS[module])
    if len(args) > len(names):
        raise CheckpointError(f"{module} takes at most {len(names)} arguments {names}, got {args}")
    values = dict(_DEFAULTS[module])
    for key, a in zip(names, args):
        if a == "nc":
            a = nc
        elif isinstance(a, str):
            with contextlib.suppress(ValueError, SyntaxError):  # else a plain string such as 'nearest'
                a = ast.literal_eval(a)
        values[key] = a
    missing = [k for k, v in values.items() if v is None and k in ("c2", "scale")]
    if missing:
        raise CheckpointError(f"{module} row lacks argument(s) {missing}")
    return values


def to_our_row(row, nc: int) -> list:
    """Translate one SpikeYOLO YAML row ``[from, repeats, module, args]`` into ours.

    Args:
        row (list): The row as stored in the checkpoint's ``model.yaml``.
        nc (int): Number of classes (SpikeYOLO rows may say ``'nc'``).

    Returns:
        (list): ``[from, repeats, our module, our args]``.

    Raises:
        CheckpointError: A module without a counterpart, or arguments ours cannot express.
    """
    if not isinstance(row, (list, tuple)) or len(row) != 4:
        raise CheckpointError(f"row {row!r} is not [from, repeats, module, args]")
    f, n, module, args = row
    if module not in _DEFAULTS:
        raise CheckpointError(f"module {module!r} has no counterpart in ibra-yolo (known: {', '.join(_DEFAULTS)})")
    a = _named_args(module, list(args or []), nc)
    if module == "MS_GetT":
        ours = ["TimeRepeat", []]  # T is read from the module itself (spikeyolo_timesteps)
    elif module == "MS_DownSampling":
        ours = ["Downsample", [a["c2"], a["k"], a["s"], a["p"], bool(a["first"])]]
    elif module in ("MS_AllConvBlock", "MS_ConvBlock"):  # 'group'/'full' are unused by SpikeYOLO's forward
        ours = ["AllConvBlock" if module == "MS_AllConvBlock" else "ConvBlock", [a["r"], a["k"]]]
    elif module == "SpikeSPPF":
        ours = ["SPPF", [a["c2"], a["k"]]]
    elif module == "MS_StandardConv":
        if a["d"] != 1:
            raise CheckpointError(f"MS_StandardConv with dilation {a['d']} has no counterpart (our SConv has none)")
        ours = ["SConv", [a["c2"], a["k"], a["s"], a["p"], a["g"]]]
    elif module == "nn.Upsample":  # on [T, B, C, H, W], scale (1, f, f) scales H and W only
        s = a["scale"]
        ok = isinstance(s, (tuple, list)) and len(s) == 3 and all(isinstance(v, (int, float)) for v in s)
        ok = ok and s[0] == 1 and s[1] == s[2] and float(s[1]).is_integer() and s[1] >= 1
        if not ok or a["size"] is not None or a["mode"] != "nearest":
            raise CheckpointError(f"nn.Upsample {list(args)} is not a nearest (1, f, f) upsampling of [T, B, C, H, W]")
        ours = ["Upsample", [int(s[1])]]
    elif module == "Concat":
        if a["dim"] != 2:
            raise CheckpointError(f"Concat along dimension {a['dim']} is not the channels of [T, B, C, H, W] (2)")
        ours = ["Concat", []]
    else:  # SpikeDetect; the name 'nc' keeps the class count overridable (Ultralytics' nc= when training on new data)
        ours = ["SpikeDetect", ["nc" if a["nc"] == nc else a["nc"]]]
    return [f, n, *ours]


def _modules(root: StandIn):
    """Every module of the tree, depth first."""
    yield root
    for child in root.children().values():
        yield from _modules(child)


def spikeyolo_timesteps(root: StandIn) -> int:
    """``T`` of the model: the ``T`` attribute of its ``MS_GetT`` module."""
    found = [m.attrs.get("T") for m in _modules(root) if m.name == "MS_GetT"]
    if len(found) != 1 or not isinstance(found[0], int) or isinstance(found[0], bool) or found[0] < 1:
        raise CheckpointError(f"expected one MS_GetT module with an integer T >= 1, found T values {found}")
    return found[0]


def spikeyolo_neuron(root: StandIn) -> dict:
    """Our neuron mapping for the model's neurons: I-LIF with ``D`` of its ``MultiSpike<D>`` quantisers."""
    kinds = set()
    for m in _modules(root):
        if m.name == "mem_update":
            q = m.children().get("qtrick")
            kinds.add(q.name if q is not None else "no quantiser")
    levels = {int(k[1]) for k in map(_QUANTISER.match, kinds) if k}
    if not kinds:
        raise CheckpointError(
            "not a SpikeYOLO checkpoint: its model has no mem_update neurons (an Ultralytics checkpoint of ours needs "
            "no conversion)"
        )
    if len(kinds) != 1 or len(levels) != 1:
        raise CheckpointError(
            f"expected one neuron kind (mem_update with MultiSpike<D>) throughout the model, found {sorted(kinds)}"
        )
    return {"kind": "ILIF", "D": levels.pop(), "beta": SPIKEYOLO_DECAY}


def to_our_model_dict(root: StandIn, neuron: dict | None = None) -> dict:
    """Our model dict for a SpikeYOLO ``DetectionModel``: its layer table in our blocks, its scale, T and neuron.

    Args:
        root (StandIn): The checkpoint's model.
        neuron (dict, optional): Our neuron mapping to use instead of the checkpoint's I-LIF (the weights are the same).

    Returns:
        (dict): A model dict our builder accepts (``nc``, ``scales``/``scale``, ``T``, ``neuron``, rows).

    Raises:
        CheckpointError: No model YAML in the checkpoint, or a row that does not translate (named).
    """
    d = root.attrs.get("yaml")
    if not isinstance(d, dict) or not isinstance(d.get("backbone"), list) or not isinstance(d.get("head"), list):
        raise CheckpointError("the checkpoint's model has no YAML dict with 'backbone' and 'head' rows (model.yaml)")
    nc = d.get("nc")
    if not isinstance(nc, int) or nc < 1:
        raise CheckpointError(f"the checkpoint's model YAML has nc={nc!r}, not an integer >= 1")
    scales = d.get("scales")
    if scales:  # SpikeYOLO's parse_model: the 'scale' key, else the first scale
        scale = d.get("scale") or next(iter(scales))
        if scale not in scales:
            raise CheckpointError(f"the checkpoint's model YAML selects scale {scale!r}, not one of {list(scales)}")
        depth, width, max_channels = scales[scale]
    else:  # older YAMLs: depth_multiple / width_multiple, no channel cap
        scale, max_channels = "custom", float("inf")
        depth, width = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    trained_with = spikeyolo_neuron(root)  # also checks that every neuron is one kind we know
    sections = {}
    for section in ("backbone", "head"):
        sections[section] = []
        for j, row in enumerate(d[section]):
            try:
                sections[section].append(to_our_row(row, nc))
            except CheckpointError as e:
                raise CheckpointError(f"SpikeYOLO model YAML {section} row {j} {row}: {e}") from None
    return {
        "nc": nc,
        "scales": {scale: [depth, width, max_channels]},
        "scale": scale,
        "T": spikeyolo_timesteps(root),
        "neuron": dict(neuron) if neuron is not None else trained_with,
        "ch": d.get("ch", 3),
        **sections,
    }
