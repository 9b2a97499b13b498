"""Load SpikeYOLO's released checkpoints into our model, checked tensor by tensor, and save them as ours.

``load_spikeyolo`` reads the checkpoint with the restricted unpickler (no code of the file runs), builds our model from
the checkpoint's own layer table (`to_our_model_dict`), moves every tensor to its counterpart (`module_pairs`) and
checks that each of the checkpoint's tensors is used exactly once, that each of ours receives one, and that shapes
and conv geometry are equal; BatchNorm ``eps`` comes from the checkpoint. ``convert_spikeyolo`` writes the result as a
normal Ultralytics checkpoint of our model, usable with ``yolo val/predict/train`` and our tools.
"""

from __future__ import annotations

import copy
import logging
import math
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from ibra_yolo.errors import CheckpointError, IbraYoloError, ModelConfigError, UnsafePickleError
from ibra_yolo.files import as_path, check_output, write_atomic
from ibra_yolo.spikeyolo.architecture import spikeyolo_neuron, to_our_model_dict
from ibra_yolo.spikeyolo.names import ModulePair, module_pairs
from ibra_yolo.unpickle import StandIn, read_checkpoint

__all__ = ("NEURON_FAMILIES", "resolve_neuron", "model_from_checkpoint", "load_spikeyolo", "convert_spikeyolo")

LOGGER = logging.getLogger("ultralytics")
NEURON_FAMILIES = ("ibra", "ilif", "iblif")  # --neuron names: the neuron of our shipped cfg/spike-yolo-<name>.yaml
_CONV_GEOMETRY = ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")


def resolve_neuron(neuron) -> dict | None:
    """Our neuron mapping from None (keep the checkpoint's), a family name or a mapping (or its YAML text).

    Args:
        neuron (None | str | dict): ``None``; ``'ibra'``, ``'ilif'`` or ``'iblif'`` (the neuron of our shipped YAML of
            that family); or a mapping such as ``{kind: IBRALIF, D: 5.11, N: 100}``, as a dict or YAML text.

    Returns:
        (dict | None): A validated neuron mapping, or None to keep the checkpoint's I-LIF.

    Raises:
        ModelConfigError: Anything else, or a mapping our neurons do not accept.
    """
    import yaml

    if neuron is None:
        return None
    if isinstance(neuron, str) and neuron.strip().lower() in NEURON_FAMILIES:
        from ibra_yolo.plugin import cfg_dir

        shipped = cfg_dir() / f"spike-yolo-{neuron.strip().lower()}.yaml"
        return dict(yaml.safe_load(shipped.read_text())["neuron"])
    if isinstance(neuron, str):
        from ibra_yolo.yaml_files import check_expanded_size, check_unique_keys

        try:
            check_unique_keys(neuron, "--neuron")
            neuron = yaml.safe_load(neuron)
            check_expanded_size(neuron, "--neuron")
        except yaml.YAMLError:
            neuron = None
        if not isinstance(neuron, dict):
            raise ModelConfigError(
                f"--neuron must be one of {', '.join(NEURON_FAMILIES)} or a mapping such as "
                "'{kind: IBRALIF, D: 5.11, N: 100}'"
            )
    from ibra_yolo.neurons import make_neuron

    try:
        make_neuron(neuron)
    except ValueError as e:
        raise ModelConfigError(f"neuron: {e}") from None
    return dict(neuron)


def _model_entry(ckpt, source: str) -> StandIn:
    """The checkpoint's model as Ultralytics picks it: the EMA when present, else ``model``."""
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, StandIn) or "model" not in model.children():
        what = f"keys {list(ckpt)[:10]}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise CheckpointError(
            f"{source} is not an Ultralytics checkpoint with a model ('model'/'ema'); it holds {what}"
        )
    return model


def _check_module(pair: ModulePair, ours: nn.Module) -> None:
    """Conv geometry must match; BatchNorm takes the checkpoint's eps and momentum."""
    cls, attrs = pair.module.name, pair.module.attrs
    if cls == "Conv2d":
        if not isinstance(ours, nn.Conv2d):
            raise CheckpointError(f"SpikeYOLO conv {pair.theirs} maps to our {pair.ours}, a {type(ours).__name__}")
        for key in _CONV_GEOMETRY:
            theirs, mine = attrs.get(key), getattr(ours, key)
            if (tuple(theirs) if isinstance(theirs, list) else theirs) != mine:
                raise CheckpointError(f"SpikeYOLO conv {pair.theirs} has {key}={theirs} but our {pair.ours} has {mine}")
    elif cls == "BatchNorm2d":
        if not isinstance(ours, nn.BatchNorm2d):
            raise CheckpointError(f"SpikeYOLO BatchNorm {pair.theirs} maps to our {pair.ours}, a {type(ours).__name__}")
        eps, momentum = attrs.get("eps"), attrs.get("momentum")
        if not isinstance(eps, float) or not math.isfinite(eps) or eps <= 0:
            raise CheckpointError(f"SpikeYOLO BatchNorm {pair.theirs} has eps={eps!r}, not a finite number > 0")
        ours.eps = eps
        if isinstance(momentum, float):
            ours.momentum = momentum


