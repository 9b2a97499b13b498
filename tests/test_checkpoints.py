"""Checkpoints are read without running their code (ibra_yolo.checkpoints), by every command that opens a ``.pt``."""

import copy
import os
import pickle
import re
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CFG, run

from ibra_yolo.checkpoints import checkpoint_model, load_checkpoint, load_yolo
from ibra_yolo.cli import energy as energy_cli
from ibra_yolo.cli import eval as eval_cli
from ibra_yolo.errors import CheckpointError, IbraYoloError, MissingFileError, OutputExistsError, UnsafePickleError
from ibra_yolo.pickle_checks import check_calls
from ibra_yolo.spike_mode import convert_checkpoint, is_spike_driven


class Evil:
    """Unpickling this calls ``os.system``, which creates ``MARKER`` in the folder it names."""

    def __init__(self, folder):
        self.folder = folder

    def __reduce__(self):
        return os.system, (f"touch {self.folder}/MARKER",)


class Plain:
    """An object of a class the reader does not know: protocols 0 and 1 name copyreg._reconstructor to rebuild it."""


@pytest.fixture
def evil(tmp_path):
    """Two hostile files: torch.save's zip format and a plain pickle, each with ``Evil`` where the model goes."""
    torch.save({"model": Evil(tmp_path), "train_args": {}}, tmp_path / "evil.pt")
    with open(tmp_path / "evil_plain.pt", "wb") as f:
        pickle.dump({"model": Evil(tmp_path)}, f)
    return tmp_path


@pytest.fixture(scope="module")
def spiking_ckpt(tmp_path_factory):
    """An Ultralytics checkpoint of an untrained I-LIF n model (3 classes)."""
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"model": DetectionModel("spike-yolo-ilif-n.yaml", nc=3, verbose=False), "train_args": {}}, path)
    return path


def test_malicious_pickle_never_runs(evil):
    for name in ("evil.pt", "evil_plain.pt"):
        with pytest.raises(UnsafePickleError) as e:
            convert_checkpoint(evil / name, evil / "out.pt")
        assert str(e.value).startswith(f"checkpoint {evil / name} ") and "nothing in it was run" in str(e.value)
        assert "\n" not in str(e.value)
        assert not (evil / "MARKER").exists() and not (evil / "out.pt").exists()
    # the zip file names the function it wanted to call (os.system is posix.system on Linux)
    with pytest.raises(UnsafePickleError, match=r"evil\.pt refers to posix\.system, which a checkpoint may not use"):
        load_checkpoint(evil / "evil.pt")
    with pytest.raises(UnsafePickleError):
        load_yolo(evil / "evil.pt")
    assert not (evil / "MARKER").exists()


def test_malicious_pickle_in_every_command(evil, python):
    # eval and energy refuse it with one line, before Ultralytics' own (unrestricted, by default) load could run it
    cv2.imwrite(str(evil / "img.png"), np.zeros((32, 32, 3), np.uint8))
    from ibra_yolo.data import make_shapes_dataset

    data = make_shapes_dataset(evil / "data", n_train=1, n_val=1, imgsz=32, seed=0)
    commands = (
        ["energy", "--weights", evil / "evil.pt", "--source", evil / "img.png", "--out", evil / "e"],
        ["eval", "--weights", evil / "evil.pt", "--data", data, "--imgsz", 32, "--project", evil, "--name", "v"],
    )
    for argv in commands:
        p = run([python, "-m", "ibra_yolo", *map(str, argv)], check=False, env={"ULTRALYTICS_SAFE_LOAD": "0"})
        assert p.returncode == 2 and p.stderr.startswith(f"error: checkpoint {evil / 'evil.pt'} refers to posix.system")
        assert p.stderr.count("\n") == 1, p.stderr
        assert not (evil / "MARKER").exists()


@pytest.mark.parametrize(
    "content, cls, message",
    [
        ({"hello": 1}, CheckpointError, "is not an Ultralytics checkpoint: it holds no 'model' module ('hello')"),
        ({"model": None, "ema": None}, CheckpointError, "it holds no 'model' module ('model', 'ema')"),
        ([1, 2], CheckpointError, "is not an Ultralytics checkpoint: it holds a list, not a dict"),
        ({"model": torch.nn.Linear(1, 1)}, CheckpointError, "holds a Linear, not an Ultralytics model"),
    ],
)
def test_only_checkpoints_of_spiking_models_convert(tmp_path, content, cls, message):
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(cls) as e:
        convert_checkpoint(tmp_path / "x.pt", tmp_path / "y.pt")
    assert type(e.value) is cls and message in str(e.value) and str(tmp_path / "x.pt") in str(e.value)
    assert not (tmp_path / "y.pt").exists()


def test_ann_twin_does_not_convert(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    torch.save({"model": DetectionModel("spike-yolo-ann-n.yaml", nc=3, verbose=False)}, tmp_path / "ann.pt")
    with pytest.raises(CheckpointError, match="holds a model without integer spiking neurons"):
        convert_checkpoint(tmp_path / "ann.pt", tmp_path / "y.pt")


@pytest.mark.parametrize(
    "content, says",
    [
        (b"", "it is empty"),
        (b"hello", "it is not a torch.save file (neither torch's zip format nor a pickle)"),  # never given to torch
        (b"PK\x03\x04", "torch cannot read its zip records (PytorchStreamReader failed reading zip archive: not a ZIP "
         "archive): the file is damaged"),
    ],
)  # fmt: skip
def test_unreadable_files(tmp_path, content, says):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "x.pt")
    assert type(e.value) is CheckpointError and str(e.value) == f"cannot read checkpoint {tmp_path / 'x.pt'}: {says}"


def test_foreign_and_legacy_files_are_named(tmp_path, spiking_ckpt):
    # SpikeYOLO's own checkpoint (its classes live in ultralytics.nn.modules.yolo_spikformer) was called "empty,
    # truncated or not a torch.save file" by deploy, and a raw ModuleNotFoundError traceback in `yolo predict`
    spikeyolo = Path(__file__).parent / "data" / "spikeyolo" / "spikeyolo-tiny.pt"
    with pytest.raises(CheckpointError, match=r"is a SpikeYOLO checkpoint .*: convert it first, `ibra-yolo "
                       r"convert-spikeyolo .*spikeyolo-tiny\.pt <new\.pt>`"):  # fmt: skip
        load_checkpoint(spikeyolo)
    # torch's legacy (non-zip) format: its pickle cannot be checked before torch runs it (check_calls reads zip files),
    # so it is refused, even in this process, where loading spiking_ckpt has allow-listed all of its classes (torch
    # then loaded it: its pickle could have called any of them); the message says why instead of blaming a class
    load_checkpoint(spiking_ckpt)
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(spiking_ckpt, weights_only=False), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafePickleError) as e:
        load_checkpoint(legacy)
    out = str(e.value)
    assert out.startswith(
        f"checkpoint {legacy} is a pickle in torch's legacy (non-zip) format, which the restricted loader cannot "
        "check: not loaded, nothing in it was run (if you trust it, load it once and torch.save it again"
    ), out
    assert "ULTRALYTICS_SAFE_LOAD" not in out  # our commands always load restricted: no opt-out to advise
    # a TorchScript archive saved as .pt: `energy`/`deploy` called it "empty, truncated or not a torch.save file"
    torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)).save(str(tmp_path / "ts.pt"))
    with pytest.raises(
        CheckpointError, match=r"ts\.pt is a TorchScript archive, not an Ultralytics PyTorch checkpoint"
    ):
        load_checkpoint(tmp_path / "ts.pt")
    # a file that is no pickle at all (a renamed .npy) was an UnsafePickleError advising ULTRALYTICS_SAFE_LOAD=0
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.pt").write_bytes((tmp_path / "array.npy").read_bytes())
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "array.pt")
    assert type(e.value) is CheckpointError and str(e.value) == (
        f"cannot read checkpoint {tmp_path / 'array.pt'}: it is not a torch.save file (neither torch's zip format nor "
        f"a pickle)"
    )


def test_stock_commands_name_a_spikeyolo_file(python, tmp_path):
    # the stock `yolo predict` printed Ultralytics' ModuleNotFoundError traceback for the same file
    spikeyolo = Path(__file__).parent / "data" / "spikeyolo" / "spikeyolo-tiny.pt"
    src = Path(__file__).parent / "data"
    yolo = str(Path(python).with_name("yolo"))
    r = run([yolo, "predict", f"model={spikeyolo}", f"source={src}"], cwd=tmp_path, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "is a SpikeYOLO checkpoint" in r.stderr.strip().splitlines()[-1]


def test_paths(tmp_path, spiking_ckpt):
    with pytest.raises(MissingFileError, match=f"^checkpoint {tmp_path / 'no.pt'} does not exist$"):
        load_checkpoint(tmp_path / "no.pt")
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(CheckpointError, match="is a folder: name a .pt file"):
        load_checkpoint(tmp_path / "d.pt")
    torch.save({"model": None}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=f"^checkpoint {tmp_path / 'w.pth'} must be a .pt file"):
        load_checkpoint(tmp_path / "w.pth")
    with pytest.raises(Exception, match=r"must end in \.pt"):
        convert_checkpoint(spiking_ckpt, tmp_path / "out.pth")


def test_convert_keeps_users_tmp_file(tmp_path, spiking_ckpt):
    # a file of the user's named like a temporary file is neither read, nor replaced, nor deleted
    dst = tmp_path / "best-spike.pt"
    user_tmp = tmp_path / "best-spike.pt.tmp"
    user_tmp.write_text("mine")
    assert convert_checkpoint(spiking_ckpt, dst) == dst
    assert user_tmp.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-spike.pt", "best-spike.pt.tmp"]  # no temp left
    ckpt = load_checkpoint(dst)  # the output reads safely too
    assert is_spike_driven(checkpoint_model(ckpt, dst, need="spiking"))
    with pytest.raises(OutputExistsError):
        convert_checkpoint(spiking_ckpt, dst)
    assert is_spike_driven(load_yolo(dst))


def test_eval_cli_refuses_hello(tmp_path, capsys):
    # {'hello': 1} is not a model: one line from eval too (the data check comes first, so give it a dataset)
    from ibra_yolo.data import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "data", n_train=1, n_val=1, imgsz=32, seed=0)
    torch.save({"hello": 1}, tmp_path / "hello.pt")
    argv = ["--weights", tmp_path / "hello.pt", "--data", data, "--imgsz", 32, "--project", tmp_path, "--name", "v"]
    assert eval_cli.main([str(a) for a in argv]) == 2
    msg = f"error: {tmp_path / 'hello.pt'} is not an Ultralytics checkpoint: it holds no 'model' module ('hello')\n"
    assert capsys.readouterr().err == msg
    assert (
        energy_cli.main(["--weights", str(tmp_path / "hello.pt"), "--source", str(data), "--out", str(tmp_path)]) == 2
    )
    assert capsys.readouterr().err == msg


def test_not_a_regular_file_is_refused_without_reading(tmp_path):
    # a FIFO blocked `ibra-yolo deploy fifo.pt out.pt` forever in open(); it is refused before anything reads it
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(CheckpointError, match=f"^checkpoint {tmp_path / 'fifo.pt'} is not a regular file"):
        load_checkpoint(tmp_path / "fifo.pt")


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_load_yolo_names_a_foreign_suffix(tmp_path, suffix):
    # Ultralytics' own check was an AssertionError traceback ("acceptable suffix is {'.pt'}")
    torch.save({"model": None}, tmp_path / f"w{suffix}")
    with pytest.raises(CheckpointError, match=rf"^weights {tmp_path / ('w' + suffix)} must be an Ultralytics \.pt"):
        load_yolo(tmp_path / f"w{suffix}")


def test_non_finite_weights_are_refused_when_read(tmp_path):
    # a diverged model predicted nothing and eval reported mAP 0 without a word; the tensor is now named on load
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("spike-yolo-ibra-n.yaml", nc=3, verbose=False)
    with torch.no_grad():
        model.model[3].bn.running_var[5] = float("inf")
    torch.save({"model": model, "train_args": {}}, tmp_path / "inf.pt")
    from ibra_yolo.errors import NonFiniteError

    with pytest.raises(NonFiniteError) as e:
        load_yolo(tmp_path / "inf.pt")
    assert str(e.value) == (
        f"{tmp_path / 'inf.pt'}: model.3.bn.running_var holds 1 NaN or infinite value(s) of 96: the weights are broken"
    )


def _neurons(ckpt, kind):
    return [m for m in ckpt["model"].modules() if type(m).__name__ == kind]


IBRA = "IBRALIF"


def _refused_by_both_loaders(path: Path, says: str) -> None:
    """The stock loader (``YOLO(p)``: yolo predict/val) and ours (eval, energy, deploy) refuse the file alike."""
    from ultralytics import YOLO

    for load in (YOLO, lambda p: checkpoint_model(load_checkpoint(p), p)):
        with pytest.raises(CheckpointError, match=says):
            load(str(path))


def _as_buffer(module: torch.nn.Module, name: str) -> None:
    value = module._parameters.pop(name).detach()
    module.register_buffer(name, value)


