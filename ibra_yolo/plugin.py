"""The one place that touches Ultralytics internals: registration of the spiking model builder.

``register()`` wraps two functions of ``ultralytics.nn.tasks`` and two methods (never edits or copies them):

- ``yaml_model_load``: resolves our model names (``spike-yolo-ibra.yaml``, ``spike-yolo-ibra-n.yaml``: the suffix
  picks the scale) from the working directory or the installed package, then defers to the stock loader for
  everything else;
- ``parse_model``: builds spiking YAMLs (a ``neuron:`` key) with ``ibra_yolo.nn.builder``; every other YAML goes to
  the stock parser unchanged;
- ``BaseModel.fuse`` (which predict, val and export call): for a model built from our blocks it first folds the BNs
  (``ibra_yolo.deployment.fuse_bn``), then runs the stock method. Ultralytics' ``fuse()`` only folds its own classes
  (``Conv``, ``RepConv``, ...) and offers no protocol for others, so this is the one way in;
- ``BaseModel.load`` (the stock trainer's ``pretrained=``): refuses a folded (deployed) model's weights, of which a
  trainable model could take only a few tensors.

The method replacements live in ``ibra_yolo.stock_hooks``; this module resolves names and installs them. Every
Ultralytics module that bound one of the two names before registration gets the wrapper too. A model YAML that
cannot be a model (not valid YAML, empty, not a mapping, a spiking YAML with a bad key or row, a scale suffix its file
does not have, a file that does not exist) fails there as one ``IbraYoloError`` line, before Ultralytics reads it.

With the autoload switched off (``IBRA_YOLO_AUTOLOAD=0``) nothing is registered; ``register_hint()`` only makes a
failure to load one of our models say that the plugin is not registered and how to register it (inside the ``yolo``
command, as that one line).

``register()`` changes three more things, so that the stock pipeline is safe with our models: it turns Ultralytics'
restricted checkpoint loading on (``tasks.SAFE_LOAD``) unless ``ULTRALYTICS_SAFE_LOAD`` is set (a checkpoint is a
pickle; our classes allow-list themselves when ``ibra_yolo.nn`` is imported) and wraps ``torch_safe_load``
(``ibra_yolo.stock_hooks.stock_safe_load``: calls checked first, refusals in one line); it wraps the detection
predictor's ``postprocess`` and the validator's ``init_metrics``/``postprocess`` when their modules are first imported,
so that NaN/inf raw predictions of a model with our head stop with ``NonFiniteError`` instead of vanishing in NMS; and
inside Ultralytics' own ``yolo`` console script only, it prints our input errors (``IbraYoloError``, one-line messages)
as that one line instead of a traceback (``IBRA_YOLO_TRACEBACK=1`` for the traceback); no other program's
``sys.excepthook`` is touched. ``register()`` runs automatically when ``ultralytics.nn.tasks`` is first imported (see
``ibra_yolo._autoload``), or explicitly via ``ibra_yolo.register()``.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from pathlib import Path

from ibra_yolo.source_guard import guard_predict_sources
from ibra_yolo.stock_hooks import (
    OTHER_TASKS,
    check_predictions_before_nms,
    detector_only,
    guard_checkpoint_named_data,
    no_cls_remap_for_ours,
    spiking_dict_checked,
    spiking_fuse,
    stock_safe_load,
    unfolded_weights,
    wrap_methods,
    wrap_model_train,
)
from ibra_yolo.stock_refusals import guard_exports_and_tracking
from ibra_yolo.yaml_files import check_regular, load_yaml, yaml_text_problem

__all__ = ("register", "register_hint", "model_yaml_path", "cfg_dir", "available_models")

_SCALE_SUFFIX = re.compile(r"^(?P<base>.+)-(?P<scale>[^-]+)$")  # spike-yolo-ibra-n: any suffix, checked later
_NOT_REGISTERED = (
    "ibra-yolo's plugin is not registered in this process (IBRA_YOLO_AUTOLOAD={value}): call "
    "`import ibra_yolo; ibra_yolo.register()` before building the model, or unset IBRA_YOLO_AUTOLOAD"
)


def cfg_dir() -> Path:
    """Folder of the shipped model YAMLs: ``ibra_yolo/cfg`` in an installed wheel, ``cfg/`` in a checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "cfg"
    return installed if installed.is_dir() else here.parent / "cfg"


