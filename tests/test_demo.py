"""The demo never loses or replaces a user's files, file-system errors are one line, and two runs are bit-identical.

The fast tests fake an earlier run's files (no training); the slow test trains twice at a tiny size.
"""

import json
import os

import pytest
import torch
from conftest import ROOT, run

from ibra_yolo.cli import demo
from ibra_yolo.cli.parser import ArgumentParser, run_command
from ibra_yolo.data import make_shapes_dataset
from ibra_yolo.errors import OutputExistsError, PathError

TINY = ["--n-train", "2", "--n-val", "1", "--imgsz", "32"]


def earlier_run(out, seed=0):
    """The files an earlier demo run leaves in ``out``, plus one a user added to ``out/data``; returns their bytes."""
    paths = demo.prepare_out(out, demo.parse_args(["--out", str(out), "--seed", str(seed), *TINY]))
    make_shapes_dataset(paths.data, 2, 1, 32, seed=seed)
    files = {
        out / "runs" / "train" / "weights" / "best.pt": b"earlier weights",
        out / "coco_eval.json": b'{"mAP50": 0.5}',
        out / "data" / "notes.txt": b"the user's notes",
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def unchanged(before: dict) -> bool:
    return all(p.is_file() and p.read_bytes() == b for p, b in before.items())


def test_fresh_folder_gets_fresh_run_names(tmp_path):
    paths = demo.prepare_out(tmp_path / "d", demo.parse_args(["--out", str(tmp_path / "d"), *TINY]))
    assert (paths.train_name, paths.val_name, paths.results) == ("train", "val", tmp_path / "d" / "coco_eval.json")
    assert json.loads((tmp_path / "d" / demo.MARKER).read_text())["made_by"] == "ibra-yolo demo"


def test_rerun_into_an_earlier_folder_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "demo_out"
    before = earlier_run(out)
    with pytest.raises(OutputExistsError) as e:
        demo.prepare_out(out, demo.parse_args(["--out", str(out), "--seed", "1", *TINY]))
    assert str(e.value).startswith(f"--out {out} holds an earlier demo run: choose another --out, or pass --overwrite")
    assert unchanged(before)


def test_overwrite_never_touches_weights_or_data_of_another_dataset(tmp_path):
    # Another --seed asks for another dataset: data/ would have to be deleted, so even --overwrite is refused
    out = tmp_path / "demo_out"
    before = earlier_run(out)
    with pytest.raises(OutputExistsError) as e:
        demo.prepare_out(out, demo.parse_args(["--out", str(out), "--seed", "1", "--overwrite", *TINY]))
    assert str(e.value).startswith(f"--out {out}: {out / 'data'} holds the demo dataset made with ")
    assert "'seed': 0" in str(e.value) and "'seed': 1" in str(e.value) and "choose another --out" in str(e.value)
    assert unchanged(before)
    # The same dataset with --overwrite: data/ reused as is, training and evaluation get folders no run wrote
    paths = demo.prepare_out(out, demo.parse_args(["--out", str(out), "--overwrite", *TINY]))
    assert (paths.train_name, paths.val_name) == ("train2", "val")  # the faked run wrote runs/train only
    assert make_shapes_dataset(paths.data, 2, 1, 32, seed=0) == out / "data" / "data.yaml"
    assert unchanged(before)


def test_demo_cli_reports_a_file_as_out_in_one_line(tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("mine")
    assert demo.main(["--out", str(f), *TINY]) == 2
    assert capsys.readouterr().err == f"error: --out {f}: {f} is a file, not a folder\n"
    assert f.read_text() == "mine"


def test_dataset_root_that_is_a_file_or_under_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for root in (f, f / "sub"):
        with pytest.raises(PathError) as e:
            make_shapes_dataset(root, 1, 1, 32)
        assert str(e.value) == f"root {root}: {f} is a file, not a folder" and isinstance(e.value, OSError)


def test_dataset_never_replaces_another(tmp_path):
    root = tmp_path / "data"
    make_shapes_dataset(root, 1, 1, 32, seed=0)
    (root / "mine.txt").write_text("keep")
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(OutputExistsError, match=r"holds the demo dataset made with .*'seed': 0.*'seed': 3"):
        make_shapes_dataset(root, 1, 1, 32, seed=3)
    assert unchanged(files)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("a")
    with pytest.raises(OutputExistsError, match="holds files of its own"):
        make_shapes_dataset(other, 1, 1, 32)


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    # as root every folder is writable, so the permission answer is faked; the real refusal is the next test's
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PathError, match=rf"^root {tmp_path / 'd'}: permission denied: cannot write in {tmp_path}$"):
        make_shapes_dataset(tmp_path / "d", 1, 1, 32)


def test_output_file_under_a_file_is_refused_before_work(tmp_path):
    # every command checks its output files with check_output before it starts; a parent that is a file fails there
    from ibra_yolo.files import check_output

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PathError, match=rf"^cannot write {f}/sub/x.csv: {f} is a file, not a folder$"):
        check_output(f / "sub" / "x.csv", flag="--csv")


