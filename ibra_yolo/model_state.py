"""What a loaded model must hold before anything runs it: values a YAML and a training run could have given.

A checkpoint is data: its neurons' settings, strides and class names are whatever the file says, and a file altered
after saving (or broken by a tool) can hold a negative ``N``, an encoding no neuron has, a stride of 0 or class names
that are not a name table. Unchecked, such a model fails deep inside torch or Ultralytics (a 100-line traceback), or
runs and returns boxes that mean nothing. ``check_model_state`` refuses it in one line that names the file, the
layer and the value; every ``.pt`` ibra-yolo opens, and every ibra-yolo model the stock loader opens, passes it.
"""

from __future__ import annotations

import copy
import math
import unicodedata
from numbers import Integral
from pathlib import Path, PurePath

import torch
from torch import nn

from ibra_yolo.errors import CheckpointError, NonFiniteError
from ibra_yolo.neuron_state import check_neuron_settings, check_yaml_neuron
from ibra_yolo.plain_attributes import check_plain_attributes, check_shadowing, with_saving_version

__all__ = (
    "check_model_state",
    "check_finite_weights",
    "check_neuron_settings",
    "check_yaml_neuron",
    "check_layer_settings",
    "layer_settings",
)

# the largest train_args imgsz a file may give `yolo predict/val` without imgsz= (battery 22, K25: 4096 took 55 s and
# 3.9 GB for one 64 px image with an n model; 100000 would exhaust the machine); a user's own imgsz= is not limited
MAX_IMGSZ = 8192
MAX_STRIDE = 1024  # YOLO heads stride 8-64; the check runs an image of twice the largest stride
DATASET_SUFFIXES = (".yaml", ".yml", ".zip", ".tar", ".tar.gz", ".tgz")  # what Ultralytics' detection data= takes


def check_finite_weights(model: nn.Module, path: str | Path) -> None:
    """Refuse a model with a NaN or infinite weight or buffer (it would predict nothing, or NaN, without a word).

    Raises:
        NonFiniteError: Naming the first such tensor and how many of its values are not finite.
    """
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not t.isfinite().all():
            bad = int((~t.isfinite()).sum())
            raise NonFiniteError(
                f"{path}: {name} holds {bad} NaN or infinite value(s) of {t.numel()}: the weights are broken"
            )