def available_models() -> list[str]:
    """Model names usable as ``model=`` with the stock CLI: each shipped YAML and its ``-n/-s/-m/-l`` scales."""
    out = []
    for f in sorted(cfg_dir().glob("spike-yolo-*.yaml")):
        out.append(f.name)
        out += [f"{f.stem}-{s}.yaml" for s in (load_yaml(f).get("scales") or {})]
    return out


def _find_model_yaml(name: str | Path) -> tuple[Path, str | None, dict] | None:
    """``(yaml file, scale picked by the name or None, its contents)`` of a spiking model name, else None."""
    p = Path(name)
    if p.suffix.lower() not in {".yaml", ".yml"}:
        return None
    folders = [p.parent, cfg_dir()]  # the path as given (the working directory for a bare name), then the package
    candidates = [(folder / p.name, None) for folder in folders]
    m = _SCALE_SUFFIX.match(p.stem)
    if m:
        candidates += [(folder / f"{m['base']}{p.suffix}", m["scale"]) for folder in folders]
    from ibra_yolo.errors import ModelConfigError
    from ibra_yolo.nn.builder import is_spiking_yaml

    for file, scale in candidates:
        check_regular(file)
        if file.is_file():
            d = load_yaml(file)
            if not d:
                raise ModelConfigError(f"{file} is empty: a model YAML needs nc, backbone and head (and neuron)")
            if is_spiking_yaml(d):
                problem = yaml_text_problem(file)  # repeated keys, alias bombs, text that is not UTF-8
                if problem is not None:
                    raise problem
                return file, scale, d
            ours = sorted({r[2] for r in _rows(d)} & _our_modules())
            if ours:
                raise ModelConfigError(f"{file} uses ibra-yolo's {ours} but has no 'neuron' key, e.g. {_NEURON_HINT}")
            return None
    return None


_NEURON_HINT = "neuron: {kind: IBRALIF, D: 5.11, N: 100, beta: 0.25}"


def _rows(d: dict) -> list:
    """The well-formed rows of a model dict (for a hint only; the builder checks rows)."""
    rows = [*(d.get("backbone") or []), *(d.get("head") or [])] if isinstance(d, dict) else []
    return [r for r in rows if isinstance(r, (list, tuple)) and len(r) == 4 and isinstance(r[2], str)]


def _our_modules() -> set[str]:
    """Module names only ibra-yolo defines: a YAML using one of them is ours (names that the stock parser also
    resolves, such as ``SPPF``, ``Concat`` or ``nn.Upsample``, say nothing)."""
    import torch
    from ultralytics.nn import tasks

    from ibra_yolo.nn.builder import MODULES

    return {name for name in MODULES if not hasattr(tasks, name) and not hasattr(torch.nn, name)}


def model_yaml_path(name: str | Path) -> tuple[Path, str | None] | None:
    """Resolve a spiking model name to ``(yaml file, scale picked by the name or None)``.

    Looks, in order, for the path as given, then for the name in the shipped ``cfg`` folder; a missing
    ``<base>-<scale>.yaml`` resolves to ``<base>.yaml`` with that scale. Returns None when the name is not a spiking
    model YAML (the stock loader handles it).
    """
    if not isinstance(name, (str, Path)):  # pathlib's TypeError did not name the argument
        raise TypeError(f"name={name!r:.80} is invalid: a model name or YAML path (str or Path)")
    found = _find_model_yaml(name)
    return None if found is None else found[:2]