ALTERED = {  # a file changed after saving: each failed deep in torch (100-line tracebacks) or ran and meant nothing
    "negative N": (
        lambda c: setattr(_neurons(c, IBRA)[0], "scale", -100.0),
        r"model\.2\.sep\.pw1\.neuron \(IBRALIF\) holds an invalid setting: N=-100\.0 is invalid",
    ),
    "beta NaN": (
        lambda c: setattr(_neurons(c, IBRA)[3], "beta", float("nan")),
        r"\(IBRALIF\) holds an invalid setting: beta=nan is invalid",
    ),
    "M beyond 2**24": (  # an IBRA-LIF's M is round(N * D): 511 for its D 5.11 and N 100
        lambda c: setattr(_neurons(c, IBRA)[0], "max_code", 2**40),
        r"holds max_code=1099511627776, but its settings \{'kind': 'IBRALIF', 'D': 5\.11, 'N': 100\.0, 'beta': "
        r"0\.25\} give max_code=511",
    ),
    "M a float": (
        lambda c: setattr(_neurons(c, IBRA)[0], "max_code", 511.0),
        r"holds max_code=511\.0, but its settings .* give max_code=511:",
    ),
    "an encoding no neuron has": (
        lambda c: setattr(_neurons(c, IBRA)[0], "encoding", "ternary"),
        r"holds encoding='ternary', but .* give encoding='binary'",
    ),
    "a setting deleted": (
        lambda c: delattr(_neurons(c, IBRA)[0], "beta"),
        r"holds an invalid setting: 'IBRALIF' object has no attribute 'beta'",
    ),
    "stride 0": (
        lambda c: setattr(c["model"], "stride", torch.zeros(3)),
        r"model holds stride=\[0\.0, 0\.0, 0\.0\] \(torch\.float32\): strides are float numbers in \(0, 1024\]",
    ),
    "stride of integers": (  # Ultralytics divides by it as floats
        lambda c: setattr(c["model"], "stride", torch.tensor([8, 16, 32])),
        r"model holds stride=\[8, 16, 32\] \(torch\.int64\): strides are float numbers in \(0, 1024\]",
    ),
    # out of step with the layers around it: each was a 40-90-line traceback deep in the predictor or trainer
    "a stride of 1e6": (  # the check would run a 2e6-pixel-wide image
        lambda c: setattr(c["model"], "stride", torch.tensor([8.0, 16.0, 1e6])),
        r"model holds stride=\[8\.0, 16\.0, 1000000\.0\] \(torch\.float32\): strides are float numbers in",
    ),
    "a neuron's T": (
        lambda c: setattr(_neurons(c, IBRA)[0], "T", 2),
        r"cannot run on a blank 64x64 image \(the file was altered\?\): ValueError: IBRALIF expects input \[T=2",
    ),
    "the head's nc": (
        lambda c: setattr(c["model"].model[-1], "nc", 5),
        r"the model has 3 class names for 5 classes",
    ),
    "fewer class names": (
        lambda c: setattr(c["model"], "names", {0: "a", 1: "b"}),
        r"the model has 2 class names for 3 classes",
    ),
    "a conv stride of 0": (
        lambda c: setattr(c["model"].model[1].conv.op, "stride", (0, 0)),
        r"cannot run on a blank 64x64 image .*: RuntimeError: non-positive stride is not supported",
    ),
    # battery 32, C16: Ultralytics picked the segmentation predictor and validator by it and failed deep inside
    "a task other than detect": (
        lambda c: setattr(c["model"], "task", "segment"),
        r"the model's task is 'segment', but ibra-yolo models are detectors \(task detect\): the file was altered",
    ),
    "an args task other than detect": (
        lambda c: setattr(c["model"], "args", {"task": "pose", "imgsz": 64}),
        r"the model's args\['task'\] is 'pose', but ibra-yolo models are detectors",
    ),
    # battery 32, Q01-Q04: Ultralytics' loader applied it with nvidia-modelopt (not installed: a traceback)
    "a quantization-aware-training state": (
        lambda c: c.__setitem__("modelopt", {"quantizer_state": {}}),
        r"the checkpoint holds a 'modelopt' quantization-aware-training state, which no ibra-yolo run writes",
    ),
    "no model dict": (
        lambda c: setattr(c["model"], "yaml", None),
        r"the model's YAML dict is a NoneType, not a dict",
    ),
    "head stride < 0": (
        lambda c: setattr(c["model"].model[-1], "stride", torch.tensor([8.0, 16.0, -32.0])),
        r"model\.26 \(SpikeDetect\) holds stride=\[8\.0, 16\.0, -32\.0\]",
    ),
    "names not indices": (
        lambda c: setattr(c["model"], "names", {"a": "x"}),
        r"class names have the key 'a': class names are keyed by class indices",
    ),
    "names a str": (
        lambda c: setattr(c["model"], "names", "abc"),
        r"class names are a str, not a dict or a list",
    ),
    # battery 22, K12: a bias added to a conv the model dict builds without one moved every output, and no plain
    # setting shows it (the layer check compared settings only); a tensor removed is as altered
    "a bias added": (
        lambda c: setattr(
            c["model"].model[2].sep.pw2.op.dw,
            "bias",
            torch.nn.Parameter(torch.ones(c["model"].model[2].sep.pw2.op.dw.out_channels)),
        ),
        r"model\.2\.sep\.pw2\.op\.dw\.bias is a parameter of shape \(\d+,\), but its model dict builds no such tensor",
    ),
    "a conv's bias removed": (  # the box branch then runs without its bias: every box shifted
        lambda c: setattr(c["model"].model[-1].cv2[0].pred.op, "bias", None),
        r"model\.26\.cv2\.0\.pred\.op\.bias is no such tensor, but its model dict builds a parameter of shape \(64,\)",
    ),
    "a weight made a buffer": (  # runs as before, but training would never update it
        lambda c: _as_buffer(c["model"].model[1].conv.op, "weight"),
        r"model\.1\.conv\.op\.weight is a buffer of shape \(48, 3, 7, 7\), but its model dict builds a parameter of",
    ),
    "train_args a list": (
        lambda c: c.__setitem__("train_args", ["x"]),
        r"train_args is a list, not a dict of arguments",
    ),
    # the model dict's neuron edited (battery 14, K10): the layers still hold IBRA-LIF, but `yolo train model=x.pt`
    # would rebuild I-LIF D 4 from the dict and train that
    "the dict's neuron": (
        lambda c: c["model"].yaml.__setitem__("neuron", {"kind": "ILIF", "D": 4}),
        r"model\.2\.sep\.pw1\.neuron holds encoding='binary' \(\{'kind': 'IBRALIF', .*\}, T 1\), but the model dict "
        r"gives encoding='unary' \(\{'kind': 'ILIF', 'D': 4, 'beta': 0\.25\}, T 1\): the file was altered",
    ),
    "the dict's T": (  # every layer holds T 1; the dict's T 2 would rebuild a two-timestep model
        lambda c: c["model"].yaml.__setitem__("T", 2),
        r"holds T=1 \(\{'kind': 'IBRALIF', .*\}, T 1\), but the model dict gives T=2 \(.*, T 2\)",
    ),
    "the dict's rows": (
        lambda c: c["model"].yaml.__setitem__("head", []),
        r"its model dict is invalid \(the file was altered\?\): the model dict of spike-yolo-ibra-n\.yaml \(a "
        r"checkpoint's copy, or changed after loading\): head=\[\] is invalid",
    ),
}


@pytest.mark.parametrize("alteration", ALTERED)
def test_altered_checkpoints_are_refused_when_read(tmp_path, alteration):
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    ckpt = {"model": DetectionModel("spike-yolo-ibra-n.yaml", nc=3, verbose=False), "train_args": {}}
    torch.save(ckpt, tmp_path / "good.pt")
    assert YOLO(tmp_path / "good.pt").names == {0: "0", 1: "1", 2: "2"}  # as saved (Ultralytics' default names)
    alter, says = ALTERED[alteration]
    alter(ckpt)
    path = tmp_path / "altered.pt"
    torch.save(ckpt, path)
    for load in (load_yolo, YOLO):  # our commands (load_checkpoint) and the stock loader (yolo predict/val, YOLO())
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: .*{says}") as e:
            load(path)
        assert "\n" not in str(e.value)


def test_a_damaged_zip_member_is_refused(tmp_path, spiking_ckpt):
    # torch does not check the CRC-32 a zip stores per member: a checkpoint with bytes zeroed in the middle loaded
    # with changed weights and exported without a word (battery 11)
    import zipfile

    from ultralytics import YOLO

    data = bytearray(spiking_ckpt.read_bytes())
    with zipfile.ZipFile(spiking_ckpt) as z:
        member = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor's bytes
    h = member.header_offset  # its local header: 30 bytes, then the name and an extra field (torch pads it to align)
    start = h + 30 + int.from_bytes(data[h + 26 : h + 28], "little") + int.from_bytes(data[h + 28 : h + 30], "little")
    data[start + 8 : start + 16] = bytes(x ^ 0xFF for x in data[start + 8 : start + 16])  # 8 bytes changed
    (tmp_path / "damaged.pt").write_bytes(bytes(data))
    says = rf"^checkpoint .*damaged\.pt is damaged: its member {re.escape(member.filename)} fails its CRC-32 check"
    for load in (load_yolo, YOLO):
        with pytest.raises(CheckpointError, match=says):
            load(tmp_path / "damaged.pt")


def test_stock_loading_is_restricted_by_default(evil, python):
    # With the plugin registered, Ultralytics' own YOLO("x.pt") loads restricted (ULTRALYTICS_SAFE_LOAD unset reads as
    # on): the malicious pickle ran os.system through YOLO() before. Setting the variable to 0 is the user's opt-out.
    code = "import sys\nfrom ultralytics import YOLO\ntry:\n    YOLO(sys.argv[1])\nexcept Exception as e:\n    print(e)"
    env = {k: v for k, v in os.environ.items() if k != "ULTRALYTICS_SAFE_LOAD"}
    refusal = f"checkpoint {evil / 'evil.pt'} refers to posix.system, which a checkpoint may not use: not loaded"
    # Unset, empty, or any value but an explicit off (0/false/no/off, as the README says): "enabled" is off for
    # Ultralytics' own parser, and the pickle ran; so did "f" and "n", which the plugin read as off without saying so
    for value in (None, "", " ", "enabled", "1", "f", "n", " off"):
        e = env if value is None else {**env, "ULTRALYTICS_SAFE_LOAD": value}
        out = subprocess.run([python, "-c", code, evil / "evil.pt"], env=e, capture_output=True, text=True).stdout
        assert out.startswith(refusal) and out.count("\n") == 1, (value, out)
        assert not (evil / "MARKER").exists(), value
    # the stock yolo command prints that refusal as its one line (it was Ultralytics' chained TypeError traceback)
    yolo = str(Path(python).with_name("yolo"))
    p = subprocess.run(
        [yolo, "predict", f"model={evil / 'evil.pt'}", "source=x.jpg"], env=env, capture_output=True, text=True
    )
    assert p.returncode == 1 and p.stderr.strip() == "UnsafePickleError: " + out.strip(), p.stderr
    assert not (evil / "MARKER").exists()
    # a trusted stock checkpoint still loads restricted: an Ultralytics YOLOv8n saved as the trainer saves it
    from ultralytics.nn.tasks import DetectionModel

    torch.save({"model": DetectionModel("yolov8n.yaml", nc=3, verbose=False).half(), "train_args": {}}, evil / "v8.pt")
    code = (
        "import sys\nfrom ultralytics import YOLO\nprint(sum(p.numel() for p in YOLO(sys.argv[1]).model.parameters()))"
    )
    out = subprocess.run([python, "-c", code, evil / "v8.pt"], env=env, capture_output=True, text=True).stdout
    assert out.splitlines()[-1] == "3011433"  # YOLOv8n with 3 classes: Ultralytics' summary prints 3,011,433


class Payload:
    """Unpickling this calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class BuildsAModel:
    """Unpickling this calls ``DetectionModel(cfg)``: a class torch's ``weights_only`` allow-list holds, called with
    arguments the file chooses (battery 11, C20: it built a model from a YAML path the file named)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __reduce__(self):
        from ultralytics.nn.tasks import DetectionModel

        return DetectionModel, (self.cfg,)


@pytest.fixture
def built(monkeypatch):
    """The arguments of every ``DetectionModel(...)`` built while the test runs: a file's call of the class shows
    here (the class is what torch's allow-list holds and a hostile pickle calls)."""
    from ultralytics.nn import tasks

    calls = []
    original = tasks.DetectionModel.__init__
    monkeypatch.setattr(
        tasks.DetectionModel, "__init__", lambda self, *a, **k: calls.append(a) or original(self, *a, **k)
    )
    return calls


