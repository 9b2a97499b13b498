"""Read an untrusted torch checkpoint without running any of its code: a restricted unpickler with inert stand-ins.

A torch checkpoint is a zip file holding one pickle (``<archive>/data.pkl``) and one record per tensor storage
(``<archive>/data/<key>``). A pickle is a small program: it names globals (``module.name``) and calls them, so loading
one with the stock machinery runs whatever it names. This reader runs the pickle with an ``Unpickler`` whose
``find_class`` hands out only:

- torch's tensor rebuilding, re-implemented here on torch's public API (``as_strided`` on the storage record, which
  checks the bounds), plus plain containers (``OrderedDict``, ``set``, ``frozenset``, ``bytes`` via ``_codecs.encode``),
  ``torch.Size``, ``torch.device``, dtypes and storage-type tokens;
- inert stand-ins (`StandIn`) for every other class, e.g. ``ultralytics.nn.modules.yolo_spikformer.MS_DownSampling``
  or ``torch.nn.modules.conv.Conv2d``: pickle creates them with ``cls.__new__`` and gives them their state
  (``__setstate__``), which they only store. Their state is a module's ``__dict__``, so parameters and buffers can be
  read by module path (`StandIn.tensors`, `StandIn.children`). A stand-in cannot be called: a pickle that calls one
  (how it would run a function) is refused with `UnsafePickleError`, before anything runs.

Names from modules that hold no model classes but can run code (``os``, ``builtins``, ``subprocess``, ``sys``, any
``torch`` function, ...) are refused as soon as the pickle names them. That list is only for a clear early message:
the guarantee is that nothing but the functions listed above is ever returned to the pickle, so nothing else can run.

Two uses: SpikeYOLO's checkpoints (``ibra_yolo.spikeyolo``, whose classes do not exist here) are read only this way;
an Ultralytics checkpoint is first read this way (``ibra_yolo.pickle_checks.check_calls``, with the data types official
checkpoints construct passed as ``calls=``) to prove that its pickle calls no class, before torch's ``weights_only``
loader rebuilds the real objects (that loader lets a pickle call any allow-listed class, e.g. build a model from a
YAML path of its choosing).
"""

from __future__ import annotations

import collections
import io
import pickle
import reprlib
import sys
import zipfile
from pathlib import Path

import torch

from ibra_yolo.errors import CheckpointError, MissingFileError, UnsafePickleError
from ibra_yolo.files import as_path

__all__ = ("StandIn", "Value", "ZIP_MAGIC", "data_call", "read_checkpoint", "refuses_global")

# Module roots whose names are refused outright: the standard library's ways to run code, and pickling helpers.
_REFUSED = (
    "builtins __builtin__ os posix nt posixpath ntpath subprocess sys shutil importlib runpy socket ctypes pickle "
    "_pickle marshal code codeop pty webbrowser multiprocessing signal io _io tempfile functools operator copyreg "
    "types inspect gc threading _thread asyncio platform pdb timeit glob pathlib shelve dill cloudpickle joblib "
    "numpy pip setuptools distutils urllib http requests zipimport pkgutil site sysconfig ensurepip venv atexit "
    "resource fcntl mmap select selectors ssl ftplib smtplib telnetlib xmlrpc"
)
_REFUSED_ROOTS = frozenset(_REFUSED.split())
_REPR = reprlib.Repr()  # values quoted in bounded size
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
_DTYPES = {str(d).removeprefix("torch."): d for d in {*_STORAGE_DTYPES.values(), torch.float16, torch.float32}}


class _NoCall(type):
    """Metaclass of the stand-ins: calling one, which is how a pickle runs a function, is refused; so is writing into
    one (``SETITEM``/``BUILD`` on the class a pickle names, not on an object it made), which is how a pickle would
    change a global of the program (``ultralytics.utils.DEFAULT_CFG_DICT['data'] = ...``)."""

    def __call__(cls, *args, **kwargs):
        raise _refused(
            f"the checkpoint's pickle calls {cls.qualname}(...): refused without calling it (this reader only "
            "rebuilds tensors and plain data; the file may be malicious or of an unsupported kind)",
            cls.qualname,
            "calls",
        )

    def __setitem__(cls, key, value):
        raise _writes_global(cls)


