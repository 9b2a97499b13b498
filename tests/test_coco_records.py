"""Malformed COCO files never score: each bad record of a predictions or annotation file stops ``ibra-yolo eval``
with one line naming the record (index), the field and the value, before pycocotools sees it."""

import copy
import json
import math
import os
import re

import pytest
from test_eval_coco import GT, PRED

from ibra_yolo import coco
from ibra_yolo.cli import eval as eval_coco
from ibra_yolo.coco.validator import ValidationRun
from ibra_yolo.errors import IbraYoloError, NonFiniteError

NAN, INF = float("nan"), float("inf")


def _run(tmp_path, capsys, pred=PRED, gt=GT):
    """``ibra-yolo eval --pred --ann`` on these lists; returns (status, stderr, results file)."""
    (tmp_path / "gt.json").write_text(json.dumps(gt))  # json writes NaN/Infinity, and reads them back as floats
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    out = tmp_path / "scores.json"
    rc = eval_coco.main(["--pred", str(tmp_path / "pred.json"), "--ann", str(tmp_path / "gt.json"), "--out", str(out)])
    return rc, capsys.readouterr().err, out


def _bad(index: int, **changes) -> list[dict]:
    pred = copy.deepcopy(PRED)
    pred[index].update(changes)
    return pred


# (predictions, exact error class, the message after "<file>: detection <i> has ")
BAD_PREDICTIONS = [
    # NaN everywhere scored 92.6 % mAP@50:95 on this GT before the check (PRED itself scores 66.5 %)
    ([{**d, "bbox": [NAN] * 4} for d in PRED], NonFiniteError,
     "detection 0 has bbox[0] (x)=nan: every number must be finite"),
    (_bad(4, bbox=[1, 2, 3, INF]), NonFiniteError, "detection 4 has bbox[3] (h)=inf: every number must be finite"),
    (_bad(2, score=NAN), NonFiniteError, "detection 2 has score=nan: every number must be finite"),
    (_bad(3, score=-INF), NonFiniteError, "detection 3 has score=-inf: every number must be finite"),
    (_bad(1, image_id=NAN), NonFiniteError, "detection 1 has image_id=nan: every number must be finite"),
    (_bad(5, category_id=INF), NonFiniteError, "detection 5 has category_id=inf: every number must be finite"),
    (_bad(6, bbox=[10, 10, -5, 20]), IbraYoloError, "detection 6 has bbox[2] (w)=-5: it must be >= 0"),
    (_bad(0, bbox=[10, 10, 5, -0.5]), IbraYoloError, "detection 0 has bbox[3] (h)=-0.5: it must be >= 0"),
    (_bad(7, bbox=[10, 10, 5]), IbraYoloError, "detection 7 has bbox=[10, 10, 5]: expected [x, y, w, h] (4 numbers)"),
    (_bad(8, bbox=[1, "2", 3, 4]), IbraYoloError, "detection 8 has bbox[1] (y)='2': expected a number"),
    (_bad(0, bbox=[1, 2, True, 4]), IbraYoloError, "detection 0 has bbox[2] (w)=True: expected a number"),
    (_bad(1, score="0.5"), IbraYoloError, "detection 1 has score='0.5': expected a number"),
    (_bad(2, category_id=1.0), IbraYoloError, "detection 2 has category_id=1.0: expected an integer"),
    (_bad(2, category_id=True), IbraYoloError, "detection 2 has category_id=True: expected an integer"),
    (_bad(3, image_id=[1]), IbraYoloError, "detection 3 has image_id=[1]: expected an integer or a file stem"),
    (_bad(3, image_id=None), IbraYoloError, "detection 3 has image_id=None: expected an integer or a file stem"),
    (PRED[:4] + [[1, 1, [0, 0, 1, 1], 0.5]], IbraYoloError,
     "detection 4 is [1, 1, [0, 0, 1, 1], 0.5]: expected an object"),
    (PRED[:2] + [{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], IbraYoloError, "detection 2 has no 'category_id'"),
]  # fmt: skip


@pytest.mark.parametrize("pred, cls, message", BAD_PREDICTIONS)
def test_bad_prediction_is_named(tmp_path, capsys, pred, cls, message):
    rc, err, out = _run(tmp_path, capsys, pred)
    assert rc == 2 and err.startswith(f"error: {tmp_path / 'pred.json'}: {message}") and err.count("\n") == 1, err
    assert not out.exists()  # nothing was scored, nothing written
    with pytest.raises(IbraYoloError) as e:  # the same check for a list handed to the API
        coco.check_predictions(pred, GT)
    assert type(e.value) is cls and f"predictions: {message}" in str(e.value)


def test_first_bad_record_is_named():
    # two bad records: the message names the first (index 1), not the worst or the last
    pred = _bad(1, bbox=[0, 0, -1, 1])
    pred[5]["score"] = NAN
    with pytest.raises(IbraYoloError, match=r"detection 1 has bbox\[2\] \(w\)=-1: it must be >= 0$"):
        coco.check_detections(pred)


def test_zero_size_and_negative_corner_are_valid(tmp_path, capsys):
    # w = h = 0 (a point) and x, y < 0 (a box leaving the image) are legal COCO boxes: scored, not refused
    pred = _bad(0, bbox=[-3.0, -2.0, 0.0, 0.0])
    rc, err, out = _run(tmp_path, capsys, pred)
    assert rc == 0, err
    assert json.loads(out.read_text())["metrics"] == coco.score(GT, pred)


def test_not_a_list(tmp_path, capsys):
    rc, err, _ = _run(tmp_path, capsys, {"annotations": PRED})
    assert (
        rc == 2
        and err == f"error: {tmp_path / 'pred.json'} is not a COCO results file: expected a JSON list of detections\n"
    )


def test_unknown_ids_are_refused(tmp_path, capsys):
    rc, err, _ = _run(tmp_path, capsys, _bad(2, image_id=42))
    assert rc == 2 and err.startswith("error: 1 image ids in the predictions are not in the annotation file (42; ")
    rc, err, _ = _run(tmp_path, capsys, _bad(2, category_id=7))
    assert rc == 2 and err.startswith("error: category ids 7 in the predictions are not in the annotation file")


def _bad_gt(index: int, **changes) -> dict:
    gt = copy.deepcopy(GT)
    gt["annotations"][index].update(changes)
    return gt


BAD_ANNOTATIONS = [
    (_bad_gt(2, bbox=[0, 0, NAN, 10]), NonFiniteError, "annotation 2 has bbox[2] (w)=nan: every number must be finite"),
    (_bad_gt(1, bbox=[0, 0, 10, -10]), IbraYoloError, "annotation 1 has bbox[3] (h)=-10: it must be >= 0"),
    (_bad_gt(3, area=INF), NonFiniteError, "annotation 3 has area=inf: every number must be finite"),
    # COCOeval ignores a box whose area is beyond its "all" range [0, 1e10]: a missed box of area 2e10 scored 100 %
    # instead of 93.4 %, and with every area so the result was -100 % (battery 29, E01b/E02)
    (_bad_gt(3, area=2e10), IbraYoloError, "annotation 3 has area=20000000000.0: above 1e+10 (1e5 px squared"),
    (_bad_gt(0, iscrowd=2), IbraYoloError, "annotation 0 has iscrowd=2: expected 0 or 1"),
    # without these pycocotools fails with KeyError, or silently leaves the box out of every metric
    ({**GT, "annotations": [{k: v for k, v in a.items() if k != "area"} for a in GT["annotations"]]},
     IbraYoloError, "annotation 0 has no 'area'"),
    (_bad_gt(4, image_id=99), IbraYoloError, "annotation 4 has image_id=99, which is not in its image list"),
    (_bad_gt(5, category_id=3), IbraYoloError, "annotation 5 has category_id=3, which is not in its category list"),
    # pycocotools indexes boxes by id: with two boxes sharing id 1, perfect predictions scored AP 0.916, not 1.0
    (_bad_gt(1, id=GT["annotations"][0]["id"]), IbraYoloError,
     f"annotation id {GT['annotations'][0]['id']!r} is used more than once: every box needs its own id"),
    # no boxes at all: COCOeval printed -100.0 % as the result
    ({**GT, "annotations": []}, IbraYoloError, " has no annotations (an empty 'annotations' list)"),
    # an image id listed twice (battery 28, E07: the message named neither the id nor how often)
    ({**GT, "images": [*GT["images"], GT["images"][0]]}, IbraYoloError,
     f"images id {GT['images'][0]['id']!r} is listed 2 times: each id must be listed once"),
    # COCOeval ignores crowd regions: with only those every metric was -1, printed as -100.0 %
    ({**GT, "annotations": [{**a, "iscrowd": 1} for a in GT["annotations"]]}, IbraYoloError,
     "every annotation is a crowd region (iscrowd 1)"),
]  # fmt: skip


@pytest.mark.parametrize("gt, cls, message", BAD_ANNOTATIONS)
def test_bad_annotation_is_named(tmp_path, capsys, gt, cls, message):
    rc, err, out = _run(tmp_path, capsys, PRED, gt)
    after = message if message.startswith(" has ") else f": {message}"  # "<file> has ..." or "<file>: annotation ..."
    assert rc == 2 and err.startswith(f"error: {tmp_path / 'gt.json'}{after}") and err.count("\n") == 1, err
    assert not out.exists()
    with pytest.raises(IbraYoloError) as e:
        coco.load_annotations(tmp_path / "gt.json")
    assert type(e.value) is cls


def test_model_mode_refuses_non_finite_boxes():
    # a model that computes NaN (diverged weights) gives NaN boxes: they are refused, never scored
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "file_name": "1.jpg"},
        {"image_id": 2, "category_id": 2, "bbox": [NAN, 2.0, 3.0, 4.0], "score": 0.8, "file_name": "2.jpg"},
    ]
    run = ValidationRun(dets, [1, 2], {0: "cat", 1: "dog"}, ["1.jpg", "2.jpg", "3.jpg"], None, {})
    with pytest.raises(NonFiniteError, match=r"^the model's predictions: detection 1 has bbox\[0\] \(x\)=nan: ") as e:
        coco.run_detections(run, GT)
    assert "check its weights" in str(e.value)
    dets[1]["bbox"][0] = 5.0
    assert math.isfinite(coco.run_detections(run, GT).detections[1]["bbox"][0])


