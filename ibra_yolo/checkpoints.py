"""Reading checkpoints without running their code: every ``.pt`` ibra-yolo opens is loaded here.

A ``.pt`` file is a pickle, and a pickle can name any function to call while it is read (``os.system`` included).
Ultralytics checkpoints are therefore read the way Ultralytics reads them with ``ULTRALYTICS_SAFE_LOAD=1``, whatever
that variable says: ``ultralytics.nn.tasks.torch_safe_load(path, safe_only=True)``, i.e. ``torch.load(
weights_only=True)`` against an allow-list of Ultralytics' and torch's classes plus ours (``ibra_yolo.nn`` registers
its neurons, blocks and head as safe globals on import). A file that names anything else is refused before anything
in it runs. ``load_yolo`` then builds the ``YOLO`` object from a file that has passed this check.

SpikeYOLO's released checkpoints pickle classes of their own repository, which do not exist here; they are read by
the restricted unpickler of ``ibra_yolo.unpickle``, which is just as strict.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

from torch import nn

from ibra_yolo.errors import CheckpointError, IbraYoloError, MissingFileError, UnsafePickleError
from ibra_yolo.files import as_path
from ibra_yolo.model_state import check_finite_weights, check_model_state, layer_settings
from ibra_yolo.nesting import check_nesting
from ibra_yolo.pickle_checks import (
    check_calls,
    check_zip_crc,
    file_kind,
    old_protocol,
    pickle_protocol,
    protocol_refusal,
)

__all__ = (
    "load_checkpoint",
    "checkpoint_model",
    "check_finite_weights",
    "check_calls",
    "load_yolo",
    "refusal_error",
    "is_damaged",
    "damaged_file_error",
    "failed_read_error",
    "foreign_module_error",
    "no_model_error",
    "advice_error",
)


def _one_line(e: BaseException) -> str:
    return "; ".join(s.strip() for s in str(e).splitlines() if s.strip())


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MissingFileError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: name a .pt file")
    if not path.is_file():  # a FIFO or a device: reading it could block forever or never end
        raise CheckpointError(f"checkpoint {path} is not a regular file: name a .pt file")
    if path.suffix.lower() != ".pt":
        raise CheckpointError(f"checkpoint {path} must be a .pt file (an Ultralytics checkpoint)")


def _refused_globals(e: BaseException) -> tuple[bool, list[str], str]:
    """Whether torch's ``weights_only`` unpickler refused a file, the globals it named, and its reason."""
    chain = []
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if not any(isinstance(x, pickle.UnpicklingError) for x in chain):
        return False, [], ""
    text = "\n".join(str(x) for x in chain)
    reason = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    opcode = re.search(r"Unsupported operand (\d+)", text)  # torch's restricted unpickler reads fewer opcodes
    if opcode and not reason:
        op = pickletools.code2op.get(chr(int(opcode.group(1)) % 256))
        named = op.name if op else f"code {opcode.group(1)}"
        named += " (an integer of over 255 bytes)" if named == "LONG4" else ""
        return True, [], f"torch's restricted loader does not read its pickle opcode {named}, which no saved model has"
    return True, list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", text))), reason.group(1).strip() if reason else ""


def refusal_error(path, e: BaseException, hint: str = "") -> CheckpointError | None:
    """The one-line error for a file the restricted loader refused, or None when ``e`` is not such a refusal.

    A pickle naming globals outside the allow-list is an ``UnsafePickleError`` naming them (``hint``: how to opt out);
    torch's legacy non-zip format says so (Ultralytics allow-lists a file's classes from the zip's list of globals, so
    every class of such a file is refused); a file that is no pickle at all (e.g. a renamed ``.npy``) is damaged.
    """
    refused, names, reason = _refused_globals(e)
    if not refused:
        return None
    kind = file_kind(path)
    if kind == "other":  # torch's own message is a paragraph about weights_only that does not apply
        return CheckpointError(
            f"cannot read checkpoint {path}: it is not a torch.save file (neither torch's zip format nor a pickle)"
        )
    if kind == "pickle":
        named = f" (it names {', '.join(names)})" if names else ""
        return UnsafePickleError(
            f"checkpoint {path} is a pickle in torch's legacy (non-zip) format, which the restricted loader cannot "
            f"check{named}: not loaded, nothing in it was run (if you "
            f"trust it, load it once and torch.save it again: torch writes the zip format{hint})"
        )
    protocol = pickle_protocol(path)
    what = (
        protocol_refusal(protocol)
        if protocol is not None and protocol != 2 and (not names or old_protocol(path) == (protocol, None))
        else f"refers to {', '.join(names)}, which a checkpoint may not use"
        if names
        else f"holds a pickle that cannot be read safely ({reason or 'not a torch.save file'})"
    )
    return UnsafePickleError(
        f"checkpoint {path} {what}: not loaded, nothing in it was run (only Ultralytics checkpoints of known models "
        f"are read{hint})"
    )


