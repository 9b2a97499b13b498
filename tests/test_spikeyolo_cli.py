"""SpikeYOLO's checkpoint converted by our CLI, then used by the stock Ultralytics CLI and our tools (slow).

Converted from the test data of SpikeYOLO (``tests/data/spikeyolo``), validated, predicted, scored by
``tools/eval_coco.py`` in integer and spike-driven mode, measured by ``tools/energy.py``, and fine-tuned with IBRA-LIF
by the stock ``yolo train ... pretrained=``.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CFG, ROOT, run

from ibra_yolo.data import SHAPES

pytestmark = pytest.mark.slow

TINY = ROOT / "tests" / "data" / "spikeyolo" / "spikeyolo-tiny.pt"
YOLO_BIN = shutil.which("yolo", path=str(Path(sys.executable).parent)) or shutil.which("yolo")
COMMON = ["imgsz=64", "batch=8", "workers=0", "device=cpu", "plots=False", "exist_ok=True"]


@pytest.fixture(scope="module")
def data80(shapes_data, tmp_path_factory):
    """The demo data with 80 class names (its 3 shapes, then 77 unused), the class count of the COCO checkpoint.

    Copied without its COCO annotation file (3 categories), which tools/eval_coco.py then builds from the labels.
    """
    root = tmp_path_factory.mktemp("data80") / "data"
    shutil.copytree(shapes_data.parent, root, ignore=shutil.ignore_patterns("annotations", "*.cache"))
    names = dict(enumerate([*SHAPES, *(f"unused{i}" for i in range(len(SHAPES), 80))]))
    d = {"path": str(root), "train": "images/train", "val": "images/val", "names": names}
    (root / "data.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return root / "data.yaml"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``python -m ibra_yolo convert-spikeyolo`` in a fresh process: SpikeYOLO's I-LIF, as trained."""
    dst = tmp_path_factory.mktemp("converted") / "tiny-ilif.pt"
    out = run([sys.executable, "-m", "ibra_yolo", "convert-spikeyolo", str(TINY), str(dst)]).stdout
    assert "755/755 tensors loaded" in out and f"wrote {dst}" in out
    return dst


def test_stock_val_and_predict(converted, data80, tmp_path):
    out = run([YOLO_BIN, "val", f"model={converted}", f"data={data80}", f"project={tmp_path}", "name=val", *COMMON])
    assert "all" in out.stdout and "mAP50" in out.stdout
    images = data80.parent / "images" / "val"
    run([YOLO_BIN, "predict", f"model={converted}", f"source={images}", "imgsz=64", "device=cpu",
         f"project={tmp_path}", "name=predict", "exist_ok=True"])  # fmt: skip
    assert len(list((tmp_path / "predict").glob("*.jpg"))) == len(list(images.glob("*.png"))) == 16


@pytest.mark.parametrize("mode", ["integer", "spike-driven"])
def test_eval_coco_integer_and_spike_driven(converted, data80, tmp_path, python, mode):
    # The random weights score at most ~4e-4 (see test_spikeyolo.py), so --conf 1e-4 keeps detections to score
    extra = ["--spike-driven", "--no-energy"] if mode == "spike-driven" else []
    run([python, "tools/eval_coco.py", "--weights", str(converted), "--data", str(data80), "--imgsz", "64",
         "--conf", "1e-4", "--device", "cpu", "--project", str(tmp_path), "--name", mode, *extra],
        cwd=ROOT)  # fmt: skip
    r = json.loads((tmp_path / mode / "coco_eval.json").read_text())
    e = r["execution"]
    assert e["mode"] == mode and e["spike_fed_conv_calls"] > 0 and e["non_binary_plane_convolutions"] == 0
    assert (e["binary_plane_convolutions"] > 0) == (mode == "spike-driven")  # I-LIF codes sent as unary {0,1} planes
    assert r["annotations_source"] == "built from YOLO labels" and r["images"] == 16 and r["detections"] > 0
    assert r["categories"]["how"] == "by order"  # the checkpoint's names are placeholders '0'..'79' (no dataset)
    if mode == "integer":
        assert r["energy"]["images"] == 16 and r["energy"]["energy_mJ"] > 0


def test_energy_tool(converted, data80, tmp_path, python):
    out = tmp_path / "energy"
    run([python, "tools/energy.py", "--weights", str(converted), "--source", str(data80.parent / "images" / "val"),
         "--imgsz", "64", "--max-images", "4", "--out", str(out)], cwd=ROOT)  # fmt: skip
    report = json.loads((out / "energy.json").read_text())
    assert report["meta"]["images"] == 4 and report["summary"]["energy_mJ"] > 0


def test_fine_tune_with_ibra_lif_from_the_converted_weights(converted, data80, tmp_path):
    # Our IBRA-LIF YAML at the checkpoint's scale (SpikeYOLO's n row with width 0.125; p5_ratio n = 1 as its row 25),
    # trained one epoch by the stock CLI from the converted I-LIF weights: every tensor transfers, then it validates.
    d = yaml.safe_load((CFG / "spike-yolo-ibra.yaml").read_text())
    d["scales"], d["scale"] = {"n": [0.33, 0.125, 1024]}, "n"
    model_yaml = tmp_path / "spike-yolo-ibra-tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(d, sort_keys=False))
    p = run([YOLO_BIN, "train", f"model={model_yaml}", f"pretrained={converted}", f"data={data80}", "epochs=1",
             f"project={tmp_path}", "name=ft", *COMMON])  # fmt: skip
    assert "Transferred 755/755 items from pretrained weights" in p.stdout + p.stderr
    best = tmp_path / "ft" / "weights" / "best.pt"
    out = run([YOLO_BIN, "val", f"model={best}", f"data={data80}", f"project={tmp_path}", "name=val", *COMMON]).stdout
    assert "all" in out and "mAP50" in out
    code = "import sys; from ultralytics import YOLO; print(YOLO(sys.argv[1]).model.yaml['neuron']['kind'])"
    assert run([sys.executable, "-c", code, str(best)]).stdout.split()[-1] == "IBRALIF"