def test_repeated_json_keys_and_symlink_loops(tmp_path, capsys):
    # json keeps the last of two equal keys silently; an --out that is a symlink loop was a RuntimeError traceback
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "pred.json").write_text(
        '[{"image_id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]'
    )
    argv = [
        "--pred",
        str(tmp_path / "pred.json"),
        "--ann",
        str(tmp_path / "gt.json"),
        "--out",
        str(tmp_path / "o.json"),
    ]
    assert eval_coco.main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: predictions file {tmp_path / 'pred.json'}: an object repeats the key 'image_id': keep one (JSON keeps "
        "the last)\n"
    )
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    argv[-1] = str(tmp_path / "loop.json")
    assert eval_coco.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path / 'loop.json'} cannot be resolved: ") and err.count("\n") == 1, err


def test_a_box_may_be_a_tuple():
    # [x, y, w, h] as a tuple (Python callers of score()) was refused with a message that read as if it were valid
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": tuple(a["bbox"]), "score": 0.9}
            for a in GT["annotations"]]  # fmt: skip
    assert coco.score(GT, dets)["AP"] == pytest.approx(1.0, abs=1e-12)


def test_numpy_and_torch_numbers_score_as_python_numbers():
    # a numpy or torch pipeline hands over arrays and numpy scalars: 4 finite numbers were refused as "expected [x, y,
    # w, h] (4 numbers)" and np.float32 scores as "expected a number". They score exactly as plain lists and floats.
    import numpy as np
    import torch

    plain = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
             for a in GT["annotations"]]  # fmt: skip
    expected = coco.score(GT, plain)
    assert expected["AP"] == pytest.approx(1.0, abs=1e-12)  # the boxes are the ground truth itself
    for box, number, ident in ((np.array, np.float32, np.int64), (torch.tensor, torch.tensor, torch.tensor)):
        dets = [{**d, "bbox": box(d["bbox"]), "score": number(d["score"]), "category_id": ident(d["category_id"])}
                for d in plain]  # fmt: skip
        assert coco.score(GT, dets) == expected
    with pytest.raises(NonFiniteError, match=r"detection 0 has bbox\[2\] \(w\)=nan"):
        coco.score(GT, [{**plain[0], "bbox": np.array([1.0, 2.0, np.nan, 3.0])}])
    with pytest.raises(IbraYoloError, match=r"detection 0 has bbox=\[\[1\.0, 2\.0\], \[3\.0, 4\.0\]\]: expected"):
        coco.score(GT, [{**plain[0], "bbox": np.array([[1.0, 2.0], [3.0, 4.0]])}])