def test_a_pickle_that_calls_an_allow_listed_class_is_refused(tmp_path, monkeypatch, spiking_ckpt, built):
    from ultralytics import YOLO
    from ultralytics.nn import tasks
    from ultralytics.utils import IterableSimpleNamespace

    path = tmp_path / "builds.pt"
    torch.save({"model": BuildsAModel("spike-yolo-ilif-n.yaml"), "train_args": {}}, path)
    # the stock restricted loader on its own calls the class: that is what the check is for
    stock = tasks.torch_safe_load.__ibra_yolo_original__
    ckpt, _ = stock(str(path), safe_only=True)
    assert isinstance(ckpt["model"], tasks.DetectionModel) and built == [("spike-yolo-ilif-n.yaml",)]
    built.clear()
    says = (
        rf"checkpoint {re.escape(str(path))} calls ultralytics\.nn\.tasks\.DetectionModel\(\.\.\.\) while it is read, "
        r"which no saved model does .*: not loaded, nothing in it was run"
    )
    with pytest.raises(UnsafePickleError, match=says):
        load_checkpoint(path)
    with pytest.raises(UnsafePickleError, match=says + r" \(the file may be malicious; ULTRALYTICS_SAFE_LOAD=0 loads"):
        YOLO(str(path))  # the stock loader, restricted by default with the plugin registered
    with pytest.raises(UnsafePickleError, match=says):
        convert_checkpoint(path, tmp_path / "out.pt")
    assert built == [] and not (tmp_path / "out.pt").exists()
    # an official asset name the stock loader downloads (here a stand-in download that writes the same pickle) is
    # fetched first and checked before the loader reads it
    from ultralytics.utils import downloads

    def download(name, *args, **kwargs):  # as the real one: a file that exists is returned as it is
        if Path(str(name)).is_file():
            return str(name)
        (tmp_path / "assets").mkdir(exist_ok=True)
        target = tmp_path / "assets" / Path(str(name)).name
        target.write_bytes(path.read_bytes())
        return str(target)

    monkeypatch.setattr(downloads, "attempt_download_asset", download)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafePickleError, match=r"assets/yolo11n\.pt calls ultralytics\.nn\.tasks\.DetectionModel"):
        YOLO("yolo11n.pt")
    assert built == []
    # the data types official checkpoints construct while read still load: a Path in train_args, a model's args as
    # Ultralytics' namespace, numpy numbers in the metrics
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].args = IterableSimpleNamespace(imgsz=64)
    ckpt["train_args"] = {"data": tmp_path / "data.yaml"}
    # (np.float32, np.int64 and np.bool_ were refused by Ultralytics' allow-list, which holds float64's dtype only)
    metrics = {"fitness": np.float64(0.25), "p": np.float32(0.5), "epoch": np.int64(3), "ok": np.bool_(True),
               "long": np.longdouble(1.5)}  # fmt: skip
    ckpt["train_metrics"] = metrics
    torch.save(ckpt, tmp_path / "data_types.pt")
    loaded = load_checkpoint(tmp_path / "data_types.pt")
    assert loaded["train_args"]["data"] == tmp_path / "data.yaml" and loaded["model"].args.imgsz == 64
    assert loaded["train_metrics"] == metrics and type(loaded["train_metrics"]["p"]) is np.float32
    assert YOLO(str(tmp_path / "data_types.pt")).ckpt["train_metrics"] == metrics  # the stock loader too
    assert built == []  # given its state, not constructed
    # a numpy scalar of object dtype would make numpy read the file's bytes as a pointer: refused before torch
    scalar = np.float64(0).__reduce__()[0]
    ckpt["train_metrics"] = {"x": Payload(scalar, np.dtype(object), b"\x00" * 8)}
    torch.save(ckpt, tmp_path / "object_scalar.pt")
    with pytest.raises(UnsafePickleError, match=r"object_scalar\.pt: its pickle builds a numpy scalar of dtype 'O8'"):
        load_checkpoint(tmp_path / "object_scalar.pt")


def _twin(evil: dict, benign, path: Path) -> None:
    """Write ``evil``'s torch.save zip followed by a benign one of the same size: Python's ``zipfile`` reads the last
    archive (its directory is at the end of the file), torch's reader the first (battery 12, Z01-Z03)."""
    import io
    import zipfile

    def save(obj) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    def pickle_size(data: bytes) -> int:
        return next(i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist() if i.filename.endswith(".pkl"))

    first = save(evil)
    for n in range(1, 2000):
        second = save(benign(n))
        if len(second) == len(first) and pickle_size(second) == pickle_size(first):
            path.write_bytes(first + second)
            return
    raise AssertionError("no benign twin of the same size")


def test_files_that_show_torch_another_pickle_are_refused(tmp_path, built):
    from ultralytics import YOLO

    # two archives in one file: the check read the benign one, torch the one that builds a model
    twin = tmp_path / "twin.pt"
    _twin({"date": BuildsAModel("spike-yolo-ilif-n.yaml")}, lambda n: {"date": "p" * n}, twin)
    says = rf"cannot read checkpoint {re.escape(str(twin))}: its zip directory and its records disagree"
    for load in (load_checkpoint, YOLO):
        with pytest.raises(CheckpointError, match=says):
            load(str(twin))
    # a legacy (non-zip) pickle with a zip appended: Python's zipfile saw the zip, torch reads the pickle
    poly = tmp_path / "poly.pt"
    buf = tmp_path / "tail.pt"
    torch.save({"date": "x"}, buf)
    poly.write_bytes(pickle.dumps({"model": BuildsAModel("spike-yolo-ilif-n.yaml")}, protocol=2) + buf.read_bytes())
    for load in (load_checkpoint, YOLO):
        with pytest.raises(UnsafePickleError, match=r"poly\.pt is a pickle in torch's legacy \(non-zip\) format"):
            load(str(poly))
    # a protocol-0 pickle (no PROTO byte first) is read by torch's legacy loader as well: refused before it, as the
    # pickle it is (battery 31, N-leg0: it was called "not a torch.save file")
    (tmp_path / "p0.pt").write_bytes(pickle.dumps({"model": BuildsAModel("spike-yolo-ilif-n.yaml")}, protocol=0))
    with pytest.raises(UnsafePickleError, match=r"p0\.pt is a pickle in torch's legacy \(non-zip\) format, which"):
        load_checkpoint(tmp_path / "p0.pt")
    assert built == []


def test_a_pickle_whose_objects_fail_to_rebuild_is_one_line(tmp_path, spiking_ckpt):
    # an allowed data type given a value it refuses (an interpolation mode that does not exist): the stock `yolo`
    # command printed a 40-line traceback (battery 12, Q18); both loaders now say it in one line, naming the file
    from torchvision.transforms import InterpolationMode
    from ultralytics import YOLO

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["train_metrics"] = {"mode": Payload(InterpolationMode, "nonexistent")}
    torch.save(ckpt, tmp_path / "bad_value.pt")
    says = (
        rf"cannot read checkpoint {re.escape(str(tmp_path / 'bad_value.pt'))}: rebuilding its objects failed "
        r"\(ValueError: 'nonexistent' is not a valid InterpolationMode\): the file is damaged or was not written"
    )
    for load in (load_checkpoint, YOLO):
        with pytest.raises(CheckpointError, match=says):
            load(str(tmp_path / "bad_value.pt"))


def test_a_pickle_protocol_torch_cannot_read_restricted_is_named(tmp_path, spiking_ckpt):
    # torch.save(..., pickle_protocol=4): torch's weights_only loader stops at the protocol-4 framing and the message
    # said "not a torch.save file" (battery 12); it names the protocol and how to save the file again
    torch.save(torch.load(spiking_ckpt, weights_only=False), tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(
        UnsafePickleError, match=r"p4\.pt holds a pickle of protocol 4, which torch's restricted loader"
    ):
        load_checkpoint(tmp_path / "p4.pt")
    # an integer of 20,000 bits is pickled with the opcode LONG4, which torch's restricted unpickler does not read
    # ("Unsupported operand 139"): that file was called "not a torch.save file" (battery 16, KP-K14)
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["train_args"]["seed"] = 2**20000
    torch.save(ckpt, tmp_path / "long.pt")
    says = r"long\.pt holds a pickle that cannot be read safely \(torch's restricted loader does not read its pickle "
    with pytest.raises(
        UnsafePickleError, match=says + r"opcode LONG4 \(an integer of over 255 bytes\), which no saved"
    ):
        load_checkpoint(tmp_path / "long.pt")


@pytest.mark.parametrize("protocol", [0, 1])
def test_a_checkpoint_of_protocol_0_or_1_is_refused_naming_its_protocol(tmp_path, spiking_ckpt, protocol):
    # protocols 0 and 1 rebuild every object with copyreg._reconstructor(cls, object, ...): torch's restricted loader
    # and ours refuse those names, and the line blamed builtins.object and a malicious file (battery 30, H24); it
    # names the protocol and how to save the file again, like protocol 4 above
    path = tmp_path / f"p{protocol}.pt"
    torch.save(torch.load(spiking_ckpt, weights_only=False), path, pickle_protocol=protocol)
    _refused_by_both_loaders(path, rf"p{protocol}\.pt holds a pickle of protocol {protocol}, which torch's restricted")
    # a hostile file of the same protocol is still named by what it would run, not excused by its protocol
    evil = tmp_path / f"evil{protocol}.pt"
    torch.save({"first": Plain(), "model": Evil(tmp_path)}, evil, pickle_protocol=protocol)
    _refused_by_both_loaders(evil, rf"evil{protocol}\.pt refers to posix\.system, which a checkpoint may not use")
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_protocol_pickles_outside_the_zip_format_and_in_the_spikeyolo_reader(tmp_path, spiking_ckpt, protocol):
    # battery 31, N-leg0/RE-H24-raw0: torch's legacy (non-zip) format and plain pickles of protocol 0 or 1 have no
    # PROTO byte and were called "neither torch's zip format nor a pickle"; W07: the SpikeYOLO reader refused a
    # protocol-0/1 file naming builtins.object. Expected: the legacy-format line (naming what a hostile file would
    # run), and in the SpikeYOLO reader the protocol, or the call a hostile file would make
    from ibra_yolo.spikeyolo import load_spikeyolo

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    legacy = tmp_path / "legacy.pt"
    torch.save(ckpt, legacy, pickle_protocol=protocol, _use_new_zipfile_serialization=False)
    _refused_by_both_loaders(
        legacy, r"legacy\.pt is a pickle in torch's legacy \(non-zip\) format, which the restricted"
    )
    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps({"model": Evil(tmp_path)}, protocol=protocol))
    says = r"hostile\.pt is a pickle in torch's legacy \(non-zip\) format, .* \(it names posix\.system, which may run"
    _refused_by_both_loaders(hostile, says)
    zipped = tmp_path / f"p{protocol}.pt"
    torch.save(ckpt, zipped, pickle_protocol=protocol)
    with pytest.raises(UnsafePickleError, match=rf"p{protocol}\.pt holds a pickle of protocol {protocol}, which"):
        load_spikeyolo(zipped)
    torch.save({"first": Plain(), "model": Evil(tmp_path)}, zipped, pickle_protocol=protocol)
    with pytest.raises(UnsafePickleError, match=rf"p{protocol}\.pt refers to posix\.system, which a checkpoint may"):
        load_spikeyolo(zipped)
    assert not (tmp_path / "MARKER").exists()


def test_a_yolo_object_saved_with_torch_save_is_named(tmp_path, spiking_ckpt):
    # battery 32, K03: torch.save(YOLO(...)) (the wrapper, not a checkpoint) was refused naming only builtins.list.
    # Expected: still refused (the file is not a checkpoint), naming the wrapper and how to save a checkpoint
    from ultralytics import YOLO

    torch.save(YOLO(spiking_ckpt), tmp_path / "wrapper.pt")
    says = r"wrapper\.pt holds an Ultralytics YOLO object saved with torch\.save, not a checkpoint \(it refers to "
    _refused_by_both_loaders(tmp_path / "wrapper.pt", says + r".*\(save a model with model\.save\('x\.pt'\)")


def test_a_checkpoint_that_stores_hooks_is_refused(tmp_path, spiking_ckpt, built):
    # torch's loader restores a module's hook dicts and a tensor's backward hooks as saved, and torch calls them later
    # (every forward, state_dict(), load_state_dict(), backward): a file stored IBRALIF or DetectionModel there and
    # had it called by the load check's blank image (battery 13, H01-H13)
    from ultralytics import YOLO
    from ultralytics.nn import tasks

    for hooks in ("_forward_pre_hooks", "_forward_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks"):
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        getattr(ckpt["model"].model[1], hooks)[0] = tasks.DetectionModel
        torch.save(ckpt, tmp_path / "hooked.pt")
        says = (
            rf"^checkpoint {re.escape(str(tmp_path / 'hooked.pt'))}: the \w+ at model\.model\.1 stores {hooks} "
            r"\(ultralytics\.nn\.tasks\.DetectionModel\), which torch would call: not loaded, nothing in it was run"
        )
        for load in (load_checkpoint, YOLO):
            with pytest.raises(UnsafePickleError, match=says):
                load(str(tmp_path / "hooked.pt"))
    # a parameter record with backward hooks (torch.save itself no longer writes them; a file can)
    from collections import OrderedDict

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    hooked = Payload(torch._utils._rebuild_parameter, torch.ones(2), True, OrderedDict(h=tasks.DetectionModel))
    ckpt["train_metrics"] = {"p": hooked}
    torch.save(ckpt, tmp_path / "tensor_hook.pt")
    with pytest.raises(UnsafePickleError, match=r"gives a parameter backward hooks .*, which torch would call"):
        load_checkpoint(tmp_path / "tensor_hook.pt")
    assert built == []


