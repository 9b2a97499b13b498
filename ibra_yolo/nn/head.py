"""Spiking YOLOv8 detect head: Ultralytics' ``Detect`` with spiking branches and the time mean."""

from __future__ import annotations

import math

import torch
from torch import nn
from ultralytics.nn.modules.head import Detect

from ibra_yolo.nn.blocks import DEFAULT_NEURON, NeuronConv, SConv

__all__ = ("DetectBranch", "SpikeDetect", "grid_anchors")


def grid_anchors(feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5):
    """Anchor points (cell centres, grid units) and their strides for ``[B, C, H, W]`` maps, from tensor ops only.

    The same values as Ultralytics' ``make_anchors``, but the stride column is an expanded tensor instead of a fill
    with ``stride[i]`` as a Python number: that conversion reads the tensor on the host, a graph break under
    ``torch.compile`` (and a device sync on a GPU).

    Args:
        feats (list[torch.Tensor]): One ``[B, C, H, W]`` map per level.
        strides (torch.Tensor): Stride of each level, ``[nl]``.
        offset (float): Offset of the point inside its cell.

    Returns:
        (tuple[torch.Tensor, torch.Tensor]): Points ``[N, 2]`` (x, y) and strides ``[N, 1]``, ``N = sum(H * W)``.
    """
    points, column = [], []
    for i, f in enumerate(feats):
        h, w = f.shape[-2:]
        sx = torch.arange(w).type_as(f) + offset  # no device= argument: it would be baked into traces
        sy = torch.arange(h).type_as(f) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        column.append(strides[i].to(f).expand(h * w, 1))
    return torch.cat(points), torch.cat(column)


class DetectBranch(nn.Module):
    """One head branch on ``[T, B, C, H, W]``: SConv3x3 -> SConv3x3 -> neuron -> 1x1 conv (bias) -> mean over T.

    Args:
        c1 (int): Input channels.
        c_ (int): Hidden channels.
        c2 (int): Output channels.
        neuron (Callable): Neuron factory (default ``IBRALIF``, the paper's neuron).
    """

    def __init__(self, c1: int, c_: int, c2: int, neuron=DEFAULT_NEURON):
        super().__init__()
        self.conv1 = SConv(c1, c_, 3, neuron=neuron)
        self.conv2 = SConv(c_, c_, 3, neuron=neuron)
        self.pred = NeuronConv(neuron(), nn.Conv2d(c_, c2, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pred(self.conv2(self.conv1(x))).mean(0)


class SpikeDetect(Detect):
    """YOLOv8 decoupled head (DFL, ``reg_max`` 16) fed by ``[T, B, C, H, W]`` maps.

    Subclasses Ultralytics' ``Detect`` so its loss, stride probe, decoding, export and task detection apply unchanged;
    only the branches differ: each is spiking and collapses time by a mean over ``T`` of its last conv's output.

    Args:
        nc (int): Number of classes.
        ch (tuple[int, ...]): Channels of the P3, P4, P5 inputs.
        neuron (Callable): Neuron factory (default ``IBRALIF``, the paper's neuron).
        reg_max (int): DFL channels.
    """

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), neuron=DEFAULT_NEURON, reg_max: int = 16):
        super().__init__(nc=nc, reg_max=reg_max, end2end=False, ch=ch)
        c2, c3 = max((16, ch[0] // 4, self.reg_max * 4)), max(ch[0], min(self.nc, 100))
        self.cv2 = nn.ModuleList(DetectBranch(x, c2, 4 * self.reg_max, neuron) for x in ch)
        self.cv3 = nn.ModuleList(DetectBranch(x, c3, self.nc, neuron) for x in ch)

    def forward_head(self, x: list[torch.Tensor], box_head=None, cls_head=None) -> dict:
        """Run both branches per level; ``feats`` are the time-averaged inputs ``[B, C, H, W]``."""
        if box_head is None or cls_head is None:
            return {}
        bs = x[0].shape[1]
        boxes = torch.cat([box_head[i](x[i]).view(bs, 4 * self.reg_max, -1) for i in range(self.nl)], dim=-1)
        scores = torch.cat([cls_head[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)], dim=-1)
        return {"boxes": boxes, "scores": scores, "feats": [xi.mean(0) for xi in x]}

    def __setstate__(self, state):
        """Loaded from a file, the head rebuilds its anchor cache at its first forward: ``shape``, ``anchors`` and
        ``strides`` cache the grid of the last input size, and a file's own (a file could hold a matching ``shape``
        with anchors of its choice: every box decoded on another grid) is never used."""
        super().__setstate__(state)
        self.shape = None

    def _get_decode_boxes(self, x: dict) -> torch.Tensor:
        """Decode boxes as ``Detect`` does, with anchors from ``grid_anchors`` (no graph break under compile)."""
        shape = x["feats"][0].shape
        if not self.dynamic and self.shape != shape:  # Detect rebuilds them itself when dynamic (export)
            self.anchors, self.strides = (a.transpose(0, 1) for a in grid_anchors(x["feats"], self.stride))
            self.shape = shape
        return super()._get_decode_boxes(x)

    def bias_init(self):
        """Initialise the prediction biases as Ultralytics does (box 2.0, class prior ~0.01 objects per cell)."""
        for a, b, s in zip(self.cv2, self.cv3, self.stride):
            a.pred.op.bias.data[:] = 2.0
            b.pred.op.bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)