# Format characters (Unicode Cf) that reorder the rest of a printed line (bidi embeddings, overrides, isolates) or
# make two names print alike (zero-width space, word joiner, BOM). Other Cf characters spell words (ZWNJ in Persian,
# ZWJ in emoji, soft hyphen) and are left to the name.
HIDING = frozenset("\u200b\u2060\ufeff" + "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])))


def _check_strides(model: nn.Module, path: str | Path) -> None:
    head = model.model[-1] if isinstance(getattr(model, "model", None), nn.Sequential) else None
    for name, m in (("the model", model), ("its head", head)):
        s = getattr(m, "stride", None) if m is not None else None
        if s is not None and not isinstance(s, torch.Tensor):  # a list: Ultralytics' max() / indexing tracebacks
            raise CheckpointError(
                f"{path}: {name} holds stride={s!r:.80} ({type(s).__name__}): a stride is a tensor of floats (the "
                f"file was altered)"
            )
    for name, m in [("model", model), *((f"{n} ({type(m).__name__})", m) for n, m in model.named_modules() if n)]:
        s = m.__dict__.get("stride", m._buffers.get("stride"))  # the model's and the head's, not a conv's tuple
        if isinstance(s, torch.Tensor) and (
            not s.numel() or not s.is_floating_point() or not (s > 0).all() or not (s <= MAX_STRIDE).all()
        ):  # fmt: skip  (NaN fails both)
            raise CheckpointError(
                f"{path}: {name} holds stride={s.tolist()!r:.80} ({s.dtype}): strides are float numbers in (0, "
                f"{MAX_STRIDE}] (the file was altered)"
            )


def _check_names(model: nn.Module, path: str | Path) -> None:
    """Class names as Ultralytics reads them (``check_class_names``): a list, or a dict keyed by class indices."""
    names = getattr(model, "names", None)
    if names is None:
        return
    if not isinstance(names, (dict, list, tuple)):
        raise CheckpointError(f"{path}: the model's class names are a {type(names).__name__}, not a dict or a list")
    for k, name in names.items() if isinstance(names, dict) else enumerate(names):
        if isinstance(name, str) and any(unicodedata.category(c) == "Cc" or c in HIDING for c in name):  # printed
            raise CheckpointError(
                f"{path}: the model's class name {k!r:.20} is {name!r:.60}: it holds control characters (a line break, "
                "a terminal escape, a bidi override or a zero-width space would forge, reorder or hide output lines; "
                "the file was altered)"
            )
        if not isinstance(names, dict):
            continue
        index = isinstance(k, Integral) and not isinstance(k, bool) and k >= 0
        if not (index or (isinstance(k, str) and k.isdigit())):  # Ultralytics takes int(k): int('a') was a traceback
            raise CheckpointError(
                f"{path}: the model's class names have the key {k!r:.40}: class names are keyed by class indices 0, "
                "1, ... (the file was altered)"
            )


def layer_settings(model: nn.Module, prefix: str = "", tensors: bool = True) -> dict[str, str]:
    """Each layer's class and plain settings, by place: ``{"model.9.m (class)": "MaxPool2d", "model.9.m.kernel_size":
    "3", ...}`` -- numbers, strings, flags, tuples, lists and (``tensors``) small tensors such as a stride, as
    ``repr`` (so NaN equals NaN); ``training`` and private attributes not. A layer held at two places is listed at
    both (no model builds one: a file's extra child that is another layer must not pass unlisted); a module cycle is
    refused before this runs (``ibra_yolo.nesting.check_nesting``)."""
    out = {}
    for name, m in model.named_modules(prefix=prefix, remove_duplicate=False):
        out[f"{name or 'the model'} (class)"] = type(m).__qualname__
        for key, value in vars(m).items():
            if key.startswith("_") or key == "training":
                continue
            if isinstance(value, torch.Tensor) and tensors and value.numel() <= 64:
                value = value.tolist()
            elif not isinstance(value, (int, float, str, bool, type(None), tuple, list)):
                continue
            out[f"{name or 'the model'}.{key}"] = repr(value)[:200]
    return out


# Plain settings that running or converting a model sets (not its model dict): spike-driven mode, Ultralytics' in-place
# activations and its head's export / shape / max_det state. Everything else a layer holds, its model dict gives.
RUN_TIME_SETTINGS = frozenset({"spike_driven", "inplace", "export", "format", "dynamic", "shape", "max_det"})


def check_layer_settings(model: nn.Module, path: str | Path) -> None:
    """Refuse a model whose layers are not the ones its model dict builds: the dict is built again (and folded as the
    file says, ``fuse`` or ``deploy``) and every layer must be of the same class, in the same place, with the same
    plain settings (a pooling kernel, a conv's padding, a BN's eps, a block's shortcut flag). A file edited after
    saving -- an SPPF pooling kernel 5 changed to 3 -- runs, scores other boxes, and trains or resumes as the dict's
    layers (``yolo train model=x.pt`` rebuilds them), without a word.

    Raises:
        CheckpointError: Naming the layer, the setting, what the file holds and what the model dict builds.
    """
    from ultralytics.utils.torch_utils import initialize_weights

    from ibra_yolo.deployment import deploy, fuse_bn
    from ibra_yolo.nn.builder import FOLDED_KEY, build_spiking_model

    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential):
        return
    spec = {k: v for k, v in model.yaml.items() if k != FOLDED_KEY}
    try:  # the layers `yolo train model=x.pt` builds (with the BN eps and momentum DetectionModel gives them)
        built, _ = build_spiking_model(spec, spec.get("channels", 3), verbose=False)
        initialize_weights(built)
        if model.yaml.get(FOLDED_KEY) in ("bn", "all"):
            (fuse_bn if model.yaml[FOLDED_KEY] == "bn" else deploy)(built)
    except Exception as e:  # noqa: BLE001 - whatever an altered dict makes the builder raise: one line
        line = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: its model dict builds no model (the file was altered?): {line}") from None
    held, want = (layer_settings(m, "model", tensors=False) for m in (layers, built))  # strides: _check_structure
    for key in {**want, **held}:
        layer, _, setting = key.rpartition(".")
        if key.endswith(" (class)"):
            if held.get(key) != want.get(key):
                what, builds = (_a(d[key]) if key in d else "no such layer" for d in (held, want))
                raise CheckpointError(
                    f"{path}: {key.removesuffix(' (class)')} is {what}, but its model dict builds {builds} there: the "
                    f"file was altered after it was saved, and training or resuming from it would rebuild the dict's "
                    f"layers"
                )
        elif key in want and setting not in RUN_TIME_SETTINGS and held.get(key, "absent") != want[key]:
            raise CheckpointError(
                f"{path}: {layer} ({held.get(layer + ' (class)')}) holds {setting}={held.get(key, 'absent'):.80}, but "
                f"its model dict builds {setting}={want[key]:.80}: the file was altered after it was saved, and "
                f"training or resuming from it would rebuild the dict's layers"
            )
    _check_order(layers, built, path)
    _check_tensors(layers, built, path)
    check_plain_attributes(layers, built, path, RUN_TIME_SETTINGS)  # tensors outside the state_dict, extra settings
    for name, m in layers.named_modules(prefix="model"):  # a setting the class holds, shadowed in the file's layer
        for key, value in vars(m).items():
            default = getattr(type(m), key, None)
            if key.startswith("_") or key in RUN_TIME_SETTINGS or f"{name}.{key}" in want or default is None:
                continue
            if isinstance(default, (bool, int, float, str, tuple)) and (
                type(value) is not type(default) or value != default
            ):
                raise CheckpointError(
                    f"{path}: {name} ({type(m).__name__}) holds {key}={value!r:.80}, but its class gives "
                    f"{key}={default!r} and its model dict sets no other: the file was altered after it was saved "
                    f"(e.g. xyxy=True decodes every box in another format)"
                )


