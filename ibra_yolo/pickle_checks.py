"""What a ``.pt`` file must be before torch unpickles it: intact (CRC-32), a zip as torch reads it, and a pickle
that calls nothing but tensor rebuilding, containers and the data types official checkpoints construct, with no
hooks stored for torch to call later (``check_calls``). ``ibra_yolo.checkpoints`` runs these for our commands and
``ibra_yolo.stock_hooks`` for the stock loader.
"""

from __future__ import annotations

import inspect
import pickletools
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from ibra_yolo.errors import CheckpointError, UnsafePickleError
from ibra_yolo.nn import NUMPY_NUMBERS
from ibra_yolo.unpickle import ZIP_MAGIC, StandIn, Value, data_call, read_checkpoint, refuses_global

__all__ = (
    "check_zip_crc",
    "check_calls",
    "file_kind",
    "legacy_pickle_names",
    "old_protocol",
    "old_protocol_error",
    "pickle_protocol",
    "protocol_refusal",
)

# what pickle protocols 0 and 1 name to rebuild any object (protocol 2, torch.save's default, uses NEWOBJ instead):
# in a file of those protocols these names come from the protocol, not from what the file holds
_OLD_PROTOCOL_NAMES = frozenset({"copyreg._reconstructor", "builtins.object"})
_PYTHON2_NAMES = {"copy_reg": "copyreg", "__builtin__": "builtins"}  # how protocols < 3 spell these modules


def _data_pickle(path) -> bytes | None:
    """The pickle (``data.pkl``) of a torch.save zip file, or None when it has none."""
    try:
        return torch._C.PyTorchFileReader(str(path)).get_record("data.pkl")
    except (RuntimeError, OSError):
        return None


def _globals(record: bytes) -> list[tuple[str, str]]:
    """The ``(module, name)`` pairs the GLOBAL opcodes of the first pickle in ``record`` name, in order, with Python 2
    spellings as Python 3's (pickletools only parses: nothing is built or run). ValueError: not a whole pickle."""
    named = []
    for op, arg, _ in pickletools.genops(record):
        if op.name == "GLOBAL":  # STACK_GLOBAL (protocol 4+) names come off the stack: torch.save writes protocol 2
            module, _, name = str(arg).partition(" ")
            named.append((_PYTHON2_NAMES.get(module, module), name))
    return named


def _refused_names(named: list[tuple[str, str]]) -> list[str]:
    """The ``module.name`` of each global in ``named`` that the reader refuses (``os.system``), once each."""
    return list(dict.fromkeys(f"{m}.{n}" for m, n in named if refuses_global(m, n, _DATA_CALLS)))


def _protocol(record: bytes | None) -> int | None:
    """The pickle protocol of ``record``: its PROTO opcode (protocols 2 and later), else the highest protocol among the
    opcodes it uses (protocols 0 and 1 have no PROTO); None when it is empty or not a pickle."""
    if not record:
        return None
    if record[:1] == b"\x80":
        return record[1] if len(record) > 1 else None
    try:
        return max((op.proto for op, _, _ in pickletools.genops(record)), default=None)
    except ValueError:  # not a pickle at all
        return None


def pickle_protocol(path) -> int | None:
    """The pickle protocol of a torch.save zip file's ``data.pkl`` (`_protocol`), or None."""
    return _protocol(_data_pickle(path))


def old_protocol(path) -> tuple[int | None, str | None]:
    """For a checkpoint pickled with protocol 0 or 1: that protocol and the first global it names that the reader
    refuses, beyond what the protocol names for any object (``_OLD_PROTOCOL_NAMES``). When there is none, the protocol,
    not what the file holds, is why it is refused. ``(None, None)`` for any other file."""
    record = _data_pickle(path)
    protocol = _protocol(record)
    if protocol is None or protocol >= 2:
        return None, None
    others = [n for n in _refused_names(_globals(record)) if n not in _OLD_PROTOCOL_NAMES]
    return protocol, others[0] if others else None