def _spiking_yaml_model_load(original, path):
    """``yaml_model_load`` that knows our model names and scale suffixes and checks our YAMLs completely."""
    from ibra_yolo.errors import MissingFileError, ModelConfigError
    from ibra_yolo.nn.rows import plan_model

    found = _find_model_yaml(path)
    if found is None:
        try:
            return original(path)
        except IsADirectoryError:
            raise ModelConfigError(f"{path} is a folder: a model YAML must be a file") from None
        except FileNotFoundError as e:
            raise MissingFileError(f"{e}: {_missing_hint()}") from None
    file, scale, d = found
    scales = d.get("scales") if isinstance(d.get("scales"), dict) else {}
    if scale:
        if scale not in scales:
            raise ModelConfigError(f"{path}: scale '{scale}' is not one of {sorted(scales)} in {file}")
        d["scale"] = scale
    else:  # a file of its own: its `scale:` key decides, whatever its name says (battery 19, Y27: a copy named -n.yaml)
        named = _SCALE_SUFFIX.match(Path(file).stem)
        if named and named["scale"] in scales and d.get("scale") not in (None, named["scale"]):
            warnings.warn(
                f"{file}: its name ends in -{named['scale']}, but its scale: key says {d['scale']!r}, and the key "
                f"decides: scale {d['scale']} is built; write scale: {named['scale']} in the file to build that one",
                UserWarning,
                stacklevel=2,
            )
        elif named and named["scale"] in {"n", "s", "m", "l", "x"} - set(scales) and scales:  # battery 23, Y14
            warnings.warn(
                f"{file}: its name ends in -{named['scale']}, a scale this file does not have ({', '.join(scales)}): "
                f"its scale: key decides, scale {d.get('scale') or next(iter(scales))} is built",
                UserWarning,
                stacklevel=2,
            )
    d["yaml_file"] = str(path)
    plan_model(d, d.get("channels", 3))  # every key and row, before Ultralytics reads the dict
    return d


def _missing_hint() -> str:
    names = ", ".join(sorted({f.stem for f in cfg_dir().glob("spike-yolo-*.yaml")}))
    return f"not a file, nor an Ultralytics model; ibra-yolo's models are {names} (.yaml, or -n/-s/-m/-l.yaml)"


def _unregistered_yaml_model_load(original, path):
    """``yaml_model_load`` while the plugin is off: the stock loader, plus a hint when the name is one of ours."""
    try:
        d = original(path)
    except FileNotFoundError:
        if _find_model_yaml(path) is None:
            raise
        from ibra_yolo.errors import MissingFileError

        raise MissingFileError(
            f"{path}: {_NOT_REGISTERED.format(value=os.environ.get('IBRA_YOLO_AUTOLOAD'))}"
        ) from None
    if isinstance(d, dict) and "neuron" in d:  # ibra_yolo.nn.builder.is_spiking_yaml, without importing our model code
        from ibra_yolo.errors import ModelConfigError

        value = os.environ.get("IBRA_YOLO_AUTOLOAD")
        raise ModelConfigError(f"{path} is an ibra-yolo model YAML, but {_NOT_REGISTERED.format(value=value)}")
    return d


def _spiking_parse_model(original, d, ch, verbose=True):
    """``parse_model`` that builds spiking YAMLs itself and leaves all others to the stock parser."""
    from ibra_yolo.nn.builder import build_spiking_model, is_spiking_yaml

    if is_spiking_yaml(d):
        return build_spiking_model(d, ch, verbose=verbose)
    return original(d, ch, verbose=verbose)


def _wrap(original, replacement):
    wrapper = functools.wraps(original)(functools.partial(replacement, original))
    wrapper.__ibra_yolo_original__ = original
    return wrapper


_OFF = {"0", "false", "no", "off"}  # the ULTRALYTICS_SAFE_LOAD values (any case, nothing else) that opt out


def _running_ultralytics_cli() -> bool:
    """True when this process is Ultralytics' own console script (``yolo``, ``ultralytics``).

    That is: ``__main__`` is a script file (not ``python -c``, ``-m`` or an interactive session) whose name is one of
    the console scripts the ``ultralytics`` distribution declares for ``ultralytics.cfg:entrypoint``.
    """
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if not script or getattr(main, "__spec__", None) is not None:
        return False
    name = re.sub(r"(-script\.pyw?|\.exe)$", "", Path(script).name)
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        entry_points = distribution("ultralytics").entry_points
    except PackageNotFoundError:
        return False
    return any(
        ep.group == "console_scripts" and ep.name == name and ep.value.replace(" ", "") == "ultralytics.cfg:entrypoint"
        for ep in entry_points
    )


