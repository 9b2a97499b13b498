"""The restricted unpickler: torch checkpoints are read exactly, and no pickle can run code through it."""

import collections
import os
import pickle
import re
import zipfile
from pathlib import Path, PosixPath

import pytest
import torch
from conftest import ROOT

from ibra_yolo.errors import CheckpointError, MissingFileError, UnsafePickleError
from ibra_yolo.unpickle import StandIn, read_checkpoint


def touch(path):
    """A side effect a test can see: it creates ``path``."""
    Path(path).touch()


class Payload:
    """An object whose pickle calls ``func(*args)`` when loaded, as a malicious checkpoint would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class CallablePayload(Payload):
    """A `Payload` that pickle accepts as the function of another one (pickle wants the first item callable)."""

    def __call__(self, *args):
        raise AssertionError("never called")


class Module:
    """A plain class with state: pickled as class + state (NEWOBJ, BUILD), as nn.Module is."""

    def __init__(self, **state):
        self.__dict__.update(state)


def test_tensors_and_plain_data_read_exactly(tmp_path):
    # strided views (transposed, offset slices) share one storage; dtypes and containers come back unchanged
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    data = {
        "t": base.t(),  # strides (1, 6)
        "slice": base[1:3, 2:5],  # storage offset 8
        "half": torch.tensor([1.5, -2.25], dtype=torch.float16),
        "long": torch.tensor([2**40, -3]),
        "bool": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)),
        "nested": [1, 2.5, "x", None, (True, b"b"), {"k": collections.OrderedDict(a=1)}, {3, 4}, frozenset({5})],
        "size": torch.Size([2, 3]),
        "dtype": torch.float16,
        "device": torch.device("cpu"),
    }
    torch.save(data, tmp_path / "d.pt")
    got = read_checkpoint(tmp_path / "d.pt")
    for k in ("t", "slice", "half", "long", "bool", "empty", "param"):
        assert got[k].dtype == data[k].dtype and torch.equal(got[k], data[k].detach()), k
    assert got["t"].stride() == (1, 6) and got["slice"].storage_offset() == 8
    assert got["nested"] == data["nested"] and type(got["nested"][5]["k"]) is collections.OrderedDict
    assert got["size"] == torch.Size([2, 3]) and got["dtype"] is torch.float16 and got["device"] == data["device"]


def test_classes_become_inert_stand_ins(tmp_path):
    torch.save({"m": Module(T=4, _parameters={"weight": torch.ones(2)}, _modules={})}, tmp_path / "m.pt")
    m = read_checkpoint(tmp_path / "m.pt")["m"]
    assert isinstance(m, StandIn) and m.qualname == f"{__name__}.Module" and m.name == "Module"
    assert m.attrs["T"] == 4 and torch.equal(m.tensors()["weight"], torch.ones(2)) and m.children() == {}
    with pytest.raises(UnsafePickleError, match=r"calls test_unpickle\.Module\(\.\.\.\): refused"):
        type(m)()  # a stand-in class cannot be called, so a pickle cannot run it


def test_spikeyolo_checkpoint_reads_without_its_code():
    ckpt = read_checkpoint(ROOT / "tests" / "data" / "spikeyolo" / "spikeyolo-tiny.pt")
    model = ckpt["model"]
    assert model.qualname == "ultralytics.nn.tasks.DetectionModel" and ckpt["version"] == "8.0.197"
    down = model.children()["model"].children()["1"]
    assert down.qualname == "ultralytics.nn.modules.yolo_spikformer.MS_DownSampling"
    assert down.children()["encode_conv"].tensors()["weight"].dtype == torch.float16


# ----------------------------------------------------------------------------------------------------------------------
# Malicious pickles: refused with one line, and never run
# ----------------------------------------------------------------------------------------------------------------------
def _refused(path, marker, names):
    with pytest.raises(UnsafePickleError) as e:
        read_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message and names in message and "refused" in message, message
    assert not marker.exists()  # nothing ran


def _live(path, marker):
    """Prove the payload is real: the stock unpickler runs it."""
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


def test_os_system_is_refused_and_never_called(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(os.system, f"touch {marker}")}, tmp_path / "evil.pt")
    _refused(tmp_path / "evil.pt", marker, f"names {os.system.__module__}.system")  # posix.system on Linux
    _live(tmp_path / "evil.pt", marker)


def test_global_hidden_in_nested_data_is_refused(tmp_path):
    # a released-looking checkpoint whose train_args hide builtins.eval deep inside lists and dicts
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    evil = {"epoch": -1, "model": None, "train_args": {"data": "coco.yaml", "x": [1, {"y": (Payload(eval, code),)}]}}
    torch.save(evil, tmp_path / "evil.pt")
    _refused(tmp_path / "evil.pt", marker, "names builtins.eval")  # protocol 2 (torch.save) writes __builtin__
    _live(tmp_path / "evil.pt", marker)


def test_calling_any_other_global_is_refused(tmp_path):
    # A function from a module not on the refused list (here this test module) becomes an inert stand-in, and the
    # pickle's call of it is refused: the guarantee does not depend on the list.
    marker = tmp_path / "pwned"
    torch.save([Payload(touch, str(marker))], tmp_path / "evil.pt")
    _refused(tmp_path / "evil.pt", marker, "calls test_unpickle.touch(...)")
    _live(tmp_path / "evil.pt", marker)


@pytest.mark.parametrize("func", [torch.load, pickle.loads, getattr])
def test_torch_and_pickle_functions_are_refused(tmp_path, func):
    torch.save(Payload(func, "x"), tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError, match=rf"names \w+(\.\w+)*\.{func.__name__}, which may run code: refused"):
        read_checkpoint(tmp_path / "evil.pt")


def test_damaged_and_foreign_files_are_one_line_errors(tmp_path):
    torch.save({"w": torch.ones(4)}, tmp_path / "ok.pt")
    with zipfile.ZipFile(tmp_path / "ok.pt") as src, zipfile.ZipFile(tmp_path / "short.pt", "w") as dst:
        for info in src.infolist():  # the same archive with the tensor's storage cut to 8 of its 16 bytes
            data = src.read(info)
            dst.writestr(info, data[:8] if info.filename.endswith("/data/0") else data)
    with pytest.raises(CheckpointError, match=r"storage record 'data/0' holds 8 bytes, not 4 x 4 \(FloatStorage\)"):
        read_checkpoint(tmp_path / "short.pt")
    with zipfile.ZipFile(tmp_path / "ok.pt") as src, zipfile.ZipFile(tmp_path / "gone.pt", "w") as dst:
        for info in src.infolist():  # the same archive without the tensor's storage: "holds None bytes" before
            if not info.filename.endswith("/data/0"):
                dst.writestr(info, src.read(info))
    with pytest.raises(CheckpointError, match=r"gone\.pt: storage record 'data/0' is missing: the file is damaged$"):
        read_checkpoint(tmp_path / "gone.pt")
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"w": 1}))  # not a zip: torch's legacy format or anything else
    with pytest.raises(CheckpointError, match=r"legacy.pt is not a torch zip checkpoint"):
        read_checkpoint(tmp_path / "legacy.pt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(
        CheckpointError, match=r"other\.zip: torch cannot read its zip records \(.*\): the file is damaged"
    ):
        read_checkpoint(tmp_path / "other.zip")  # torch's reader wants torch.save's records
    with pytest.raises(MissingFileError, match=r"checkpoint .*missing.pt does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    # a folder or a FIFO was reported as "does not exist"
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"folder.pt is not a regular file: name a .pt file"):
        read_checkpoint(tmp_path / "folder.pt")


def test_allowed_data_calls_build_nothing_and_their_results_cannot_be_called(tmp_path):
    from ibra_yolo.unpickle import Value, data_call

    calls = {("pathlib", "PosixPath"): data_call("pathlib.PosixPath"), ("builtins", "getattr"): data_call("getattr")}
    torch.save({"data": Path("/x/data.yaml")}, tmp_path / "path.pt")
    value = read_checkpoint(tmp_path / "path.pt", calls=calls)["data"]
    assert isinstance(value, Value) and value.args == ("/", "x", "data.yaml")  # PosixPath's pickle: its parts
    # getattr(PosixPath, "touch")(<a path>): allowed names, and an allowed call whose result is then called, as an
    # exploit would chain them;
    # the result is a Value, and calling it is refused (nothing is created)
    marker = tmp_path / "MARKER"
    torch.save({"x": Payload(CallablePayload(getattr, PosixPath, "touch"), marker)}, tmp_path / "chain.pt")
    with pytest.raises(UnsafePickleError, match=r"calls the result of getattr\(\.\.\.\): refused") as e:
        read_checkpoint(tmp_path / "chain.pt", calls=calls)
    assert e.value.refused == ("the result of getattr(...)", "calls") and not marker.exists()
    # without calls=, the same names are refused as soon as the pickle names them
    with pytest.raises(UnsafePickleError, match=r"names builtins\.getattr, which may run code") as e:
        read_checkpoint(tmp_path / "chain.pt")
    assert e.value.refused == ("builtins.getattr", "names")
    # an allowed data type built the way protocol 2 builds objects (NEWOBJ cls.__new__(cls), then BUILD with its
    # state; Ultralytics' IterableSimpleNamespace is): read as a Value, not called "damaged" (battery 20, B11: the
    # stand-in was a function, and NEWOBJ takes only a class)
    torch.save({"ns": Module(data="x.yaml")}, tmp_path / "newobj.pt")
    assert b"\x81" in zipfile.ZipFile(tmp_path / "newobj.pt").read("newobj/data.pkl")  # NEWOBJ is in it
    ns = read_checkpoint(tmp_path / "newobj.pt", calls={(Module.__module__, "Module"): data_call("Module")})["ns"]
    assert isinstance(ns, Value) and ns.qualname == "Module" and ns.args == () and ns.state == {"data": "x.yaml"}
    # data=False: shapes only, no byte of a tensor read
    torch.save({"w": torch.arange(6.0).reshape(2, 3).t()}, tmp_path / "t.pt")
    w = read_checkpoint(tmp_path / "t.pt", data=False)["w"]
    assert w.device.type == "meta" and w.shape == (3, 2) and w.stride() == (1, 3)


WRITABLE = {"data": "coco8.yaml"}  # a global of the program, as Ultralytics' DEFAULT_CFG_DICT is


def _with_pickle(tmp_path, program: bytes) -> Path:
    """A torch.save file whose data.pkl is replaced by ``program`` (hand-written pickle opcodes)."""
    torch.save({}, tmp_path / "base.pt")
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(tmp_path / "base.pt") as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, program if item.filename.endswith("/data.pkl") else src.read(item))
    return path


def test_a_pickle_that_writes_into_a_global_is_refused(tmp_path):
    # A pickle can name a global (GLOBAL) and write into it (SETITEM, or BUILD on the class itself): the stock
    # unpickler sets DEFAULT_CFG_DICT['data'] for every later command. The reader's stand-ins refuse the write, and
    # the message says what it is (battery 19, K01/K03/K04 called such files "damaged").
    setitem = b"\x80\x02ctest_unpickle\nWRITABLE\nX\x04\x00\x00\x00dataX\x04\x00\x00\x00evils0}."  # g['data']='evil'
    path = _with_pickle(tmp_path, setitem)
    says = "the checkpoint's pickle writes into test_unpickle.WRITABLE itself (a global of the program it names"
    with pytest.raises(UnsafePickleError, match=re.escape(says)):
        read_checkpoint(path)
    assert WRITABLE == {"data": "coco8.yaml"}
    pickle.loads(setitem)  # the payload is real: the stock unpickler writes the global
    assert WRITABLE == {"data": "evil"}
    WRITABLE["data"] = "coco8.yaml"
    build = b"\x80\x02ctest_unpickle\nModule\n}X\x01\x00\x00\x00xK\x01sb0}."  # BUILD {'x': 1} on the class itself
    with pytest.raises(UnsafePickleError, match=re.escape("pickle writes into test_unpickle.Module itself")):
        read_checkpoint(_with_pickle(tmp_path, build))
