"""ibra-yolo eval and ibra_yolo.coco: exact pycocotools agreement, label conversion, one-line errors, the demo."""

import contextlib
import copy
import io
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, randomize_, run

from ibra_yolo import coco
from ibra_yolo.cli import demo
from ibra_yolo.cli import eval as eval_coco
from ibra_yolo.errors import IbraYoloError
from ibra_yolo.sources import load_dataset

TOOLS = ROOT / "tools"

# A hand-made ground truth: 3 images, 2 categories, objects in all three COCO area ranges (small < 32^2 <= medium <
# 96^2 <= large), and predictions with good and poor overlaps, a duplicate, a wrong class and a false positive.
GT = {
    "images": [{"id": 1, "file_name": "1.jpg", "width": 200, "height": 200},
               {"id": 2, "file_name": "2.jpg", "width": 200, "height": 200},
               {"id": 3, "file_name": "3.jpg", "width": 640, "height": 480}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 60, 60], "area": 3600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 120, 110], "area": 13200, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [130, 130, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 2, "bbox": [100, 100, 200, 150], "area": 30000, "iscrowd": 0},
        {"id": 6, "image_id": 3, "category_id": 1, "bbox": [400, 300, 50, 40], "area": 2000, "iscrowd": 0},
    ],
}  # fmt: skip
PRED = [
    {"image_id": 1, "category_id": 1, "bbox": [11, 11, 20, 20], "score": 0.9},
    {"image_id": 1, "category_id": 2, "bbox": [52, 48, 60, 60], "score": 0.6},
    {"image_id": 1, "category_id": 1, "bbox": [150, 150, 20, 20], "score": 0.95},
    {"image_id": 2, "category_id": 1, "bbox": [5, 5, 110, 100], "score": 0.8},
    {"image_id": 2, "category_id": 1, "bbox": [130, 130, 30, 30], "score": 0.3},
    {"image_id": 2, "category_id": 2, "bbox": [0, 0, 120, 110], "score": 0.5},
    {"image_id": 3, "category_id": 2, "bbox": [110, 105, 190, 140], "score": 0.7},
    {"image_id": 3, "category_id": 1, "bbox": [400, 300, 50, 40], "score": 0.2},
    {"image_id": 3, "category_id": 1, "bbox": [410, 310, 40, 40], "score": 0.4},
]


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def cli(argv, capsys):
    """Run eval_coco.main in-process; return (exit status, stdout, stderr)."""
    rc = eval_coco.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def pycocotools_stats(ann, pred):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(pred)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(x) for x in ev.stats]


# ----------------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------------
def test_pred_ann_equals_pycocotools_exactly(tmp_path, capsys):
    ann, pred = write(tmp_path / "gt.json", GT), write(tmp_path / "pred.json", PRED)
    rc, out, err = cli(["--pred", pred, "--ann", ann, "--out", tmp_path / "r.json"], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    expected = pycocotools_stats(ann, pred)
    assert [result["metrics"][k] for k in coco.COCO_METRICS] == expected  # all 12, bit for bit
    assert result["mAP50-95"] == expected[0] and result["mAP50"] == expected[1]
    assert 0 < expected[0] < expected[1] < 1  # a non-trivial case: neither 0 nor perfect
    assert min(expected) > -1  # every area range has ground truth, so no metric is undefined (-1)
    assert "<== mAP@50:95" in out and "<== mAP@50" in out and f"mAP@50 = {100 * expected[1]:.1f}" in out


def test_perfect_predictions_score_one():
    # Every GT box predicted exactly once with its class: precision and recall are 1 at every IoU threshold (up to the
    # float rounding of the means), except AR@1, which counts one detection per image and category: image 2 has two
    # cats, so cats reach 3 of 4 and dogs 2 of 2 -> (0.75 + 1) / 2 = 0.875.
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in GT["annotations"]]  # fmt: skip
    m = coco.score(GT, dets)
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert m[k] == pytest.approx(1.0, abs=1e-12), k
    assert m["AR1"] == pytest.approx(0.875, abs=1e-12)


