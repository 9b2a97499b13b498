"""``torch.compile``: the spiking model traces as one graph (no graph breaks); ``compile=True`` trains and validates.

A graph break splits the compiled model into pieces that run eagerly in between (and on a GPU usually means a host
sync); ``torch._dynamo.explain`` counts them without compiling kernels, so the fast tests stay minutes, not hours.
"""

import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run, tiny_model_yaml

from ibra_yolo.nn.head import grid_anchors


@pytest.fixture(scope="module")
def n_model():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("spike-yolo-ibra-n.yaml", nc=80, verbose=False)


def graph_breaks(model, x) -> tuple[int, int, list[str]]:
    """``(graphs, breaks, first reasons)`` of ``model(x)`` under ``torch._dynamo.explain``."""
    torch._dynamo.reset()
    e = torch._dynamo.explain(model)(x)
    return e.graph_count, e.graph_break_count, [r.reason.splitlines()[0] for r in e.break_reasons[:3]]


def test_training_forward_is_one_graph(n_model):
    # The trainer compiles the model and calls it on images (the loss runs outside): one graph, no break.
    assert graph_breaks(n_model.train(), torch.rand(2, 3, 64, 64)) == (1, 0, [])


def test_integer_eval_is_one_graph(n_model):
    # Eval adds box decoding in the head; its anchors come from tensor ops (grid_anchors), not stride[i].item().
    assert graph_breaks(n_model.eval(), torch.rand(1, 3, 64, 64)) == (1, 0, [])


def test_spike_driven_eval_is_one_graph(n_model):
    # While a graph is recorded every plane runs (a static count), and a NaN membrane is handled on the device
    # (NeuronConv._forward_spikes): no .item(), so no break in any of the spike-fed layers.
    from ibra_yolo import spike_driven

    with spike_driven(n_model.eval()):
        assert graph_breaks(n_model, torch.rand(1, 3, 64, 64)) == (1, 0, [])


def test_grid_anchors_match_ultralytics():
    # Same points and strides as Ultralytics' make_anchors, for non-square maps of three levels: cell centres
    # (x + 0.5, y + 0.5) row by row, and each level's stride repeated H * W times.
    from ultralytics.utils.tal import make_anchors

    feats = [torch.zeros(2, 3, 8, 6), torch.zeros(2, 3, 4, 3), torch.zeros(2, 3, 2, 2)]
    strides = torch.tensor([8.0, 16.0, 32.0])
    points, column = grid_anchors(feats, strides)
    ref_points, ref_column = make_anchors(feats, strides, 0.5)
    assert torch.equal(points, ref_points) and torch.equal(column, ref_column)
    assert points.shape == (48 + 12 + 4, 2) and points[:2].tolist() == [[0.5, 0.5], [1.5, 0.5]]
    assert column[:48].unique().tolist() == [8.0] and column[-4:].unique().tolist() == [32.0]


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_compiled_train_and_val_cli(shapes_data, tmp_path):
    # The tiny model (every block type; compiling the n model takes tens of minutes on 2 CPU cores): one epoch of
    # `yolo train ... compile=True`, then `yolo val ... compile=True` on its best.pt.
    model = tmp_path / "spike-yolo-tiny.yaml"
    model.write_text(yaml.safe_dump(tiny_model_yaml("ibra"), sort_keys=False))
    yolo = shutil.which("yolo", path=str(Path(sys.executable).parent)) or "yolo"
    common = ["imgsz=64", "batch=8", "workers=0", "device=cpu", "plots=False", "exist_ok=True", "compile=True"]
    out = run([yolo, "train", f"model={model}", f"data={shapes_data}", "epochs=1", f"project={tmp_path}", "name=t",
               *common], timeout=3000)  # fmt: skip
    log = out.stdout + out.stderr
    assert "compile complete" in log and "continuing uncompiled" not in log
    best = tmp_path / "t" / "weights" / "best.pt"
    assert best.is_file()
    rows = (tmp_path / "t" / "results.csv").read_text().splitlines()
    assert len(rows) == 2  # header + one epoch
    header, values = rows[0].split(","), [float(v) for v in rows[1].split(",")]
    losses = [v for k, v in zip(header, values) if k.strip().startswith("train/")]
    assert len(losses) == 3 and all(0 < v < float("inf") for v in losses)  # box, cls, dfl
    out = run([yolo, "val", f"model={best}", f"data={shapes_data}", f"project={tmp_path}", "name=v", *common],
              timeout=3000)  # fmt: skip
    log = out.stdout + out.stderr
    assert "compile complete" in log and "continuing uncompiled" not in log
    assert " all " in log and "mAP50" in log
