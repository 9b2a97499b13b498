"""ibra-yolo: IBRA-LIF spiking neurons and spiking YOLO detectors as a plugin for Ultralytics YOLO.

The package imports lazily: ``import ibra_yolo`` loads neither torch nor Ultralytics (the autoload ``.pth`` relies on
this); each public name is imported on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # neurons (pure torch)
    "IntegerLIF": "ibra_yolo.neurons",
    "IBRALIF": "ibra_yolo.neurons",
    "IBLIF": "ibra_yolo.neurons",
    "ILIF": "ibra_yolo.neurons",
    "make_neuron": "ibra_yolo.neurons",
    # spike-driven inference on the same weights
    "spike_driven": "ibra_yolo.spike_mode",
    "set_spike_driven": "ibra_yolo.spike_mode",
    "is_spike_driven": "ibra_yolo.spike_mode",
    # deployment: the folded network that runs (ibra_yolo.deployment; the module is not named deploy, so that
    # ibra_yolo.deploy stays this function even after the module is imported)
    "deploy": "ibra_yolo.deployment",
    "deploy_checkpoint": "ibra_yolo.deployment",
    "fuse_bn": "ibra_yolo.deployment",
    # energy, spike statistics and range use
    "measure": "ibra_yolo.energy",
    # SpikeYOLO's released checkpoints
    "load_spikeyolo": "ibra_yolo.spikeyolo",
    "convert_spikeyolo": "ibra_yolo.spikeyolo",
    # demo data
    "make_shapes_dataset": "ibra_yolo.data",
    # Ultralytics integration
    "register": "ibra_yolo.plugin",
    "model_yaml_path": "ibra_yolo.plugin",
}

__all__ = ("__version__", *_EXPORTS)


def __getattr__(name: str):
    """Import public names on first access (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ibra_yolo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