def test_box_id_zero_scores_like_any_other():
    # pycocotools marks a matched ground-truth box by its id, so a box with id 0 looked unmatched: perfect predictions
    # scored 0.667 mAP. Box ids name nothing else; renumbered for scoring, the metrics equal those of the same file
    # with ids 1..n.
    gt0 = copy.deepcopy(GT)
    gt0["annotations"][0]["id"] = 0
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in GT["annotations"]]  # fmt: skip
    assert coco.score(gt0, dets) == coco.score(GT, dets)
    assert coco.score(gt0, dets)["AP"] == pytest.approx(1.0, abs=1e-12)
    assert gt0["annotations"][0]["id"] == 0  # the caller's dict is not changed


def test_score_checks_its_inputs_itself():
    # score() is public: NaN scores were ranked (AP 0.5 instead of an error) and no images was an AssertionError
    from ibra_yolo.errors import IbraYoloError, NonFiniteError

    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": float("nan")}]
    with pytest.raises(NonFiniteError, match=r"^score\(\): detections: detection 0 has score=nan"):
        coco.score(GT, dets)
    with pytest.raises(IbraYoloError, match=r"^score\(\): the annotations hold no images"):
        coco.score({"images": [], "annotations": [], "categories": []}, dets)


def test_no_detections_scores_zero():
    m = coco.score(GT, [])
    assert all(m[k] == 0.0 for k in coco.COCO_METRICS)


def test_coco91_ids_match_ultralytics():
    from ultralytics.data.converter import coco80_to_coco91_class

    assert coco.coco91_ids() == list(coco80_to_coco91_class())
    assert len(coco.coco91_ids()) == 80 and coco.coco91_ids()[-1] == 90