def test_a_checkpoint_that_stores_a_class_in_place_of_a_method_is_refused(tmp_path, spiking_ckpt, built):
    # A module's saved attributes are restored as its instance dict, which Python reads before the class: `fuse`,
    # `_predict_once` or a layer's `forward` set to an allow-listed class made the stock pipeline call it
    # (`DetectionModel(x)`, `IBRALIF(verbose=...)`; battery 14, K06-K13). A saved model stores data there, never a
    # class or a function, so both loaders refuse the file, naming where it stores what.
    from ultralytics import YOLO
    from ultralytics.nn import tasks

    from ibra_yolo.neurons import IBRALIF

    for where, edit in (
        ("model._predict_once", lambda m: setattr(m, "_predict_once", tasks.DetectionModel)),
        ("model.fuse", lambda m: setattr(m, "fuse", IBRALIF)),
        ("model.model.1.forward", lambda m: setattr(m.model[1], "forward", tasks.DetectionModel)),
        ("model.yaml.neuron", lambda m: m.yaml.__setitem__("neuron", IBRALIF)),  # a class as data anywhere
    ):
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        edit(ckpt["model"])
        torch.save(ckpt, tmp_path / "coded.pt")
        says = rf"^checkpoint {re.escape(str(tmp_path / 'coded.pt'))}: {re.escape(where)} is \S+, a class or function"
        for load in (load_checkpoint, YOLO):
            with pytest.raises(UnsafePickleError, match=says):
                load(str(tmp_path / "coded.pt"))
    # getattr is read as Ultralytics reads it (a class's attribute, a layer's own forward): a layer's __class__
    # would hand out its class to be called later
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].model[1].forward = Payload(getattr, ckpt["model"].model[1], "__class__")
    torch.save(ckpt, tmp_path / "getattr.pt")
    with pytest.raises(UnsafePickleError, match=r"calls getattr\(ibra_yolo\.nn\.blocks\.\w+, '__class__'\)"):
        load_checkpoint(tmp_path / "getattr.pt")
    # ... and a getattr result is stored only where official checkpoints store one (a fused Conv's own forward, a
    # YOLOv8 head's `detect`, an enum member): a layer's bound forward as the model's `fuse`, another layer's forward,
    # a class's method in train_args or as a child module were called by name later (battery 15, A01-B14)
    layer = type(torch.load(spiking_ckpt, weights_only=False)["model"].model[1]).__name__
    bound = rf"getattr\(a {layer} layer, 'forward'\)"
    for where, edit, what in (
        ("model.fuse", lambda c: setattr(c["model"], "fuse", Payload(getattr, c["model"].model[1], "forward")), bound),
        ("model.model.2.forward",
         lambda c: setattr(c["model"].model[2], "forward", Payload(getattr, c["model"].model[1], "forward")), bound),
        ("train_args.model",
         lambda c: c["train_args"].__setitem__("model", Payload(getattr, tasks.DetectionModel, "load")),
         r"getattr\(ultralytics\.nn\.tasks\.DetectionModel, 'load'\)"),
    ):  # fmt: skip
        edited = torch.load(spiking_ckpt, weights_only=False)
        edit(edited)
        torch.save(edited, tmp_path / "stored.pt")
        says = rf"stored\.pt: {re.escape(where)} is {what}, which something would call later"
        with pytest.raises(UnsafePickleError, match=says):
            load_checkpoint(tmp_path / "stored.pt")
    # a child module that is no module, or not under a name: torch's named_modules() failed deep inside
    for kids, says in (
        (lambda m: {99: torch.nn.Identity()}, "99 = torch.nn.modules.linear.Identity"),
        (lambda m: {"1": Payload(getattr, m.model[2], "forward")}, "'1' = builtins.getattr"),
    ):
        edited = torch.load(spiking_ckpt, weights_only=False)
        edited["model"].model._modules.update(kids(edited["model"]))
        torch.save(edited, tmp_path / "kids.pt")
        with pytest.raises(UnsafePickleError, match=rf"the Sequential at model\.model holds the child {says}, which"):
            load_checkpoint(tmp_path / "kids.pt")
    assert built == []


def test_a_checkpoint_that_stores_a_layer_or_data_in_place_of_a_method_is_refused(tmp_path, spiking_ckpt, built):
    # torch keeps a module's layers in _modules; a file that puts a layer in a module's instance dict under a method's
    # name (`fuse`, `forward`, `_predict_once`, ...) had Python find it before the method, so the stock pipeline called
    # that layer with the method's arguments (battery 16, M01-M12: in predict, val, train, our blank-image check and
    # the copy `ibra-yolo deploy` wrote). A layer anywhere else outside _modules (in a list, in train_args, in
    # _parameters) is refused too, whatever is imported (battery 17): a saved model holds its layers in _modules, as
    # the checkpoint's model/ema, or as torchvision transforms. Data under a method's name (`fuse = 3`) would fail
    # later with a raw "'int' object is not callable". Both loaders refuse the file before torch reads it.
    from ultralytics import YOLO

    def refused(edit, name, says, loaders=(load_checkpoint, YOLO)):
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        edit(ckpt)
        torch.save(ckpt, tmp_path / name)
        for load in loaders:
            with pytest.raises(UnsafePickleError, match=rf"^checkpoint {re.escape(str(tmp_path / name))}: {says}"):
                load(str(tmp_path / name))

    for key, where, owner, value in (
        ("fuse", "model", lambda c: c["model"], lambda c: c["model"].model[0]),
        ("_predict_once", "model", lambda c: c["model"], lambda c: c["model"].model),
        ("state_dict", "model", lambda c: c["model"], lambda c: c["model"].model[0]),
        ("forward", "model.model.26", lambda c: c["model"].model[-1], lambda c: c["model"].model[0]),
        ("forward", "model.model.1.conv", lambda c: c["model"].model[1].conv, lambda c: torch.nn.Identity()),
        ("cache", "model", lambda c: c["model"], lambda c: [c["model"].model[2]]),  # a layer in a list
    ):  # what object.__setattr__ does: torch's __setattr__ would use _modules
        says = rf"{re.escape(where)}\.{key}(\[0\])? is a \w+ layer outside any module's children .*, where something "
        edit = lambda c, o=owner, k=key, v=value: o(c).__dict__.__setitem__(k, v(c))  # noqa: E731
        refused(edit, "layer.pt", says + "could call it")
    refused(lambda c: c["train_args"].__setitem__("layer", torch.nn.Identity()), "args.pt",
            r"train_args\.layer is a Identity layer outside any module's children")  # fmt: skip
    refused(lambda c: c["model"].model[1].conv._parameters.__setitem__("weight", torch.nn.Identity()), "param.pt",
            r"model\.model\.1\.conv\._parameters\.weight is a Identity layer outside")  # fmt: skip
    # a layer under a top-level key of its own loaded everywhere (and deploy wrote it out again), while the same layer
    # in train_metrics was refused (battery 26, H81/H84): only `model` and `ema` hold whole models
    for key, layer in (("zz_layer", lambda c: c["model"].model[11]), ("stopper", lambda c: c["model"].model[9]),
                       ("train_metrics", lambda c: torch.nn.Identity())):  # fmt: skip
        says = rf"{key} is a {type(layer(torch.load(spiking_ckpt, weights_only=False))).__name__} layer outside any "
        refused(lambda c, k=key, v=layer: c.__setitem__(k, copy.deepcopy(v(c))), "top.pt", says + "module's children")

    def ema_only(c):  # in the EMA copy only (the one YOLO() uses)
        c["ema"] = torch.load(spiking_ckpt, weights_only=False)["model"]
        c["ema"].__dict__["fuse"] = c["ema"].model[0]

    refused(ema_only, "ema.pt", r"ema\.fuse is a \w+ layer outside any module's children", loaders=(YOLO,))
    # a child layer under a name Python, torch or Ultralytics reads as more than a layer: `__deepcopy__` is called by
    # copy.deepcopy (every EMA, every save), `_orig_mod` and `module` are taken as the model itself by Ultralytics'
    # unwrap_model, and `transforms` is called on every image by the classify predictor
    own = "Python's or torch's own name"
    for name, why in (("__deepcopy__", own), ("_orig_mod", own), ("module", "a parallel wrapper's model"),
                      ("transforms", "a classification model's")):  # fmt: skip
        says = rf"the DetectionModel at model has a child layer named '{name}', which is {re.escape(why)}"
        refused(lambda c, n=name: c["model"]._modules.__setitem__(n, torch.nn.Identity()), "child.pt", says)
    for key, value, shown in (("fuse", 3, "int"), ("info", "x", "str"), ("named_modules", [], "list")):
        says = rf"the DetectionModel at model stores {shown} under the name of its method '{key}', which Python would"
        edit = lambda c, k=key, v=value: c["model"].__dict__.__setitem__(k, v)  # noqa: E731
        refused(edit, "data.pt", says, loaders=(load_checkpoint,))
    # Ultralytics' parse_model stores each layer's type name as `m.type`, over nn.Module.type: it still loads
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    assert isinstance(ckpt["model"].model[1].type, str)
    load_checkpoint(spiking_ckpt)
    assert built == []


def test_a_classification_model_with_its_transforms_loads(tmp_path):
    # Ultralytics' classify trainer stores the inference transforms as `model.transforms`, a torchvision Compose whose
    # list holds transforms that are modules (Resize, CenterCrop, Normalize): those layers outside _modules are stock
    from ultralytics import YOLO
    from ultralytics.data.augment import classify_transforms

    y = YOLO("yolov8n-cls.yaml")
    y.model.transforms = classify_transforms(64)
    assert any(isinstance(t, torch.nn.Module) for t in y.model.transforms.transforms)  # layers in a list: allowed
    y.save(tmp_path / "cls.pt")
    check_calls(tmp_path / "cls.pt")
    assert YOLO(tmp_path / "cls.pt").model.transforms is not None


@pytest.mark.parametrize(
    "cfg", ["yolov8n-seg.yaml", "yolov8n-pose.yaml", "yolov8n-cls.yaml", "yolov8n-obb.yaml", "yolo11n.yaml",
            "yolov10n.yaml", "yolo12n.yaml", "yolov8s-worldv2.yaml", "yoloe-11s-seg.yaml", "rtdetr-l.yaml"],
)  # fmt: skip
def test_every_stock_architecture_passes_the_load_check(tmp_path, cfg):
    # The check refuses what a module stores under a method's name; stock layers store two things there (parse_model's
    # `m.type` name, a fused Conv's `forward = getattr(self, "forward_fuse")`): every stock task and head, plain and
    # fused, must still pass, or the plugin would break loading official checkpoints
    from ultralytics import RTDETR, YOLO

    model = (RTDETR if cfg.startswith("rtdetr") else YOLO)(cfg)
    model.save(tmp_path / "plain.pt")
    model.model.fuse()
    model.save(tmp_path / "fused.pt")
    for name in ("plain.pt", "fused.pt"):
        check_calls(tmp_path / name)


def test_stock_checkpoints_with_getattr_still_load(tmp_path):
    # A fused stock Conv stores its forward as getattr(self, "forward_fuse") (YOLOv8/YOLO11 checkpoints): data the
    # check allows, so the stock model loads and predicts as without the plugin
    from ultralytics import YOLO

    y = YOLO("yolov8n.yaml")
    y.model.fuse()
    y.save(tmp_path / "fused.pt")
    with zipfile.ZipFile(tmp_path / "fused.pt") as z:
        assert b"forward_fuse" in z.read("fused/data.pkl")  # the file does store the getattr call
    check_calls(tmp_path / "fused.pt")
    loaded = YOLO(tmp_path / "fused.pt")
    assert loaded.model.model[0].forward.__func__.__name__ == "forward_fuse"
    # a YOLOv8 Segment/Pose head of older Ultralytics stores `self.detect = Detect.forward` (a getattr of the class)
    from ultralytics.nn.modules import Detect

    seg = YOLO("yolov8n-seg.yaml")
    seg.model.model[-1].detect = Detect.forward
    seg.save(tmp_path / "seg.pt")
    with zipfile.ZipFile(tmp_path / "seg.pt") as z:
        assert b"getattr" in z.read("seg/data.pkl")
    check_calls(tmp_path / "seg.pt")
    assert YOLO(tmp_path / "seg.pt").model.model[-1].detect is Detect.forward


def test_a_dataset_named_by_a_checkpoint_runs_no_download_script(tmp_path, spiking_ckpt):
    # Ultralytics exec()s a dataset YAML's `download:` when its images are missing, and `yolo val model=x.pt` without
    # data= takes the dataset from the checkpoint's train_args: a file could name a YAML on disk whose download is
    # Python (battery 18, R03/R05/R09: the canary was written). With the plugin, a dataset the checkpoint named is
    # checked without download or script; the user's own data= behaves as in stock Ultralytics (the script runs).
    from ultralytics import YOLO

    canary = tmp_path / "ran"
    (tmp_path / "evil.yaml").write_text(
        f"path: {tmp_path / 'absent'}\ntrain: images\nval: images\nnames: {{0: a, 1: b, 2: c}}\n"
        f"download: open({str(canary)!r}, 'w').write('x')\n"
    )
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["train_args"] = {"data": str(tmp_path / "evil.yaml"), "imgsz": 32, "task": "detect"}
    torch.save(ckpt, tmp_path / "named.pt")
    model = YOLO(tmp_path / "named.pt")
    says = rf"^dataset {re.escape(str(tmp_path / 'evil.yaml'))} comes from the checkpoint \(its train_args data=, not "
    with pytest.raises(MissingFileError, match=says + r"your command\) and is not here .*so nothing was run"):
        model.val(imgsz=32, batch=2, device="cpu", plots=False, project=str(tmp_path / "runs"))
    assert not canary.exists()
    with pytest.raises(Exception):  # noqa: B017, PT011 - the user's own YAML: its script runs, then the images lack
        model.val(data=str(tmp_path / "evil.yaml"), imgsz=32, batch=2, device="cpu", project=str(tmp_path / "runs"))
    assert canary.read_text() == "x"  # the guard is for the checkpoint's choice only, not a changed stock behaviour


