"""COCO box mAP with pycocotools' ``COCOeval`` (the reference implementation COCO results are quoted with)."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable
from numbers import Integral

from ibra_yolo.coco.records import DETECTION_KEYS
from ibra_yolo.errors import IbraYoloError

__all__ = ("COCO_METRICS", "score", "format_metrics")

# pycocotools' COCOeval.stats, in its order
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_ROWS = (  # (precision or recall, IoU, area, maxDets) for each of COCO_METRICS, as pycocotools prints them
    ("AP", "0.50:0.95", "all", 100),
    ("AP", "0.50", "all", 100),
    ("AP", "0.75", "all", 100),
    ("AP", "0.50:0.95", "small", 100),
    ("AP", "0.50:0.95", "medium", 100),
    ("AP", "0.50:0.95", "large", 100),
    ("AR", "0.50:0.95", "all", 1),
    ("AR", "0.50:0.95", "all", 10),
    ("AR", "0.50:0.95", "all", 100),
    ("AR", "0.50:0.95", "small", 100),
    ("AR", "0.50:0.95", "medium", 100),
    ("AR", "0.50:0.95", "large", 100),
)
_HIGHLIGHT = {"AP": "mAP@50:95", "AP50": "mAP@50"}


def _coco_api(dataset: dict):
    from pycocotools.coco import COCO

    api = COCO()
    api.dataset = dataset
    api.createIndex()
    return api


def _plain_record(d: dict, box_id: int | None = None, keys: tuple[str, ...] | None = None) -> dict:
    """A copy of a checked record with plain Python numbers (numpy/torch values too) and ``[x, y, w, h]`` a list.

    ``box_id`` renumbers an annotation: pycocotools marks matches by box id, so a box with id 0 would count as never
    matched; box ids name nothing else, so 1..n scores the same boxes. ``keys`` keeps only those (a detection's extra
    ``caption`` key made pycocotools read every detection as a caption: ``KeyError: 'area'``).
    """
    from ibra_yolo.coco.records import plain

    out = {k: plain(v) for k, v in copy.deepcopy(d).items() if keys is None or k in keys}
    out["bbox"] = [plain(v) for v in out["bbox"]]
    if box_id is not None:
        out["id"] = box_id
    return out


def _check_ids(gt: dict, dets: list) -> None:
    """Every detection names an image and a category of ``gt`` (checked: each an object with an id); pycocotools
    asserted without naming the record."""
    from ibra_yolo.coco.records import plain

    images = {plain(im["id"]) for im in gt["images"]}
    categories = {plain(c["id"]) for c in gt["categories"]}
    for i, d in enumerate(dets):
        for key, known, what in (("image_id", images, "an image"), ("category_id", categories, "a category")):
            if plain(d[key]) not in known:
                raise IbraYoloError(
                    f"score(): detection {i} has {key}={plain(d[key])!r:.80}, which is not {what} of the annotations"
                )


def _check_img_ids(gt: dict, img_ids) -> list:
    """``img_ids`` as a sorted list of ids that ``gt`` has; an empty list, or an id it lacks, is refused."""
    from ibra_yolo.coco.records import plain

    ids = plain(img_ids)
    if isinstance(ids, (str, bytes, dict)) or not isinstance(ids, Iterable):
        raise IbraYoloError(f"score(): img_ids={img_ids!r:.80} is not a list of image ids: pass e.g. [{ids!r:.40}]")
    ids = [plain(i) for i in ids]
    if not ids:
        raise IbraYoloError(f"score(): img_ids={img_ids!r:.80} names no image: pass None to score every image")
    odd = [i for i in ids if not ((isinstance(i, Integral) and not isinstance(i, bool)) or (isinstance(i, str) and i))]
    if odd:  # as a detection's image_id: 9.0 is not the id 9
        raise IbraYoloError(f"score(): img_ids holds {odd[0]!r:.80}: ids are integers (or file stems)")
    known = {im.get("id") for im in gt["images"] if isinstance(im, dict)}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise IbraYoloError(f"score(): img_ids holds {unknown[0]!r:.80}, which is not an image of the annotations")
    return sorted(ids, key=str) if any(isinstance(i, str) for i in ids) else sorted(ids)


def score(gt: dict, dets: list[dict], img_ids: list | None = None) -> dict[str, float]:
    """The 12 COCO box metrics of pycocotools' ``COCOeval`` (values in 0..1; -1 where a metric has no GT).

    Exactly ``COCO(gt)``, ``loadRes(dets)``, ``COCOeval(..., "bbox")``, ``evaluate/accumulate/summarize``; the inputs
    are copied, not modified (numpy and torch numbers become Python numbers). An empty ``dets`` scores as a model that
    detected nothing. The copy's box ids are renumbered 1..n: pycocotools marks matches by box id, so a box with id 0
    would count as never matched.

    Args:
        gt (dict): COCO annotations.
        dets (list[dict]): Detections, checked (see ``ibra_yolo.coco.check_predictions``).
        img_ids (list | None): Images to evaluate (``params.imgIds``), ids of ``gt``'s images; None for every image.

    Returns:
        (dict[str, float]): ``COCO_METRICS`` -> value.

    Raises:
        NonFiniteError: A NaN/inf number in a detection or annotation (checked again here: a NaN score was ranked).
        IbraYoloError: No images, a malformed record (``ibra_yolo.coco.records``), an annotation id used twice (as
            ``ibra-yolo eval`` refuses it in a file), or ``img_ids`` empty or naming an image ``gt`` does not have.
    """
    from pycocotools.cocoeval import COCOeval

    from ibra_yolo.coco.checks import check_annotation_ids
    from ibra_yolo.coco.records import check_detections

    for name, value, kind in (("gt", gt, dict), ("dets", dets, list)):
        if not isinstance(value, kind):  # e.g. the file's path: load it first
            raise IbraYoloError(
                f"score(): {name} must be a {kind.__name__} (the loaded COCO JSON), got a {type(value).__name__}"
            )
    if not gt.get("images") or not isinstance(gt["images"], list) or not isinstance(gt.get("annotations"), list):
        raise IbraYoloError("score(): the annotations hold no images (or no 'annotations' list): nothing to score")
    if not isinstance(gt.get("categories"), list):  # pycocotools' KeyError
        raise IbraYoloError("score(): the annotations hold no 'categories' list: every file of COCO's format has one")
    if not gt["categories"]:  # every metric was -1
        raise IbraYoloError("score(): the annotations hold no categories (objects with an 'id'): nothing to score")
    check_annotation_ids(gt, "score(): gt")  # as an annotation file is checked: a NaN box was ranked
    check_detections(dets, "score(): detections")
    _check_ids(gt, dets)
    if img_ids is not None:
        img_ids = _check_img_ids(gt, img_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; we print our own table
        rest = copy.deepcopy({k: v for k, v in gt.items() if k != "annotations"})
        gt = {**rest, "annotations": [_plain_record(a, k) for k, a in enumerate(gt["annotations"], 1)]}
        coco_gt = _coco_api(gt)
        if dets:
            coco_dt = coco_gt.loadRes([_plain_record(d, keys=DETECTION_KEYS) for d in dets])
        else:
            coco_dt = _coco_api({"images": gt["images"], "categories": gt["categories"], "annotations": []})
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_METRICS, ev.stats)}


def format_metrics(metrics: dict[str, float]) -> str:
    """The 12 metrics as pycocotools prints them, with mAP@50:95 and mAP@50 marked, and a one-line summary."""
    lines = []
    for key, (kind, iou, area, max_dets) in zip(COCO_METRICS, _ROWS):
        title = "Average Precision  (AP)" if kind == "AP" else "Average Recall     (AR)"
        mark = f"   <== {_HIGHLIGHT[key]}" if key in _HIGHLIGHT else ""
        where = f"IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d}"
        lines.append(f" {title} @[ {where} ] = {metrics[key]:0.3f}{mark}")
    lines.append(f"mAP@50:95 = {100 * metrics['AP']:.1f}   mAP@50 = {100 * metrics['AP50']:.1f}   (%)")
    return "\n".join(lines)
