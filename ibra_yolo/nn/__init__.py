"""Spiking blocks, the detect head and the YAML builder."""

from ibra_yolo.nn.blocks import (
    SPPF,
    AllConvBlock,
    BNPad,
    Concat,
    ConvBlock,
    Downsample,
    NeuronConv,
    RepConv,
    SConv,
    SepConv,
    SepRep,
    Synapse,
    TimeRepeat,
    Upsample,
)
from ibra_yolo.nn.builder import build_spiking_model, is_spiking_yaml
from ibra_yolo.nn.head import DetectBranch, SpikeDetect

__all__ = (
    "AllConvBlock",
    "BNPad",
    "Concat",
    "ConvBlock",
    "DetectBranch",
    "Downsample",
    "NeuronConv",
    "RepConv",
    "SConv",
    "SPPF",
    "SepConv",
    "SepRep",
    "SpikeDetect",
    "Synapse",
    "TimeRepeat",
    "Upsample",
    "build_spiking_model",
    "is_spiking_yaml",
)

from ibra_yolo.plugin import allow_list_classes  # noqa: E402

allow_list_classes()  # for ULTRALYTICS_SAFE_LOAD=1 checkpoint loading
