"""What the plugin checks inside the stock pipeline (``YOLO(...).predict/val``, ``yolo val``) and our CLIs' one-line
promise for odd values: NaN predictions, devices that do not exist, file names with line breaks."""

import os
import re

import numpy as np
import pytest
import torch
from conftest import yolo_model

from ibra_yolo.errors import NonFiniteError

MESSAGE = r"^the model's raw predictions hold \d+ NaN or infinite value\(s\) of \d+: NMS would drop them"


def test_predict_refuses_a_nan_image():
    # a float image holding NaN gave 0 detections without a word (NMS drops NaN scores); the neurons pass NaN on, so
    # the raw predictions show it. 84 = 4 box + 80 class values per anchor, 3 strides at 64 px: 64 + 16 + 4 anchors.
    model = yolo_model("ibra")
    with pytest.raises(NonFiniteError, match=MESSAGE) as e:
        model.predict(np.full((64, 64, 3), np.nan, np.float32), imgsz=64, conf=0.001, verbose=False)
    assert str(e.value).startswith(f"the model's raw predictions hold {84 * 84} NaN or infinite value(s) of {84 * 84}")
    assert len(model.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, verbose=False)) == 1  # a valid image runs


def test_stock_val_refuses_nan_weights(tmp_path, shapes_data):
    # Ultralytics' loader does not check weights: a diverged checkpoint validated to mAP 0 silently. Our models are
    # checked when the stock loader reads them (ibra_yolo.model_state), naming the file and the tensor; a model in
    # memory is checked by the fold the stock validator runs first (the raw predictions are checked too, before NMS;
    # not during training, where the trainer handles NaN itself).
    from ultralytics import YOLO

    model = yolo_model("ibra")
    with torch.no_grad():
        next(p for p in model.model.parameters() if p.dim() == 4)[0, 0, 0, 0] = float("nan")
    model.save(tmp_path / "nan.pt")
    tensor = r"model\.1\.conv\.op\.weight holds 1 NaN or infinite value\(s\) of \d+: the weights are broken"
    with pytest.raises(NonFiniteError, match=rf"^{re.escape(str(tmp_path / 'nan.pt'))}: {tensor}"):
        YOLO(str(tmp_path / "nan.pt")).val(data=str(shapes_data), imgsz=64, batch=4, plots=False, project=str(tmp_path))
    with pytest.raises(NonFiniteError, match=rf"^DetectionModel: {tensor}"):
        model.val(data=str(shapes_data), imgsz=64, batch=4, plots=False, project=str(tmp_path))


def test_stock_models_are_not_checked():
    # the check is ours, for our models: a stock YOLOv8n with NaN weights behaves as without the plugin (no detections)
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    with torch.no_grad():
        next(model.model.parameters()).fill_(float("nan"))
    results = model.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, verbose=False)
    assert len(results[0].boxes) == 0


def test_stock_yolo_says_a_damaged_checkpoint_in_one_line(tmp_path, python):
    # an empty .pt was Ultralytics' chained EOFError -> TypeError traceback in `yolo predict`
    import subprocess
    from pathlib import Path

    (tmp_path / "zero.pt").write_bytes(b"")
    yolo = str(Path(python).with_name("yolo"))
    p = subprocess.run(
        [yolo, "predict", f"model={tmp_path / 'zero.pt'}", "source=x.jpg"], capture_output=True, text=True
    )
    expected = f"CheckpointError: cannot read checkpoint {tmp_path / 'zero.pt'}: it is empty\n"
    assert p.returncode == 1 and p.stderr.startswith(expected) and p.stderr.count("\n") == 1, p.stderr