def old_protocol_error(path, name: str, tail: str = "") -> UnsafePickleError | None:
    """The error for a refusal of ``name`` in a file of pickle protocol 0 or 1, where ``name`` is one of the names
    those protocols use for any object (`_OLD_PROTOCOL_NAMES`): the protocol when the file names nothing else that is
    refused, else the first name that is (battery 30, H24: a legit protocol-1 re-save was refused as a malicious file
    naming builtins.object). None for any other refusal. ``tail`` follows "nothing in it was run"."""
    protocol, other = old_protocol(path) if name in _OLD_PROTOCOL_NAMES else (None, None)
    if protocol is None:
        return None
    what = protocol_refusal(protocol) if other is None else f"refers to {other}, which a checkpoint may not use"
    return UnsafePickleError(f"checkpoint {path} {what}: not loaded, nothing in it was run{tail}")


def _saved_model_object(path) -> str | None:
    """The name of the Ultralytics ``Model`` class (``YOLO``) a checkpoint's pickle names, if any: what
    ``torch.save(YOLO(...))`` writes. Only classes of modules already imported are looked at (nothing is imported on a
    file's word); pickletools only parses the opcodes."""
    model = getattr(sys.modules.get("ultralytics.engine.model"), "Model", None)
    try:
        named = _globals(_data_pickle(path) or b"") if model is not None else []
    except ValueError:
        return None
    classes = (getattr(sys.modules.get(module), name, None) for module, name in named)
    return next((c.__name__ for c in classes if isinstance(c, type) and issubclass(c, model)), None)


def protocol_refusal(protocol: int) -> str:
    """Why a checkpoint pickled with ``protocol`` (not torch.save's 2) is not read, and how to save it again."""
    return (
        f"holds a pickle of protocol {protocol}, which torch's restricted loader does not read (torch.save writes "
        f"protocol 2 unless told otherwise: save it again without pickle_protocol=)"
    )


def check_zip_crc(path) -> None:
    """Refuse a torch.save (zip) file whose stored CRC-32 checksums do not match its contents: torch does not check
    them, so a file damaged in the middle loaded with changed weights (zeroed bytes exported without a word).

    Raises:
        CheckpointError: Naming the first damaged member.
    """
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):  # not a zip (legacy, truncated): the loader says what it is
        return
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: its member {bad} fails its CRC-32 check (a bad copy?)")


# The data types official Ultralytics checkpoints construct while they are read, as Ultralytics' restricted loader
# allow-lists them: values, never a model, a layer or a function that acts. A pickle may call these, torch's tensor
# rebuilding and plain containers (``ibra_yolo.unpickle``), nothing else; classes are only created empty and given
# their saved state, which is how every checkpoint written by torch.save stores them.
_DATA_TYPES = (
    "ultralytics.utils.IterableSimpleNamespace",  # a model's args
    "ultralytics.yolo.utils.IterableSimpleNamespace",  # the same before Ultralytics 8.0.44
    "pathlib.PosixPath",  # paths in train_args; "_local" where Python 3.13 pickled them
    "pathlib.WindowsPath",
    "pathlib._local.PosixPath",
    "pathlib._local.WindowsPath",
    "numpy.core.multiarray.scalar",  # numpy numbers (e.g. in train_metrics)
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "builtins.getattr",  # Detect.forward in YOLOv8/YOLO11 checkpoints (Ultralytics allows only attributes of layers)
    "torchvision.transforms.functional.InterpolationMode",  # classification checkpoints' transforms (an enum)
)
_NUMPY_CODES = {np.dtype(name).str[1:] for name in NUMPY_NUMBERS}  # "f4", "i8", "b1", ...: how a dtype is pickled