def _load_weights(model: nn.Module, root: StandIn) -> dict[str, torch.Tensor]:
    """Move every tensor of ``root`` into ``model``, checked; returns them by our state-dict key."""
    ours_sd = model.state_dict()
    values, source = {}, {}
    for pair in module_pairs(root):
        try:
            ours = model.get_submodule(pair.ours)
        except AttributeError:
            raise CheckpointError(
                f"SpikeYOLO module {pair.theirs} maps to {pair.ours}, which our model does not have"
            ) from None
        _check_module(pair, ours)
        for name, t in pair.module.tensors().items():
            theirs, key = f"{pair.theirs}.{name}", f"{pair.ours}.{name}"
            if key not in ours_sd:
                raise CheckpointError(f"SpikeYOLO tensor {theirs} maps to {key}, which our model does not have")
            if key in source:
                raise CheckpointError(f"SpikeYOLO tensors {source[key]} and {theirs} both map to our {key}")
            if tuple(t.shape) != tuple(ours_sd[key].shape):
                raise CheckpointError(
                    f"SpikeYOLO tensor {theirs} has shape {list(t.shape)} but our {key} has "
                    f"{list(ours_sd[key].shape)}: the checkpoint's layer table does not match the model built from it"
                )
            values[key], source[key] = t, theirs
    missing = [k for k in ours_sd if k not in values]
    if missing:
        raise CheckpointError(f"our tensor {missing[0]} gets no weight from the checkpoint ({len(missing)} in all)")
    _check_finite({source[k]: v for k, v in values.items()})
    model.load_state_dict(values, strict=True)  # copy_ casts float16 to our float32 exactly
    return values


def _check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or inf, naming the first tensor that holds one (one check per dtype, then a search on failure)."""
    by_dtype: dict[torch.dtype, list] = {}
    for name, t in tensors.items():
        if t.is_floating_point():
            by_dtype.setdefault(t.dtype, []).append((name, t))
    for group in by_dtype.values():
        if not torch.isfinite(torch.cat([t.reshape(-1) for _, t in group])).all():
            bad = next(name for name, t in group if not torch.isfinite(t).all())
            raise CheckpointError(f"SpikeYOLO tensor {bad} holds non-finite values (NaN or inf)")


def _plain(v) -> bool:
    """Plain data only (never a stand-in), so that what we save loads anywhere."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return isinstance(v, dict) and all(_plain(k) and _plain(x) for k, x in v.items())


def _train_args(ckpt: dict) -> dict:
    """SpikeYOLO's training arguments that Ultralytics 8.4 still knows (as its own stripped checkpoints keep them)."""
    from ultralytics.utils import DEFAULT_CFG_KEYS

    args = ckpt.get("train_args")
    return {k: v for k, v in args.items() if k in DEFAULT_CFG_KEYS and _plain(v)} if isinstance(args, dict) else {}


def model_from_checkpoint(ckpt, neuron=None, source: str = "checkpoint", verbose: bool = True):
    """Our model from an already read SpikeYOLO checkpoint (see `read_checkpoint`), plus its provenance record.

    Args:
        ckpt (dict): What `read_checkpoint` returned.
        neuron (None | str | dict): See `load_spikeyolo`.
        source (str): The file's name, for messages and the provenance record.
        verbose (bool): Log a one-line summary.

    Returns:
        (DetectionModel): Our model, in eval mode, float32.
        (dict): Provenance (source, SpikeYOLO version and date, trained and running neuron, scale, T, tensors).

    Raises:
        CheckpointError: Not such a checkpoint, a tensor that does not fit (named), or data that expands to over a
            million values through shared references (``ibra_yolo.nesting.check_expanded_size``).
    """
    from ibra_yolo.plugin import register

    register()
    from ultralytics.nn.tasks import DetectionModel

    from ibra_yolo.nesting import check_expanded_size

    if isinstance(ckpt, dict):  # a tuple shared at every level: _plain, deepcopy and printing walk it once per use
        check_expanded_size(ckpt, source)
    root = _model_entry(ckpt, source)
    d = to_our_model_dict(root, resolve_neuron(neuron))
    model = DetectionModel(d, ch=d["ch"], verbose=False)
    values = _load_weights(model, root)
    n = len(values)
    stride = root.attrs.get("stride")
    if isinstance(stride, torch.Tensor) and not torch.equal(stride.float(), model.stride.float()):
        raise CheckpointError(f"SpikeYOLO strides {stride.tolist()} differ from our model's {model.stride.tolist()}")
    names = root.attrs.get("names")
    if isinstance(names, dict) and _plain(names) and sorted(names) == list(range(d["nc"])):
        model.names = dict(names)
    model.args = _train_args(ckpt)
    model.eval()
    info = {
        "source": source,
        "version": ckpt.get("version") if _plain(ckpt.get("version")) else None,
        "date": ckpt.get("date") if _plain(ckpt.get("date")) else None,
        "trained_neuron": spikeyolo_neuron(root),
        "neuron": d["neuron"],
        "scale": d["scales"][d["scale"]],
        "T": d["T"],
        "tensors": n,
        "float_dtypes": sorted({str(t.dtype) for t in values.values() if t.is_floating_point()}),
    }
    if verbose:
        LOGGER.info(
            f"SpikeYOLO {source}: {n}/{n} tensors loaded, scale [depth, width, max_channels] {info['scale']}, "
            f"T={d['T']}, trained with {info['trained_neuron']}, running {d['neuron']}"
        )
    return model, info


