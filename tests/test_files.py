"""Output files: every path checked before any work, atomic no-clobber writes, file-system errors in one line."""

import json
import os
import re

import cv2
import numpy as np
import pytest
import torch
from test_eval_coco import GT, PRED

from ibra_yolo.cli import energy as energy_cli
from ibra_yolo.cli import eval as eval_cli
from ibra_yolo.cli.convert_spikeyolo import main as convert_spikeyolo_main
from ibra_yolo.cli.parser import ArgumentParser, run_command
from ibra_yolo.errors import IbraYoloError, OutputExistsError
from ibra_yolo.files import check_output, check_outputs, write_atomic, write_json
from ibra_yolo.spike_mode import convert_checkpoint


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_check_output_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(IbraYoloError, match=f"^cannot write {tmp_path}/file/sub/o.json: {tmp_path}/file is a file, "):
        check_output(tmp_path / "file" / "sub" / "o.json")
    with pytest.raises(IbraYoloError, match=f"^{tmp_path} is a folder: --out must name a file$"):
        check_output(tmp_path)
    with pytest.raises(OutputExistsError, match=f"^{tmp_path}/file exists: choose another --out or pass --overwrite$"):
        check_output(tmp_path / "file")
    assert check_output(tmp_path / "file", overwrite=True) == tmp_path / "file"
    assert check_output(tmp_path / "new" / "deeper" / "o.json") == tmp_path / "new" / "deeper" / "o.json"  # created
    (tmp_path / "b").write_text("y")
    with pytest.raises(OutputExistsError, match=f"^{tmp_path}/file, {tmp_path}/b exist: choose another --name "):
        check_outputs([tmp_path / "file", tmp_path / "a", tmp_path / "b"], flag="--name")
    # a device or FIFO at the output path: --overwrite replaced /dev/full itself with a regular file (as root)
    import stat

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(
        IbraYoloError, match=f"^{tmp_path}/fifo is not a regular file \\(a device or FIFO\\): --out must"
    ):
        check_output(tmp_path / "fifo", overwrite=True)
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)  # still the FIFO
    # a symlink to a missing file: refused as existing only by the final move, after the work (battery 12, D03)
    (tmp_path / "dangling.pt").symlink_to(tmp_path / "missing" / "x.pt")
    with pytest.raises(OutputExistsError, match=f"^{tmp_path}/dangling.pt exists: choose another --out"):
        check_output(tmp_path / "dangling.pt")
    with pytest.raises(OutputExistsError, match=f"^{tmp_path}/dangling.pt exist"):
        check_outputs([tmp_path / "dangling.pt"])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_permission(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(IbraYoloError, match=f"^cannot write {ro}/o.json: permission denied: cannot write in {ro}$"):
        check_output(ro / "o.json")


def test_write_atomic_never_clobbers(tmp_path):
    dst = tmp_path / "o.json"

    def racing_writer(tmp):  # another program creates dst while we write
        tmp.write_text("ours")
        dst.write_text("theirs")

    with pytest.raises(OutputExistsError, match="o.json exists"):
        write_atomic(dst, racing_writer)
    assert dst.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json"]  # our temporary file is gone

    def failing_writer(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "p.json", failing_writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json"]  # nothing half-written, no temporary left


def test_write_atomic_leaves_users_tmp_files(tmp_path):
    # files named like the temporary files of a naive writer belong to the user
    for name in ("o.json.tmp", ".o.json.tmp"):
        (tmp_path / name).write_text("mine")
    write_json(tmp_path / "o.json", {"a": 1})
    assert json.loads((tmp_path / "o.json").read_text()) == {"a": 1}
    assert all((tmp_path / n).read_text() == "mine" for n in ("o.json.tmp", ".o.json.tmp"))
    assert len(list(tmp_path.iterdir())) == 3


def test_write_atomic_file_system_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(IbraYoloError, match="is a file, not a folder"):
        write_json(tmp_path / "file" / "o.json", {})


def test_run_command_os_error_is_one_line(capsys):
    def body(args):
        raise PermissionError(13, "Permission denied", "/data/x.json")

    assert run_command(ArgumentParser(prog="t"), body, []) == 2
    assert capsys.readouterr().err == "error: Permission denied: /data/x.json\n"


def test_ctrl_c_in_a_command_is_one_line(tmp_path):
    # Ctrl-C during `ibra-yolo energy`, `eval` or `deploy` printed the traceback of wherever torch was (battery 18,
    # N-int, X-int): every command now says one line and exits 130, the shell's status for SIGINT. Checked on a real
    # process: SIGINT while `ibra-yolo models` is made to wait inside its body.
    import signal
    import subprocess
    import sys

    code = (
        "import signal, time, ibra_yolo.plugin as p, ibra_yolo.cli.models as m\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # a background job (nohup, CI) inherits SIG_IGN
        "p.available_models = lambda *a, **k: (print('ready', flush=True), time.sleep(60))\n"
        "raise SystemExit(m.main([]))\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (130, "error: interrupted (Ctrl-C)\n")


def test_eval_checks_run_folder_before_work(tmp_path, capsys):
    # a second run into the same --project/--name used to overwrite predictions.json first and refuse only at the
    # end; now the run folder's files are checked before the weights are even looked at (an empty file here)
    run_dir = tmp_path / "v"
    run_dir.mkdir()
    (run_dir / "predictions.json").write_text("[]")
    (tmp_path / "best.pt").write_bytes(b"")
    argv = ["--weights", tmp_path / "best.pt", "--data", tmp_path / "no.yaml", "--project", tmp_path, "--name", "v"]
    assert eval_cli.main([str(a) for a in argv]) == 2
    msg = f"error: {run_dir}/predictions.json exists: choose another --project/--name or pass --overwrite\n"
    assert capsys.readouterr().err == msg
    assert (run_dir / "predictions.json").read_text() == "[]"
    (run_dir / "predictions.json").unlink()
    (run_dir / "coco_eval.json").write_text("{}")
    assert eval_cli.main([str(a) for a in argv]) == 2
    assert _one_line(capsys) == f"error: {run_dir}/coco_eval.json exists: choose another --out or pass --overwrite\n"


def test_eval_file_system_errors(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "pred.json").write_text(json.dumps(PRED))
    (tmp_path / "dir.json").mkdir()
    assert eval_cli.main(["--pred", str(tmp_path / "pred.json"), "--ann", str(tmp_path / "dir.json")]) == 2
    assert _one_line(capsys) == f"error: annotation file {tmp_path}/dir.json is a folder: name a JSON file\n"
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "scores.json"
    argv = ["--pred", tmp_path / "pred.json", "--ann", tmp_path / "gt.json", "--out", out]
    assert eval_cli.main([str(a) for a in argv]) == 2
    assert _one_line(capsys) == f"error: cannot write {out}: {tmp_path}/file is a file, not a folder\n"


def test_eval_data_that_is_a_folder_names_the_yaml(tmp_path, capsys):
    # --data naming the dataset folder was read by Ultralytics as an image source ("No images or videos found ...
    # Supported formats are ...": battery 18, M04); it is a usage error naming the YAML found in the folder
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "data.yaml").write_text("names: [a]\n")
    (tmp_path / "best.pt").write_bytes(b"")
    assert eval_cli.main(["--weights", str(tmp_path / "best.pt"), "--data", str(tmp_path / "ds")]) == 2
    says = f"error: --data {tmp_path}/ds is a folder: name the dataset YAML (path, train/val and names), e.g. --data "
    assert _one_line(capsys) == says + f"{tmp_path}/ds/data.yaml (see --help)\n"


def test_energy_and_convert_outputs_checked_first(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    # energy: its --out folder is checked before the weights (which do not exist) are looked at
    argv = ["--weights", tmp_path / "no.pt", "--source", tmp_path, "--out", tmp_path / "file" / "e"]
    assert energy_cli.main([str(a) for a in argv]) == 2
    assert (
        _one_line(capsys)
        == f"error: cannot write {tmp_path}/file/e/energy.json: {tmp_path}/file is a file, not a folder\n"
    )
    # convert-spikeyolo: the output before the (missing) source
    assert convert_spikeyolo_main([str(tmp_path / "no.pt"), str(tmp_path / "file" / "o.pt")]) == 2
    assert _one_line(capsys) == f"error: cannot write {tmp_path}/file/o.pt: {tmp_path}/file is a file, not a folder\n"
    # convert_checkpoint likewise, before the source is read
    torch.save({"hello": 1}, tmp_path / "h.pt")
    with pytest.raises(IbraYoloError, match="is a file, not a folder"):
        convert_checkpoint(tmp_path / "h.pt", tmp_path / "file" / "o.pt")


def test_energy_never_writes_over_its_images(tmp_path, capsys):
    # an image named energy.png in the --out folder (or given as --source itself) was replaced by the figure with
    # --overwrite; the measured images are inputs, refused as outputs even then, and left unchanged
    import cv2
    import numpy as np

    folder = tmp_path / "out"
    folder.mkdir()
    image = folder / "energy.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 127, np.uint8))
    before = image.read_bytes()
    for source in (image, folder):
        argv = ["--weights", "spike-yolo-ibra-n.yaml", "--source", str(source), "--imgsz", "32", "--out", str(folder)]
        assert energy_cli.main([*argv, "--overwrite"]) == 2
        assert (
            _one_line(capsys)
            == f"error: --out folder {image} is an input of this command: choose another --out folder\n"
        )
    assert image.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["energy.png"]


def test_eval_never_writes_over_its_inputs(tmp_path, capsys):
    # `--out` naming the predictions or the annotations would replace an input with the results, even with
    # --overwrite: refused before any work, the inputs unchanged.
    pred, ann = tmp_path / "pred.json", tmp_path / "ann.json"
    pred.write_text(json.dumps(PRED))
    ann.write_text(json.dumps(GT))
    before = (pred.read_bytes(), ann.read_bytes())
    for out in (pred, ann):
        argv = ["--pred", str(pred), "--ann", str(ann), "--out", str(out), "--overwrite"]
        assert eval_cli.main(argv) == 2
        assert f"--out {out} is an input of this command" in _one_line(capsys)
    assert (pred.read_bytes(), ann.read_bytes()) == before
    # an --out ending in a slash names a folder: it was written as a file of that name
    argv = ["--pred", str(pred), "--ann", str(ann), "--out", f"{tmp_path}/results/"]
    assert eval_cli.main(argv) == 2
    assert (
        _one_line(capsys)
        == f"error: --out {tmp_path}/results/ ends in a slash, so it names a folder: --out must name a file\n"
    )
    assert not (tmp_path / "results").exists()


def test_eval_never_writes_over_the_dataset_it_reads(tmp_path, shapes_data, capsys):
    # model mode reads the annotation file it finds beside the dataset, the split's images and their labels: `--out`
    # naming the found annotation file with --overwrite replaced it with the results (battery 14, EW08). Each is
    # refused before any work, with --overwrite too, and the dataset is unchanged.
    root = shapes_data.parent
    image = sorted((root / "images" / "val").iterdir())[0]
    found, label = root / "annotations" / "instances_val.json", root / "labels" / "val" / f"{image.stem}.txt"
    before = {p: p.read_bytes() for p in (found, image, label)}
    argv = ["--weights", "spike-yolo-ibra-n.yaml", "--data", str(shapes_data), "--imgsz", "64", "--no-energy"]
    for out in before:
        assert eval_cli.main([*argv, "--project", str(tmp_path / "p"), "--out", str(out), "--overwrite"]) == 2
        assert _one_line(capsys) == f"error: --out {out} is an input of this command: choose another --out\n"
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "p").exists()


def test_a_hard_link_of_an_input_is_an_input(tmp_path):
    # two names of one file: the resolved paths differ, so only os.path.samefile sees that the output is the input
    src = tmp_path / "in.json"
    src.write_text("{}")
    os.link(src, tmp_path / "link.json")
    with pytest.raises(IbraYoloError, match=r"link\.json is an input of this command"):
        check_output(tmp_path / "link.json", overwrite=True, inputs=(src,))
    assert check_output(tmp_path / "new.json", inputs=(src,)) == tmp_path / "new.json"  # a new name is fine


@pytest.mark.parametrize("flag, value", [("--conf", "nan"), ("--conf", "2"), ("--iou", "-1"), ("--iou", "x")])
def test_eval_thresholds_are_checked_first(capsys, flag, value):
    # A threshold outside [0, 1] (NaN included) used to reach the validator after the model loaded: a traceback.
    assert eval_cli.main(["--pred", "p.json", "--ann", "a.json", flag, value]) == 2
    err = _one_line(capsys)
    assert f"argument {flag}: " in err and (
        f"{value} is invalid: it must be a number in [0, 1]" in err or "not a number" in err
    ), err


def test_eval_weights_may_be_a_model_name(tmp_path, shapes_data, capsys):
    # a model YAML name resolves without a file (as `yolo val model=...`): eval said it "does not exist"; now the name
    # goes to the loader, which names what is wrong with it (here, a scale the YAML does not have)
    argv = ["--weights", "spike-yolo-ibra-q.yaml", "--data", str(shapes_data), "--imgsz", "64"]
    assert eval_cli.main([*argv, "--project", str(tmp_path / "p")]) == 2
    assert "scale 'q' is not one of ['l', 'm', 'n', 's']" in _one_line(capsys)


def test_public_helpers_name_a_path_argument_that_is_no_path(tmp_path):
    # battery 13, H09: convert_spikeyolo(None, ...) was pathlib's "expected str, bytes or os.PathLike object, not
    # NoneType", which names no argument; every public helper taking a file names the argument (and refuses '', the
    # current folder). Nothing is written.
    from ibra_yolo import convert_spikeyolo, deploy_checkpoint, load_spikeyolo, make_shapes_dataset
    from ibra_yolo.checkpoints import load_checkpoint, load_yolo
    from ibra_yolo.energy import load_model
    from ibra_yolo.errors import PathError
    from ibra_yolo.unpickle import read_checkpoint

    out = tmp_path / "o.pt"
    calls = {
        "src": [
            lambda v: convert_spikeyolo(v, out),
            lambda v: deploy_checkpoint(v, out),
            lambda v: convert_checkpoint(v, out),
        ],
        "dst": [lambda v: convert_spikeyolo(tmp_path / "s.pt", v), lambda v: deploy_checkpoint(tmp_path / "s.pt", v)],
        "path": [load_spikeyolo, load_checkpoint, load_yolo, read_checkpoint],
        "root": [make_shapes_dataset],
        "weights": [load_model],
    }
    for name, functions in calls.items():
        for f in functions:
            for value in (None, 3, b"a.pt"):
                with pytest.raises(
                    TypeError, match=rf"^{name}={re.escape(repr(value))} is invalid: a file path \(str or Path\)$"
                ):
                    f(value)
            with pytest.raises(PathError, match=rf"^{name}='' is invalid: an empty path names the current folder"):
                f("")
            with pytest.raises(PathError, match=rf"^{name}='a\\x00b\.pt' is invalid: a path cannot hold a NUL"):
                f("a\x00b.pt")  # the OS's "embedded null byte" named no argument (battery 15, AD04)
    assert list(tmp_path.iterdir()) == []


def test_write_json_refuses_nan(tmp_path):
    # json.dumps writes NaN and Infinity, which are not JSON: other readers refuse the file (battery 15, AF02)
    from ibra_yolo.errors import NonFiniteError

    for value in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteError, match=r"o\.json: the data holds NaN or infinity, which JSON cannot hold"):
            write_json(tmp_path / "o.json", {"metrics": [1.0, value]})
    assert list(tmp_path.iterdir()) == []
    assert json.loads(write_json(tmp_path / "o.json", {"a": 1.5}).read_text()) == {"a": 1.5}


def test_write_json_refuses_keys_json_writes_as_one_name(tmp_path):
    # JSON names are strings: {1: 2, "1": 3} was written as {"1": 2, "1": 3}, which our own readers then refuse and
    # others read as {"1": 3} (battery 16, AF08). Found at any depth; distinct names (1 and 2) are written as before.
    from ibra_yolo.errors import IbraYoloError

    for obj, keys, name in (
        ({1: 2, "1": 3}, "1 and '1'", "1"),
        ({"a": [{"true": 1, True: 2}]}, "'true' and True", "true"),
        ({None: 1, "null": 2}, "None and 'null'", "null"),
        ({"x": {2.5: 0, "2.5": 1}}, "2.5 and '2.5'", "2.5"),
    ):
        says = rf"o\.json: an object has the keys {re.escape(keys)}, which JSON writes as the same name \"{name}\""
        with pytest.raises(IbraYoloError, match=says):
            write_json(tmp_path / "o.json", obj)
    with pytest.raises(IbraYoloError, match=r"o\.json: the data holds an integer of more than 4300 digits"):
        write_json(tmp_path / "o.json", {"id": 10**5000})  # json.dumps raised Python's raw int-limit ValueError
    assert list(tmp_path.iterdir()) == []
    assert json.loads(write_json(tmp_path / "o.json", {1: 2, 2: 3}).read_text()) == {"1": 2, "2": 3}


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, where nothing can be created")
def test_an_output_folder_where_nothing_can_be_created_is_refused_before_work(tmp_path, monkeypatch, capsys):
    # battery 26, D24/D35/D36: an output under /proc (or a read-only mount) passed the early check (root passes every
    # permission check), so energy, eval and deploy did all their work and failed only when writing. The check now
    # creates and removes a file (or, for a folder still to be made, a folder) of its own there, before any work.
    import uuid

    from ibra_yolo import checkpoints, coco, energy
    from ibra_yolo.cli.demo import main as demo_main
    from ibra_yolo.cli.deploy import main as deploy_main
    from ibra_yolo.files import check_folder

    name = f"/proc/ibra-yolo-test-{uuid.uuid4().hex[:8]}"  # no such entry: /proc makes none for us either
    with pytest.raises(IbraYoloError, match=f"^cannot write {name}.json: cannot create a file in /proc: No such file"):
        check_output(f"{name}.json")
    with pytest.raises(IbraYoloError, match=f"^cannot write {name}/e.json: cannot create a folder in /proc: No such "):
        check_output(f"{name}/e.json")
    with pytest.raises(IbraYoloError, match=f"^--out {name}: cannot create a folder in /proc: No such file"):
        check_folder(name)
    # the probe leaves nothing behind in a folder that can be written, and the output is still written
    (tmp_path / "keep.txt").write_text("x")
    check_output(tmp_path / "new" / "o.json")
    check_output(tmp_path / "o.json")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    # every command refuses it before its work: the work functions are replaced by ones that record a call
    work = []
    for module, attr in ((energy, "measure"), (energy, "load_model"), (coco, "score"), (coco, "load_annotations"),
                         (coco, "predict_split"), (checkpoints, "load_checkpoint")):  # fmt: skip
        monkeypatch.setattr(module, attr, lambda *a, _n=attr, **k: work.append(_n))
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "pred.json").write_text(json.dumps(PRED))
    argv = ["--weights", tmp_path / "w.pt", "--source", tmp_path / "img", "--out", name]
    assert energy_cli.main([str(a) for a in argv]) == 2  # ibra-yolo energy, tools/energy.py
    assert _one_line(capsys) == f"error: cannot write {name}/energy.json: cannot create a folder in /proc: No such " \
                                "file or directory\n"  # fmt: skip
    argv = ["--pred", tmp_path / "pred.json", "--ann", tmp_path / "gt.json", "--out", f"{name}.json"]
    assert eval_cli.main([str(a) for a in argv]) == 2  # ibra-yolo eval, tools/eval_coco.py
    assert _one_line(capsys).startswith(f"error: cannot write {name}.json: cannot create a file in /proc: ")
    argv = ["--weights", tmp_path / "w.pt", "--data", tmp_path / "no.yaml", "--project", name]
    assert eval_cli.main([str(a) for a in argv]) == 2  # model mode: the validator's run folder
    assert _one_line(capsys).startswith(f"error: cannot write {name}/val/coco_eval.json: cannot create a folder in")
    assert deploy_main([str(tmp_path / "w.pt"), f"{name}.pt"]) == 2
    assert _one_line(capsys).startswith(f"error: cannot write {name}.pt: cannot create a file in /proc: ")
    assert convert_spikeyolo_main([str(tmp_path / "w.pt"), f"{name}.pt"]) == 2
    assert _one_line(capsys).startswith(f"error: cannot write {name}.pt: cannot create a file in /proc: ")
    with pytest.raises(IbraYoloError, match=f"^cannot write {name}.pt: cannot create a file in /proc: "):
        convert_checkpoint(tmp_path / "w.pt", f"{name}.pt")
    assert demo_main(["--out", name, "--epochs", "1"]) == 2  # ibra-yolo demo, tools/demo.py
    assert _one_line(capsys) == f"error: --out {name}: cannot create a folder in /proc: No such file or directory\n"
    assert work == []