def _numpy_scalar(qualname: str):
    """The data call of ``numpy...scalar(dtype, bytes)``: a number only (an object dtype would make numpy read the
    file's bytes as a pointer)."""

    def call(dtype=None, data=None, *rest):
        code = dtype.args[0] if isinstance(dtype, Value) and dtype.qualname == "numpy.dtype" and dtype.args else None
        if code not in _NUMPY_CODES or not isinstance(data, bytes) or rest:
            raise UnsafePickleError(
                f"its pickle builds a numpy scalar of dtype {code!r}, not a number: not loaded, nothing in it was run"
            )
        return Value(qualname, (dtype, data))

    return call


_DATA_CALLS = {tuple(name.rsplit(".", 1)): data_call(name) for name in _DATA_TYPES}
_DATA_CALLS.update({tuple(n.rsplit(".", 1)): _numpy_scalar(n) for n in _DATA_TYPES if n.endswith(".scalar")})
_ENUM = _DATA_CALLS[("torchvision.transforms.functional", "InterpolationMode")]


def _getattr(obj=None, name=None, *rest):
    """The data call of ``getattr(obj, name)`` as Ultralytics' restricted loader allows it: a non-dunder attribute of a
    class (protocol 2 pickles ``Detect.forward`` so) or a layer's own ``forward``/``forward_fuse`` (what a fused stock
    Conv stores as its ``forward``). ``getattr(layer, "__class__")`` would hand out a class to be called later."""
    is_class = (isinstance(obj, type) and issubclass(obj, StandIn)) or obj is _ENUM
    own_forward = isinstance(obj, StandIn) and name in ("forward", "forward_fuse")
    if rest or not isinstance(name, str) or name.startswith("__") or not (is_class or own_forward):
        raise UnsafePickleError(
            f"its pickle calls getattr({_code_name(obj)}, {name!r:.60}), which no saved model does (only a class's "
            f"attribute or a layer's own forward): not loaded, nothing in it was run (the file may be malicious)"
        )
    return Value("builtins.getattr", (obj, name))


_DATA_CALLS[("builtins", "getattr")] = _getattr


def check_calls(path, hint: str = "") -> None:
    """Refuse a checkpoint whose pickle would call anything but tensor rebuilding, plain containers and `_DATA_TYPES`.

    torch's ``weights_only`` loader, which Ultralytics' restricted load uses, lets a pickle call every allow-listed
    class with arguments of its choice, e.g. build a ``DetectionModel`` from a YAML path it names. This reads the
    pickle first with ``ibra_yolo.unpickle`` (stand-ins, shapes only: nothing is built, no tensor data read), so such
    a file is refused before torch reads it. The pickle is read with torch's own zip reader (what ``torch.load``
    reads). torch reads any file that does not start as a zip as its legacy format, a pickle that cannot be checked
    this way: such a file is refused too, before torch sees it.

    Raises:
        UnsafePickleError: The pickle names a function outside the allow-list or calls a class, naming it; a legacy
            (non-zip) pickle.
        CheckpointError: Not a torch.save file, or a damaged one (e.g. two zip archives in one file).
    """
    kind = file_kind(path)
    if kind == "pickle":
        with open(path, "rb") as f:
            names = legacy_pickle_names(f.read(1 << 20)) or []
        named = f" (it names {', '.join(names)}, which may run code)" if names else ""
        raise UnsafePickleError(
            f"checkpoint {path} is a pickle in torch's legacy (non-zip) format, which the restricted loader cannot "
            f"check{named}: not loaded, nothing in it was run (if you trust it, load it once and torch.save it again: "
            f"torch writes the zip format{hint})"
        )
    if kind != "zip":
        empty = Path(path).stat().st_size == 0
        raise CheckpointError(
            f"cannot read checkpoint {path}: "
            + ("it is empty" if empty else "it is not a torch.save file (neither torch's zip format nor a pickle)")
        )
    try:
        _check_stored_code(read_checkpoint(path, calls=_DATA_CALLS, data=False), path)
    except UnsafePickleError as e:
        name, how = getattr(e, "refused", ("", ""))
        old = old_protocol_error(path, name, f" (only Ultralytics checkpoints of known models are read{hint})")
        if old is not None:
            raise old from None
        wrapper = _saved_model_object(path) if how == "names" else None
        if wrapper:  # battery 32, K03: torch.save(YOLO(...)) was refused naming only builtins.list
            raise UnsafePickleError(
                f"checkpoint {path} holds an Ultralytics {wrapper} object saved with torch.save, not a checkpoint "
                f"(it refers to {name}, which a checkpoint may not use): not loaded, nothing in it was run (save a "
                f"model with model.save('x.pt'), which writes a checkpoint{hint})"
            ) from None
        if how == "names":
            raise UnsafePickleError(
                f"checkpoint {path} refers to {name}, which a checkpoint may not use: not loaded, nothing in it was "
                f"run (only Ultralytics checkpoints of known models are read{hint})"
            ) from None
        if how == "calls":
            raise UnsafePickleError(
                f"checkpoint {path} calls {name}(...) while it is read, which no saved model does (a saved class is "
                f"only given its state): not loaded, nothing in it was run (the file may be malicious{hint})"
            ) from None
        raise e if str(e).startswith(f"checkpoint {path}") else UnsafePickleError(f"checkpoint {path}: {e}") from None
    except CheckpointError as e:  # damaged or not a checkpoint: its own message, naming the file
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).removeprefix(f'{path}: ')}") from None


