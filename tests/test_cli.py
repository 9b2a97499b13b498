"""End-to-end through the stock Ultralytics ``yolo`` CLI and fresh processes (slow; CI runs them with -m slow)."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run

pytestmark = pytest.mark.slow

YOLO_BIN = shutil.which("yolo", path=str(Path(sys.executable).parent)) or shutil.which("yolo")
COMMON = ["imgsz=64", "batch=8", "workers=0", "device=cpu", "plots=False", "exist_ok=True"]


def yolo(*args, cwd=None, **kw):
    return run([YOLO_BIN, *args], cwd=cwd, **kw)


@pytest.fixture(scope="module")
def trained(shapes_data, tmp_path_factory):
    """One epoch of IBRA-LIF (n scale) trained by the stock CLI; returns (run dir, best.pt)."""
    project = tmp_path_factory.mktemp("runs")
    yolo(
        "train",
        "model=spike-yolo-ibra-n.yaml",
        f"data={shapes_data}",
        "epochs=1",
        f"project={project}",
        "name=train",
        *COMMON,
    )
    best = project / "train" / "weights" / "best.pt"
    assert best.is_file() and (project / "train" / "weights" / "last.pt").is_file()
    return project, best


def test_val_predict_export(trained, shapes_data):
    project, best = trained
    out = yolo("val", f"model={best}", f"data={shapes_data}", f"project={project}", "name=val", *COMMON).stdout
    assert "all" in out and "mAP50" in out
    yolo(
        "predict",
        f"model={best}",
        f"source={shapes_data.parent / 'images' / 'val'}",
        "imgsz=64",
        "device=cpu",
        f"project={project}",
        "name=predict",
        "exist_ok=True",
        "save_txt=True",
    )
    assert len(list((project / "predict").glob("0*.jpg"))) == 16  # one annotated image per input
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".torchscript")):
        yolo("export", f"model={best}", f"format={fmt}", "imgsz=64")
        assert best.with_suffix(suffix).is_file()
    # the exported files run through the stock predictor too
    yolo(
        "predict",
        f"model={best.with_suffix('.onnx')}",
        f"source={shapes_data.parent / 'images' / 'val'}",
        "imgsz=64",
        "device=cpu",
        f"project={project}",
        "name=predict_onnx",
        "exist_ok=True",
    )
    assert len(list((project / "predict_onnx").glob("0*.jpg"))) == 16


def test_onnx_matches_torch(trained):
    # onnxruntime vs torch on the same checkpoint, float32. Scores agree to ~1e-5. Boxes agree to ~1e-4 px except
    # where a neuron input sits within float32 rounding of a .5 edge and the two runtimes round its code differently
    # (one level, 0.01): measured up to 0.3 px at 128 px. Tolerances: scores 1e-4, boxes 1 px.
    import onnxruntime as ort
    from ultralytics import YOLO

    _, best = trained
    onnx_file = best.with_suffix(".onnx")
    if not onnx_file.exists():
        yolo("export", f"model={best}", "format=onnx", "imgsz=64")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    model = YOLO(best).model.float().eval()
    for seed in range(3):
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
        (o,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            t = model(x)[0].numpy()
        assert o.shape == t.shape
        assert np.abs(o[:, 4:] - t[:, 4:]).max() <= 1e-4
        assert np.abs(o[:, :4] - t[:, :4]).max() <= 1.0


def test_checkpoint_in_fresh_process(trained, python, tmp_path):
    # A fresh interpreter that imports only Ultralytics: the .pth autoload provides the plugin classes.
    _, best = trained
    code = (
        "import sys; from ultralytics import YOLO; from ultralytics.utils import ASSETS;"
        "m = YOLO(sys.argv[1]); r = m(ASSETS / 'bus.jpg', imgsz=64, verbose=False);"
        "print(m.task, m.model.yaml['neuron']['kind'], m.model.yaml['scale'], type(r[0].boxes).__name__)"
    )
    out = run([python, "-c", code, str(best)], cwd=tmp_path).stdout.strip().splitlines()[-1]
    assert out.split() == ["detect", "IBRALIF", "n", "Boxes"]


def test_resume_after_interrupt(shapes_data, tmp_path):
    # Start 3 epochs, kill the trainer once the first epoch's last.pt exists, then resume with the stock flag.
    args = [
        YOLO_BIN,
        "train",
        "model=spike-yolo-ilif-n.yaml",
        f"data={shapes_data}",
        "epochs=3",
        f"project={tmp_path}",
        "name=r",
        *COMMON,
    ]
    last = tmp_path / "r" / "weights" / "last.pt"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)  # let the atomic checkpoint write finish
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch_before = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert epoch_before < 2, "the run finished before it could be interrupted"
    out = yolo("train", "resume", f"model={last}")
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == -1  # the stock trainer marks a finished run's final checkpoint with epoch -1
    assert "Resuming training" in out.stdout + out.stderr
    assert (tmp_path / "r" / "weights" / "best.pt").is_file()


def test_ddp_two_processes(python, tmp_path):
    out = run(
        [
            python,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29531",
            str(ROOT / "tests" / "ddp_step.py"),
            "spike-yolo-ibra-n.yaml",
        ],
        cwd=tmp_path,
    ).stdout
    assert "DDP OK: world=2" in out and "max_rank_diff=0.0" in out


def test_non_editable_install_finds_yamls_by_name(python, tmp_path):
    # `pip install .` (a wheel, not editable) into a venv that shares this environment's torch/ultralytics: the YAMLs
    # ship inside the package, so a bare model name resolves from any folder, the .pth autoload is installed, and the
    # `ibra-yolo` console script runs the package's commands (nothing of tools/ is needed).
    venv = tmp_path / "venv"
    run([python, "-m", "venv", "--system-site-packages", str(venv)])
    vpy, script = venv / "bin" / "python", venv / "bin" / "ibra-yolo"
    env = {"PYTHONPATH": ""}  # the installed copy, not a checkout on the path
    run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)], timeout=600, env=env)
    code = (
        "import ibra_yolo; from ultralytics import YOLO; m = YOLO('spike-yolo-ilif-s.yaml');"
        "print(ibra_yolo.__file__.startswith(sys.prefix), m.model.yaml['scale'], m.model.yaml['neuron']['kind'])"
    )
    out = run([str(vpy), "-c", "import sys;" + code], cwd=tmp_path, env=env).stdout.strip().splitlines()[-1]
    assert out.split() == ["True", "s", "ILIF"]
    models = run([str(script), "models"], cwd=tmp_path, env=env).stdout
    site_cfg = run([str(vpy), "-c", "import ibra_yolo.plugin as p; print(p.cfg_dir())"], cwd=tmp_path, env=env)
    assert site_cfg.stdout.strip().endswith("site-packages/ibra_yolo/cfg")
    assert f"model YAMLs and recipes: {site_cfg.stdout.strip()}" in models and "  spike-yolo-ilif-s.yaml" in models
    help_text = run([str(script), "eval", "--help"], cwd=tmp_path, env=env).stdout
    assert help_text.startswith("usage: ibra-yolo eval ") and "--spike-driven" in help_text
    p = run([str(script), "energy", "--weights", "x.pt"], cwd=tmp_path, env=env, check=False)
    assert (p.returncode, p.stderr) == (2, "error: the following arguments are required: --source (see --help)\n")
