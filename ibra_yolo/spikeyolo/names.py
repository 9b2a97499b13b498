"""The name map: where each module of a SpikeYOLO model sits in ours.

SpikeYOLO's blocks (``ultralytics/nn/modules/yolo_spikformer.py`` of its Ultralytics 8.0.197 fork) are ours under
other names, e.g. its ``model.2.Conv.pwconv1`` (an ``MS_AllConvBlock``'s ``SepConv``'s first 1x1 conv) is our
``model.2.sep.pw1.op``. The map is by block class, not by full name, so it holds for any layer table, depth and width
built from these blocks: each block class renames the paths of its own sub-modules (`RENAMES`), and every path not
listed keeps its name (layer indices, repeats, ``bn1``...). Neurons (``mem_update``, ``MultiSpike<D>``) hold no
tensors; in our model they sit inside the ``NeuronConv`` that pairs each neuron with the conv it feeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ibra_yolo.errors import CheckpointError
from ibra_yolo.unpickle import StandIn

__all__ = ("RENAMES", "ModulePair", "module_pairs")

# SpikeYOLO block class -> {sub-module path inside the block: our path inside our block}; '*' is one index segment.
RENAMES: dict[str, dict[str, str]] = {
    "MS_DownSampling": {"encode_conv": "conv.op", "encode_bn": "bn"},  # -> Downsample
    "MS_StandardConv": {"conv": "conv.op"},  # -> SConv
    "SpikeConv": {"conv": "conv.op"},  # -> SConv (SPPF, detect head)
    "SpikeConvWithoutBN": {"conv": "op"},  # -> NeuronConv (the head's last 1x1 conv)
    "SepConv": {"pwconv1": "pw1.op", "dwconv2": "dw.op", "pwconv3": "pw2.op"},
    "SepRepConv": {"body.0": "bn", "body.1.0": "pw", "body.1.1": "dw"},  # -> SepRep
    "BNAndPadLayer": {"bn": ""},  # its BatchNorm's tensors are our BNPad's own
    "RepConv": {"body.0": "pw1", "body.1": "bn1", "body.2.0": "dw", "body.2.1": "pw2", "body.2.2": "bn2"},
    "MS_AllConvBlock": {"Conv": "sep"},  # -> AllConvBlock
    "MS_ConvBlock": {"Conv": "sep", "conv1": "conv1.op", "conv2": "conv2.op"},  # -> ConvBlock
    "SpikeDetect": {  # -> SpikeDetect: each branch is a DetectBranch (conv1, conv2, pred)
        f"{cv}.*.{i}": f"{cv}.*.{ours}" for cv in ("cv2", "cv3") for i, ours in enumerate(("conv1", "conv2", "pred"))
    },
}
# Classes that keep their sub-module names (containers, leaves, parameter-free modules).
_UNRENAMED = {
    "DetectionModel",
    "Sequential",
    "ModuleList",
    "Conv2d",
    "BatchNorm2d",
    "MaxPool2d",
    "Upsample",
    "Concat",
    "MS_GetT",
    "SpikeSPPF",
    "SpikeDFL",
    "mem_update",
}
_NEURON_QUANTISER = re.compile(r"^MultiSpike\d+$")  # mem_update's qtrick: round(clamp(x, 0, D))


@dataclass
class ModulePair:
    """A SpikeYOLO module that holds tensors and the path of its counterpart in our model."""

    theirs: str
    ours: str
    module: StandIn


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _rename(rules: dict[str, str], rel: str) -> str | None:
    """Our path for ``rel`` (a path inside a block) under the block's rules, or None when no rule names it."""
    segs = rel.split(".")
    for pattern, target in rules.items():
        pat = pattern.split(".")
        if len(pat) == len(segs) and all(p in ("*", s) for p, s in zip(pat, segs)):
            stars = iter(s for p, s in zip(pat, segs) if p == "*")
            return ".".join(next(stars) if t == "*" else t for t in target.split(".")) if target else ""
    return None


def module_pairs(root: StandIn) -> list[ModulePair]:
    """Walk a SpikeYOLO ``DetectionModel`` and pair every module that holds tensors with our module path.

    Args:
        root (StandIn): The checkpoint's model (its ``model`` or ``ema`` entry).

    Returns:
        (list[ModulePair]): In the order of the checkpoint's ``state_dict``.

    Raises:
        CheckpointError: A module of a class this map does not know, named by its path.
    """
    pairs: list[ModulePair] = []

    def walk(node: StandIn, theirs: str, ours: str, rules: dict, block_ours: str, rel: str):
        name = node.name
        if name not in RENAMES and name not in _UNRENAMED and not _NEURON_QUANTISER.match(name):
            raise CheckpointError(
                f"module {theirs or '<root>'} is a {node.qualname}, which has no counterpart in ibra-yolo "
                f"(known SpikeYOLO modules: {', '.join(sorted(RENAMES))}, ...)"
            )
        if name in RENAMES:  # a block: its own rules apply to the paths below it
            rules, block_ours, rel = RENAMES[name], ours, ""
        if node.tensors():
            pairs.append(ModulePair(theirs, ours, node))
        for key, child in node.children().items():
            child_rel = _join(rel, key)
            target = _rename(rules, child_rel)
            child_ours = _join(block_ours, target) if target is not None else _join(ours, key)
            walk(child, _join(theirs, key), child_ours, rules, block_ours, child_rel)

    walk(root, "", "", {}, "", "")
    return pairs