def _code_name(obj) -> str:
    """A class, function or stand-in as the pickle names it (a stand-in's ``module.name``), in bounded size."""
    return str(getattr(obj, "qualname", None) or getattr(obj, "__qualname__", None) or type(obj).__name__)[:80]


def _is_code(obj) -> bool:
    """A class or function stored as a value (not called while the file is read): something to be called later."""
    return isinstance(obj, type) or (callable(obj) and not isinstance(obj, (StandIn, Value)))


def _getattr_stored_ok(value: Value, owner, key) -> bool:
    """Whether a ``getattr`` result sits where official checkpoints keep one: an enum member (Python pickles them as
    ``getattr(cls, name)``), a fused Conv's own ``forward`` (``getattr(self, "forward_fuse")``), or a YOLOv8/11
    Segment/Pose head's ``detect`` (``Detect.forward``, which its forward calls as ``self.detect(self, x)``)."""
    obj, name = value.args
    if obj is _ENUM:
        return True
    if key == "forward" and obj is owner and name in ("forward", "forward_fuse"):
        return True
    is_detect = isinstance(obj, type) and issubclass(obj, StandIn) and obj.qualname.endswith("Detect")
    return key == "detect" and isinstance(owner, StandIn) and is_detect and name == "forward"


def _stored_code_error(path, where: str, what: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"checkpoint {path}: {where or 'the top level'} is {what}, which something would call later (in place of a "
        f"layer's method, e.g. its forward): not loaded, nothing in it was run (a saved model stores data, not code; "
        f"the file may be malicious)"
    )


