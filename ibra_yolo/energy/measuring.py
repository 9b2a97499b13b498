"""Measuring a model: ``measure()`` runs it over images with an ``EnergyMeter`` attached and returns the report.

Images come through ``ibra_yolo.sources`` (Ultralytics' own dataset, image and device helpers), so
``--source coco.yaml`` means what it means to ``yolo val``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ibra_yolo.energy.meter import EnergyMeter
from ibra_yolo.energy.presets import DEFAULT_PRESET, energy_constants
from ibra_yolo.energy.report import EnergyReport
from ibra_yolo.errors import IbraYoloError, MissingFileError, NonFiniteError
from ibra_yolo.files import as_path
from ibra_yolo.limits import MAX_IMGSZ
from ibra_yolo.sources import image_batches, list_images, select_device
from ibra_yolo.spike_mode import torch_model

__all__ = ("measure", "load_model")


def load_model(weights: str | Path) -> nn.Module:
    """Load a trained checkpoint (``.pt``) or build an untrained model from an ibra-yolo YAML (path or name).

    Raises:
        MissingFileError: The checkpoint or YAML does not exist.
        UnsafePickleError: A checkpoint whose pickle names anything outside the allow-list (nothing in it was run).
        IbraYoloError: The file is not an ibra-yolo YAML, or cannot be loaded.
    """
    from ibra_yolo.checkpoints import load_yolo
    from ibra_yolo.plugin import model_yaml_path

    p = as_path(weights, "weights")
    suffix = p.suffix.lower()
    if suffix == ".pt":
        if not p.exists():  # checked first: YOLO() would try to download a name; a folder is named by the loader
            raise MissingFileError(f"weights file {p} does not exist")
    elif suffix in (".yaml", ".yml"):
        if model_yaml_path(p) is None:
            if p.is_dir():
                raise IbraYoloError(f"model {p} is a folder: pass a .pt checkpoint or a model YAML file")
            if not p.is_file():
                raise MissingFileError(
                    f"model {p} does not exist: pass a .pt checkpoint or e.g. spike-yolo-ibra-n.yaml"
                )
            raise IbraYoloError(f"model {p} is not an ibra-yolo model YAML (no 'neuron:' key)")
    else:
        raise IbraYoloError(f"--weights {p} must be a .pt checkpoint or a model .yaml")
    return load_yolo(p).model  # a .pt is read safely first: its pickle never runs code


def _check_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> None:
    if not (isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum):  # numpy ints too
        raise IbraYoloError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise IbraYoloError(f"{name}={value!r} is invalid: it must be at most {maximum}")


def _is_tensor_list(images) -> bool:
    return isinstance(images, (list, tuple)) and bool(images) and isinstance(images[0], torch.Tensor)


def _batches(images, imgsz: int, batch: int, max_images: int | None) -> tuple[Iterable[torch.Tensor], int, str]:
    """(batches, number of images, description) for a tensor, a list of tensors or an image source."""
    if isinstance(images, np.ndarray):
        raise IbraYoloError(
            f"images are a numpy array {images.shape}: pass a torch tensor [N, 3, H, W] (torch.from_numpy, channels "
            "first, RGB) or image files"
        )
    if _is_tensor_list(images) and not all(isinstance(x, torch.Tensor) for x in images):
        raise IbraYoloError("a list of image batches must hold only torch tensors [B, 3, H, W]")
    if isinstance(images, (list, tuple)) and not _is_tensor_list(images):
        odd = next((x for x in images if not isinstance(x, (str, Path))), None)
        if odd is not None:  # its repr was taken for a file name
            raise IbraYoloError(
                f"a list of images must hold file paths (or torch tensors [B, 3, H, W]), got a {type(odd).__name__}"
            )
    if isinstance(images, torch.Tensor) and (images.is_sparse or images.is_meta):  # before slicing: torch cannot
        raise IbraYoloError(f"images must be dense tensors with values, got a {images.layout} {images.device} tensor")
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or not len(images):
            raise IbraYoloError(f"an image tensor must be [N, 3, H, W] with N >= 1, got shape {tuple(images.shape)}")
        images = images[:max_images] if max_images else images
        return list(images.split(batch)), len(images), f"tensor {tuple(images.shape)}"
    if _is_tensor_list(images):
        return images, sum(len(x) for x in images), f"{len(images)} tensor batches"
    if not isinstance(images, (str, Path, list, tuple)):  # a generator or a PIL image: pathlib's TypeError
        raise IbraYoloError(
            f"images of type {type(images).__name__} cannot be measured: pass a tensor [N, 3, H, W], a list of tensors "
            "or of image paths, a folder, an image, or a data YAML"
        )
    files = list_images(images)
    files = files[:max_images] if max_images else files
    first = f" ({files[0]}{', ...' if len(files) > 1 else ''})" if files else ""
    source = f"{len(images)} image files{first}" if isinstance(images, (list, tuple)) else str(images)
    return image_batches(files, imgsz, batch), len(files), source


def _progress(batches: Iterable, total: int, enabled: bool) -> Iterator[torch.Tensor]:
    if not enabled:
        yield from batches
        return
    from ultralytics.utils import TQDM

    with TQDM(total=total, desc="energy", unit="img") as bar:
        for x in batches:
            yield x
            bar.update(len(x))


def _check_images(x: torch.Tensor, first: int, source: str, channels: int, stride: int = 1) -> None:
    """A batch is ``[B, channels, H, W]`` of uint8 or of finite floats in ``[0, 1]``; else the first bad image is named.

    Raises:
        NonFiniteError: A NaN or infinite pixel.
        IbraYoloError: Another dtype (int64, bool, complex), another shape, or floats outside ``[0, 1]`` (e.g. 0..255
            floats, which would be counted as 255x brighter images).
    """
    must = "images must be uint8 (0..255) or floats in [0, 1]"
    if x.is_meta or x.is_sparse:  # no values to measure
        raise IbraYoloError(f"{source}: images must be dense tensors with values, got a {x.layout} {x.device} tensor")
    if x.dtype not in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise IbraYoloError(f"{source}: {must}, got {x.dtype}")
    if x.dim() != 4 or x.shape[1] != channels or not len(x):
        raise IbraYoloError(f"{source}: a batch must be [N, {channels}, H, W], N >= 1, got shape {tuple(x.shape)}")
    h, w = x.shape[2:]
    if h % stride or w % stride or max(h, w) > MAX_IMGSZ:  # the stock letterbox makes both multiples of the stride
        raise IbraYoloError(
            f"{source}: images of {h}x{w} px: height and width must be multiples of {stride} (the model's largest "
            f"stride), at most {MAX_IMGSZ}"
        )
    if x.is_floating_point():
        bad = ~torch.isfinite(x).flatten(1).all(1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            kinds = " and ".join(k for k, f in (("NaN", torch.isnan), ("inf", torch.isinf)) if bool(f(x[i]).any()))
            raise NonFiniteError(f"image {first + i} of {source} holds {kinds}: {must}")
        out = ((x < 0) | (x > 1)).flatten(1).any(1)
        if bool(out.any()):
            i = int(out.nonzero()[0])
            lo, hi = float(x[i].min()), float(x[i].max())
            advice = " (divide by 255)" if hi > 2 else ""  # 0..255 floats; not for a value just past 1
            raise IbraYoloError(f"image {first + i} of {source} holds floats in [{lo!r}, {hi!r}]: {must}{advice}")


def _run(net: nn.Module, meter: EnergyMeter, batches, total: int, spike_driven, device, progress: bool,
         source: str = "the images") -> int:  # fmt: skip
    """Run ``net`` in eval mode over the batches with the meter attached; returns the number of images.

    The model's mode (training/eval, integer/spike-driven) and device are restored afterwards.
    """
    if spike_driven and not meter.spiking:
        raise IbraYoloError("spike-driven counting needs integer spiking neurons; this model has none (an ANN twin?)")
    param = next(net.parameters())
    device = select_device(device) if device is not None else param.device
    was_training, was_device, seen = net.training, param.device, 0
    channels = (getattr(net, "yaml", None) or {}).get("channels", 3)
    strides = getattr(net, "stride", None)
    ok = not isinstance(strides, torch.Tensor) or bool(
        strides.numel() and (strides >= 1).all() and strides.isfinite().all()  # 0 divided by zero; NaN, inf
    )
    if not ok:
        raise IbraYoloError(f"the model's stride {strides.tolist()} is invalid: strides are >= 1 (was it altered?)")
    stride = int(strides.max()) if isinstance(strides, torch.Tensor) else 1  # 1: not a detector
    units = [c.unit for c in meter.counters if c.spiking]
    previous = [u.spike_driven for u in units]
    switch_mode = any(m.training for m in net.modules())  # (re)setting the mode of ~1400 modules costs ~20 ms
    try:
        if spike_driven is not None:
            for u in units:
                u.spike_driven = bool(spike_driven)
        if device != was_device:
            net.to(device)
        if switch_mode:
            net.eval()
        with meter, torch.no_grad():
            for x in _progress(batches, total, progress):
                _check_images(x, seen, source, channels, stride)
                x = x.to(device)
                net(x.to(param.dtype) / 255 if x.dtype == torch.uint8 else x.to(param.dtype))
                seen += len(x)
    finally:
        for u, mode in zip(units, previous):
            u.spike_driven = mode
        if device != was_device:
            net.to(was_device)
        if switch_mode:
            net.train(was_training)
    return seen


def _mode(meter: EnergyMeter) -> dict:
    """How the model ran and how its spikes were counted."""
    if meter.spike_driven:
        return {"mode": "spike-driven", "spike_counting": "the ones of every {0,1} plane a Synapse receives"}
    if meter.spiking:
        return {"mode": "integer", "spike_counting": "from the integer codes: popcount (binary) or the code (unary)"}
    return {"mode": "ANN (real-valued)", "spike_counting": "none: no spiking neurons"}


def _model_name(net: nn.Module) -> str:
    d = getattr(net, "yaml", None)
    return str(d.get("yaml_file") or type(net).__name__) if isinstance(d, dict) else type(net).__name__


def _distinct(configs: list[dict]) -> list[dict]:
    out = []
    for cfg in configs:
        if cfg not in out:
            out.append(cfg)
    return out


def measure(
    model,
    images,
    imgsz: int | None = 640,
    batch: int = 8,
    spike_driven: bool | None = False,
    preset: str = DEFAULT_PRESET,
    e_mac: float | None = None,
    e_ac: float | None = None,
    max_images: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    name: str | None = None,
    counting: str | None = None,
) -> EnergyReport:
    """Run ``model`` over ``images`` in batches and report energy, spikes and range use per layer and in total.

    Memory stays constant: images are read lazily and every statistic is a running sum (code histograms are
    ``M + 1`` counters per layer). The meter only observes the forward pass (see ``ibra_yolo.energy.meter``).

    Args:
        model (YOLO | nn.Module): An ibra-yolo model (spiking or its ANN twin), or a ``YOLO`` object holding one.
        images: An image source (see ``ibra_yolo.sources.list_images``: a data YAML such as ``coco.yaml`` means its
            val split, as in ``yolo val``), a list of paths, an image tensor ``[N, 3, H, W]`` (``uint8`` or floats in
            ``[0, 1]``, used as given) or a list of such batches.
        imgsz (int): Square size images are letterboxed to (rounded up to a multiple of 32); ignored for tensors.
        batch (int): Images per forward pass.
        spike_driven (bool | None): Count spikes on the {0, 1} planes of spike-driven execution (True), from the
            integer codes (False), or in whatever mode the model is set to (None).
        preset (str): Energy constants, a key of ``PRESETS``.
        e_mac (float, optional): Custom MAC energy (pJ), replacing the preset's.
        e_ac (float, optional): Custom AC energy (pJ), replacing the preset's.
        max_images (int, optional): Use at most this many images.
        device (str | torch.device, optional): Where to run (Ultralytics' ``select_device``: ``cpu``, ``0``,
            ``cuda:1``); default where the model is. The model is moved back afterwards.
        progress (bool): Show a progress bar.
        name (str, optional): Model name in the report (default: its YAML file).
        counting (str, optional): How MACs are counted: ``"folded"`` (SPEC §5; the default) or ``"executed"`` (every
            stage as it runs; the default for a deployed model). See ``COUNTING_MODES``.

    Returns:
        (EnergyReport): Per-image figures; ``summary()`` for the totals, ``to_dict()`` for everything, ``price()``
        for other energy constants.

    Raises:
        NonFiniteError: An image holds NaN or inf (the first is named), or a neuron's output is NaN (NaN weights).
        IbraYoloError: Bad arguments, no images, a model without ``NeuronConv`` units, or spike-driven mode asked
            of a model without spiking neurons.
    """
    net = torch_model(model)
    constants = energy_constants(preset, e_mac, e_ac)
    if spike_driven is not None and not isinstance(spike_driven, bool):  # bool("no") is True
        raise IbraYoloError(f"spike_driven={spike_driven!r} is invalid: pass True, False or None (the model's mode)")
    _check_int("batch", batch)
    batch = int(batch)  # a numpy integer: torch's split() refused it
    if max_images is not None:
        _check_int("max_images", max_images)
        max_images = int(max_images)
    tensors = isinstance(images, torch.Tensor) or _is_tensor_list(images)
    if not tensors:
        _check_int("imgsz", imgsz, 1, MAX_IMGSZ)
        imgsz = -(-int(imgsz) // 32) * 32  # up to a multiple of the largest stride, as Ultralytics does
    meter = EnergyMeter(net, counting)
    batches, total, source = _batches(images, imgsz, batch, max_images)
    seen = _run(net, meter, batches, total, spike_driven, device, progress, source)
    if not seen and total:  # every file failed to decode (Ultralytics warned and skipped each): name them
        raise IbraYoloError(
            f"none of the {total} images of {source} could be decoded (empty, truncated or not an image?): nothing "
            f"was measured"
        )
    counts = meter.counts()
    meta = {
        "model": name or _model_name(net),
        "source": source,
        "images": seen,
        "imgsz": None if tensors else imgsz,
        "batch": batch,
        "T": max(c.T for c in counts),
        **_mode(meter),
        "neurons": _distinct([c.neuron_config for c in counts if c.neuron_config is not None]),
        "dtype": str(next(net.parameters()).dtype).removeprefix("torch."),
    }
    footprint = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
    return EnergyReport(counts, constants, meta, footprint, sum(p.numel() for p in net.parameters()))