def _root(e: BaseException) -> BaseException:
    while e.__cause__ is not None:  # Ultralytics wraps torch's error in a long TypeError: the original says more
        e = e.__cause__
    return e


def is_damaged(e: BaseException) -> bool:
    """True when a load failed because the file is empty, truncated or not a torch.save file at all."""
    root = _root(e)
    return isinstance(root, (EOFError, pickle.UnpicklingError, zipfile.BadZipFile)) or (
        isinstance(root, RuntimeError) and "PytorchStreamReader" in str(root)
    )


def damaged_file_error(path, e: BaseException) -> CheckpointError:
    """The one-line error for a file torch cannot read, naming the original error."""
    root = _root(e)
    return CheckpointError(
        f"cannot read checkpoint {path}: it is empty, truncated or not a torch.save file "
        f"({type(root).__name__}: {_one_line(root)[:200] or 'no detail'})"
    )


def failed_read_error(path, e: BaseException) -> CheckpointError:
    """The one-line error for a load that failed for another reason than those above: a damaged file (`is_damaged`)
    or a pickle that failed while torch rebuilt its objects (an allow-listed class refusing the state it was given)."""
    if is_damaged(e):
        return damaged_file_error(path, e)
    root = _root(e)
    return CheckpointError(
        f"cannot read checkpoint {path}: rebuilding its objects failed ({type(root).__name__}: "
        f"{_one_line(root)[:200] or 'no detail'}): the file is damaged or was not written by torch.save"
    )


def foreign_module_error(path, e: BaseException) -> CheckpointError | None:
    """The one-line error for a pickle that names a module this Ultralytics lacks (a SpikeYOLO checkpoint, a file of
    another Ultralytics fork or version), or None when ``e`` is not that."""
    while e is not None and not (isinstance(e, ModuleNotFoundError) and e.name):
        e = e.__cause__ or e.__context__
    if e is None:
        return None
    if e.name.split(".")[-1] == "yolo_spikformer":  # SpikeYOLO's fork keeps its blocks in this module
        return CheckpointError(
            f"{path} is a SpikeYOLO checkpoint (its model is made of {e.name} classes): convert it first, "
            f"`ibra-yolo convert-spikeyolo {path} <new.pt>`, then use the converted file"
        )
    return CheckpointError(
        f"{path} needs the module {e.name}, which is not installed: it was made by another Ultralytics version or "
        f"fork, or needs a package of its own"
    )


def held_model(ckpt) -> nn.Module | None:
    """The model a checkpoint holds as Ultralytics picks it (``ema`` if present, else ``model``), or None."""
    if not isinstance(ckpt, dict):
        return None
    model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    return model if isinstance(model, nn.Module) else None


def check_ema_matches(ckpt, path) -> None:
    """A checkpoint that holds both ``model`` and ``ema`` holds two copies of one model (a training run's weights and
    their moving average): the same class with the same tensors by name and shape. Ultralytics loads ``ema`` and the
    trainer's ``pretrained=`` takes from it, so a file whose ``ema`` is another model (a stock detector beside a
    spiking one) would load that model without a word.

    Raises:
        CheckpointError: The two differ, naming both and the first tensor that differs.
    """
    if not isinstance(ckpt, dict):
        return
    model, ema = ckpt.get("model"), ckpt.get("ema")
    if not isinstance(model, nn.Module) or not isinstance(ema, nn.Module):
        return
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (model, ema)]
    if type(model) is type(ema) and shapes[0] == shapes[1]:
        settings = [_settings(m) for m in (model, ema)]  # same tensors: then the same layers, names and model dict
        differs = _first_difference(*settings)
        if differs is None:
            return
        raise CheckpointError(
            f"{path} holds two different models: {differs} is {settings[0].get(differs, 'absent')} in 'model' but "
            f"{settings[1].get(differs, 'absent')} in 'ema' (the one Ultralytics loads); a training run saves two "
            f"copies of one model: the file was altered, not loaded"
        )
    differs = _first_difference(*shapes)
    detail = "" if differs is None else f"; first difference: {differs!r:.80} is {shapes[0].get(differs)} in model, "
    detail += "" if differs is None else f"{shapes[1].get(differs)} in ema"
    raise CheckpointError(
        f"{path} holds two different models: 'model' is a {type(model).__name__} of {len(shapes[0])} tensors and "
        f"'ema' (the one Ultralytics loads) a {type(ema).__name__} of {len(shapes[1])}{detail}; a training run saves "
        f"two copies of one model: the file was altered, not loaded"
    )