# ----------------------------------------------------------------------------------------------------------------------
# YOLO labels -> COCO
# ----------------------------------------------------------------------------------------------------------------------
def test_yolo_labels_to_coco_round_trip(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "000042.png"), np.zeros((100, 200, 3), np.uint8))  # h 100, w 200
    cv2.imwrite(str(tmp_path / "images" / "abc.png"), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "labels" / "000042.txt").write_text(
        "1 0.5 0.25 0.2 0.3\n"  # box: x (0.5-0.1)*200 = 80, y (0.25-0.15)*100 = 10, w 40, h 30
        "0 0.1 0.1 0.3 0.1 0.3 0.5 0.1 0.5\n"  # polygon (a rectangle): x 20..60, y 10..50 -> [20, 10, 40, 40]
        "\n"
    )
    (tmp_path / "labels" / "abc.txt").write_text("")
    gt = coco.coco_from_yolo_labels(sorted((tmp_path / "images").glob("*.png")), {0: "a", 1: "b"})
    # numeric and non-numeric stems mixed: string ids throughout (COCOeval sorts ids), matched by file name
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in gt["images"]] == [
        ("42", "000042.png", 200, 100), ("abc", "abc.png", 64, 64)]  # fmt: skip
    anns = [(a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in gt["annotations"]]
    assert anns == [("42", 2, [80.0, 10.0, 40.0, 30.0], 1200.0), ("42", 1, [20.0, 10.0, 40.0, 40.0], 1600.0)]
    assert [c["id"] for c in gt["categories"]] == [1, 2]

    # back to YOLO lines (6 decimals, as the demo writes) and to COCO again: boxes within 1e-3 px
    (tmp_path / "labels" / "000042.txt").write_text(
        "".join(
            f"{c - 1} {(x + w / 2) / 200:.6f} {(y + h / 2) / 100:.6f} {w / 200:.6f} {h / 100:.6f}\n"
            for _, c, (x, y, w, h), _ in anns
        )  # fmt: skip
    )
    again = coco.coco_from_yolo_labels([tmp_path / "images" / "000042.png"], {0: "a", 1: "b"})
    assert [a["image_id"] for a in again["annotations"]] == [42, 42]  # numeric stem alone: int id, as Ultralytics
    diff = np.abs(np.array([a["bbox"] for a in again["annotations"]]) - np.array([a[2] for a in anns])).max()
    assert diff <= 1e-3


def test_demo_dataset_annotations_rebuilt_from_labels(shapes_data):
    # The demo's shipped instances_val.json and the one built from its labels for an arbitrary dataset agree.
    data = load_dataset(shapes_data)
    assert coco.find_annotations(data) == shapes_data.parent / "annotations" / "instances_val.json"
    shipped = json.loads(coco.find_annotations(data).read_text())
    built = coco.coco_from_yolo_labels(sorted((shapes_data.parent / "images" / "val").glob("*.png")), data["names"])
    assert built == shipped
    assert len(built["images"]) == 16 and built["images"][0]["id"] == 49  # ids continue after the 48 train images


# ----------------------------------------------------------------------------------------------------------------------
# One-line errors
# ----------------------------------------------------------------------------------------------------------------------
def _error(argv, capsys):
    rc, out, err = cli(argv, capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_weights_that_are_no_model_file_are_one_line(tmp_path, capsys):
    # battery 30, Z04/Z08/Z09: --weights a run's weights/ folder, a FIFO or best.weights was Ultralytics' "not a
    # supported model format" traceback after the run folder was made; refused by name before any work
    import os

    ann = write(tmp_path / "gt.json", GT)
    (tmp_path / "weights").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "best.weights").write_bytes(b"PK")
    for name, what in (("weights", "a folder"), ("fifo", "not a regular file"), ("best.weights", "a file")):
        args = ["--weights", tmp_path / name, "--data", "x.yaml", "--ann", ann, "--project", tmp_path / "runs"]
        err = _error(args, capsys)
        assert err.startswith(f"error: --weights {tmp_path / name} is {what}") and "pass the .pt checkpoint" in err
    assert not (tmp_path / "runs").exists()


def test_errors_missing_files(tmp_path, capsys):
    ann, pred = write(tmp_path / "gt.json", GT), write(tmp_path / "pred.json", PRED)
    err = _error(["--pred", pred, "--ann", tmp_path / "nope.json"], capsys)
    assert err == f"error: annotation file {tmp_path / 'nope.json'} does not exist\n"
    err = _error(["--pred", tmp_path / "nope.json", "--ann", ann], capsys)
    assert err == f"error: predictions file {tmp_path / 'nope.json'} does not exist\n"
    err = _error(["--weights", tmp_path / "best.pt", "--data", "x.yaml"], capsys)
    assert err == f"error: weights file {tmp_path / 'best.pt'} does not exist\n"
    (tmp_path / "best.pt").write_bytes(b"")  # never loaded: the data check comes first
    err = _error(["--weights", tmp_path / "best.pt", "--data", tmp_path / "nope.yaml"], capsys)
    assert err.startswith(f"error: dataset {tmp_path / 'nope.yaml'} is not usable: ") and "does not exist" in err


def test_error_dataset_without_images(tmp_path, capsys):
    (tmp_path / "best.pt").write_bytes(b"")
    data = tmp_path / "d.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: {{0: a}}\n")
    err = _error(["--weights", tmp_path / "best.pt", "--data", data], capsys)
    assert "images not found" in err and str(tmp_path / "images" / "val") in err


def test_error_empty_predictions(tmp_path, capsys):
    ann, pred = write(tmp_path / "gt.json", GT), write(tmp_path / "pred.json", [])
    err = _error(["--pred", pred, "--ann", ann], capsys)
    assert err == f"error: predictions file {pred} is empty (no detections): nothing to score\n"


def test_error_image_ids(tmp_path, capsys):
    ann = write(tmp_path / "gt.json", GT)
    pred = write(tmp_path / "pred.json", PRED + [{**PRED[0], "image_id": 99}, {**PRED[0], "image_id": 7}])
    err = _error(["--pred", pred, "--ann", ann], capsys)
    assert err.startswith("error: 2 image ids in the predictions are not in the annotation file (7, 99; ")
    assert "different datasets or splits" in err