def test_img_ids_must_name_images_of_the_annotations():
    import numpy as np

    # img_ids=[] and an unknown id scored every metric -1 (the "no ground truth" value) without a word
    with pytest.raises(IbraYoloError, match=r"img_ids=\[\] names no image: pass None"):
        coco.score(GT, PRED, img_ids=[])
    with pytest.raises(IbraYoloError, match=r"img_ids holds 999, which is not an image of the annotations"):
        coco.score(GT, PRED, img_ids=[GT["images"][0]["id"], 999])
    with pytest.raises(IbraYoloError, match=r"^score\(\): gt must be a dict \(the loaded COCO JSON\), got a str"):
        coco.score("annotations.json", PRED)  # said "the annotations hold no images"
    with pytest.raises(IbraYoloError, match=r"the annotations hold no 'categories' list"):  # pycocotools' KeyError
        coco.score({k: v for k, v in GT.items() if k != "categories"}, PRED)
    with pytest.raises(IbraYoloError, match=r"the annotations hold no categories"):  # scored every metric -1
        coco.score({**GT, "categories": []}, PRED)
    # a detection of an image or category the annotations lack: pycocotools' bare AssertionError, no record named
    with pytest.raises(IbraYoloError, match=r"^score\(\): detection 0 has image_id=424242, which is not an image"):
        coco.score(GT, [{**PRED[0], "image_id": 424242}, *PRED[1:]])
    with pytest.raises(IbraYoloError, match=r"^score\(\): detection 1 has category_id=999, which is not a category"):
        coco.score(GT, [PRED[0], {**PRED[1], "category_id": 999}])
    with pytest.raises(IbraYoloError, match=r"img_ids holds 1\.0: ids are integers"):  # as image_id: 1.0 is not 1
        coco.score(GT, PRED, img_ids=[1.0])
    # one id where a list belongs: Python's "'int' object is not iterable"; a string was "names no image"
    for bad, shown in ((9, r"9"), (np.int64(9), r"np\.int64\(9\)"), ("000000000139", r"'000000000139'")):
        with pytest.raises(IbraYoloError, match=rf"img_ids={shown} is not a list of image ids: pass e\.g\. \["):
            coco.score(GT, PRED, img_ids=bad)
    one = GT["images"][0]["id"]
    assert coco.score(GT, PRED, img_ids=[one]) == coco.score(
        {**GT, "images": GT["images"][:1], "annotations": [a for a in GT["annotations"] if a["image_id"] == one]},
        [d for d in PRED if d["image_id"] == one],
    )  # scoring one image of the set equals scoring a set of that image alone