def load_spikeyolo(path: str | Path, neuron=None, verbose: bool = True) -> nn.Module:
    """Load a SpikeYOLO checkpoint (Ultralytics 8.0.197 fork) into our model, without running any of its code.

    Args:
        path (str | Path): SpikeYOLO's ``.pt`` file, e.g. its released ``69M_best.pt``.
        neuron (None | str | dict): None keeps SpikeYOLO's I-LIF (``D`` from the checkpoint); ``'ibra'``,
            ``'ilif'``, ``'iblif'`` or a mapping such as ``{kind: IBRALIF, D: 5.11, N: 100}`` swaps it, e.g. to
            fine-tune with IBRA-LIF (the weights load unchanged).
        verbose (bool): Log a one-line summary.

    Returns:
        (DetectionModel): Our Ultralytics detection model in eval mode, float32; ``model(images)[0]`` gives the same
            outputs as SpikeYOLO's own forward.

    Raises:
        UnsafePickleError: The file's pickle names anything but tensors, plain data and module classes.
        CheckpointError: Not such a checkpoint, or a tensor that does not fit (named).

    Examples:
        >>> model = load_spikeyolo("69M_best.pt")
        >>> boxes_and_scores = model(torch.rand(1, 3, 640, 640))[0]  # [1, 4 + 80, 8400]
    """
    return model_from_checkpoint(_read(path), neuron, Path(path).name, verbose)[0]


def _read(path):
    """`read_checkpoint`, whose refusal of a file of pickle protocol 0 or 1 names the protocol (or what else the file
    names), not the names those protocols use for any object (battery 31, W07)."""
    from ibra_yolo.pickle_checks import old_protocol_error

    try:
        return read_checkpoint(path)
    except UnsafePickleError as e:
        old = old_protocol_error(path, getattr(e, "refused", ("", ""))[0])
        if old is None:
            raise
        raise old from None


def _check_output(dst: Path, src: Path, overwrite: bool) -> None:
    if dst.suffix != ".pt":
        raise IbraYoloError(f"output {dst} must end in .pt (Ultralytics loads checkpoints by that suffix)")
    check_output(dst, overwrite, flag="file name", inputs=(src,))


def convert_spikeyolo(src: str | Path, dst: str | Path, neuron=None, overwrite: bool = False) -> Path:
    """Convert a SpikeYOLO checkpoint into a normal Ultralytics checkpoint of our model.

    The output works with ``yolo val``/``predict``/``export``, ``YOLO(dst)``, ``tools/eval_coco.py``,
    ``tools/energy.py``, spike-driven mode, and as ``pretrained=`` for ``yolo train`` of our YAML at the same scale.
    Its weights are float16, like Ultralytics' own stripped checkpoints, when the source's are (SpikeYOLO's released
    ones are): nothing is rounded. A source with wider floats is saved in float32.

    Args:
        src (str | Path): SpikeYOLO's ``.pt`` file.
        dst (str | Path): Output ``.pt`` file; checked before any work.
        neuron (None | str | dict): See `load_spikeyolo`.
        overwrite (bool): Replace an existing ``dst``.

    Returns:
        (Path): ``dst``.

    Raises:
        IbraYoloError: A bad output path (before any work), or any error of `load_spikeyolo`.
    """
    import ultralytics

    src, dst = as_path(src, "src"), as_path(dst, "dst")
    _check_output(dst, src, overwrite)
    neuron = resolve_neuron(neuron)  # a bad --neuron fails before the checkpoint is read
    model, info = model_from_checkpoint(_read(src), neuron, src.name)
    saved = copy.deepcopy(model)
    if info["float_dtypes"] == ["torch.float16"]:
        saved.half()
    for p in saved.parameters():
        p.requires_grad = False
    ckpt = {
        "date": datetime.now().astimezone().isoformat(),
        "version": ultralytics.__version__,
        "epoch": -1,
        "best_fitness": None,
        "model": saved,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": dict(model.args),
        "spikeyolo": info,  # provenance: converted from SpikeYOLO's checkpoint by ibra-yolo
    }
    return write_atomic(dst, lambda tmp: torch.save(ckpt, tmp), overwrite)