def test_image_ids_resolved_by_file_name(tmp_path, capsys):
    # Ultralytics names non-numeric images by stem and writes file_name: they are found in a file with int ids.
    gt = {**GT, "images": [{**i, "file_name": f"img_{i['id']}.jpg"} for i in GT["images"]]}
    dets = [{**d, "image_id": f"img_{d['image_id']}", "file_name": f"img_{d['image_id']}.jpg"} for d in PRED]
    checked, notes = coco.check_predictions(dets, gt)
    assert [d["image_id"] for d in checked] == [d["image_id"] for d in PRED]
    assert notes == ["9 detections' image ids re-mapped to the annotation file's ids by file name"]
    assert coco.score(gt, checked) == coco.score(GT, PRED)


def _coco80_gt():
    """A COCO-like file with the 80 categories under their original 91-scheme ids, one box per category."""
    ids = coco.coco91_ids()
    return {"images": [{"id": 1, "file_name": "1.jpg", "width": 640, "height": 640}],
            "categories": [{"id": c, "name": f"c{c}"} for c in ids],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": c, "bbox": [k * 7, k * 7, 20, 20],
                             "area": 400, "iscrowd": 0} for k, c in enumerate(ids)]}  # fmt: skip


def test_error_category_ids_80_vs_91(tmp_path, capsys):
    gt91 = _coco80_gt()
    ann = write(tmp_path / "gt91.json", gt91)
    contiguous = [{"image_id": 1, "category_id": k + 1, "bbox": a["bbox"], "score": 0.9}
                  for k, a in enumerate(gt91["annotations"])]  # class index + 1  # fmt: skip
    pred = write(tmp_path / "p80.json", contiguous)
    err = _error(["--pred", pred, "--ann", ann], capsys)
    assert err.startswith("error: category ids 12, 26, 29 and 6 more in the predictions are not in the annotation file")
    assert "contiguous ids 1..80" in err and "--remap coco80to91" in err
    rc, out, _ = cli(["--pred", pred, "--ann", ann, "--remap", "coco80to91", "--out", tmp_path / "r.json"], capsys)
    assert rc == 0 and json.loads((tmp_path / "r.json").read_text())["mAP50-95"] == pytest.approx(1, abs=1e-12)

    # the other way round: 91-scheme predictions against a contiguous 1..80 file
    gt80 = {**gt91, "categories": [{"id": k + 1, "name": c["name"]} for k, c in enumerate(gt91["categories"])],
            "annotations": [{**a, "category_id": k + 1} for k, a in enumerate(gt91["annotations"])]}  # fmt: skip
    ann80 = write(tmp_path / "gt80.json", gt80)
    pred91 = write(tmp_path / "p91.json", coco.remap_categories(contiguous, "coco80to91"))
    err = _error(["--pred", pred91, "--ann", ann80], capsys)
    assert "COCO's original ids" in err and "--remap coco91to80" in err


def test_error_category_ids_zero_based(tmp_path, capsys):
    ann = write(tmp_path / "gt.json", GT)
    pred = write(tmp_path / "pred.json", [{**d, "category_id": d["category_id"] - 1} for d in PRED])
    err = _error(["--pred", pred, "--ann", ann], capsys)
    assert err.startswith("error: category ids 0 in the predictions are not in the annotation file (ids 1..2, ")
    assert "look like class indices" in err


def test_model_classes_must_fit_categories():
    names = {0: "circle", 1: "square", 2: "triangle"}
    cats = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]
    assert coco.match_categories(names, cats[::-1]) == ([1, 2, 3], "by name")
    c91 = coco.coco91_ids()
    assert coco.match_categories({i: f"n{i}" for i in range(80)}, [{"id": c, "name": str(c)} for c in c91]) == (
        c91, "by order")  # fmt: skip
    with pytest.raises(IbraYoloError, match="the model has 80 classes but the annotation file has 3"):
        coco.match_categories({i: f"n{i}" for i in range(80)}, cats)
    # a model class name listed as two categories (battery 28, E08m): with as many categories as classes the match fell
    # back to id order, and 'square' took the boxes of the second 'circle'; with more, the error said 'circle' was
    # not among the names. Either way the file is refused, naming the name and its ids.
    twice = [*cats[:2], {"id": 4, "name": "circle"}]
    for listed in (twice, [*twice, cats[2]]):
        with pytest.raises(
            IbraYoloError,
            match=r"^the annotation file lists the model's class name 'circle' as 2 "
            r"categories \(ids 1, 4\): each category name must be listed once",
        ):
            coco.match_categories(names, listed)
    assert coco.match_categories({0: "circle"}, [*cats, {"id": 9, "name": "circle"}][1:]) == ([9], "by name")
    # a model whose names repeat one (battery 30, H41): classes 0 and 1 both scored as 'circle', 'square' as none
    with pytest.raises(IbraYoloError, match=r"^the model names classes 0 and 1 both 'circle': its class names must"):
        coco.match_categories({0: "circle", 1: "circle", 2: "triangle"}, cats)