def _one_line_errors(previous):
    """An excepthook that prints an ``IbraYoloError`` as its one line (also when Ultralytics raised another error
    from it: the dataset check wraps ours in a ``RuntimeError``), Ctrl-C as ``KeyboardInterrupt: interrupted
    (Ctrl-C)`` (not the traceback of wherever torch was), and hands every other exception on."""

    def hook(exc_type, exc, tb):
        from ibra_yolo.errors import IbraYoloError

        wanted = os.environ.get("IBRA_YOLO_TRACEBACK", "").strip().lower() not in {"", *_OFF}  # 0/false/no/off: off
        ours = exc
        for _ in range(8):  # Ultralytics re-raises some errors as its own (`raise RuntimeError(...) from e`)
            if ours is None or isinstance(ours, IbraYoloError):
                break
            ours = ours.__cause__
        if isinstance(ours, IbraYoloError) and not wanted:
            print(f"{type(ours).__name__}: {ours}", file=sys.stderr)
            return
        if issubclass(exc_type, KeyboardInterrupt) and not wanted:
            print("KeyboardInterrupt: interrupted (Ctrl-C)", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    hook.__ibra_yolo__ = True
    return hook


def _replace_everywhere(replacements: dict) -> None:
    """In tasks and every Ultralytics module that bound a name (``from ultralytics.nn.tasks import ...``), replace
    each of the given old function objects with its new one: ``{name: (old objects, new)}``."""
    for modname, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if modname.partition(".")[0] == "ultralytics" and isinstance(namespace, dict):
            for attr, (old, new) in replacements.items():
                if any(namespace.get(attr) is o for o in old):
                    setattr(module, attr, new)


def register_hint() -> None:
    """While the plugin is off, make a failed load of one of our model names say so (nothing else changes)."""
    from ultralytics.nn import tasks

    current = tasks.yaml_model_load
    if hasattr(current, "__ibra_yolo_original__") or hasattr(current, "__ibra_yolo_hint_for__"):
        return  # registered, or hinted already
    hint = functools.wraps(current)(functools.partial(_unregistered_yaml_model_load, current))
    hint.__ibra_yolo_hint_for__ = current
    _replace_everywhere({"yaml_model_load": ((current,), hint)})
    _install_one_line_errors()  # the hint itself is one of our errors


def register() -> None:
    """Hook the spiking builder into Ultralytics (idempotent; safe to call after Ultralytics was imported)."""
    from ultralytics.nn import tasks

    if hasattr(tasks.parse_model, "__ibra_yolo_original__"):
        return  # registered already
    hinted = tasks.yaml_model_load
    stock = {"parse_model": tasks.parse_model, "yaml_model_load": getattr(hinted, "__ibra_yolo_hint_for__", hinted)}
    _replace_everywhere(
        {
            "parse_model": ((stock["parse_model"],), _wrap(stock["parse_model"], _spiking_parse_model)),
            "yaml_model_load": (
                (stock["yaml_model_load"], hinted),
                _wrap(stock["yaml_model_load"], _spiking_yaml_model_load),
            ),
        }
    )
    wrap_methods(
        "ultralytics.nn.tasks",
        "BaseModel",
        {"fuse": spiking_fuse, "load": unfolded_weights, "_remap_cls_by_names": no_cls_remap_for_ours},
    )
    wrap_methods("ultralytics.nn.tasks", "DetectionModel", {"__init__": spiking_dict_checked})
    wrap_model_train()
    for name in OTHER_TASKS:
        wrap_methods("ultralytics.nn.tasks", name, {"__init__": detector_only})
    if os.environ.get("ULTRALYTICS_SAFE_LOAD", "").lower() not in _OFF:  # only an explicit "off" opts out
        tasks.SAFE_LOAD = True  # checkpoints are pickles
    if not hasattr(tasks.torch_safe_load, "__ibra_yolo_original__"):
        stock_load = tasks.torch_safe_load
        _replace_everywhere({"torch_safe_load": ((stock_load,), _wrap(stock_load, stock_safe_load))})
    check_predictions_before_nms()
    guard_checkpoint_named_data()
    guard_predict_sources()
    guard_exports_and_tracking()
    import ibra_yolo.nn  # noqa: F401 - our classes exist, allow-listed for ULTRALYTICS_SAFE_LOAD=1 (see ibra_yolo.nn)

    _install_one_line_errors()


def _install_one_line_errors() -> None:
    """Inside Ultralytics' own ``yolo`` console script only, print our errors as their one line."""
    if _running_ultralytics_cli() and not getattr(sys.excepthook, "__ibra_yolo__", False):
        sys.excepthook = _one_line_errors(sys.excepthook)
