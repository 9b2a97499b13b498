"""COCO box mAP with pycocotools' ``COCOeval`` (the reference implementation COCO results are quoted with)."""

from __future__ import annotations

import contextlib
import copy
import io

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


def score(gt: dict, dets: list[dict], img_ids: list | None = None) -> dict[str, float]:
    """The 12 COCO box metrics of pycocotools' ``COCOeval`` (values in 0..1; -1 where a metric has no GT).

    Exactly ``COCO(gt)``, ``loadRes(dets)``, ``COCOeval(..., "bbox")``, ``evaluate/accumulate/summarize``; the inputs
    are copied, not modified. An empty ``dets`` scores as a model that detected nothing. The copy's box ids are
    renumbered 1..n: pycocotools marks matches by box id, so a box with id 0 would count as never matched.

    Args:
        gt (dict): COCO annotations.
        dets (list[dict]): Detections, checked (see ``ibra_yolo.coco.check_predictions``).
        img_ids (list | None): Images to evaluate (``params.imgIds``); None for every image of ``gt``.

    Returns:
        (dict[str, float]): ``COCO_METRICS`` -> value.

    Raises:
        NonFiniteError: A NaN/inf number in a detection or annotation (checked again here: a NaN score was ranked).
        IbraYoloError: No images, or a malformed record (``ibra_yolo.coco.records``).
    """
    from pycocotools.cocoeval import COCOeval

    from ibra_yolo.coco.records import check_annotations, check_detections

    if not isinstance(gt, dict) or not gt.get("images") or not isinstance(gt.get("annotations"), list):
        raise IbraYoloError("score(): the annotations hold no images (or no 'annotations' list): nothing to score")
    check_annotations(gt["annotations"], "score(): annotations")  # a NaN score or box was ranked silently
    check_detections(dets, "score(): detections")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; we print our own table
        gt = copy.deepcopy(gt)
        for k, a in enumerate(gt["annotations"], 1):  # pycocotools reads a matched box id 0 as "unmatched"
            a["id"], a["bbox"] = (
                k,
                list(a["bbox"]),
            )  # box ids name nothing else, so 1..n scores the same boxes (and id 0 correctly)
        coco_gt = _coco_api(gt)
        if dets:
            coco_dt = coco_gt.loadRes([{**copy.deepcopy(d), "bbox": list(d["bbox"])} for d in dets])  # tuples too
        else:
            coco_dt = _coco_api({"images": gt["images"], "categories": gt["categories"], "annotations": []})
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
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