def test_a_url_dataset_named_by_a_checkpoint_is_never_fetched(tmp_path, spiking_ckpt, monkeypatch):
    # battery 26, X-N28/K37: train_args data = https://example.com/evil.zip made `yolo val model=x.pt` (no data=) and
    # `yolo train resume=True` call Ultralytics' check_file, which downloads a URL whatever autodownload says (and
    # unpacks an archive into the datasets folder), after the run folder and args.yaml were made. A URL the file chose
    # is refused by name before any folder is made; the user's own data=<URL> is fetched as in stock Ultralytics.
    from ultralytics import YOLO
    from ultralytics.data import utils as data_utils
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import downloads

    fetched = []

    def no_network(url="", *args, **kwargs):
        fetched.append(str(url))
        raise ConnectionError(f"offline test: {url}")

    monkeypatch.setattr(downloads, "safe_download", no_network)
    monkeypatch.setattr(data_utils, "safe_download", no_network)
    run_dir = tmp_path / "run"
    (run_dir / "weights").mkdir(parents=True)
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["epoch"], ckpt["optimizer"] = 0, torch.optim.SGD(ckpt["model"].parameters(), lr=0.01).state_dict()
    for url in ("https://example.com/evil.zip", "gs://bucket/evil.yaml"):  # any scheme Ultralytics fetches
        ckpt["train_args"] = {"data": url, "imgsz": 32, "task": "detect", "epochs": 2, "save_dir": str(run_dir)}
        last = run_dir / "weights" / "last.pt"
        torch.save(ckpt, last)
        says = rf"^dataset {re.escape(url)} comes from the checkpoint \(its train_args data=, not your command\) and "
        says += r"is a URL: a checkpoint does not get to make Ultralytics download anything, so nothing was fetched; "
        with pytest.raises(CheckpointError, match=says + "pass data= yourself"):
            YOLO(last).val(imgsz=32, batch=2, device="cpu", plots=False, project=str(tmp_path / "runs"), name="v")
        with pytest.raises(CheckpointError, match=says):
            YOLO(last).train(resume=True, device="cpu")
        with pytest.raises(CheckpointError, match=says):  # the trainer without Model.train: its check_resume refuses
            DetectionTrainer(overrides={"resume": str(last), "model": str(last), "device": "cpu"})
        assert fetched == [] and not (tmp_path / "runs").exists()
        assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == ["weights", "weights/last.pt"]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the user's own URL: stock Ultralytics fetches it
        YOLO(last).val(data="https://example.com/mine.yaml", imgsz=32, device="cpu", project=str(tmp_path / "runs"))
    assert fetched and fetched[0].startswith("https://example.com/mine.yaml")


def test_a_checkpoint_dataset_not_on_this_machine_is_named_not_replaced_by_coco8(tmp_path, spiking_ckpt, monkeypatch):
    # battery 27, U08/U04: train_args data that does not resolve here (a path from another machine, a scheme-relative
    # //host/x.yaml) made stock Model.val warn and validate on coco8.yaml instead, downloading it (offline: five
    # chained tracebacks and an empty run folder; online: a score on another dataset). Expected: one MissingFileError
    # naming the checkpoint's dataset, before any run folder, nothing fetched.
    from ultralytics import YOLO
    from ultralytics.data import utils as data_utils
    from ultralytics.utils import downloads

    fetched = []
    monkeypatch.setattr(downloads, "safe_download", lambda url="", *a, **k: fetched.append(str(url)))
    monkeypatch.setattr(data_utils, "safe_download", lambda url="", *a, **k: fetched.append(str(url)))
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    for data in (str(tmp_path / "gone" / "data.yaml"), "//example.com/e.yaml"):
        ckpt["train_args"] = {"data": data, "imgsz": 32, "task": "detect"}
        path = tmp_path / "ck.pt"
        torch.save(ckpt, path)
        says = rf"^dataset {re.escape(data)} comes from the checkpoint \(its train_args data=, not your command\) and "
        says += r"is not on this machine: pass data= with the dataset to validate on"
        with pytest.raises(MissingFileError, match=says):
            YOLO(path).val(imgsz=32, batch=2, device="cpu", plots=False, project=str(tmp_path / "runs"), name="v")
        assert fetched == [] and not (tmp_path / "runs").exists()


def test_resume_does_not_write_into_another_run_folder(tmp_path, spiking_ckpt):
    # Stock resume writes into the checkpoint's train_args save_dir, wherever it is: a last.pt naming another run's
    # folder replaced that run's weights/last.pt and results.csv (battery 18, R02). A resumed run writes beside its
    # checkpoint; a save_dir elsewhere is refused before anything is written, and save_dir= overrides.
    from ultralytics import YOLO

    victim = tmp_path / "victim"
    (victim / "weights").mkdir(parents=True)
    (victim / "weights" / "last.pt").write_text("precious")
    (tmp_path / "run" / "weights").mkdir(parents=True)
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["train_args"] = {"save_dir": str(victim), "data": "x.yaml", "imgsz": 32, "task": "detect", "epochs": 2}
    ckpt["epoch"], ckpt["optimizer"] = 0, torch.optim.SGD(ckpt["model"].parameters(), lr=0.01).state_dict()
    last = tmp_path / "run" / "weights" / "last.pt"
    torch.save(ckpt, last)
    says = rf"^checkpoint {re.escape(str(last))} says its run folder is {re.escape(str(victim))} \(train_args "
    says += rf"save_dir\), not the folder it lies in \({re.escape(str(tmp_path / 'run'))}\)"
    with pytest.raises(OutputExistsError, match=says):
        YOLO(last).train(resume=True, device="cpu")
    assert (victim / "weights" / "last.pt").read_text() == "precious"
    assert sorted(p.name for p in victim.rglob("*")) == ["last.pt", "weights"]
    # a save_dir that does not exist yet is refused too: the run would go where nobody looks (battery 19, R02b)
    ckpt["train_args"]["save_dir"] = str(tmp_path / "elsewhere")
    torch.save(ckpt, last)
    with pytest.raises(OutputExistsError, match=r"says its run folder is .*elsewhere \(train_args save_dir\), not the"):
        YOLO(last).train(resume=True, device="cpu")
    assert not (tmp_path / "elsewhere").exists()
    # no save_dir (or an empty one): Ultralytics made project/name, a folder the file chose (battery 20, R20/R23);
    # the run resumes beside its checkpoint (here it then stops: the checkpoint's dataset x.yaml is not there)
    for stored in ({}, {"save_dir": ""}):
        ckpt["train_args"] = {"data": "x.yaml", "imgsz": 32, "task": "detect", "epochs": 2, **stored,
                              "project": str(tmp_path), "name": "chosen"}  # fmt: skip
        torch.save(ckpt, last)
        with pytest.raises(RuntimeError, match=r"dataset x\.yaml comes from the checkpoint"):  # the trainer wraps it
            YOLO(last).train(resume=True, device="cpu")
        assert not (tmp_path / "chosen").exists() and not (tmp_path / "chosen2").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "victim"]


def test_resume_takes_only_the_training_state_a_run_saves(tmp_path, spiking_ckpt):
    # resume=True on a file without optimizer state or with epoch < 0 started a NEW training on Ultralytics' default
    # dataset (coco8, downloading it); a finished run was an AssertionError traceback; a NaN best_fitness resumed and
    # never saved best.pt, NaN optimizer moments trained on NaN losses (battery 20, R21/R22/R24)
    from ultralytics import YOLO

    from ibra_yolo.errors import NonFiniteError

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["train_args"] = {"data": "x.yaml", "imgsz": 32, "task": "detect", "epochs": 4}
    sgd = torch.optim.SGD(ckpt["model"].parameters(), lr=0.01, momentum=0.9)
    opt = sgd.state_dict()
    two = tmp_path / "two.yaml"
    two.write_text("path: .\ntrain: images\nval: images\nnames: {0: a, 1: b}\n")
    state = {"state": {0: {"momentum_buffer": torch.full((3,), float("nan"))}}, "param_groups": opt["param_groups"]}
    for edit, error, says in (
        ({"epoch": -1, "optimizer": None}, CheckpointError, r"is not a resumable checkpoint: it holds epoch -1 and no"),
        ({"epoch": -5, "optimizer": opt}, CheckpointError, r"its epoch is -5, which no training run saves"),
        ({"epoch": 3, "optimizer": opt}, CheckpointError, r"its run finished all 4 epochs"),
        ({"epoch": 1, "optimizer": opt, "best_fitness": float("nan")}, CheckpointError,
         r"its best_fitness is nan, not a finite number"),
        ({"epoch": 1, "optimizer": state}, NonFiniteError, r"its optimizer state holds NaN or infinite values \("
         r"momentum_buffer of parameter 0\)"),
        # battery 22 (H50-H57): each was a traceback from torch or Ultralytics, or NaN validation losses (H55)
        ({"epoch": 1, "optimizer": {"state": {}, "param_groups": []}}, CheckpointError,
         r"its optimizer state covers 0 parameters, but its model has \d+ \(a group missing or added\)"),
        ({"epoch": 1, "optimizer": opt, "train_args": {**ckpt["train_args"], "optimizer": "Evil"}}, CheckpointError,
         r"its train_args name optimizer='Evil', which Ultralytics does not build"),
        ({"epoch": 1, "optimizer": opt, "train_args": {**ckpt["train_args"], "batch": "abc"}}, CheckpointError,
         r"its train_args cannot be resumed: 'batch=abc' is of invalid type str"),
        ({"epoch": 1, "optimizer": opt, "train_args": {**ckpt["train_args"], "lr0": -1.0}}, CheckpointError,
         r"its train_args cannot be resumed: 'lr0=-1\.0' is an invalid value"),
        # battery 29, F10: epochs=10**9 resumed a run without end
        ({"epoch": 1, "optimizer": opt, "train_args": {**ckpt["train_args"], "epochs": 10**9}}, CheckpointError,
         r"its train_args ask for epochs=1000000000, above 100,000, which resuming would run without end"),
        # battery 29, KO10: a key Ultralytics does not know stopped the resumed run at validator set-up (SyntaxError)
        ({"epoch": 1, "optimizer": opt, "train_args": {**ckpt["train_args"], "evil_key": 1}}, CheckpointError,
         r"its train_args hold 'evil_key', which is not an Ultralytics argument \(a run saves only those\)"),
        ({"epoch": 1, "optimizer": opt, "ema": ckpt["model"], "updates": float("nan")}, CheckpointError,
         r"its EMA update count is nan, not a count"),
        # battery 23: an id repeated in place of another (N41: another parameter's moments), Adam betas torch refuses
        # (N24: used without a word), freeze= covering every layer (N34: Ultralytics' RuntimeError traceback)
        ({"epoch": 1, "optimizer": {**opt, "param_groups": [{**opt["param_groups"][0], "params": [0, 0, *range(2, len(
            opt["param_groups"][0]["params"]))]}]}}, CheckpointError, r"its optimizer's parameter ids are \[0, 0, 2,"),
        ({"epoch": 1, "optimizer": {**opt, "param_groups": [{**opt["param_groups"][0], "betas": (5.0, 0.999)}]}},
         CheckpointError, r"its optimizer holds betas=\(5\.0, 0\.999\), which torch's optimizers refuse"),
        ({"epoch": 1, "optimizer": opt, "train_args": {**ckpt["train_args"], "freeze": 999}}, CheckpointError,
         r"its train_args' freeze=999 freezes all 27 layers of the model: nothing would train"),
        # battery 24, K02: the run's data YAML edited to 2 classes under the 3-class model: torch's size-mismatch
        # traceback when the trainer loaded the run's weights into the rebuilt 2-class head
        ({"epoch": 1, "optimizer": opt, "train_args": {**ckpt["train_args"], "data": str(two)}}, CheckpointError,
         r"its model detects 3 classes, but its dataset .*two\.yaml names 2: resume=True continues the same model"),
        # no dataset (stock: coco8, downloaded), a GPU this machine lacks (stock: a select_device traceback)
        ({"epoch": 1, "optimizer": opt, "train_args": {"epochs": 4}}, CheckpointError,
         r"its train_args name no dataset \(data\), which every training run saves: pass data="),
        *[({"epoch": 1, "optimizer": opt, "train_args": {**ckpt["train_args"], "device": "cuda:0"}}, CheckpointError,
           r"was trained on device=cuda:0, which this machine does not have \(no CUDA GPU\): pass device=cpu")]
        * (not torch.cuda.is_available()),
    ):  # fmt: skip
        torch.save({**ckpt, "best_fitness": None, **edit}, tmp_path / "last.pt")
        with pytest.raises(error, match=re.escape(str(tmp_path / "last.pt")) + ".*" + says):
            YOLO(tmp_path / "last.pt").train(resume=True, project=str(tmp_path / "runs"))  # (no device=: R25)
        assert not (tmp_path / "runs").exists()


def test_resume_takes_optimizer_names_as_ultralytics_does(spiking_ckpt):
    # Ultralytics builds `optimizer=sgd` or `RMSProp` (it matches names in any case): a real run trained so was refused
    # on resume as "an optimizer Ultralytics does not build" (battery 24, LR-sgdlow / LR-RMSprop)
    from ibra_yolo.training_checks import check_resumable

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    opt = torch.optim.SGD(ckpt["model"].parameters(), lr=0.01).state_dict()
    for name in ("sgd", "RMSProp", "adamw", "auto"):
        args = {"data": "x.yaml", "epochs": 4, "optimizer": name}
        check_resumable({**ckpt, "epoch": 1, "optimizer": opt, "train_args": args}, "last.pt", {})
    with pytest.raises(CheckpointError, match=r"optimizer='Lion', which Ultralytics does not build"):
        args = {"data": "x.yaml", "epochs": 4, "optimizer": "Lion"}
        check_resumable({**ckpt, "epoch": 1, "optimizer": opt, "train_args": args}, "last.pt", {})