def _check_order(layers: nn.Module, built: nn.Module, path: str | Path) -> None:
    """Each layer holds its children in the order the model dict builds them: a Sequential (and a block looping over
    its children) runs them in the order held, so blocks swapped in the file -- same names, settings and weights --
    ran in another order and scored other boxes (battery 27, Q09/Q39/Q40), in the ema too."""
    want = dict(built.named_modules(prefix="model", remove_duplicate=False))
    for name, m in layers.named_modules(prefix="model", remove_duplicate=False):
        held, builds = list(m._modules), list(want[name]._modules) if name in want else None
        if builds is not None and held != builds:
            raise CheckpointError(
                f"{path}: {name} ({type(m).__name__}) holds its layers in the order {', '.join(held)[:120]}, but its "
                f"model dict builds {', '.join(builds)[:120]}: they run in the order held; the file was altered "
                f"after it was saved"
            )


def _check_tensors(layers: nn.Module, built: nn.Module, path: str | Path) -> None:
    """The layers hold the tensors (weights, biases, BN statistics) the model dict builds, by name, shape and kind: a
    bias added to a conv that has none (battery 22, K12: every output moved, and no setting shows it), a tensor removed
    or reshaped, or a weight made a buffer (never trained) is an altered file."""
    held, want = (_tensors(m) for m in (layers, built))
    for k in {**want, **held}:
        if held.get(k) != want.get(k):
            what, builds = (f"a {d[k][1]} of shape {d[k][0]}" if k in d else "no such tensor" for d in (held, want))
            raise CheckpointError(
                f"{path}: {k} is {what}, but its model dict builds {builds} there: the file was altered after it was "
                f"saved"
            )


def _tensors(layers: nn.Module) -> dict[str, tuple[tuple, str]]:
    """``{name: (shape, "parameter" or "buffer")}`` of what a model saves: a weight made a buffer is not trained."""
    params = {k for k, _ in layers.named_parameters(prefix="model", remove_duplicate=False)}
    return {
        k: (tuple(v.shape), "parameter" if k in params else "buffer")
        for k, v in layers.state_dict(prefix="model.").items()
    }


def _check_dfl(model: nn.Module, path: str | Path) -> None:
    """The head's DFL conv is fixed, not trained: its weight is 0, 1, ..., reg_max - 1 (the expected distance of a
    box side's distribution). Another weight scales every box (doubled, battery 20 A38: every box twice its size)."""
    from ultralytics.nn.modules.block import DFL

    for name, m in model.named_modules():
        if isinstance(m, DFL):
            w = m.conv.weight
            want = torch.arange(w.numel(), dtype=torch.float64).view(w.shape)
            if w.shape[:2] != (1, m.c1) or not torch.equal(w.detach().double().cpu(), want):
                raise CheckpointError(
                    f"{path}: {name}.conv.weight is not the fixed 0, 1, ..., {m.c1 - 1} of a DFL (it holds "
                    f"{w.detach().flatten()[:4].tolist()}...): every box would be decoded at another size (the file "
                    f"was altered)"
                )


def _a(name: str) -> str:
    return f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}"


def _check_task(model: nn.Module, path: str | Path) -> None:
    """The task a loader reads from the model (its own ``task``, else ``args['task']``) is detect when it is set:
    Ultralytics picks the predictor and validator by it, and a segmentation one failed deep inside on our boxes
    (battery 32, C16: ``model.task = 'segment'``)."""
    args = model.__dict__.get("args")
    held = {"task": model.__dict__.get("task"), "args['task']": args.get("task") if isinstance(args, dict) else None}
    for where, task in held.items():
        if task not in (None, "detect"):
            raise CheckpointError(
                f"{path}: the model's {where} is {task!r:.40}, but ibra-yolo models are detectors (task detect): the "
                f"file was altered"
            )