def _first_difference(a: dict, b: dict):
    """The first key whose value differs between ``a`` and ``b`` (one missing counts), or None."""
    missing = object()
    return next((k for k in {**a, **b} if a.get(k, missing) != b.get(k, missing)), None)


def _settings(model: nn.Module) -> dict[str, str]:
    """What a model is besides its tensors, by place: its class names, model dict, and each layer's class and plain
    settings (``layer_settings``). Two copies of one model agree in all of it; ``training`` (the trainer's EMA copy is
    in eval mode) and dicts of arguments not."""
    spec = getattr(model, "yaml", None)
    out = {"names": repr(getattr(model, "names", None))[:200]}
    out |= {f"the model dict's {k!r:.40}": repr(v)[:200] for k, v in spec.items()} if isinstance(spec, dict) else {}
    return out | layer_settings(model)


def no_model_error(path, ckpt) -> CheckpointError:
    """The one-line error for a file that loaded but holds no model (``held_model`` is None): what it holds instead."""
    import torch

    if not isinstance(ckpt, dict):
        return CheckpointError(f"{path} is not an Ultralytics checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return CheckpointError(
            f"{path} holds a state_dict ({len(ckpt)} tensors by name), not an Ultralytics checkpoint: load it into a "
            f"model built from its YAML (model.load_state_dict), or pass a file the trainer or YOLO(...).save() wrote"
        )
    if ckpt.get("ema") is not None and not isinstance(ckpt["ema"], nn.Module):  # Ultralytics takes ema first
        return CheckpointError(
            f"{path}: its 'ema' (the model Ultralytics loads when the file holds one) is a "
            f"{type(ckpt['ema']).__name__}, not a model: the file was altered (a checkpoint's ema is a model or None)"
        )
    keys = ", ".join(repr(k)[:40] for k in list(ckpt)[:5]) or "no keys"
    return CheckpointError(f"{path} is not an Ultralytics checkpoint: it holds no 'model' module ({keys})")


def advice_error(e: BaseException) -> CheckpointError | None:
    """Ultralytics' own one-paragraph advice (a TorchScript archive, a YOLOv5 file: "ERROR ❌️ ...") as one line, or
    None when ``e`` is not that."""
    if isinstance(e, (TypeError, ModuleNotFoundError)) and str(e).startswith("ERROR"):
        return CheckpointError(str(e).removeprefix("ERROR").lstrip(" \u274c\ufe0f").replace("\n", " "))
    return None