def test_json_that_cannot_be_a_coco_file(tmp_path, capsys):
    # 200,000 nested lists: json.loads raised RecursionError, a traceback
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    argv = [
        "--pred",
        str(tmp_path / "deep.json"),
        "--ann",
        str(tmp_path / "gt.json"),
        "--out",
        str(tmp_path / "o.json"),
    ]
    assert eval_coco.main(argv) == 2
    assert (
        capsys.readouterr().err
        == f"error: predictions file {tmp_path / 'deep.json'} nests its JSON too deeply to be a COCO file\n"
    )
    # an id of 5,000 digits: Python reads integers of at most 4,300 digits, and json.loads raised that ValueError as a
    # traceback (battery 16, EV-P01)
    (tmp_path / "long.json").write_text('[{"image_id": 1' + "0" * 4999 + ', "category_id": 1, "bbox": [0, 0, 1, 1]}]')
    argv[1] = str(tmp_path / "long.json")
    assert eval_coco.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: predictions file {tmp_path / 'long.json'} holds a number too long to read (")
    assert "4300" in err and err.endswith("): not a COCO file\n") and err.count("\n") == 1
    # a FIFO would block read_text() forever: refused without opening it
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(IbraYoloError, match=f"^annotation file {tmp_path / 'fifo.json'} is not a regular file"):
        coco.load_annotations(tmp_path / "fifo.json")


@pytest.mark.parametrize("gt, cls, message", BAD_ANNOTATIONS)
def test_score_refuses_every_annotation_set_eval_refuses(gt, cls, message):
    # the README says score() checks its inputs as `eval` checks a file; a box listed twice under one id was scored
    # (AP 0.505 for one box listed twice and found once) where eval refused the file (battery 14, AO08)
    with pytest.raises(
        cls, match=r"^score\(\): gt" + re.escape(message if message.startswith(" has ") else f": {message}")
    ):
        coco.score(gt, PRED)


def test_score_checks_the_annotations_as_a_file_is_checked():
    # score() checked annotation records but not that they name listed images and categories: an annotation of an
    # unlisted category or image dropped AP from 0.85 to 0.78 without a word (eval refused the same file)
    import numpy as np

    def gt_with(edit):
        g = copy.deepcopy(GT)
        edit(g)
        return g

    for key, value in (("category_id", 99), ("image_id", 777)):
        g = copy.deepcopy(GT)
        g["annotations"][0][key] = value
        with pytest.raises(IbraYoloError, match=rf"^score\(\): gt: annotation 0 has {key}={value}, which is not in"):
            coco.score(g, PRED)
    # an image that is not an object with an id: pycocotools' TypeError, or a correct detection blamed (GT lists 3
    # images: the one appended is images[3])
    with pytest.raises(IbraYoloError, match=r"^score\(\): gt: images\[3\] is None: expected an object with an 'id'"):
        coco.score(gt_with(lambda g: g["images"].append(None)), PRED)
    with pytest.raises(IbraYoloError, match=r"^score\(\): gt: images\[0\] is \{.*\}: expected an object with an 'id'"):
        coco.score(gt_with(lambda g: g["images"][0].pop("id")), PRED)
    with pytest.raises(IbraYoloError, match=r"^score\(\): gt has no annotations \(an empty 'annotations' list\)"):
        coco.score({**GT, "annotations": []}, PRED)  # every metric was -1
    # numpy numbers are the numbers they hold (iscrowd np.int64(0) was refused), and score as such
    g = gt_with(lambda g: [a.__setitem__("iscrowd", np.int64(a["iscrowd"])) for a in g["annotations"]])
    assert coco.score(g, PRED) == coco.score(GT, PRED)


def test_detection_extra_keys_and_huge_numbers():
    # an extra 'caption' key made pycocotools read every detection as a caption (KeyError: 'area'); the keys a
    # detection has beyond the four COCO reads are ignored, so the score is that of the plain detections
    captioned = [{**PRED[0], "caption": "a circle"}, *PRED[1:]]
    assert coco.score(GT, captioned) == coco.score(GT, PRED)
    # a 401-digit integer is a valid JSON number but no float: math.isfinite raised OverflowError
    for field, edit in (("score", {"score": 10**400}), ("bbox[2] (w)", {"bbox": [1, 2, 10**400, 3]})):
        with pytest.raises(IbraYoloError, match=rf"detection 0 has {re.escape(field)}=1000.*: too large for a float"):
            coco.score(GT, [{**PRED[0], **edit}])


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_json_files_with_a_byte_order_mark_load(tmp_path, encoding):
    # battery 13, E08: a UTF-8 BOM (PowerShell and Notepad write one) was refused as "not valid JSON"; JSON readers may
    # ignore it (RFC 8259, 8.1), and UTF-16/32 with their BOM are what Windows PowerShell 5's `>` writes. Each file
    # holds the same detections and annotations as the plain UTF-8 one, so it must load to equal objects
    for name, obj, load in (("pred.json", PRED, coco.load_predictions), ("gt.json", GT, coco.load_annotations)):
        (tmp_path / name).write_text(json.dumps(obj), encoding=encoding)
        (tmp_path / f"plain-{name}").write_text(json.dumps(obj), encoding="utf-8")
        assert load(tmp_path / name) == load(tmp_path / f"plain-{name}")
    (tmp_path / "latin.json").write_bytes(b'[{"caption": "caf\xe9"}]')  # not UTF-8/16/32: one line, not a traceback
    latin = re.escape(str(tmp_path / "latin.json"))
    with pytest.raises(IbraYoloError, match=rf"^predictions file {latin} is not valid JSON"):
        coco.load_predictions(tmp_path / "latin.json")


@pytest.mark.parametrize(
    "path, error, says", [(None, TypeError, "=None is invalid: a file path"), ("", OSError, "='' is")]
)
def test_json_paths_that_are_no_paths(path, error, says):
    # None was pathlib's "expected str, bytes or os.PathLike object, not NoneType"; '' named the current folder
    with pytest.raises(error, match=rf"^predictions path{re.escape(says)}"):
        coco.load_predictions(path)
    with pytest.raises(error, match=rf"^annotation path{re.escape(says)}"):
        coco.load_annotations(path)


def test_a_model_whose_class_order_differs_is_scored_by_name_and_says_so():
    # The model's class 0 is 'dog' where the annotation file's first category is 'cat' (trained on another class
    # order, or names edited in the file): scored by name without a word (battery 20, A42). Matching by name stays
    # (it is what maps COCO's 80 classes onto its 91 ids); a note names the first class out of order.
    dets = [{"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "file_name": "1.jpg"}]
    run = ValidationRun(dets, [1, 2], {0: "dog", 1: "cat"}, ["1.jpg", "2.jpg", "3.jpg"], None, {})
    matched = coco.run_detections(run, GT)
    assert matched.detections[0]["category_id"] == 2  # the model's class 0, 'dog', is the file's category 2
    assert matched.notes == [
        "the model's class order differs from the annotation file's (2 of 2 classes; class 0 is 'dog' in the model, "
        "category 0 in id order 'cat' in the file): classes matched by name"
    ]
    run = ValidationRun(dets, [1, 2], {0: "cat", 1: "dog"}, ["1.jpg", "2.jpg", "3.jpg"], None, {})
    assert coco.run_detections(run, GT).notes == []  # the same order: nothing to say