def test_never_overwrite_without_flag(tmp_path, capsys):
    ann, pred = write(tmp_path / "gt.json", GT), write(tmp_path / "pred.json", PRED)
    out = write(tmp_path / "r.json", {"keep": 1})
    err = _error(["--pred", pred, "--ann", ann, "--out", out], capsys)
    assert err == f"error: {out} exists: choose another --out or pass --overwrite\n"
    assert json.loads(out.read_text()) == {"keep": 1}
    rc, _, _ = cli(["--pred", pred, "--ann", ann, "--out", out, "--overwrite"], capsys)
    assert rc == 0 and "metrics" in json.loads(out.read_text())


def test_cli_subprocess_one_line(tmp_path, python):
    # the documented script and the package command are one command: same one-line error, same exit status
    args = ["--pred", str(tmp_path / "x.json"), "--ann", str(tmp_path / "y.json")]
    for cmd in ([python, str(TOOLS / "eval_coco.py")], [python, "-m", "ibra_yolo", "eval"]):
        p = run([*cmd, *args], check=False)
        assert p.returncode == 2 and p.stderr == f"error: annotation file {tmp_path / 'y.json'} does not exist\n"


def test_image_id_is_ultralytics_rule():
    # Ultralytics names an image in predictions.json by its file stem, an int when the stem is a number
    assert [coco.image_id(p) for p in ("a/000042.png", "7.jpg", "img_7.jpg", "x/abc.JPG")] == [42, 7, "img_7", "abc"]


def test_demo_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("not a demo")
    assert demo.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {tmp_path} is not empty and was not made by ibra-yolo demo: choose another folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