def load_checkpoint(path: str | Path) -> dict:
    """Read an Ultralytics checkpoint safely (``weights_only=True`` and the allow-list), never running its code.

    Args:
        path (str | Path): The ``.pt`` file.

    Returns:
        (dict): The checkpoint (``{"model": ..., "train_args": ..., ...}``), on the CPU.

    Raises:
        MissingFileError: ``path`` does not exist.
        UnsafePickleError: The pickle names a function or class outside the allow-list; nothing it names was called.
        CheckpointError: Not a ``.pt`` file, a folder, or a file torch cannot read (empty, truncated, not a pickle).
    """
    from ultralytics.nn.tasks import torch_safe_load

    import ibra_yolo.nn  # noqa: F401 - registers our classes as safe globals

    load = getattr(torch_safe_load, "__ibra_yolo_original__", torch_safe_load)  # our messages, not the plugin's
    path = as_path(path, "path")
    _check_file(path)
    check_zip_crc(path)
    check_calls(path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            ckpt, _ = load(str(path), safe_only=True)
    except IbraYoloError:  # already ours (the plugin's torch_safe_load says what it refused)
        raise
    except OSError as e:  # permission denied, an unreadable disk
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or _one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - whatever the loader raises on a foreign file: one line, no traceback
        refusal = refusal_error(path, e)
        if refusal:
            raise refusal from None
        foreign = foreign_module_error(path, e) or (None if is_damaged(e) else advice_error(e))  # damaged: ours
        if foreign:
            raise foreign from None
        held = re.fullmatch(
            r"'(\w+)' object has no attribute 'model'", str(e)
        )  # Ultralytics reads obj.model of a non-dict
        if isinstance(e, AttributeError) and held:
            raise CheckpointError(
                f"{path} is not an Ultralytics checkpoint: it holds a {held[1]}, not a dict"
            ) from None
        raise failed_read_error(path, e) from None
    if not isinstance(ckpt, dict):
        raise no_model_error(path, ckpt)
    return ckpt


def checkpoint_model(ckpt: dict, path: str | Path, need: str = "model") -> nn.Module:
    """The model a checkpoint holds (``ema`` if present, else ``model``, as Ultralytics picks), checked for ``need``.

    Args:
        ckpt (dict): From ``load_checkpoint``.
        path (str | Path): The file, for messages.
        need (str): ``"model"`` or ``"ibra-yolo"`` (a model with our layers: a spiking model or its ANN twin) or
            ``"spiking"`` (with integer spiking neurons: IBRA-LIF, IB-LIF, I-LIF).

    Raises:
        CheckpointError: No model in it, not the model needed, or state that no training run gives (an altered
            neuron setting, stride, class-name table or ``train_args``: ``ibra_yolo.model_state``).
        NonFiniteError: A NaN or infinite weight or buffer.
    """
    from ultralytics.nn.tasks import BaseModel

    from ibra_yolo.nn.blocks import NeuronConv

    model = held_model(ckpt)
    if model is None:
        raise no_model_error(path, ckpt)
    check_nesting(ckpt, path)  # before anything walks the model with torch (a module cycle recursed without end)
    check_ema_matches(ckpt, path)
    if not isinstance(model, BaseModel):
        raise CheckpointError(f"{path} holds a {type(model).__name__}, not an Ultralytics model (DetectionModel, ...)")
    units = [m for m in model.modules() if isinstance(m, NeuronConv)]
    if not units:  # a stock model: the checks below would call its model dict "altered" (battery 20, X2/X3/X8)
        raise CheckpointError(
            f"{path} holds a {type(model).__name__} without ibra-yolo layers (a stock Ultralytics model?), not an "
            f"ibra-yolo model: use the stock yolo commands for it"
        )
    check_model_state(model, path, ckpt)  # a file altered after saving: one line, before anything runs it
    if need == "spiking" and not any(u.spiking for u in units):
        raise CheckpointError(
            f"{path} holds a model without integer spiking neurons (an ANN twin?): spike-driven mode needs an "
            f"IBRA-LIF, IB-LIF or I-LIF model"
        )
    return model


def load_yolo(path: str | Path):
    """A ``YOLO`` object for a weights file or model YAML; a ``.pt`` file is first read safely (``load_checkpoint``).

    Other files (ONNX, TorchScript, a model YAML) are not pickles; they go to ``YOLO`` as they are.

    Raises:
        MissingFileError: A ``.pt`` file does not exist.
        UnsafePickleError: A ``.pt`` file whose pickle names anything outside the allow-list.
        CheckpointError: A ``.pt`` file that cannot be read or holds no model.
        IbraYoloError: Ultralytics cannot load the file (its one-line reason).
    """
    from ultralytics import YOLO

    path = as_path(path, "path")
    if path.suffix.lower() in {".pth", ".ckpt", ".pkl", ".bin", ".safetensors"}:
        raise CheckpointError(f"weights {path} must be an Ultralytics .pt checkpoint, an export or a model YAML")
    if path.suffix.lower() == ".pt":
        if not path.exists():  # checked first: YOLO() would try to download a name
            raise MissingFileError(f"weights file {path} does not exist")
        checkpoint_model(load_checkpoint(path), path)  # allow-listed classes only: YOLO's own load runs nothing else
    try:
        return YOLO(str(path))
    except IbraYoloError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: say which, without the loader's traceback
        raise IbraYoloError(f"cannot load weights {path}: {type(e).__name__}: {_one_line(e)[:300]}") from None