def test_a_fifo_as_dataset_is_refused_without_reading(tmp_path, capsys):
    # --data naming a FIFO blocked in Ultralytics' dataset check forever
    import os

    from ibra_yolo.cli import eval as eval_cli

    os.mkfifo(tmp_path / "data.yaml")
    yolo_model("ibra").save(tmp_path / "m.pt")
    argv = [
        "--weights",
        tmp_path / "m.pt",
        "--data",
        tmp_path / "data.yaml",
        "--imgsz",
        64,
        "--project",
        tmp_path / "p",
    ]
    assert eval_cli.main([*map(str, argv), "--name", "v"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: dataset {tmp_path / 'data.yaml'} is not a regular file (a FIFO or a device): name a data YAML\n"
    )


def test_inf_bn_statistics_stop_the_stock_fuse():
    # an inf running_mean: Ultralytics' fuse() only warned and the model then predicted from it (finite, wrong boxes)
    from ibra_yolo.errors import NonFiniteError

    model = yolo_model("ibra")
    with torch.no_grad():
        model.model.model[3].bn.running_mean[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^cannot fold model\.3\.bn: channel 0 has .*running_mean inf"):
        model.model.fuse(verbose=False)


def test_eval_checks_the_device_before_work(tmp_path, shapes_data, capsys):
    # 'cpu,cpu' was Ultralytics' ValueError traceback after the model had loaded; now one line, nothing written
    from ibra_yolo.cli import eval as eval_cli

    yolo_model("ibra").save(tmp_path / "m.pt")
    argv = ["--weights", tmp_path / "m.pt", "--data", shapes_data, "--imgsz", 64, "--device", "cpu,cpu"]
    assert eval_cli.main([*map(str, argv), "--project", str(tmp_path / "p"), "--name", "v"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device='cpu,cpu' is not available: ") and err.count("\n") == 1, err
    assert not (tmp_path / "p").exists()


def test_a_line_break_in_a_file_name_stays_one_line(tmp_path, capsys):
    # our messages quote paths; a name with a line break split the promised one line in two
    from ibra_yolo.cli import eval as eval_cli
    from ibra_yolo.errors import IbraYoloError

    ann = tmp_path / "two\nlines.json"  # does not exist: the message names it
    argv = ["--ann", str(ann), "--pred", str(tmp_path / "p.json"), "--out", str(tmp_path / "o.json")]
    assert eval_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "two\\nlines.json" in err, err
    assert str(IbraYoloError("a\nb\rc")) == "a\\nb\\rc"


def test_stock_loading_names_what_a_file_holds_instead_of_a_model(tmp_path):
    # YOLO("x.pt") on a state_dict, a dict without a model or a TorchScript archive saved as .pt was Ultralytics'
    # TypeError traceback; with the plugin it is one CheckpointError line saying what the file holds
    from ultralytics import YOLO

    from ibra_yolo.errors import CheckpointError

    model = yolo_model("ibra").model
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.save({"a": torch.zeros(2), "b": 3}, tmp_path / "mixed.pt")
    torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)).save(str(tmp_path / "ts.pt"))
    n = len(model.state_dict())
    cases = {
        "sd.pt": f"holds a state_dict ({n} tensors by name), not an Ultralytics checkpoint: load it into a model",
        "mixed.pt": "is not an Ultralytics checkpoint: it holds no 'model' module ('a', 'b')",
        "ts.pt": "is a TorchScript archive, not an Ultralytics PyTorch checkpoint. Load the original .pt weights",
    }
    for name, says in cases.items():
        with pytest.raises(CheckpointError) as e:
            YOLO(str(tmp_path / name))
        assert str(e.value).startswith(f"{tmp_path / name} {says}"), str(e.value)


def test_weights_that_are_no_pt_file_are_named(tmp_path):
    # `pretrained=spike-yolo-ilif-n.yaml`: the stock suffix check's AssertionError was reported as a damaged checkpoint
    # ("rebuilding its objects failed (AssertionError: ... acceptable suffix is {'.pt'}, not .yaml)", battery 14 YT12)
    from ultralytics.nn.tasks import torch_safe_load

    from ibra_yolo.errors import CheckpointError

    says = r"must be a \.pt checkpoint \(Ultralytics loads no other suffix\)"
    with pytest.raises(CheckpointError, match=rf"^weights spike-yolo-ilif-n\.yaml {says}: a model YAML builds an "):
        torch_safe_load("spike-yolo-ilif-n.yaml")
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"^weights {re.escape(str(tmp_path / 'w.pth'))} {says}$"):
        torch_safe_load(str(tmp_path / "w.pth"))


def test_stock_loading_names_folders_and_foreign_modules(tmp_path, python):
    # a folder named x.pt was a 41-line IsADirectoryError traceback; {'model': nn.Linear} failed deep inside the
    # predictor; IBRA_YOLO_TRACEBACK=0 showed the traceback (any non-empty value turned it on)
    import subprocess
    from pathlib import Path

    from ultralytics import YOLO

    from ibra_yolo.errors import CheckpointError

    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match=rf"^cannot read checkpoint {tmp_path / 'dir.pt'}: Is a directory"):
        YOLO(str(tmp_path / "dir.pt"))
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match=r"linear\.pt holds a Linear, not an Ultralytics model"):
        YOLO(str(tmp_path / "linear.pt"))
    yolo = str(Path(python).with_name("yolo"))
    for value, traceback in (("0", False), ("false", False), ("1", True)):
        p = subprocess.run([yolo, "predict", f"model={tmp_path / 'linear.pt'}", "source=x.jpg"], capture_output=True,
                           text=True, env={**os.environ, "IBRA_YOLO_TRACEBACK": value})  # fmt: skip
        assert p.returncode == 1 and ("Traceback" in p.stderr) is traceback, (value, p.stderr)


def test_stock_loading_refuses_fifos_and_folder_yamls(tmp_path):
    # `yolo val model=<symlink to a FIFO>.pt` blocked forever in open(); a folder named x.yaml was an
    # IsADirectoryError traceback in `yolo train`
    from ultralytics import YOLO

    from ibra_yolo.errors import CheckpointError, ModelConfigError

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.pt").symlink_to(tmp_path / "fifo")
    with pytest.raises(CheckpointError, match=r"link\.pt is not a regular file \(a FIFO or a device\)"):
        YOLO(str(tmp_path / "link.pt"))
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ModelConfigError, match=r"dir\.yaml is a folder: a model YAML must be a file$"):
        YOLO(str(tmp_path / "dir.yaml"))