def test_resumed_optimizer_moments_must_fit_their_parameters(spiking_ckpt):
    # battery 23, N20/N40: moments of two parameters swapped, or one flattened, kept the parameter count and ended the
    # first resumed epoch in a traceback from torch's Adam; the trainer's loaded state is checked, shape by shape
    from types import SimpleNamespace

    from ibra_yolo.training_checks import check_freeze, checked_training_state

    model = torch.load(spiking_ckpt, weights_only=False)["model"]
    params = list(model.parameters())
    trainer = SimpleNamespace(model=model, optimizer=torch.optim.Adam(params), args=SimpleNamespace(resume="last.pt"))
    checked_training_state(lambda self, ckpt: None, trainer, {})  # no moments yet: nothing to refuse
    trainer.optimizer.state[params[0]] = {"step": torch.tensor(3.0), "exp_avg": torch.zeros(params[0].numel())}
    says = rf"last\.pt: its optimizer state holds exp_avg of shape \({params[0].numel()},\) for a parameter of shape"
    with pytest.raises(CheckpointError, match=says):
        checked_training_state(lambda self, ckpt: None, trainer, {})
    trainer.optimizer.state[params[0]]["exp_avg"] = torch.zeros_like(params[0])  # the right shape passes
    checked_training_state(lambda self, ckpt: None, trainer, {})
    # freeze= of one's own: all 27 layers is nothing to train; 26 (or a list without the head) leaves the head
    with pytest.raises(IbraYoloError, match=r"^freeze=27 freezes all 27 layers of the model: nothing would train"):
        check_freeze(model, 27)
    check_freeze(model, 26)
    check_freeze(model, list(range(26)))


def test_resumed_optimizer_settings_are_the_ones_the_trainer_builds(spiking_ckpt):
    # torch's load_state_dict takes every group setting from the file: a last.pt with maximize=True resumed by
    # ascending the loss, eps=1e10 shrank every Adam step, lr = initial_lr = 1e30 trained at 4e29 (the warmup reads
    # initial_lr), all silently; amsgrad=True without its moments and step=-5 were torch tracebacks, negative
    # exp_avg_sq trained silently (battery 28, K2b/K2e/K3a/K3b/K3d/K3e). What the trainer builds from the run's
    # arguments must come back; the learning rate may be anywhere a run puts it, the weight decay may differ (it
    # scales with a batch= given at resume), and so may the betas (optimizer=auto records lr0 but not its momentum).
    import copy
    from types import SimpleNamespace

    from ibra_yolo.training_checks import checked_training_state

    model = torch.load(spiking_ckpt, weights_only=False)["model"]
    params = list(model.parameters())

    def trainer():  # what _setup_train built before it loads the file: AdamW groups, LambdaLR's initial_lr
        groups = [{"params": params[:5], "weight_decay": 5e-4}, {"params": params[5:], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=0.001429, betas=(0.9, 0.999))
        torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
        return SimpleNamespace(model=model, optimizer=opt, args=SimpleNamespace(resume="last.pt", warmup_bias_lr=0.1))

    def load(self, ckpt):  # the stock _load_checkpoint_state, as far as the optimizer goes
        self.optimizer.load_state_dict(ckpt["optimizer"])

    saved = trainer().optimizer
    for p in params:
        p.grad = torch.ones_like(p)
    saved.step()  # moments for every parameter: step 1, exp_avg, exp_avg_sq
    for p in params:
        p.grad = None
    good = copy.deepcopy(saved.state_dict())
    good["param_groups"][0]["lr"] = 0.05  # in warmup, between the bias rate 0.1 and lr0
    good["param_groups"][1]["weight_decay"] = 0.0  # as built
    good["param_groups"][0]["weight_decay"] = 5e-4 * 60  # batch= at resume scales it (up to 64x): taken
    good["param_groups"][1]["betas"] = (0.937, 0.999)  # optimizer=auto's AdamW was built with 0.9, resume with 0.937
    checked_training_state(load, trainer(), {"optimizer": copy.deepcopy(good)})

    def group(**kv):
        return lambda sd: sd["param_groups"][1].update(kv)

    def moment(key, value):
        return lambda sd: [s.__setitem__(key, torch.full_like(s[key], value)) for s in sd["state"].values()]

    for edit, says in (
        (group(maximize=True), r"parameter group 1 holds maximize=True, but the trainer builds maximize=False"),
        (group(eps=1e10), r"parameter group 1 holds eps=10000000000\.0, but the trainer builds eps=1e-08"),
        (group(amsgrad=True), r"parameter group 1 holds amsgrad=True, but the trainer builds amsgrad=False"),
        (group(capturable=True), r"group 1 holds capturable=True, but the trainer builds capturable=False"),  # K3g
        # battery 29, KO2/KO7: weight_decay 1e30 decayed every weight to zero, silently; KO6: no initial_lr, KeyError
        (group(weight_decay=1e-4), r"group 1 holds weight_decay=0\.0001, but the trainer builds 0\.0 \(a batch= given"),
        (lambda sd: sd["param_groups"][0].update(weight_decay=1e30), r"group 0 holds weight_decay=1e\+30, but the "),
        (lambda sd: sd["param_groups"][1].pop("initial_lr"), r"group 1 lacks 'initial_lr', which every saved run"),
        (group(initial_lr=1e30), r"parameter group 1 holds initial_lr=1e\+30, but a run's learning rate lies in "),
        (group(lr=0.5), r"parameter group 1 holds lr=0\.5, but a run's learning rate lies in \[0, 0\.1\]"),
        (group(lr=-0.001), r"parameter group 1 holds lr=-0\.001, but a run's learning rate lies in \[0, 0\.1\]"),
        (moment("exp_avg_sq", -1.0), r"state holds a negative exp_avg_sq \(-1\) for a parameter of shape"),
        (moment("step", -5.0), r"state holds a negative step \(-5\) for a parameter of shape"),
    ):  # fmt: skip
        bad = copy.deepcopy(good)
        edit(bad)
        with pytest.raises(CheckpointError, match=r"^last\.pt: its optimizer.*" + says.removeprefix("state ")):
            checked_training_state(load, trainer(), {"optimizer": bad})
    # train_args naming SGD beside AdamW's state (K3i: KeyError 'momentum' from torch at the first step)
    sgd = trainer()
    sgd.optimizer = torch.optim.SGD(
        [{"params": params[:5]}, {"params": params[5:]}], lr=0.01, momentum=0.9, nesterov=True
    )
    says = r"^last\.pt: its optimizer's parameter group 0 holds 'betas', but the trainer builds SGD from the run's "
    with pytest.raises(CheckpointError, match=says):
        checked_training_state(load, sgd, {"optimizer": copy.deepcopy(good)})
    # the reverse, SGD's state where train_args' optimizer=auto builds AdamW (battery 29, KO12): torch's Adam failed
    # inside load_state_dict (KeyError 'step'), so the kind is checked before torch loads the state
    plain = torch.optim.SGD([{"params": params[:5]}, {"params": params[5:]}], lr=0.01, momentum=0.9, nesterov=True)
    for p in params:
        p.grad = torch.ones_like(p)
    plain.step()  # momentum buffers: what Adam's loader then looked up a 'step' in
    for p in params:
        p.grad = None
    says = r"^last\.pt: its optimizer's parameter group 0 lacks 'betas', but the trainer builds AdamW from the run's "
    with pytest.raises(CheckpointError, match=says):
        checked_training_state(load, trainer(), {"optimizer": plain.state_dict()})


def test_a_checkpoint_whose_ema_is_another_model_is_refused(tmp_path, spiking_ckpt):
    # Ultralytics loads `ema` when a file holds one: a file whose `ema` is a stock yolov8n beside our spiking `model`
    # loaded the stock detector without a word (battery 18, H26a), and `pretrained=` took 6 of its tensors (H26p).
    # A training run saves two copies of one model, so both loaders refuse two different ones.
    from ultralytics.nn.tasks import DetectionModel

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["ema"] = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    torch.save(ckpt, tmp_path / "two.pt")
    says = r"two\.pt holds two different models: 'model' is a DetectionModel of \d+ tensors and 'ema' \(the one "
    _refused_by_both_loaders(tmp_path / "two.pt", says + r"Ultralytics loads\) a DetectionModel of \d+; first ")
    # the same tensors but other class names, neuron settings or BN eps: still two models (battery 19, K39/K45/K57)
    for edit, says in (
        (lambda m: setattr(m, "names", {0: "cat", 1: "dog", 2: "car"}), r"names is \{0: 'a', .* but \{0: 'cat'"),
        (lambda m: setattr(m.model[1].bn, "eps", 10.0), r"model\.1\.bn\.eps is 0\.001 in 'model' but 10\.0 in 'ema'"),
        (lambda m: m.yaml["neuron"].__setitem__("D", 3), r"the model dict's 'neuron' is \{'kind': 'ILIF', 'D': 4.*3"),
    ):  # fmt: skip
        ckpt["ema"] = torch.load(spiking_ckpt, weights_only=False)["model"]
        ckpt["model"].names = {0: "a", 1: "b", 2: "c"}
        ckpt["ema"].names = {0: "a", 1: "b", 2: "c"}
        edit(ckpt["ema"])
        torch.save(ckpt, tmp_path / "two.pt")
        _refused_by_both_loaders(tmp_path / "two.pt", r"two\.pt holds two different models: " + says)
    ckpt["ema"] = torch.load(spiking_ckpt, weights_only=False)["model"]  # a copy of the same model: as trained
    ckpt["model"] = torch.load(spiking_ckpt, weights_only=False)["model"].train()  # the EMA copy is in eval mode
    torch.save(ckpt, tmp_path / "same.pt")
    assert isinstance(checkpoint_model(load_checkpoint(tmp_path / "same.pt"), tmp_path / "same.pt"), DetectionModel)


def test_a_checkpoint_whose_stride_is_not_its_layers_is_refused(tmp_path, spiking_ckpt):
    # Boxes are decoded with the head's stride: a file whose stride says 16/32/64 for layers that downsample by
    # 8/16/32 loaded and decoded every box twice too large and too far (battery 18, H83/H84). The load check runs a
    # blank image anyway; the head's input maps give the strides the layers really have (as Ultralytics probes them).

    wrong = torch.tensor([16.0, 32, 64])
    for where, edit in (("its head's stride", lambda m: setattr(m.model[-1], "stride", wrong)),
                        ("the model's stride", lambda m: setattr(m, "stride", wrong))):  # fmt: skip
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        edit(ckpt["model"])
        torch.save(ckpt, tmp_path / "stride.pt")
        says = rf"stride\.pt: {where} is \[16\.0, 32\.0, 64\.0\], but its layers downsample by \[8\.0, 16\.0, 32\.0\]"
        _refused_by_both_loaders(tmp_path / "stride.pt", says + r" .*every box would be decoded at the wrong scale")


def test_a_layer_other_than_its_model_dict_builds_is_refused(tmp_path, spiking_ckpt):
    # An SPPF pooling kernel edited from 5 to 3 in a checkpoint loaded and scored other boxes, and training from the
    # file would rebuild the dict's kernel 5 (battery 19, K61). Every layer is compared, by place, with what the
    # model dict builds: its class and plain settings (BN eps 0.001 and momentum 0.03 are what Ultralytics sets).
    from torch import nn

    from ibra_yolo.deployment import deploy, fuse_bn
    from ibra_yolo.spike_mode import set_spike_driven

    def pool(m):
        return next(x for x in m.modules() if isinstance(x, nn.MaxPool2d))

    for edit, says in (
        (lambda m: pool(m).__dict__.update(kernel_size=3, padding=1),
         r"model\.\d+\.pool \(MaxPool2d\) holds kernel_size=3, but its model dict builds kernel_size=5"),
        (lambda m: setattr(m.model[1].bn, "eps", 0.1), r"model\.1\.bn \(BatchNorm2d\) holds eps=0\.1, but its model "
         r"dict builds eps=0\.001"),
        (lambda m: setattr(m.model[3], "extra", nn.ReLU()), r"model\.3\.extra is a ReLU, but its model dict builds no "
         r"such layer there"),
        (lambda m: setattr(m.model[1], "bn", nn.Identity()), r"model\.1\.bn is an Identity, but its model dict builds "
         r"a BatchNorm2d there"),
        # a class attribute shadowed in the layer (battery 20, A01: boxes decoded as xyxy, then taken as xywh)
        (lambda m: setattr(m.model[-1], "xyxy", True), r"model\.\d+ \(SpikeDetect\) holds xyxy=True, but its class "
         r"gives xyxy=False and its model dict sets no other"),
    ):  # fmt: skip
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        edit(ckpt["model"])
        torch.save(ckpt, tmp_path / "edited.pt")
        _refused_by_both_loaders(tmp_path / "edited.pt", r"edited\.pt: " + says + r".*: the file was altered after")
    # what fuse_bn, deploy and spike-driven mode change is what the dict's model, folded the same way, holds
    for name, change in (("fused", fuse_bn), ("deployed", deploy), ("spikes", set_spike_driven)):
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        change(ckpt["model"])
        torch.save(ckpt, tmp_path / f"{name}.pt")
        assert checkpoint_model(load_checkpoint(tmp_path / f"{name}.pt"), name).yaml.get("folded") == {
            "fused": "bn", "deployed": "all", "spikes": None}[name]  # fmt: skip


def test_layers_held_in_another_order_than_the_model_dict_builds_are_refused(tmp_path, spiking_ckpt):
    # A Sequential runs its children in the order held: a file whose block holds them reversed or rotated (same names,
    # settings and state_dict) ran them in that order and scored other boxes (battery 27, Q09/Q39; Q40 in the ema
    # only, the copy YOLO() runs). Expected: both loaders refuse it, naming the block and both orders.
    from collections import OrderedDict

    def reorder(key, turn):
        def edit(ckpt):
            seq = next(m for m in ckpt[key].modules() if isinstance(m, torch.nn.Sequential) and 2 <= len(m) < 20)
            items = list(seq._modules.items())
            seq._modules = OrderedDict(items[turn:] + items[:turn])

        return edit

    ck = torch.load(spiking_ckpt, weights_only=False)
    seq = next(m for m in ck["model"].modules() if isinstance(m, torch.nn.Sequential) and 2 <= len(m) < 20)
    n = len(seq)
    rotated = ", ".join(str(i) for i in [*range(1, n), 0])
    for key in ("model", "ema"):
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        if key == "ema":
            ckpt["ema"] = copy.deepcopy(ckpt["model"])
        reorder(key, 1)(ckpt)
        path = tmp_path / f"{key}.pt"
        torch.save(ckpt, path)
        _refused_by_both_loaders(path, rf"holds its layers in the order {rotated}, but its model dict builds 0, 1")


def test_a_plain_attribute_hiding_a_tensor_or_setting_is_refused(tmp_path, spiking_ckpt):
    # Python finds a layer's instance __dict__ before nn.Module.__getattr__ looks in _parameters/_buffers/_modules: a
    # file whose conv held `weight = zeros` (or a BN `running_var * 1000`, or a `bias` where the conv has none) as a
    # plain attribute ran with it while its state_dict -- what the other checks and training see -- held the trained
    # one (battery 26, N14b/N15b/N26: other boxes in predict, eval, energy, and deploy folded the zeros in). torch's
    # __setattr__ never leaves such a pair, so both loaders refuse it, in the model or the ema, naming the layer and
    # the attribute; a tensor kept as a plain attribute the model dict's layer does not hold (forward may read it;
    # no state_dict shows it) and a setting no model dict gives are refused too.
    from torch import nn

    def first(m, kind, **has):
        return next((n, x) for n, x in m.named_modules() if isinstance(x, kind) and all(
            (getattr(x, k) is None) == v for k, v in has.items()))  # fmt: skip

    def shadow(kind, key, value, **has):
        def edit(m):
            _, x = first(m, kind, **has)
            x.__dict__[key] = value(x)  # what object.__setattr__ does: nn.Module.__setattr__ would replace the tensor

        return edit

    m = torch.load(spiking_ckpt, weights_only=False)["model"]
    conv, bn, nobias = (re.escape(first(m, *a, **h)[0]) for a, h in (((nn.Conv2d,), {}), ((nn.BatchNorm2d,), {}),
                                                                     ((nn.Conv2d,), {"bias": True})))  # fmt: skip
    cases = (
        (shadow(nn.Conv2d, "weight", lambda x: x.weight.detach() * 0), "model",
         rf"{conv} \(Conv2d\) holds a plain attribute 'weight' \(a torch\.float32 tensor of shape \(\d+, \d+, \d+, "
         r"\d+\)\) beside its parameter 'weight', so it would run with that attribute while its state_dict shows the "
         r"parameter"),
        (shadow(nn.BatchNorm2d, "running_var", lambda x: x.running_var * 1000), "model",
         rf"{bn} \(BatchNorm2d\) holds a plain attribute 'running_var' .* beside its buffer 'running_var'"),
        (shadow(nn.Conv2d, "bias", lambda x: torch.full((x.out_channels,), 3.0), bias=True), "model",
         rf"{nobias} \(Conv2d\) holds a plain attribute 'bias' .* beside its parameter 'bias' \(None: it has none\)"),
        # in the copy YOLO() runs (a small tensor there is named by the model/ema comparison first, as "two models")
        (shadow(nn.Conv2d, "weight", lambda x: x.weight.detach() * 0), "ema",
         rf"{conv} \(Conv2d\) holds a plain attribute 'weight'"),
        (lambda m: m.model[1].__dict__.__setitem__("bn", 3), "model",
         r"model\.1 \(\w+\) holds a plain attribute 'bn' \(3\) beside its child layer 'bn'"),
        (shadow(nn.Conv2d, "threshold", lambda x: torch.ones(3)), "model",
         rf"{conv} \(Conv2d\) holds the plain attribute 'threshold' \(a torch\.float32 tensor of shape \(3,\)\), but "
         r"its model dict builds no such attribute there \(a tensor outside the state_dict"),
        (shadow(nn.BatchNorm2d, "_mask", lambda x: torch.ones(3, dtype=torch.bool)), "model",  # private names too
         rf"{bn} \(BatchNorm2d\) holds the plain attribute '_mask' \(a torch\.bool tensor of shape \(3,\)\)"),
        (lambda m: m.model[3].__dict__.__setitem__("gain", 2.0), "model",
         r"model\.3 \(\w+\) holds the plain attribute 'gain' \(2\.0\), but its model dict builds no such setting"),
    )  # fmt: skip
    for edit, where, says in cases:
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        if where == "ema":
            ckpt["ema"] = torch.load(spiking_ckpt, weights_only=False)["model"]
        edit(ckpt[where])
        torch.save(ckpt, tmp_path / "hidden.pt")
        _refused_by_both_loaders(tmp_path / "hidden.pt", r"hidden\.pt: " + says + r".*the file was altered after")
    # the shadow in `model` beside a clean `ema` (the one YOLO() runs) is named as the model's
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["ema"] = torch.load(spiking_ckpt, weights_only=False)["model"]
    shadow(nn.Conv2d, "weight", lambda x: x.weight.detach() * 0)(ckpt["model"])
    torch.save(ckpt, tmp_path / "hidden.pt")
    _refused_by_both_loaders(
        tmp_path / "hidden.pt", rf"hidden\.pt: the model's {conv} \(Conv2d\) holds a plain attribute"
    )
    # what a legitimate file holds outside its state_dict still loads: the head's anchor cache after a forward (a file
    # saved after predict/val), an fp16 copy (Ultralytics' _apply casts the head's stride and anchors too)
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    with torch.no_grad():
        ckpt["model"].eval()(torch.zeros(1, 3, 64, 64))
    assert ckpt["model"].model[-1].__dict__["anchors"].numel()  # a plain tensor attribute, as saved after predict
    torch.save(ckpt, tmp_path / "predicted.pt")
    ckpt["model"].half()
    torch.save(ckpt, tmp_path / "half.pt")
    from ultralytics import YOLO

    for name in ("predicted.pt", "half.pt"):
        checkpoint_model(load_checkpoint(tmp_path / name), tmp_path / name)
        assert YOLO(tmp_path / name).names == {0: "0", 1: "1", 2: "2"}


def test_a_refusal_names_the_ultralytics_version_that_saved_the_file(tmp_path, spiking_ckpt):
    # A layer whose class sets another attribute in another Ultralytics release (a Detect.__init__ of another 8.4)
    # reads like an altered file; a refusal of a file that another version saved says so, one of this version does
    # not (the files Ultralytics saves carry its version under "version").
    import ultralytics

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].model[-1].__dict__["legacy_flag"] = True  # what an older Detect.__init__ could have set
    says = r"model\.\d+ \(SpikeDetect\) holds the plain attribute 'legacy_flag' \(True\), but its model dict builds"
    for saved, hint in (("8.4.150", True), (ultralytics.__version__, False), (None, False)):
        ckpt["version"] = saved
        torch.save(ckpt, tmp_path / "other.pt")
        tail = (
            rf"the file was altered after it was saved \(or: the file was saved by Ultralytics '{saved}' and this is "
        )
        tail += rf"{re.escape(ultralytics.__version__)}, whose layers may hold other settings; load it with Ultralytics"
        _refused_by_both_loaders(
            tmp_path / "other.pt", says + ".*" + (tail if hint else r"the file was altered after it was saved$")
        )