def _check_module_dicts(obj: StandIn, where: str, path) -> None:
    """A module's ``_modules`` holds modules (or None) under string names, and its hook dicts are empty: torch restores
    hooks as saved and calls them on every forward, ``state_dict()`` or load. Its attributes hold nothing under the
    name of a method of its class (Python reads the instance dict first: ``fuse = 3`` would fail when called), but
    parse_model's ``type`` name; code, ``getattr`` results and layers are named by the walk, wherever they are."""
    for key, value in obj.attrs.items():
        if "hook" in str(key) and isinstance(value, dict) and value:
            raise UnsafePickleError(
                f"checkpoint {path}: the {obj.name} at {where or 'the top level'} stores {key} "
                f"({', '.join(_code_name(v) for v in list(value.values())[:3])}), which torch would call: not "
                f"loaded, nothing in it was run (a saved model holds no hooks; the file may be malicious)"
            )
    at = where or "the top level"
    cls = _real_class(obj)
    for key, value in obj.attrs.items():
        if key == "_modules" or not isinstance(key, str):
            continue
        if _is_code(value) or _is_layer(value) or (isinstance(value, Value) and value.qualname == "builtins.getattr"):
            continue  # the walk names these, wherever they are stored (`_check_stored_code`)
        if _shadows_method(cls, key) and not (key == "type" and isinstance(value, str)):  # parse_model's m.type
            raise UnsafePickleError(
                f"checkpoint {path}: the {obj.name} at {at} stores {_code_name(value)} under the name of its method "
                f"{key!r:.60}, which Python would find in place of the method: not loaded, nothing in it was run (a "
                f"saved layer keeps its methods in its class; the file was altered or may be malicious)"
            )
    kids = obj.attrs.get("_modules", {})
    items = kids.items() if isinstance(kids, dict) else [("_modules", kids)]
    for name, kid in items:
        if not isinstance(kids, dict) or not isinstance(name, str) or not (kid is None or isinstance(kid, StandIn)):
            raise UnsafePickleError(
                f"checkpoint {path}: the {obj.name} at {where or 'the top level'} holds the child {name!r:.60} = "
                f"{_code_name(kid)}, which is not a module under a name: not loaded, nothing in it was run (the file "
                f"was altered or may be malicious)"
            )
        if name.startswith("_") or name in _WRAPPER_NAMES:
            why = _WRAPPER_NAMES.get(name, "Python's or torch's own name (e.g. __deepcopy__, _orig_mod)")
            raise UnsafePickleError(
                f"checkpoint {path}: the {obj.name} at {where or 'the top level'} has a child layer named "
                f"{name!r:.60}, which is {why}, so something would use the layer in place of a method or of the "
                f"model: not loaded, nothing in it was run (a saved model's layers are named by its YAML; the file "
                f"was altered or may be malicious)"
            )


# child names that Ultralytics reads as something other than a layer: `unwrap_model` takes `m.module` (DataParallel's)
# as the model itself, and the classify predictor calls `model.transforms` on every image
_WRAPPER_NAMES = {
    "module": "a parallel wrapper's model to Ultralytics (unwrap_model takes it as the model)",
    "transforms": "a classification model's preprocessing (called on every image)",
}


# the checkpoint's own entries that hold whole models (Ultralytics reads `ema`, else `model`); a layer under a key of
# its own (`ck["stopper"] = SPPF(...)`) is one no saved checkpoint holds (battery 26, H81/H84)
MODEL_KEYS = ("model", "ema")

# torchvision's transforms are modules too; a trained classification model stores its inference transforms as
# `model.transforms`, a Compose (no module) whose list holds them (Ultralytics' classify trainer does so)
_TRANSFORMS = "torchvision.transforms."


def _is_layer(obj) -> bool:
    """A stand-in for a module: its saved state has ``_modules`` (every ``nn.Module`` has one)."""
    return isinstance(obj, StandIn) and "_modules" in obj.attrs


def _real_class(obj: StandIn) -> type:
    """The class a stand-in stands for, if its module is already imported (nothing is imported on a file's word),
    else ``torch.nn.Module`` for a module (its methods are what every layer has) or ``object``."""
    module, _, name = obj.qualname.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)
    if isinstance(cls, type):
        return cls
    import torch

    return torch.nn.Module if "_modules" in obj.attrs else object


def _shadows_method(cls: type, key: str) -> bool:
    """Whether an instance attribute ``key`` would hide a method of ``cls`` (Python reads the instance dict before a
    class attribute that is not a data descriptor, e.g. a function)."""
    if cls is object or key.startswith("__"):
        return False
    attr = inspect.getattr_static(cls, key, None)
    if attr is None or hasattr(type(attr), "__set__") or hasattr(type(attr), "__delete__"):  # absent, or a property
        return False
    return callable(attr) or isinstance(attr, (staticmethod, classmethod))


