"""Spiking blocks, the detect head and the YAML builder.

Importing this package allow-lists the classes a checkpoint of an ibra-yolo model pickles (the neurons, blocks and
head) for ``torch.load(weights_only=True)``, i.e. Ultralytics' ``ULTRALYTICS_SAFE_LOAD=1``: they are plain modules
that run no code when unpickled.
"""

import torch

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
    Tap,
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
    "Tap",
    "TimeRepeat",
    "Upsample",
    "build_spiking_model",
    "is_spiking_yaml",
)


# numpy's dtypes of numbers: Ultralytics allow-lists numpy scalars but only float64's dtype class, so a checkpoint
# holding an np.float32 or np.int64 (e.g. in train_metrics) was refused (battery 12); never object or void dtypes
NUMPY_NUMBERS = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                 "float32", "float64", "longdouble", "complex64", "complex128", "clongdouble")  # fmt: skip


def _allow_list_classes() -> None:
    """Allow-list our module classes for ``torch.load(weights_only=True)`` (``ULTRALYTICS_SAFE_LOAD=1``), and the
    dtype classes of numpy's numbers."""
    import numpy as np

    from ibra_yolo import neurons
    from ibra_yolo.nn import blocks, head

    modules = (neurons, blocks, head)
    classes = [getattr(m, n) for m in modules for n in m.__all__ if isinstance(getattr(m, n), type)]
    torch.serialization.add_safe_globals(classes + [type(np.dtype(name)) for name in NUMPY_NUMBERS])


_allow_list_classes()