def test_a_refused_pretrained_file_leaves_no_run_folder(tmp_path, spiking_ckpt, shapes_data):
    # The stock trainer applies pretrained= after writing its run folder (args.yaml, weights/): a refused file left
    # that folder behind, and the corrected rerun went to train2 (battery 19, K17p). It is checked before the trainer.
    from ultralytics import YOLO

    from ibra_yolo.deployment import deploy
    from ibra_yolo.errors import FoldedModelError

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].model[1].bn.eps = 0.1
    torch.save(ckpt, tmp_path / "edited.pt")
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    deploy(ckpt["model"])
    torch.save(ckpt, tmp_path / "folded.pt")
    torch.save({"model": Evil(tmp_path), "train_args": {}}, tmp_path / "evil.pt")
    (tmp_path / "folder.pt").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    for name, error, says in ((
        "edited.pt", CheckpointError, r"model\.1\.bn \(BatchNorm2d\) holds eps=0\.1"), (
        "folded.pt", FoldedModelError, r"pretrained weights .*folded\.pt are folded for inference"), (
        "evil.pt", UnsafePickleError, r"evil\.pt refers to posix\.system"), (
        # a folder, a missing file, a FIFO named .png: refused before the run folder too (battery 20, PT1/PT2/PT5)
        "folder.pt", CheckpointError, r"pretrained=.*folder\.pt is not a regular file \(a folder, FIFO or device\)"), (
        "missing.pt", MissingFileError, r"pretrained=.*missing\.pt does not exist: pass the \.pt checkpoint"), (
        "fifo.png", CheckpointError, r"pretrained=.*fifo\.png must be a \.pt checkpoint")):  # fmt: skip
        args = {"data": str(shapes_data), "epochs": 1, "imgsz": 64, "device": "cpu", "project": str(tmp_path / "runs")}
        with pytest.raises(error, match=says):
            YOLO("spike-yolo-ilif-n.yaml").train(pretrained=str(tmp_path / name), workers=0, **args)
        assert not (tmp_path / "runs").exists() and not (tmp_path / "MARKER").exists()


def test_pretrained_weights_whose_model_dict_is_not_their_layers_are_refused(spiking_ckpt):
    # `yolo train model=x.pt` builds the model from the file's model dict and loads the file's layers into it: a dict
    # whose scale was edited (n -> s) built a 23 M-parameter network that took 160 of 755 tensors and trained without
    # a word (battery 18, H81/H82). When the dict is the file's, every tensor outside the head must fit; a changed nc
    # (fine-tuning on another dataset) still transfers all but the head's class branch.
    from ultralytics.nn.tasks import DetectionModel

    source = torch.load(spiking_ckpt, weights_only=False)["model"]
    source.yaml["scale"] = "s"
    says = r"the file's model dict does not describe its layers: 'model\.1\.\S+' is \(\d+, 3, 7, 7\) in the file but "
    with pytest.raises(CheckpointError, match=says + r"\(\d+, 3, 7, 7\) in the model the dict builds \(\d+ of \d+ "):
        DetectionModel(source.yaml, verbose=False).load(source)
    source = torch.load(spiking_ckpt, weights_only=False)["model"]
    source.names = {0: "cat", 1: "dog", 2: "car"}  # real names: Ultralytics 8.4 remaps class rows by name, which
    built = DetectionModel(source.yaml, nc=5, verbose=False)  # nc 3 -> 5: what fine-tuning on a 5-class set builds
    built.names = {0: "dog", 1: "bus", 2: "cat", 3: "x", 4: "y"}  # indexed our head as a Sequential (battery 21, L07)
    built.load(source)
    fitted = [k for k, v in source.state_dict().items() if torch.equal(built.state_dict()[k], v)]
    assert len(fitted) > 0.95 * len(source.state_dict())  # all but the class branch's last convs


def test_an_ema_that_is_not_a_model_is_named(tmp_path, spiking_ckpt):
    # Ultralytics takes `ema` first: an `ema` set to a string made the message say the file "holds no 'model' module"
    # although its model was intact (battery 18, H59a); the bad entry is named

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["ema"] = "model"
    torch.save(ckpt, tmp_path / "ema.pt")
    says = r"ema\.pt: its 'ema' \(the model Ultralytics loads when the file holds one\) is a str, not a model"
    _refused_by_both_loaders(tmp_path / "ema.pt", says)


