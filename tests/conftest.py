"""Shared test set-up: Ultralytics runs offline with a private settings folder; small helpers and fixtures."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Before anything imports Ultralytics: no downloads, no auto-installs, settings in a writable private folder.
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"
if not os.environ.get("YOLO_CONFIG_DIR"):  # a folder of our own, removed when the session ends (one was left per run)
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ibra_yolo_ycfg_")
    atexit.register(shutil.rmtree, os.environ["YOLO_CONFIG_DIR"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "cfg"


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BN layers and the class biases non-trivial values, so that an untrained model fires and detects.

    Fresh BN layers (mean 0, var 1, weight 1, bias 0) and Ultralytics' class prior (~1% objectness) would leave most
    neurons silent and every score below any threshold; random statistics exercise every code path.
    """
    g = torch.Generator().manual_seed(seed)

    def u(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                u(m.running_mean, -0.5, 0.5)
                u(m.running_var, 0.5, 2.0)
                u(m.weight, 0.5, 1.5)
                u(m.bias, -0.2, 0.5)
        head = model.model[-1] if hasattr(model, "model") else None
        for branch in getattr(head, "cv3", []):
            u(branch.pred.op.bias, -6.0, -1.0)
    return model


def model_dict(family: str = "ibra", **overrides) -> dict:
    """The model dict of ``cfg/spike-yolo-<family>.yaml`` with some keys replaced (e.g. ``scale="n", T=2``)."""
    d = yaml.safe_load((CFG / f"spike-yolo-{family}.yaml").read_text())
    d.update(overrides)
    return d


def detection_model(family: str = "ibra", T: int = 1, scale: str = "n"):
    """An untrained eval-mode ``DetectionModel`` of a shipped family at ``T`` timesteps (built by the plugin)."""
    from ultralytics.nn.tasks import DetectionModel

    d = model_dict(family, scale=scale, T=T, yaml_file=f"spike-yolo-{family}-{scale}.yaml")
    return DetectionModel(d, verbose=False).eval()


def yolo_model(family: str = "ibra", T: int = 1, seed: int = 0):
    """A ``YOLO`` object holding an n-scale model of ``family`` at ``T`` timesteps, with ``randomize_`` applied."""
    from ultralytics import YOLO

    y = YOLO(f"spike-yolo-{family}-n.yaml")
    y.model = randomize_(detection_model(family, T), seed).train()
    return y


def run(cmd, cwd=None, timeout=900, env=None, check=True):
    """Run a command, return the CompletedProcess; on failure show its output."""
    e = {**os.environ, **(env or {})}
    p = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nSTDOUT:\n{p.stdout[-4000:]}\nSTDERR:\n{p.stderr[-6000:]}")
    return p


# A model with every block type of the shipped YAMLs (fewer repeats and channels): compiles in minutes, not an hour.
TINY_MODEL = {
    "nc": 3,
    "T": 1,
    "neuron": {"kind": "IBRALIF", "D": 5.11, "N": 100, "beta": 0.25},
    "backbone": [
        [-1, 1, "TimeRepeat", []],
        [-1, 1, "Downsample", [16, 7, 4, 2, True]],
        [-1, 1, "AllConvBlock", [2]],
        [-1, 1, "Downsample", [32, 3, 2, 1]],
        [-1, 1, "ConvBlock", [2]],
        [-1, 1, "Downsample", [64, 3, 2, 1]],
        [-1, 1, "SPPF", [64, 5]],
    ],
    "head": [
        [-1, 1, "SConv", [32, 1]],
        [-1, 1, "Upsample", [2]],
        [[-1, 4], 1, "Concat", []],
        [-1, 1, "SConv", [32, 1]],
        [[10, 7], 1, "SpikeDetect", ["nc"]],
    ],
}


def tiny_model_yaml(family: str = "ibra") -> dict:
    """``TINY_MODEL`` with the neuron of a shipped family (ibra, ilif, iblif, ann)."""
    import yaml

    neuron = yaml.safe_load((CFG / f"spike-yolo-{family}.yaml").read_text())["neuron"]
    return {**TINY_MODEL, "neuron": neuron}


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """A tiny demo dataset (48 train / 16 val images at 64 px)."""
    from ibra_yolo.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_train=48, n_val=16, imgsz=64, seed=1)


@pytest.fixture
def python():
    return sys.executable