def _check_structure(model: nn.Module, path: str | Path) -> None:
    """The model dict is there, there is a class name per class, and the model runs on one blank image: a layer
    altered out of step with its neighbours (a neuron's ``T``, a head's ``nc`` or ``reg_max``, a conv stride of 0)
    fails here, in one line, not 40-90 lines deep in the predictor. A float32 copy runs, so the loaded model keeps
    its mode, dtype and state."""
    if not isinstance(getattr(model, "yaml", None), dict):
        kind = type(getattr(model, "yaml", None)).__name__
        raise CheckpointError(f"{path}: the model's YAML dict is a {kind}, not a dict (the file was altered)")
    head = model.model[-1] if isinstance(getattr(model, "model", None), nn.Sequential) else None
    names, nc = getattr(model, "names", None), getattr(head, "nc", None)
    if isinstance(names, (dict, list, tuple)) and isinstance(nc, int) and len(names) != nc:  # IndexError in eval
        raise CheckpointError(f"{path}: the model has {len(names)} class names for {nc} classes (the file was altered)")
    strides = getattr(model, "stride", None)
    side = 2 * int(strides.max()) if isinstance(strides, torch.Tensor) and strides.numel() else 64
    x = torch.zeros(1, model.yaml.get("channels", 3), side, side)
    runner, seen = copy.deepcopy(model).float().eval(), []
    if head is not None:  # the head's input maps give the strides the network really has (as Ultralytics probes them)
        runner.model[-1].register_forward_pre_hook(lambda m, args: seen.extend(side / f.shape[-2] for f in args[0]))
    try:
        with torch.no_grad():
            runner(x)
    except Exception as e:  # noqa: BLE001 - whatever the altered layer raises, named in one line
        line = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise CheckpointError(
            f"{path}: the model it holds cannot run on a blank {side}x{side} image (the file was altered?): "
            f"{type(e).__name__}: {line}"
        ) from None
    for name, held in (("the model's stride", strides), ("its head's stride", getattr(head, "stride", None))):
        if seen and isinstance(held, torch.Tensor) and held.tolist() != seen:  # boxes are decoded with these
            raise CheckpointError(
                f"{path}: {name} is {held.tolist()!r:.80}, but its layers downsample by {seen} (a {side}x{side} image "
                f"gives the head maps of {[int(side / s) for s in seen]} rows): every box would be decoded at the "
                f"wrong scale (the file was altered)"
            )


def _check_train_args(args: dict, path: str | Path) -> None:
    """The training arguments Ultralytics reads back from a file (``yolo val model=x.pt`` keeps ``data``, ``imgsz``,
    ``task`` and ``single_cls``; ``resume`` takes them all) hold what a training run writes: a NaN ``imgsz`` or
    ``epochs``, a string ``single_cls``, a classify ``task`` on a detector or a dict ``data`` failed deep inside
    Ultralytics (or fell back to downloading coco8)."""
    bad = None
    for key, value in args.items() if isinstance(args, dict) else ():
        if isinstance(value, float) and not math.isfinite(value):
            bad = f"{key} is {value}, not a finite number"
        elif key == "data" and value is not None and not isinstance(value, (str, PurePath)):
            bad = f"data is a {type(value).__name__}, not the name of a dataset YAML"
        elif key == "data" and value and not _is_dataset(str(value)):
            bad = f"data is {str(value)!r:.80}, not a dataset YAML, a folder or archive of one, or a dataset name"
        elif key == "imgsz" and not _is_imgsz(value):
            bad = f"imgsz is {value!r:.40}, not a size in pixels (an integer in 1..{MAX_IMGSZ}, or two)"
        elif key == "single_cls" and not isinstance(value, bool):
            bad = f"single_cls is {value!r:.40}, not true or false"
        elif key == "task" and value not in (None, "detect"):
            bad = f"task is {value!r:.40}, but the model is a detector (ibra-yolo models detect)"
        if bad:
            raise CheckpointError(f"{path}: train_args {bad} (the file was altered)")