def _writes_global(cls) -> UnsafePickleError:
    return _refused(
        f"the checkpoint's pickle writes into {cls.qualname} itself (a global of the program it names, not an object "
        "it built): refused, nothing was changed (the file may be malicious)",
        cls.qualname,
        "writes",
    )


class _OnInstances:
    """``__setstate__`` for objects a pickle made; read on the class itself (a pickle's ``BUILD`` on a global it
    names), a function that refuses (`_writes_global`)."""

    def __init__(self, method):
        self.method = method

    def __get__(self, obj, cls):
        if obj is not None:
            return self.method.__get__(obj, cls)

        def refuse(*args):
            raise _writes_global(cls)

        return refuse


def _refused(message: str, name: str, how: str) -> UnsafePickleError:
    """An `UnsafePickleError` that also says what was refused: ``refused = (name, "names", "calls", "writes" or
    "hooks")``."""
    e = UnsafePickleError(message)
    e.refused = (name, how)
    return e


class StandIn(metaclass=_NoCall):
    """Inert stand-in for an instance of a class a checkpoint names; it stores the state pickle gives it, nothing else.

    ``qualname`` is the class's ``module.name`` as written in the pickle.
    """

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    @_OnInstances
    def __setstate__(self, state):
        self.__dict__["state"] = state

    @property
    def name(self) -> str:
        """The class name without its module, e.g. ``MS_DownSampling``."""
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def attrs(self) -> dict:
        """The pickled instance ``__dict__`` (for a module: its attributes, ``_parameters``, ``_modules``, ...)."""
        state = self.__dict__.get("state")
        return state if isinstance(state, dict) else {}

    def children(self) -> dict[str, StandIn]:
        """Child modules by attribute name, as ``nn.Module._modules`` (None entries skipped)."""
        kids = self.attrs.get("_modules") or {}
        if not isinstance(kids, dict):
            raise CheckpointError(f"a {self.qualname} has _modules that are not a mapping")
        bad = [k for k, v in kids.items() if v is not None and not isinstance(v, StandIn)]
        if bad:
            raise CheckpointError(f"a {self.qualname} has child module(s) {bad} that are not modules")
        return {str(k): v for k, v in kids.items() if v is not None}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Own parameters and persistent buffers by name, as ``state_dict`` lists them (None entries skipped)."""
        attrs = self.attrs
        skip = attrs.get("_non_persistent_buffers_set") or set()
        out = {}
        for group in ("_parameters", "_buffers"):
            entries = attrs.get(group) or {}
            if not isinstance(entries, dict):
                raise CheckpointError(f"a {self.qualname} has {group} that are not a mapping")
            for k, v in entries.items():
                if v is None or (group == "_buffers" and k in skip):
                    continue
                if type(v) is not torch.Tensor:
                    raise CheckpointError(f"{self.qualname}.{k} is a {type(v).__name__}, not a tensor")
                out[str(k)] = v
        return out

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


class _StorageType:
    """Token for a storage class named in a tensor's persistent id (``torch.HalfStorage``): its dtype, not callable."""

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype


class _Storage:
    """One storage record of the zip as a flat tensor."""

    def __init__(self, flat: torch.Tensor):
        self.flat = flat


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` on our storage: a bounds-checked strided view. A tensor with backward hooks
    is refused: torch would restore them, and call them in a backward pass."""
    _no_hooks(backward_hooks, "tensor")
    shape_ok = _ints(size) and _ints(stride) and len(size) == len(stride) and _ints([storage_offset])
    if not isinstance(storage, _Storage) or not shape_ok:
        raise CheckpointError("the checkpoint holds a malformed tensor record")
    try:
        return storage.flat.as_strided(tuple(size), tuple(stride), storage_offset)
    except RuntimeError as e:
        raise CheckpointError(f"a tensor record does not fit its storage: {e}") from None


def _no_hooks(hooks, what: str) -> None:
    if hooks:  # None or an empty OrderedDict in every file torch.save writes of a tensor without hooks
        raise _refused(
            f"the checkpoint's pickle gives a {what} backward hooks {_REPR.repr(hooks)}, which torch would call: "
            "refused",
            "",
            "hooks",
        )


def _ints(values) -> bool:
    return isinstance(values, (tuple, list)) and all(isinstance(v, int) for v in values)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter(_with_state)``: the parameter's data; backward hooks are refused, as for a
    tensor, and so is extra state (a plain Parameter has none)."""
    _no_hooks(backward_hooks, "parameter")
    if state:
        raise _refused(
            f"the checkpoint's pickle gives a parameter extra state {_REPR.repr(state)}: refused", "", "hooks"
        )
    if type(data) is not torch.Tensor:
        raise CheckpointError("the checkpoint holds a malformed parameter record")
    return data


def _encode(text, encoding="utf-8"):
    """``_codecs.encode``, as protocol-2 pickles spell ``bytes`` (``encode(str, 'latin1')``): text to bytes only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "ascii"):
        raise CheckpointError("the checkpoint holds a malformed bytes record")
    return text.encode(encoding)


_ALLOWED = {
    ("_codecs", "encode"): _encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class Value:
    """What an allowed data-type call (``calls=`` of `read_checkpoint`) returns: inert, holds only the call's
    arguments and the state pickle gives it; calling it is refused like calling a stand-in."""

    def __init__(self, qualname: str, args: tuple):
        self.qualname, self.args, self.state = qualname, args, None

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        name = f"the result of {self.qualname}(...)"
        raise _refused(f"the checkpoint's pickle calls {name}: refused", name, "calls")

    def __repr__(self) -> str:
        return f"<{self.qualname} value>"


def data_call(qualname: str):
    """An inert stand-in for a data type a checkpoint may construct (e.g. ``pathlib.PosixPath``): it returns a `Value`
    holding the arguments, so a pickle that builds one can be read without constructing anything. It is a class, as
    pickle's NEWOBJ (``cls.__new__(cls, *args)``, how protocol 2 builds an object) takes only a class; called either
    way it makes a `Value`."""

    def new(cls, *args, **kwargs):
        return Value(qualname, args)

    return type(f"DataCall[{qualname}]", (), {"__new__": new, "__module__": __name__, "qualname": qualname})


ZIP_MAGIC = b"PK\x03\x04"  # torch.load reads a file as a zip only when it starts with this, any other as a pickle


class _Archive:
    """One torch.save zip file, read with torch's own zip reader, so that this module reads exactly the records
    ``torch.load`` reads. Python's ``zipfile`` finds records from the directory at the end of the file, torch from the
    start: a file made of two zip archives shows each of them another pickle, so the two views must agree."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.reader = torch._C.PyTorchFileReader(str(path))
            names = {n for n in self.reader.get_all_records() if not n.endswith("/")}
        except RuntimeError as e:
            first = str(e).split(".")[0].strip()
            raise CheckpointError(f"{path}: torch cannot read its zip records ({first}): the file is damaged") from None
        if "data.pkl" not in names:
            raise CheckpointError(f"{path}: it is a zip file but not a torch checkpoint (no data.pkl record)")
        self.sizes = {n: self.reader.get_record_size(n) for n in names}
        self._check_directory()

    def _check_directory(self) -> None:
        """Refuse a file whose zip directory (what ``zipfile`` and the CRC check read) lists other records."""
        try:
            with zipfile.ZipFile(self.path) as z:
                entries = [i for i in z.infolist() if not i.is_dir()]
                roots = {i.filename.split("/", 1)[0] for i in entries}
                listed = {i.filename.split("/", 1)[-1]: i.file_size for i in entries}
                same = len(roots) == 1 and listed == self.sizes
                same = same and z.read(f"{roots.pop()}/data.pkl") == self.record("data.pkl")
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError, NotImplementedError):
            same = False
        if not same:
            raise CheckpointError(
                f"{self.path}: its zip directory and its records disagree (two archives in one file?): not read"
            )

    def size(self, name: str) -> int | None:
        """The byte size of record ``name`` (e.g. ``data/0``), None when the file has no such record."""
        return self.sizes.get(name)

    def record(self, name: str) -> bytes:
        """The bytes of record ``name``."""
        return self.reader.get_record(name)


def refuses_global(module: str, name: str, calls=()) -> bool:
    """Whether this reader refuses the global ``module.name`` (a module that may run code), given allowed ``calls``."""
    module = "builtins" if module == "__builtin__" else module
    key = (module, name)
    if key in _ALLOWED or key in calls or (module == "torch" and (name in _STORAGE_DTYPES or name in _DTYPES)):
        return False
    root = module.split(".")[0]
    return root in _REFUSED_ROOTS or (root == "torch" and not module.startswith("torch.nn.modules."))


class _Unpickler(pickle.Unpickler):
    """Unpickler of one torch zip archive that hands out only `_ALLOWED`, ``calls``, dtypes, storage tokens and
    stand-ins."""

    def __init__(self, archive: _Archive, calls: dict | None, data: bool):
        super().__init__(io.BytesIO(archive.record("data.pkl")))
        self.archive, self.source = archive, str(archive.path)
        self.calls, self.data = calls or {}, data
        self.stand_ins: dict[str, type] = {}
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        module = "builtins" if module == "__builtin__" else module  # protocol 2 spells it the Python 2 way
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key in self.calls:
            return self.calls[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if refuses_global(module, name, self.calls):
            raise _refused(
                f"{self.source}: the checkpoint's pickle names {module}.{name}, which may run code: refused (this "
                "reader only rebuilds tensors and plain data; the file may be malicious)",
                f"{module}.{name}",
                "names",
            )
        qualname = f"{module}.{name}"
        if qualname not in self.stand_ins:
            attrs = {"qualname": qualname, "__module__": __name__, "__qualname__": f"StandIn[{qualname}]"}
            self.stand_ins[qualname] = _NoCall(name, (StandIn,), attrs)
        return self.stand_ins[qualname]

    def persistent_load(self, pid):
        ok = isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
        if not ok or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str) or not isinstance(pid[4], int):
            raise CheckpointError(f"{self.source}: unsupported storage record {str(pid)[:80]} in the checkpoint")
        _, kind, key, _location, numel = pid
        if key not in self.storages:
            name = f"data/{key}"
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            size = self.archive.size(name)
            if size is None:
                raise CheckpointError(f"{self.source}: storage record {name!r} is missing: the file is damaged")
            if numel < 0 or size != numel * itemsize:
                raise CheckpointError(
                    f"{self.source}: storage record {name!r} holds {size} bytes, not {numel} x {itemsize} ({kind.name})"
                )
            if not self.data:  # shapes only: nothing is read
                flat = torch.empty(numel, dtype=kind.dtype, device="meta")
            elif data := bytearray(self.archive.record(name)):
                flat = torch.frombuffer(data, dtype=kind.dtype)
            else:
                flat = torch.empty(0, dtype=kind.dtype)
            self.storages[key] = _Storage(flat)
        return self.storages[key]


def read_checkpoint(path: str | Path, calls: dict | None = None, data: bool = True):
    """Unpickle a torch zip checkpoint (``torch.save`` since torch 1.6) without running any of its code.

    Args:
        path (str | Path): The checkpoint file.
        calls (dict | None): More globals the pickle may name and call, ``{(module, name): function}``; the function
            runs instead of the global (e.g. `data_call`, which constructs nothing).
        data (bool): Read the tensors' data; False gives tensors on the ``meta`` device (shapes only, nothing read).

    Returns:
        The unpickled object: plain data and tensors as they were saved, `StandIn` objects for class instances
        (e.g. a whole ``DetectionModel`` tree of modules).

    Raises:
        UnsafePickleError: The pickle names or calls anything but tensor rebuilding and plain data (nothing it names
            is ever called), or gives a tensor backward hooks; its ``refused`` is ``(name, "names", "calls" or
            "hooks")``.
        CheckpointError: A missing, non-zip (legacy) or damaged file, or a big-endian one.
    """
    path = as_path(path, "path")
    if not path.exists():
        raise MissingFileError(f"checkpoint {path} does not exist")
    if not path.is_file():  # a folder, a FIFO or a device
        raise CheckpointError(f"checkpoint {path} is not a regular file: name a .pt file")
    with path.open("rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise CheckpointError(
                f"{path} is not a torch zip checkpoint (torch.save of torch >= 1.6); legacy or other formats are not "
                "read"
            )
    archive = _Archive(path)
    order = archive.record("byteorder").decode(errors="replace") if archive.size("byteorder") is not None else None
    if order is not None and order != sys.byteorder:
        raise CheckpointError(f"{path}: it stores {order}-endian tensors; this machine is {sys.byteorder}-endian")
    try:
        return _Unpickler(archive, calls, data).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError,
            MemoryError, OverflowError, RecursionError) as e:  # fmt: skip
        raise CheckpointError(f"{path}: the checkpoint's pickle is damaged ({type(e).__name__}: {e})") from None