def test_os_errors_in_a_command_are_one_line(capsys):
    def body(args):
        raise PermissionError(13, "Permission denied", "/data/out.json")

    assert run_command(ArgumentParser(prog="x"), body, []) == 2
    assert capsys.readouterr().err == "error: Permission denied: /data/out.json\n"


# ---------------------------------------------------------------------------------------------------- reproducibility
def state(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return (ckpt.get("ema") or ckpt["model"]).state_dict()


@pytest.mark.slow
def test_two_demo_runs_are_bit_identical(tmp_path, python):
    # The same settings in two folders, from two working directories, in two processes: the trained weights must be
    # equal bit for bit. (Ultralytics trains on min(8, CPUs - 1) torch threads; another thread count changes the sums
    # and so the weights: the README states the figure with its thread count.)
    args = ["--epochs", "2", "--n-train", "32", "--n-val", "8", "--imgsz", "32", "--batch", "8"]
    weights = []
    for name in ("a", "b"):
        cwd = tmp_path / f"cwd-{name}"
        cwd.mkdir()
        run([python, str(ROOT / "tools" / "demo.py"), "--out", str(tmp_path / name), *args], cwd=cwd, timeout=600)
        weights.append(state(tmp_path / name / "runs" / "train" / "weights" / "last.pt"))
    a, b = weights
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []


def test_demo_refuses_checkpoints_and_owned_train_args_before_work(tmp_path, capsys):
    # A .pt as --model (or model=... via --yolo-arg) would be unpickled by the stock trainer without any check: the
    # demo takes model YAMLs only, and the arguments that name its own files are its own. A bad model YAML, and a
    # negative seed, are refused before any work too: nothing is created in --out.
    from ibra_yolo.cli import demo as demo_cli

    out = tmp_path / "demo"
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("nc: 2\nneuron: {kind: IBRALIF}\nbackbone: []\nhead: []\n")
    cases = [
        (["--model", str(tmp_path / "evil.pt")], "--model '" + str(tmp_path / "evil.pt") + "' is not a model YAML"),
        (["--yolo-arg", "model=evil.pt"], "--yolo-arg 'model=evil.pt': the demo sets model, data, project"),
        (["--yolo-arg", "name=../../escape"], "--yolo-arg 'name=../../escape'"),
        (["--seed", "-1"], "--seed -1 is invalid"),
        (["--model", str(bad_yaml)], "backbone"),
        # checked as the stock trainer checks them, before any work (each was the child's traceback after the data)
        (["--yolo-arg", "epochs=abc"], "--yolo-arg epochs=...: use the demo's own --epochs"),
        (["--yolo-arg", "lr0=abc"], "--yolo-arg: 'lr0=abc' is of invalid type str"),
        (["--yolo-arg", "lr0=1e999"], "--yolo-arg 'lr0=1e999': the value must be finite"),  # YAML reads inf
        (["--yolo-arg", "lr0="], "--yolo-arg 'lr0=': missing 'lr0' value"),
        (["--yolo-arg", "mosiac=0"], "--yolo-arg 'mosiac=0': 'mosiac' is not a `yolo train` argument"),
        (["--yolo-arg", "device=0"], "--yolo-arg device=...: use the demo's own --device"),
        (["--device", "banana"], "device='banana' is not available"),
        (["--imgsz", "100000"], "--imgsz 100000 is invalid: at most 8192"),
        # one image in a training batch at 32 px: a 1x1 map at stride 32, one value per channel for BatchNorm; the
        # stock trainer's traceback came after the dataset was made, and left the folder (battery 11, T10)
        (
            ["--imgsz", "32", "--n-train", "1", "--batch", "1"],
            "--imgsz 32 with one image in the last training batch "
            "(--n-train 1, --batch 1) gives BatchNorm a single value per channel at stride 32: use --imgsz 64 or more",
        ),
        (["--imgsz", "32", "--n-train", "17", "--batch", "16"], "(--n-train 17, --batch 16) gives BatchNorm"),
        (["--n-val", "1000000000"], "--n-val 1000000000 is invalid: at most 100000 images"),  # it filled the disk
        (["--yolo-arg", "pretrained=evil.pt"], "--yolo-arg 'pretrained=evil.pt': the demo sets model, data"),
        # the stock configuration check takes any optimizer name; the trainer refused it after the dataset was made
        (["--yolo-arg", "optimizer=Bogus"], "--yolo-arg 'optimizer=Bogus': Optimizer 'Bogus' not found"),
        # a cfg= file sets any argument, pretrained= and model= too, past every check above
        (["--yolo-arg", "cfg=args.yaml"], "--yolo-arg 'cfg=args.yaml': the demo sets model, data"),
        # the ANN twin has no spikes: refused after the training, in two lines, leaving a folder behind
        (["--model", "spike-yolo-ann-n.yaml", "--spike-driven"], "--spike-driven needs a model with integer spiking"),
    ]
    for argv, message in cases:
        assert demo_cli.main(["--out", str(out), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not out.exists(), argv


@pytest.mark.parametrize("name", ["SGD", "sgd", "AdamW", "auto", "MuSGD", "RMSprop"])
def test_demo_takes_every_optimizer_the_trainer_knows(name):
    # the check asks the stock trainer's own build_optimizer, so it accepts what the trainer accepts (any case)
    demo.check_yolo_args([f"optimizer={name}"])


@pytest.mark.parametrize(
    "argv, ok",
    [
        (["--imgsz", "32", "--n-train", "18", "--batch", "16"], True),  # a last batch of 2: 2 values per channel
        (["--imgsz", "64", "--n-train", "1", "--batch", "1"], True),  # 2x2 at stride 32: 4 values per channel
        (["--imgsz", "32", "--n-train", "1", "--batch", "2"], False),  # the one batch holds 1 image
        # what the stock trainer reads from --yolo-arg (battery 12, M09: fraction=0.5 left 1 of 2 images)
        (["--imgsz", "32", "--n-train", "2", "--batch", "2", "--yolo-arg", "fraction=0.5"], False),
        (["--imgsz", "64", "--n-train", "17", "--batch", "16", "--yolo-arg", "multi_scale=0.5"], False),  # down to 32
        (["--imgsz", "32", "--n-train", "17", "--batch", "16", "--yolo-arg", "compile=True"], True),  # drops it
    ],
)
def test_demo_takes_the_batches_batchnorm_can_train_on(argv, ok):
    if ok:
        assert demo.parse_args(argv).imgsz == int(argv[1])
    else:
        with pytest.raises(demo.UsageError, match=r"with one image in the last training batch .* gives BatchNorm"):
            demo.parse_args(argv)


def test_the_demo_pins_cpu_kernels_unless_the_user_chose(monkeypatch):
    # torch and oneDNN choose kernels by the CPU's instruction set: the same demo trained 15.5 % mAP@50:95 on an
    # AVX-512 CPU and 14.6 % on an AVX2 one, and pinned to AVX2 the AVX-512 CPU repeated the AVX2 run's per-epoch
    # mAP@50 exactly (README). The demo's subprocesses get the pin on a CPU run of an AVX2/AVX-512 CPU; a value the
    # user set, a GPU run or another CPU leave the environment as it is.
    for key in demo.PINNED_KERNELS:
        monkeypatch.delenv(key, raising=False)
    x86 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    assert demo.pinned_kernels("cpu") == ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"} if x86 else {})
    assert demo.pinned_kernels("0") == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert demo.pinned_kernels("cpu") == {}