# ----------------------------------------------------------------------------------------------------------------------
# Model mode: the stock validator, integer and spike-driven
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 validation images at 64 px (the validator's run time is what these tests pay for)."""
    from ibra_yolo.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("tiny"), n_train=1, n_val=4, imgsz=64, seed=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained IBRA-LIF n model for the 3 demo classes, with random BN statistics so that it detects."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("spike-yolo-ibra-n.yaml", nc=3, verbose=False)
    model.names = {0: "circle", 1: "square", 2: "triangle"}
    randomize_(model, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    torch.save({"model": model, "train_args": {"task": "detect"}}, path)  # the keys YOLO(path) reads
    return path


def test_model_mode_integer_and_spike_driven(checkpoint, tiny_data, tmp_path, capsys):
    common = ["--weights", checkpoint, "--data", tiny_data, "--imgsz", 64, "--batch", 16, "--device", "cpu",
              "--project", tmp_path]  # fmt: skip
    results = {}
    for mode, extra in (("integer", []), ("spike-driven", ["--spike-driven", "--no-energy"])):
        rc, out, err = cli([*common, "--name", mode, *extra], capsys)
        assert rc == 0, err
        results[mode] = r = json.loads((tmp_path / mode / "coco_eval.json").read_text())
        e = r["execution"]
        assert e["mode"] == mode and f"execution: {mode}" in out
        assert e["spike_fed_conv_calls"] > 0 and e["non_binary_plane_convolutions"] == 0
        assert e["spike_driven_calls"] == (e["spike_fed_conv_calls"] if mode == "spike-driven" else 0)
        assert (e["binary_plane_convolutions"] > 0) == (mode == "spike-driven")
        assert r["annotations_source"] == "dataset" and r["images"] == 4
        assert r["categories"] == {"how": "by name", "ids": {"circle": 1, "square": 2, "triangle": 3}}
        assert r["detections"] > 0  # random BN statistics make the untrained model fire and detect
        # the energy summary is on by default (over all 4 images: 4 < --energy-images 32); --no-energy skips it
        if mode == "integer":
            assert r["energy"]["images"] == 4 and "energy (ibra_yolo.energy, per image): images=4" in out
            assert r["energy"]["mode"] == "integer" and r["energy"]["energy_mJ"] > 0
        else:
            assert r["energy"] is None and "energy (ibra_yolo.energy" not in out
        # the scored predictions reproduce in file mode, bit for bit
        rc, _, _ = cli(["--pred", r["predictions"], "--ann", r["annotations"], "--out", tmp_path / f"{mode}.json"],
                       capsys)  # fmt: skip
        assert rc == 0 and json.loads((tmp_path / f"{mode}.json").read_text())["metrics"] == r["metrics"]
    # That the two modes give the same detections (float32 rounding aside) is test_spike_driven.py's subject; here the
    # hooks prove that the validator's own copy of the model ran in the requested mode.


def test_model_mode_builds_annotations_from_labels(checkpoint, tiny_data, tmp_path, capsys):
    # the same dataset without its COCO file: annotations are built from the YOLO labels, equal to the shipped file
    data = tmp_path / "data"
    shutil.copytree(tiny_data.parent, data, ignore=shutil.ignore_patterns("annotations", "*.cache"))
    (data / "data.yaml").write_text(tiny_data.read_text().replace(str(tiny_data.parent), str(data)))
    rc, out, err = cli(["--weights", checkpoint, "--data", data / "data.yaml", "--imgsz", 64, "--device", "cpu",
                        "--project", tmp_path, "--name", "v", "--no-energy"], capsys)  # fmt: skip
    assert rc == 0, err
    r = json.loads((tmp_path / "v" / "coco_eval.json").read_text())
    assert r["annotations_source"] == "built from YOLO labels"
    shipped = tiny_data.parent / "annotations" / "instances_val.json"
    assert json.loads(Path(r["annotations"]).read_text()) == json.loads(shipped.read_text())


def test_spike_driven_needs_a_spiking_model(tmp_path, tiny_data, capsys):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path / "ann.pt"
    torch.save({"model": DetectionModel("spike-yolo-ann-n.yaml", nc=3, verbose=False), "train_args": {}}, path)
    err = _error(["--weights", path, "--data", tiny_data, "--imgsz", 64, "--spike-driven", "--project", tmp_path,
                  "--no-energy"], capsys)  # fmt: skip
    assert "has no integer spiking neurons" in err


def test_energy_hook(monkeypatch, capsys):
    # eval calls ibra_yolo.energy.measure(model, images, imgsz, batch, spike_driven) and keeps report.summary()
    calls = []

    class Report:
        def summary(self):
            return {"E_SNN_mJ": 1.5}

    def measure(model, images, imgsz, batch, spike_driven=False, **kw):
        calls.append((model, images, imgsz, batch, spike_driven, kw))
        return Report()

    import ibra_yolo.energy

    run_ = coco.ValidationRun([], [1], {0: "a"}, [f"{i}.png" for i in range(40)], ROOT, {}, model="yolo")
    args = eval_coco.parse_args(["--weights", "w.pt", "--data", "d.yaml", "--imgsz", "64", "--spike-driven"])
    monkeypatch.setattr(ibra_yolo.energy, "measure", measure)
    assert eval_coco.energy_summary(args, run_) == {"E_SNN_mJ": 1.5}
    assert calls == [("yolo", [f"{i}.png" for i in range(32)], 64, 16, True, {"progress": False})]
    args.energy = False  # --no-energy
    assert eval_coco.energy_summary(args, run_) is None and len(calls) == 1

    def unmeasurable(*a, **kw):
        raise IbraYoloError("DetectionModel has no NeuronConv layers")

    def broken(*a, **kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ibra_yolo.energy, "measure", unmeasurable)
    args.energy = None  # the default: on
    # a model the energy report cannot measure (a stock one) is reported and never costs the user the COCO metrics
    assert eval_coco.energy_summary(args, run_) == {"error": "DetectionModel has no NeuronConv layers"}
    assert "warning: energy summary skipped: DetectionModel has no NeuronConv layers" in capsys.readouterr().err
    # anything else is a bug, not an expected failure: it is raised, not hidden
    monkeypatch.setattr(ibra_yolo.energy, "measure", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        eval_coco.energy_summary(args, run_)


# ----------------------------------------------------------------------------------------------------------------------
# The main job, end to end (slow)
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_end_to_end(tmp_path, python):
    out = tmp_path / "demo"
    args = ["--out", out, "--epochs", 1, "--imgsz", 64, "--n-train", 16, "--n-val", 8, "--batch", 8]
    p = run([python, str(TOOLS / "demo.py"), *map(str, args)], timeout=300)
    r = json.loads((out / "coco_eval.json").read_text())
    assert set(r["metrics"]) == set(coco.COCO_METRICS) and r["images"] == 8
    assert r["execution"]["mode"] == "integer" and r["annotations_source"] == "dataset"
    assert "<== mAP@50:95" in p.stdout and "demo finished in" in p.stdout
    assert (out / "runs" / "train" / "weights" / "best.pt").is_file()
    # a second run into the same folder needs --overwrite and then trains into a new folder (tests/test_demo.py)
    paths = demo.prepare_out(out, demo.parse_args(["--out", str(out), "--overwrite", *map(str, args[2:])]))
    assert (paths.train_name, paths.val_name) == ("train2", "val2")


def test_a_refused_model_run_leaves_no_predictions_behind(checkpoint, tiny_data, tmp_path, capsys):
    # Annotations of other images: the run is refused after the validator wrote predictions.json, which then blocked
    # the corrected rerun under the same --name ("predictions.json exists": battery 19, E29). A refused run removes
    # what it wrote (its new run folder too), so the rerun with the right annotations goes through.
    shipped = json.loads((tiny_data.parent / "annotations" / "instances_val.json").read_text())
    images = [{**i, "id": i["id"] + 100, "file_name": f"x{i['file_name']}"} for i in shipped["images"]]
    anns = [{**a, "image_id": a["image_id"] + 100} for a in shipped["annotations"]]
    other = {**shipped, "images": images, "annotations": anns}
    common = ["--weights", checkpoint, "--data", tiny_data, "--imgsz", 64, "--device", "cpu", "--project", tmp_path,
              "--name", "v", "--no-energy"]  # fmt: skip
    err = _error([*common, "--ann", write(tmp_path / "other.json", other)], capsys)
    assert "image ids in the model's predictions are not in the annotation file" in err
    assert not (tmp_path / "v").exists()
    rc, _, err = cli(common, capsys)
    assert rc == 0, err
    assert (tmp_path / "v" / "predictions.json").is_file()


def test_an_export_of_a_fixed_size_is_evaluated_at_that_size_only(tmp_path, shapes_data):
    # battery 31, X09: a TorchScript export made at 32 px, evaluated with --imgsz 64, ran at 32 (the stock validator
    # takes the export's size from its metadata) while coco_eval.json said 64. Expected: refused before the run,
    # naming both sizes; at its own size it evaluates.
    from ultralytics import YOLO

    from ibra_yolo.coco.validator import predict_split

    model = YOLO("spike-yolo-ibra-n.yaml")
    model.save(tmp_path / "m.pt")
    exported = YOLO(tmp_path / "m.pt").export(format="torchscript", imgsz=32, device="cpu")
    says = rf"^--imgsz 64, but {re.escape(str(exported))} was exported for 32x32 inputs only \(not dynamic\): pass "
    with pytest.raises(IbraYoloError, match=says + "--imgsz 32"):
        predict_split(exported, shapes_data, imgsz=64, batch=8, device="cpu", project=tmp_path / "runs", name="v")
    assert not (tmp_path / "runs").exists()
    run = predict_split(exported, shapes_data, imgsz=32, batch=8, device="cpu", project=tmp_path / "runs", name="v")
    assert len(run.im_files) == 16  # the demo dataset's 16 validation images
