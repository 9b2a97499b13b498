"""Energy, spike statistics and range use of ibra-yolo models, measured by running them over images (SPEC §2.4, §5).

Counting, pricing and showing are separate steps, each in its own module:

- ``presets``: energy per operation (``EnergyPreset``, ``PRESETS``, ``energy_constants``);
- ``meter``: ``EnergyMeter``, hooks that observe every ``NeuronConv`` while the model runs and keep raw counts
  (MACs, exact spikes, synaptic operations, histograms of codes);
- ``report``: ``EnergyReport``, the counts priced per layer and in total, per image; ``price()`` re-prices without
  running the model; ``COUNTING_RULES`` are written there once;
- ``render``: the text table, the CSV, the figure;
- ``measuring``: ``measure()``, which runs a model over images (``ibra_yolo.sources``) with a meter attached.

Examples:
    >>> from ultralytics import YOLO
    >>> from ibra_yolo.energy import measure
    >>> report = measure(YOLO("best.pt"), "coco.yaml", imgsz=640, batch=8, max_images=500)
    >>> print(report.table())
    >>> report.summary()["energy_mJ"], report.price("45nm-int8").summary()["energy_mJ"]
    >>> report.save("runs/energy")   # energy.json, energy_layers.csv, energy.png
"""

from ibra_yolo.energy.measuring import load_model, measure
from ibra_yolo.energy.meter import COUNTING_MODES, EnergyMeter, LayerCounts, codes_from_outputs
from ibra_yolo.energy.presets import DEFAULT_PRESET, PRESETS, EnergyPreset, energy_constants
from ibra_yolo.energy.render import output_paths
from ibra_yolo.energy.report import COUNTING_RULES, EnergyReport, LayerReport

__all__ = (
    "EnergyPreset",
    "PRESETS",
    "DEFAULT_PRESET",
    "energy_constants",
    "COUNTING_MODES",
    "COUNTING_RULES",
    "EnergyMeter",
    "LayerCounts",
    "codes_from_outputs",
    "LayerReport",
    "EnergyReport",
    "measure",
    "load_model",
    "output_paths",
)