def _is_dataset(name: str) -> bool:
    """What Ultralytics' detection ``data=`` can take: a name that is not here (``coco8``, ``DOTAv1.5``, a URL:
    Ultralytics resolves it, or says it is missing), a folder, or a YAML or .zip/.tar file -- not another file
    (``/etc/passwd`` failed as "Not a YAML file") nor a device (``/dev/zero`` would be read without end)."""
    path = Path(name)
    if not path.exists():
        return True
    if path.is_dir():  # Ultralytics reads the YAML it finds in it (find_dataset_yaml): a FIFO there blocked forever
        yamls = list(path.glob("*.yaml")) or list(path.rglob("*.yaml"))
        yamls = [f for f in yamls if f.stem == path.stem] if len(yamls) > 1 else yamls  # as Ultralytics picks one
        return len(yamls) == 1 and yamls[0].is_file() and _is_dataset_yaml(yamls[0])
    if path.is_file() and name.lower().endswith((".yaml", ".yml")):
        return _is_dataset_yaml(path)
    return path.is_file() and name.lower().endswith(DATASET_SUFFIXES)


def read_dataset_yaml(path: Path) -> dict | None:
    """The mapping a local dataset YAML holds, or None: not a regular file, over 10 MB (no dataset YAML is that
    large), unreadable, not YAML, or not a mapping. Read with ``yaml.safe_load`` (no tags run)."""
    import yaml

    try:
        if not path.is_file() or path.stat().st_size > 10_000_000:
            return None
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None
    return spec if isinstance(spec, dict) else None


def _is_dataset_yaml(path: Path) -> bool:
    """A detection dataset YAML as Ultralytics' ``check_det_dataset`` reads one: a mapping with ``train``, ``val`` (or
    ``validation``) and ``names`` (or ``nc``). A model YAML named by a file's train_args ended in its "'train:' key
    missing" traceback (battery 25, X08/K20)."""
    spec = read_dataset_yaml(path)
    return (
        spec is not None
        and "train" in spec
        and ("val" in spec or "validation" in spec)
        and ("names" in spec or "nc" in spec)
    )


def _is_imgsz(value) -> bool:
    sizes = value if isinstance(value, (list, tuple)) and len(value) in (1, 2) else [value]
    return all(isinstance(v, Integral) and not isinstance(v, bool) and 0 < v <= MAX_IMGSZ for v in sizes)


def check_model_state(model: nn.Module, path: str | Path, ckpt: dict | None = None) -> None:
    """Check what a loaded ibra-yolo model holds: no plain attribute hiding a parameter, buffer or child (in the
    checkpoint's model and ema, `check_shadowing`), finite weights, neuron settings a YAML gives, strides and class
    names Ultralytics can use, a model dict, a model that runs, layers holding the neuron the model dict gives, and
    (given the checkpoint) ``train_args`` that is a dict. The checkpoint must have passed
    ``ibra_yolo.nesting.check_nesting`` first (both loaders run it before anything walks the model): the checks here
    walk the tree with torch, which recursed without end on a module cycle.

    Raises:
        NonFiniteError: A NaN or infinite weight or buffer.
        CheckpointError: Anything else, naming the file, the layer and the value (and the Ultralytics version that
            saved the file, where it is not this one).
    """
    try:
        _check_model_state(model, path, ckpt)
    except CheckpointError as e:
        raise with_saving_version(e, ckpt) from None


def _check_model_state(model: nn.Module, path: str | Path, ckpt: dict | None) -> None:
    if ckpt is not None and ckpt.get("train_args") is not None and not isinstance(ckpt["train_args"], dict):
        kind = type(ckpt["train_args"]).__name__
        raise CheckpointError(f"{path}: train_args is a {kind}, not a dict of arguments (the file was altered)")
    _check_train_args((ckpt or {}).get("train_args") or {}, path)
    if (ckpt or {}).get("modelopt"):  # battery 32, Q01-Q04: Ultralytics' loader restored it with a package we lack
        raise CheckpointError(
            f"{path}: the checkpoint holds a 'modelopt' quantization-aware-training state, which no ibra-yolo run "
            f"writes (our neurons are integer by construction; Ultralytics would apply it with nvidia-modelopt): the "
            f"file was altered"
        )
    others = {f"the {k}'s ": v for k, v in (ckpt or {}).items() if k in ("model", "ema") and isinstance(v, nn.Module)}
    check_shadowing({"": model, **{k: v for k, v in others.items() if v is not model}}, path)
    check_finite_weights(model, path)
    check_neuron_settings(model, path)
    _check_strides(model, path)
    _check_names(model, path)
    _check_task(model, path)
    _check_structure(model, path)
    check_yaml_neuron(model, path)  # after _check_structure, which checks that the model dict is a dict
    check_layer_settings(model, path)
    _check_dfl(model, path)