def _check_stored_code(ckpt, path) -> None:
    """Refuse a checkpoint that stores code to be called later: hooks of its modules, which torch restores as saved
    and calls on every forward, ``state_dict()`` or load; any class or function stored as a value, e.g. a layer's
    ``forward``, ``fuse`` or ``_predict_once`` attribute set to an allow-listed class, which Python finds before the
    method; a ``getattr`` result anywhere but where official checkpoints keep one (`_getattr_stored_ok`); and a layer
    anywhere but in a module's ``_modules``, as the checkpoint's own ``model`` or ``ema`` (`MODEL_KEYS`; not under a
    top-level key of its own) or as a torchvision
    transform (a classification model's ``transforms``): as ``fuse``, in a list or in ``train_args`` something could
    call it."""
    # (where, object, the module holding it, its attribute name, whether a layer may sit there)
    seen, todo = set(), [("", ckpt, None, None, True)]
    while todo:
        where, obj, owner, key, layer_place = todo.pop()
        if _is_layer(obj) and not layer_place and not obj.qualname.startswith(_TRANSFORMS):  # at every reference
            raise UnsafePickleError(
                f"checkpoint {path}: {where} is a {obj.name} layer outside any module's children (torch keeps layers "
                f"in _modules, and a checkpoint its models under 'model' and 'ema'; a saved model holds them "
                f"nowhere else), where something could call it in place of a method: not loaded, nothing in it was "
                f"run (the file was altered or may be malicious)"
            )
        if isinstance(obj, Value) and obj.qualname == "builtins.getattr":  # at every place it is stored (memo refs)
            if not _getattr_stored_ok(obj, owner, key):
                target, name = obj.args
                of = f"a {target.name} layer" if isinstance(target, StandIn) else _code_name(target)
                raise _stored_code_error(path, where, f"getattr({of}, {name!r:.60})")
        elif _is_code(obj):
            raise _stored_code_error(path, where, f"{_code_name(obj)}, a class or function")
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, StandIn):
            _check_module_dicts(obj, where, path)
            kids = obj.attrs.get("_modules") or {}
            todo += [(f"{where}.{k}", v, None, None, True) for k, v in kids.items()]  # model.model.1: as named_modules
            todo += [(f"{where}.{k}", v, obj, k, False) for k, v in obj.attrs.items() if k != "_modules"]
            if not isinstance(obj.__dict__.get("state"), dict):  # a state of another shape (a tuple) is walked too
                todo.append((where, obj.__dict__.get("state"), None, None, False))
        elif isinstance(obj, Value):  # its state (an args namespace's values); its arguments are checked by its call
            todo.append((where, obj.state, None, None, False))
        elif isinstance(obj, dict):  # the checkpoint's own "model" and "ema" are the places for whole models
            top = not where and obj is ckpt
            todo += [
                (f"{where}.{k}" if where else str(k), v, None, None, top and k in MODEL_KEYS) for k, v in obj.items()
            ]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo += [(f"{where}[{i}]", v, None, None, False) for i, v in enumerate(obj)]


def file_kind(path) -> str:
    """``"zip"`` (torch.save's format), ``"pickle"`` (a plain pickle: torch's legacy format) or ``"other"``, by torch's
    own rule: a zip starts with a zip record (a zip appended to something else is read as that something). A pickle
    starts with PROTO (protocol 2 and later) or, for protocols 0 and 1, is told by its opcodes parsing up to STOP
    within the first MiB (battery 31, N-leg0/RE-H24-raw0: such files were called "not a pickle")."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head == ZIP_MAGIC or head[:1] == b"\x80":
                return "zip" if head == ZIP_MAGIC else "pickle"
            return "pickle" if legacy_pickle_names(head + f.read((1 << 20) - 4)) is not None else "other"
    except OSError:
        return "other"


def legacy_pickle_names(head: bytes) -> list[str] | None:
    """The globals the first pickle in ``head`` names that the reader refuses (``os.system``), or None when ``head``
    does not start with a whole pickle. pickletools only parses the opcodes: nothing is built or run."""
    try:
        return _refused_names(_globals(head))
    except ValueError:  # an unknown opcode, or no STOP in head: not a pickle (or too long to tell)
        return None
