"""COCO box mAP with pycocotools, split by job.

- ``records``: each detection and annotation checked on its own (keys, integer ids, finite numbers, ``w, h >= 0``);
- ``checks``: pure checks of annotation and prediction files, and matching their image and category ids;
- ``annotations``: a split's annotation file, or one built from its YOLO labels; ``image_id(path)``, Ultralytics'
  image-id rule used everywhere;
- ``scoring``: pycocotools' ``COCOeval`` and its 12 metrics as text;
- ``validator``: predictions from the stock Ultralytics validator, with the execution mode measured by hooks.

The command line is ``ibra-yolo eval`` (``ibra_yolo.cli.eval``; ``python tools/eval_coco.py`` is the same).

Examples:
    >>> from ibra_yolo.coco import load_annotations, load_predictions, check_predictions, score
    >>> gt = load_annotations("instances_val2017.json")
    >>> dets, notes = check_predictions(load_predictions("predictions.json"), gt)
    >>> score(gt, dets)["AP"]  # mAP@50:95
"""

from ibra_yolo.coco.annotations import coco_from_yolo_labels, find_annotations, image_id, yolo_labels_to_coco
from ibra_yolo.coco.checks import (
    align_image_ids,
    annotation_image_ids,
    check_categories,
    check_predictions,
    coco91_ids,
    load_annotations,
    load_predictions,
    match_categories,
    remap_categories,
)
from ibra_yolo.coco.records import check_annotations, check_detections
from ibra_yolo.coco.scoring import COCO_METRICS, format_metrics, score
from ibra_yolo.coco.validator import (
    MatchedDetections,
    SpikeProbe,
    ValidationRun,
    predict_split,
    run_detections,
    validation_folder,
)

__all__ = (
    "COCO_METRICS",
    "check_detections",
    "check_annotations",
    "coco91_ids",
    "load_annotations",
    "load_predictions",
    "align_image_ids",
    "annotation_image_ids",
    "check_categories",
    "remap_categories",
    "check_predictions",
    "match_categories",
    "score",
    "format_metrics",
    "image_id",
    "yolo_labels_to_coco",
    "coco_from_yolo_labels",
    "find_annotations",
    "SpikeProbe",
    "ValidationRun",
    "MatchedDetections",
    "validation_folder",
    "predict_split",
    "run_detections",
)