def test_train_args_data_that_is_not_a_dataset_name_is_refused(tmp_path, spiking_ckpt):
    # Ultralytics keeps train_args' data for `yolo val model=x.pt`; a dict there fell back to coco8.yaml and printed
    # five download tracebacks offline (battery 18, R04). A dataset is named by a string (or a path).
    from ultralytics import YOLO

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["train_args"] = {"data": {"path": "/x", "val": "b", "download": "bash touch x"}}
    torch.save(ckpt, tmp_path / "args.pt")
    with pytest.raises(CheckpointError, match=r"args\.pt: train_args data is a dict, not the name of a dataset YAML"):
        YOLO(tmp_path / "args.pt")
    # a file that is no dataset (battery 19, K47v: /etc/passwd was Ultralytics' "Not a YAML file" traceback in `yolo
    # val`); what Ultralytics takes as data= still loads: YAMLs, archives, folders, URLs, bare names (coco8)
    (tmp_path / "notes.txt").write_text("x")
    ckpt["train_args"] = {"data": str(tmp_path / "notes.txt")}
    torch.save(ckpt, tmp_path / "args.pt")
    with pytest.raises(CheckpointError, match=r"args\.pt: train_args data is '.*notes\.txt', not a dataset YAML, a "):
        YOLO(tmp_path / "args.pt")
    # a YAML that is not a dataset (battery 25, X08/K20: a model YAML; Ultralytics' "'train:' key missing" traceback)
    (tmp_path / "model.yaml").write_text((CFG / "spike-yolo-ibra.yaml").read_text())
    ckpt["train_args"] = {"data": str(tmp_path / "model.yaml")}
    torch.save(ckpt, tmp_path / "args.pt")
    with pytest.raises(CheckpointError, match=r"args\.pt: train_args data is '.*model\.yaml', not a dataset YAML, a "):
        YOLO(tmp_path / "args.pt")
    ckpt["train_args"] = {"data": "/dev/zero"}  # read as YAML without end
    torch.save(ckpt, tmp_path / "args.pt")
    with pytest.raises(CheckpointError, match=r"args\.pt: train_args data is '/dev/zero', not a dataset YAML, a "):
        YOLO(tmp_path / "args.pt")
    # a folder is read through the one YAML in it: a FIFO there blocked `yolo val` forever, an empty folder was
    # Ultralytics' "No YAML file found" traceback (battery 21, C03/C03b)
    for name, make in (("fifo", lambda d: os.mkfifo(d / "data.yaml")), ("empty", lambda d: None)):
        (tmp_path / name).mkdir()
        make(tmp_path / name)
        ckpt["train_args"] = {"data": str(tmp_path / name)}
        torch.save(ckpt, tmp_path / "args.pt")
        with pytest.raises(CheckpointError, match=rf"train_args data is '.*{name}', not a dataset YAML, a folder or"):
            YOLO(tmp_path / "args.pt")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "data.yaml").write_text("train: images\nval: images\nnames: {0: a}\n")
    (tmp_path / "d.tar.gz").write_bytes(b"x")
    for data in ("coco8.yaml", "/x/d.YML", "d.zip", str(tmp_path / "d.tar.gz"), "https://x/d.zip", "DOTAv1.5",
                 str(tmp_path / "ds")):  # fmt: skip
        ckpt["train_args"] = {"data": data}
        torch.save(ckpt, tmp_path / "args.pt")
        YOLO(tmp_path / "args.pt")
    # the other arguments Ultralytics reads back fail deep inside it when they are not what training writes
    # (battery 19: K31 imgsz NaN, R11 epochs NaN, K62 single_cls 'yes', K32 task classify)
    for args, says in (({"imgsz": float("nan")}, "imgsz is nan, not a finite number"),
                       ({"epochs": float("inf")}, "epochs is inf, not a finite number"),
                       ({"imgsz": "640"}, "imgsz is '640', not a size in pixels"),
                       # battery 22, K25: yolo predict without imgsz= takes the file's; 4096 took 3.9 GB per image
                       ({"imgsz": 100000}, "imgsz is 100000, not a size in pixels (an integer in 1..8192, or two)"),
                       ({"imgsz": [640, 8193]}, "imgsz is [640, 8193], not a size in pixels"),
                       ({"single_cls": "yes"}, "single_cls is 'yes', not true or false"),
                       ({"task": "classify"}, "task is 'classify', but the model is a detector")):  # fmt: skip
        ckpt["train_args"] = args
        torch.save(ckpt, tmp_path / "args.pt")
        with pytest.raises(
            CheckpointError, match=rf"args\.pt: train_args {re.escape(says)}.* \(the file was altered\)"
        ):
            YOLO(tmp_path / "args.pt")
    ckpt["train_args"] = {"imgsz": 64, "task": "detect", "single_cls": False}
    ckpt["model"].stride = [8.0, 16.0, 32.0]  # the right values as a list (K41): Ultralytics calls stride.max()
    torch.save(ckpt, tmp_path / "stride.pt")
    with pytest.raises(CheckpointError, match=r"the model holds stride=\[8\.0, 16\.0, 32\.0\] \(list\): a stride is"):
        YOLO(tmp_path / "stride.pt")
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["train_args"] = {"data": Path("/datasets/coco.yaml")}  # a Path, as a user may pass it: loads
    torch.save(ckpt, tmp_path / "path.pt")
    assert YOLO(tmp_path / "path.pt").overrides["data"] == Path("/datasets/coco.yaml")


def test_a_stock_model_is_named_as_such_by_our_tools(tmp_path):
    # `ibra-yolo deploy/energy` of an unaltered stock yolov8n said "its model dict is invalid (the file was
    # altered?): neuron=None is invalid", of a yolov8n-cls "every box would be decoded at the wrong scale" (battery
    # 20, X2/X3/X8): a model without our layers is named as a stock model before any check of what it holds
    from ultralytics import YOLO

    for cfg in ("yolov8n.yaml", "yolov8n-cls.yaml"):
        YOLO(cfg).save(tmp_path / "stock.pt")
        kind = "ClassificationModel" if "cls" in cfg else "DetectionModel"
        says = rf"stock\.pt holds a {kind} without ibra-yolo layers \(a stock Ultralytics model\?\), not an ibra-yolo"
        for need in ("model", "ibra-yolo", "spiking"):
            with pytest.raises(CheckpointError, match=says):
                checkpoint_model(load_checkpoint(tmp_path / "stock.pt"), tmp_path / "stock.pt", need=need)


def test_the_heads_box_decoding_comes_from_its_layers_not_the_file(tmp_path, spiking_ckpt):
    # The head caches its anchor grid with the input shape it was made for: a file holding that shape with anchors of
    # its choice decoded every box on its grid (battery 20, A02: all boxes [0, 0, 0, 0]); a loaded head rebuilds the
    # cache. The DFL's fixed weight 0..15 doubled made every box twice its size (A38): refused.
    from ultralytics import YOLO

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    model, x = ckpt["model"].eval(), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)[0]
    head = model.model[-1]
    assert head.shape is not None  # the forward filled the cache for x's grid
    head.anchors = head.anchors - 100
    torch.save(ckpt, tmp_path / "cache.pt")
    loaded = YOLO(tmp_path / "cache.pt").model.eval()
    assert loaded.model[-1].shape is None
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], ref)
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].model[-1].dfl.conv.weight.data *= 2
    torch.save(ckpt, tmp_path / "dfl.pt")
    says = r"dfl\.pt: model\.\d+\.dfl\.conv\.weight is not the fixed 0, 1, \.\.\., 15 of a DFL \(it holds \[0\.0, 2\.0"
    _refused_by_both_loaders(tmp_path / "dfl.pt", says)


def test_pretrained_weights_of_another_architecture_warn(tmp_path):
    # stock yolov8n weights as pretrained= of spike-yolo-ilif-n fit 6 of its 755 tensors, said only in the stock info
    # line "Transferred 6/755 items" (battery 20, PT6): a warning says that training starts mostly from new weights.
    # Weights of the same model fit all (no warning).
    import logging

    from ultralytics.nn.tasks import DetectionModel

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append((record.levelname, record.getMessage()))
    logging.getLogger("ultralytics").addHandler(handler)
    try:
        DetectionModel("spike-yolo-ilif-n.yaml", verbose=False).load(DetectionModel("yolov8n.yaml", verbose=False))
        warned = [m for level, m in lines if level == "WARNING"]
        assert len(warned) == 1 and re.search(
            r"only \d of this model's \d+ tensors take them \(another architec", warned[0]
        )
        lines.clear()
        DetectionModel("spike-yolo-ilif-n.yaml", verbose=False).load(
            DetectionModel("spike-yolo-ilif-n.yaml", verbose=False)
        )
        assert not [m for level, m in lines if level == "WARNING"]
    finally:
        logging.getLogger("ultralytics").removeHandler(handler)


def test_class_names_with_control_characters_are_refused(tmp_path, spiking_ckpt):
    # a class name holding a line break or a terminal escape reached the terminal raw through every table that prints
    # names (battery 20, A40: a file can forge or hide output lines)
    from ultralytics import YOLO

    # battery 21, Z06: a right-to-left override reorders the rest of a printed line, a zero-width space makes two
    # names print alike; a zero-width non-joiner spells Persian words and stays a name (below)
    bad = ({0: "a", 1: "circ\nle", 2: "c"}, ["a", "b", "\x1b[31mRED"], ["a", "circle\u202e", "c"])
    bad += (["a", "b", "tri\u200bangle"],)
    for names in bad:
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        ckpt["model"].names = names
        torch.save(ckpt, tmp_path / "names.pt")
        says = r"names\.pt: the model's class name [12] is '.*': it holds control characters \(a line break, a "
        _refused_by_both_loaders(tmp_path / "names.pt", says)

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].names = {0: "a", 1: "\u0645\u06cc\u200c\u0634\u0648\u062f", 2: "c"}  # Persian, with a ZWNJ
    torch.save(ckpt, tmp_path / "persian.pt")
    assert YOLO(str(tmp_path / "persian.pt")).names[1] == "\u0645\u06cc\u200c\u0634\u0648\u062f"


def test_a_module_cycle_or_deeply_nested_data_is_one_line(tmp_path, spiking_ckpt, python):
    # battery 21, H14/C01/C02: a layer holding the whole model as a child loads (pickle rebuilds cycles), then every
    # torch walk of the tree (.float(), .to(), deepcopy, state_dict) recursed without end: a bare RecursionError in
    # YOLO(p), yolo predict and ibra-yolo deploy
    from ultralytics import YOLO

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].model[10]._modules["loop"] = ckpt["model"]
    torch.save(ckpt, tmp_path / "cycle.pt")
    says = r"cycle\.pt: layer model\.model\.10\.loop holds DetectionModel model, one of its own parents \(a module"
    _refused_by_both_loaders(tmp_path / "cycle.pt", says)
    # a layer held at two places (layer 3 also as a child of layer 10) is not a cycle; torch lists it once, so the
    # layer check saw no extra layer and the file loaded with tensors no model dict builds
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].model[10]._modules["dup"] = ckpt["model"].model[3]
    torch.save(ckpt, tmp_path / "shared.pt")
    with pytest.raises(CheckpointError, match=r"shared\.pt: model\.10\.dup is .*, but its model dict builds no such"):
        YOLO(str(tmp_path / "shared.pt"))
    # a mid-run checkpoint: the cycle in 'ema' was met first by the check that model and ema hold one model
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["ema"] = copy.deepcopy(ckpt["model"])
    ckpt["ema"].model[3]._modules["loop"] = ckpt["ema"].model
    torch.save(ckpt, tmp_path / "ema.pt")
    with pytest.raises(CheckpointError, match=r"ema\.pt: layer ema\.model\.3\.loop holds Sequential ema\.model, one"):
        YOLO(str(tmp_path / "ema.pt"))
    # H26: train_args nested deeper than any run writes loaded, then torch.save of it (ibra-yolo deploy, the trainer)
    # recursed once per level; 64 levels is the bound (a real checkpoint's data nests <= 5: optimizer state)
    for depth, refused in ((62, False), (63, True), (200, True)):
        nested = []
        for _ in range(depth):
            nested = [nested]  # train_args is level 1, 'extra' level 2: the innermost list is at level depth + 2
        ckpt = torch.load(spiking_ckpt, weights_only=False)
        ckpt["train_args"] = {**ckpt["train_args"], "extra": nested}
        torch.save(ckpt, tmp_path / "deep.pt")
        if refused:
            with pytest.raises(CheckpointError, match=r"deep\.pt: its 'train_args' data is nested over 64 deep"):
                checkpoint_model(load_checkpoint(tmp_path / "deep.pt"), tmp_path / "deep.pt")
        else:
            checkpoint_model(load_checkpoint(tmp_path / "deep.pt"), tmp_path / "deep.pt")
    p = run([python, "-m", "ibra_yolo", "deploy", str(tmp_path / "cycle.pt"), str(tmp_path / "out.pt")], check=False)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "a module cycle" in p.stderr
    assert p.stderr.count("\n") == 1 and not (tmp_path / "out.pt").exists()


def test_data_that_expands_without_end_through_shared_references_is_refused(tmp_path, spiking_ckpt):
    # battery 26, K31/H85: a pickle's memo shares one tuple at every level, t(k) = (t(k-1), t(k-1)): 1 KB in the
    # file, 2**39 values when copied or printed; nested 39 deep (< 64) it passed every check, then deepcopy (every
    # loader) and print_args (resume) ran until killed. Expanded, t(k) holds 2**(k+1) - 1 values; the bound is
    # 1,000,000 (as for YAML aliases; our checkpoints hold ~20,000): t(19) = 1,048,575 is the first over it.
    def bomb(levels):
        value = "leaf"
        for _ in range(levels):
            value = (value, value)
        return value

    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["train_args"] = {**ckpt["train_args"], "classes": bomb(39)}
    torch.save(ckpt, tmp_path / "args.pt")
    assert (tmp_path / "args.pt").stat().st_size < spiking_ckpt.stat().st_size + 2000  # shared in the file
    says = r"args\.pt: its train_args\['classes'\]\[0\]\[0\]"
    _refused_by_both_loaders(tmp_path / "args.pt", says + r".* data expands to 1,048,575 values through shared ref")
    # under a key of one's own in the model dict (H85): model.yaml is counted with the layer's other attributes
    ckpt = torch.load(spiking_ckpt, weights_only=False)
    ckpt["model"].yaml["zz"] = bomb(20)
    torch.save(ckpt, tmp_path / "yaml.pt")
    says = r"yaml\.pt: its model\.yaml\['zz'\]\[0\] data expands to 1,048,575 values through shared references \(ov"
    _refused_by_both_loaders(tmp_path / "yaml.pt", says)
    # a stock model's file too, through YOLO(p) (the EMA of `yolo train model=x.pt` deep-copies its model dict)
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(tmp_path / "stock.pt")
    stock = torch.load(tmp_path / "stock.pt", weights_only=False)
    stock["model"].yaml["zz"] = bomb(39)
    torch.save(stock, tmp_path / "stock.pt")
    with pytest.raises(CheckpointError, match=r"stock\.pt: its model\.yaml\['zz'\]\[0\].* data expands to 1,048,575 "):
        YOLO(tmp_path / "stock.pt")
    # the bound is on the expanded count, not on sharing: t(18), 524,287 values, loads
    ckpt["model"].yaml["zz"] = bomb(18)
    torch.save(ckpt, tmp_path / "yaml.pt")
    checkpoint_model(load_checkpoint(tmp_path / "yaml.pt"), tmp_path / "yaml.pt")
