"""SpikeYOLO's released checkpoints: safe reading, conversion to our model, and saving as an ibra-yolo checkpoint."""

from ibra_yolo.spikeyolo.convert import NEURON_FAMILIES, convert_spikeyolo, load_spikeyolo, resolve_neuron
from ibra_yolo.unpickle import StandIn, read_checkpoint

__all__ = ("NEURON_FAMILIES", "StandIn", "convert_spikeyolo", "load_spikeyolo", "read_checkpoint", "resolve_neuron")
