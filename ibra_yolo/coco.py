"""COCO box mAP with pycocotools: input checks, category and image-id matching, annotations from YOLO labels.

The scoring itself is plain ``pycocotools.cocoeval.COCOeval`` (the reference implementation COCO results are quoted
with); this module only makes sure that what goes in is consistent and says clearly when it is not. Predictions come
either from a file (``predictions.json`` as Ultralytics writes it) or from a run of the stock Ultralytics validator
(`predict_split`), whose model copy is watched by forward hooks so the execution mode (integer or spike-driven) is
measured, not assumed.

Examples:
    >>> from ibra_yolo.coco import load_annotations, load_predictions, check_predictions, score
    >>> gt = load_annotations("instances_val2017.json")
    >>> dets, notes = check_predictions(load_predictions("predictions.json"), gt)
    >>> score(gt, dets)["AP"]  # mAP@50:95
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ibra_yolo.errors import IbraYoloError

__all__ = (
    "COCO_METRICS",
    "CocoEvalError",
    "MissingFileError",
    "OutputExistsError",
    "DatasetError",
    "AnnotationError",
    "PredictionError",
    "ImageIdMismatchError",
    "CategoryMismatchError",
    "SpikeModeError",
    "coco91_ids",
    "load_annotations",
    "load_predictions",
    "check_output",
    "write_json",
    "align_image_ids",
    "check_categories",
    "remap_categories",
    "check_predictions",
    "match_categories",
    "score",
    "format_metrics",
    "coco_from_yolo_labels",
    "load_dataset",
    "find_annotations",
    "SpikeProbe",
    "ValidationRun",
    "predict_split",
    "run_detections",
)

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
_EXAMPLES = 3  # offending values quoted in an error message
_COCO_UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # ids of COCO's paper categories without 2017 boxes


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------
class CocoEvalError(IbraYoloError):
    """Base class of the COCO evaluation's input errors."""


class MissingFileError(CocoEvalError, FileNotFoundError):
    """A weights, data, annotation or predictions file that does not exist."""


class OutputExistsError(CocoEvalError, FileExistsError):
    """The output file exists and overwriting was not allowed."""


class DatasetError(CocoEvalError, ValueError):
    """A dataset YAML that cannot be used (missing images, bad keys)."""


class AnnotationError(CocoEvalError, ValueError):
    """A COCO annotation file that is not valid for box evaluation."""


class PredictionError(CocoEvalError, ValueError):
    """A predictions file that is empty or not in COCO results format."""


class ImageIdMismatchError(PredictionError):
    """Predictions name images the annotation file does not have."""


class CategoryMismatchError(PredictionError):
    """Predicted category ids that do not fit the annotation file's categories."""


class SpikeModeError(CocoEvalError):
    """Spike-driven execution was asked for but not observed."""


# ----------------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------------
def coco91_ids() -> list[int]:
    """COCO's original category ids of the 80 detection classes, in class-index order: 1..90 less 10 unused ids.

    The same list as Ultralytics' ``coco80_to_coco91_class()`` (checked in the tests), without importing it.
    """
    return [i for i in range(1, 91) if i not in _COCO_UNUSED_IDS]


def _load_json(path: str | Path, what: str, error: type[CocoEvalError]):
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} file {path} is not valid JSON ({e})") from None


def _id_type_check(ids: list, what: str, path) -> None:
    kinds = {type(i).__name__ for i in ids}
    if not kinds <= {"int", "str"} or len(kinds) > 1:
        raise AnnotationError(f"{path}: {what} ids must be all integers or all strings, found {sorted(kinds)}")


def load_annotations(path: str | Path) -> dict:
    """Read and check a COCO detection annotation file (``images``, ``annotations``, ``categories``).

    Args:
        path (str | Path): The JSON file, e.g. ``coco/annotations/instances_val2017.json``.

    Returns:
        (dict): The parsed file.

    Raises:
        MissingFileError: The file does not exist.
        AnnotationError: Not JSON, a key is missing, or ids are duplicated or of mixed types.
    """
    gt = _load_json(path, "annotation", AnnotationError)
    keys = ("images", "annotations", "categories")
    missing = [repr(k) for k in keys if not isinstance(gt, dict) or not isinstance(gt.get(k), list)]
    if missing:
        raise AnnotationError(f"{path} is not a COCO detection file: it has no {', '.join(missing)} list")
    if not gt["images"] or not gt["categories"]:
        raise AnnotationError(f"{path} lists no {'images' if not gt['images'] else 'categories'}: nothing to score")
    for key in ("images", "categories"):
        ids = [x.get("id") for x in gt[key]]
        _id_type_check(ids, key[:-1] if key == "images" else "category", path)
        if len(set(ids)) != len(ids):
            raise AnnotationError(f"{path}: duplicate {key} ids")
    bad = next((a for a in gt["annotations"] if not (isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4)), None)
    if bad is not None:
        raise AnnotationError(f"{path}: annotation {bad.get('id')} has no [x, y, w, h] 'bbox'")
    return gt


def load_predictions(path: str | Path) -> list[dict]:
    """Read and check a COCO results file: a list of ``{image_id, category_id, bbox: [x, y, w, h], score}``.

    Args:
        path (str | Path): The JSON file (``predictions.json`` from ``yolo val save_json=True``).

    Returns:
        (list[dict]): The detections.

    Raises:
        MissingFileError: The file does not exist.
        PredictionError: Not JSON, not a list, empty, or an entry lacks a key or has a bad box or score.
    """
    dets = _load_json(path, "predictions", PredictionError)
    if not isinstance(dets, list):
        raise PredictionError(f"{path} is not a COCO results file: expected a JSON list of detections")
    if not dets:
        raise PredictionError(f"predictions file {path} is empty (no detections): nothing to score")
    for i, d in enumerate(dets):
        if not isinstance(d, dict) or any(k not in d for k in ("image_id", "category_id", "bbox", "score")):
            raise PredictionError(
                f"{path}: detection {i} is not {{'image_id', 'category_id', 'bbox', 'score'}}: {str(d)[:80]}"
            )
        box, s = d["bbox"], d["score"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise PredictionError(f"{path}: detection {i} has bbox {box!r}, expected [x, y, w, h] numbers")
        if not isinstance(s, (int, float)) or not math.isfinite(s):
            raise PredictionError(f"{path}: detection {i} has score {s!r}, expected a finite number")
    return dets


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse an existing output file unless ``overwrite``; return the path.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists: choose another --out or pass --overwrite")
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder: --out must name a file")
    return path


def write_json(path: str | Path, obj, overwrite: bool = False) -> Path:
    """Write ``obj`` as JSON atomically (a crash never leaves a half-written file); see `check_output`."""
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Consistency of predictions and annotations
# ----------------------------------------------------------------------------------------------------------------------
def _examples(values) -> str:
    values = sorted(values, key=lambda v: (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)))
    head = ", ".join(repr(v) for v in values[:_EXAMPLES])
    return head + (f" and {len(values) - _EXAMPLES} more" if len(values) > _EXAMPLES else "")


def _image_lookup(gt: dict) -> tuple[set, dict]:
    """GT image ids, and the id of each file stem that names exactly one image."""
    stems: dict[str, list] = {}
    for img in gt["images"]:
        if img.get("file_name"):
            stems.setdefault(Path(str(img["file_name"])).stem, []).append(img["id"])
    return {img["id"] for img in gt["images"]}, {s: ids[0] for s, ids in stems.items() if len(ids) == 1}


def _resolve_image(image_id, file_name, ids: set, by_stem: dict):
    """The GT id of one image: by its file name when the GT names it (Ultralytics writes both), else by id."""
    if file_name and Path(str(file_name)).stem in by_stem:
        return by_stem[Path(str(file_name)).stem]
    if image_id in ids:
        return image_id
    return by_stem.get(str(image_id))  # a string id that is a file stem


def align_image_ids(dets: list[dict], gt: dict, source: str = "predictions") -> tuple[list[dict], list[str]]:
    """Express every detection's ``image_id`` in the annotation file's ids.

    Ids that are in the file are kept; others are looked up by ``file_name`` (which Ultralytics writes) or by
    treating the id as a file stem, so predictions named by stem score against files with other id schemes.

    Args:
        dets (list[dict]): Detections.
        gt (dict): COCO annotations.
        source (str): How to name the detections in messages.

    Returns:
        (tuple[list[dict], list[str]]): The detections (new dicts where an id changed) and notes on what changed.

    Raises:
        ImageIdMismatchError: Some detections name images the file does not have.
    """
    ids, by_stem = _image_lookup(gt)
    out, changed, unknown = [], 0, set()
    for d in dets:
        gid = _resolve_image(d["image_id"], d.get("file_name"), ids, by_stem)
        if gid is None:
            unknown.add(d["image_id"])
        elif gid != d["image_id"]:
            d, changed = {**d, "image_id": gid}, changed + 1
        out.append(d)
    if unknown:
        raise ImageIdMismatchError(
            f"{len(unknown)} image ids in the {source} are not in the annotation file ({_examples(unknown)}; "
            f"the file's ids: {_examples(ids)}): predictions and annotations come from "
            f"different datasets or splits"
        )
    notes = [f"{changed} detections' image ids re-mapped to the annotation file's ids by file name"] if changed else []
    return out, notes


def _explain_categories(pred: set, cats: set) -> str:
    """Why predicted category ids do not fit: the usual 80/91 and 0/1-based mix-ups, named."""
    c91 = set(coco91_ids())
    if cats == c91 and pred <= set(range(1, 81)):
        return (
            "the predictions use contiguous ids 1..80 (class index + 1) but the annotation file uses COCO's original "
            "ids (1..90 with gaps). Ultralytics writes COCO ids only when the val split is a "
            "'.../coco/.../val2017.txt' list; pass --remap coco80to91 to convert"
        )
    if cats == set(range(1, 81)) and pred <= c91:
        return (
            "the predictions use COCO's original ids (1..90 with gaps) but the annotation file uses contiguous ids "
            "1..80; pass --remap coco91to80 to convert"
        )
    if 0 in pred and 0 not in cats:
        return "the predictions use id 0: they look like class indices, while COCO category ids start at 1"
    return "the predictions and the annotation file use different category ids"


def _span(ids: set) -> str:
    return f"{min(ids)}..{max(ids)}" if all(isinstance(i, int) for i in ids) else _examples(ids)


def check_categories(dets: list[dict], gt: dict, source: str = "predictions") -> list[str]:
    """Check that every predicted ``category_id`` is one of the annotation file's categories.

    Returns:
        (list[str]): Warnings for id schemes that fit by chance but look mixed up (80 vs 91 ids).

    Raises:
        CategoryMismatchError: Some ids are unknown; the message names the likely mix-up and its fix.
    """
    cats = {c["id"] for c in gt["categories"]}
    pred = {d["category_id"] for d in dets}
    unknown = pred - cats
    if unknown:
        raise CategoryMismatchError(
            f"category ids {_examples(unknown)} in the {source} are not in the annotation file "
            f"(ids {_span(cats)}, {len(cats)} categories): {_explain_categories(pred, cats)}"
        )
    if cats == set(coco91_ids()) and max(pred, key=float) <= 80 and len(pred) >= 40:
        return [
            "all predicted category ids are <= 80 against COCO's 91-id annotation file: if the predictions are class "
            "index + 1, re-run with --remap coco80to91"
        ]
    return []


def remap_categories(dets: list[dict], how: str) -> list[dict]:
    """Convert category ids between COCO's contiguous (``1..80``) and original (``1..90`` with gaps) schemes.

    Args:
        dets (list[dict]): Detections.
        how (str): ``"coco80to91"`` or ``"coco91to80"``.

    Returns:
        (list[dict]): New detections with converted ids.

    Raises:
        CategoryMismatchError: An id outside the source scheme.
    """
    c91 = coco91_ids()
    table = {i + 1: c for i, c in enumerate(c91)} if how == "coco80to91" else {c: i + 1 for i, c in enumerate(c91)}
    bad = {d["category_id"] for d in dets} - set(table)
    if bad:
        scheme = "1..80" if how == "coco80to91" else "COCO's 91-id scheme"
        raise CategoryMismatchError(f"--remap {how}: category ids {_examples(bad)} are not in {scheme}")
    return [{**d, "category_id": table[d["category_id"]]} for d in dets]


def check_predictions(
    dets: list[dict], gt: dict, remap: str | None = None, source: str = "predictions"
) -> tuple[list[dict], list[str]]:
    """All checks of a predictions list against annotations: optional category remap, image ids, category ids.

    Args:
        dets (list[dict]): Detections (COCO results format).
        gt (dict): COCO annotations.
        remap (str | None): ``"coco80to91"``, ``"coco91to80"`` or None.
        source (str): How to name the detections in messages.

    Returns:
        (tuple[list[dict], list[str]]): Detections ready for `score` and notes on what was changed or looks odd.
    """
    if not dets:
        raise PredictionError(f"the {source} contain no detections: nothing to score")
    notes = []
    if remap:
        dets = remap_categories(dets, remap)
        notes.append(f"category ids converted with {remap}")
    dets, more = align_image_ids(dets, gt, source)
    return dets, notes + more + check_categories(dets, gt, source)


def _norm(name: str) -> str:
    return str(name).strip().lower().replace("_", " ")


def match_categories(names: dict[int, str], categories: list[dict]) -> tuple[list[int], str]:
    """Map a model's class indices to an annotation file's category ids.

    By name when every class name is a category name (case and ``_``/space insensitive; this also maps COCO's 80
    classes onto its 91-id file), else by order when the counts match (class ``i`` -> the ``i``-th category by id).

    Args:
        names (dict[int, str]): The model's class names.
        categories (list[dict]): The file's ``categories``.

    Returns:
        (tuple[list[int], str]): Category id of each class index, and ``"by name"`` or ``"by order"``.

    Raises:
        CategoryMismatchError: Neither names nor counts match.
    """
    by_name: dict[str, list] = {}
    for c in categories:
        by_name.setdefault(_norm(c.get("name", "")), []).append(c["id"])
    if all(len(by_name.get(_norm(n), ())) == 1 for n in names.values()):
        return [by_name[_norm(names[i])][0] for i in sorted(names)], "by name"
    if len(categories) == len(names):
        ids = sorted(c["id"] for c in categories)
        return [ids[i] for i in range(len(names))], "by order"
    cat_names = [c.get("name", "") for c in categories]
    missing = [n for n in names.values() if len(by_name.get(_norm(n), ())) != 1]
    raise CategoryMismatchError(
        f"the model has {len(names)} classes but the annotation file has {len(categories)} categories, and class "
        f"names {_examples(missing)} are not among its names ({_examples(cat_names)}): a model trained on another "
        f"dataset, or the wrong annotation file"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------------
def _coco_api(dataset: dict):
    from pycocotools.coco import COCO

    api = COCO()
    api.dataset = dataset
    api.createIndex()
    return api


def score(gt: dict, dets: list[dict], img_ids: list | None = None) -> dict[str, float]:
    """The 12 COCO box metrics of pycocotools' ``COCOeval`` (values in 0..1; -1 where a metric has no GT).

    Exactly ``COCO(gt)``, ``loadRes(dets)``, ``COCOeval(..., "bbox")``, ``evaluate/accumulate/summarize``; the inputs
    are copied, not modified. An empty ``dets`` scores as a model that detected nothing.

    Args:
        gt (dict): COCO annotations.
        dets (list[dict]): Detections, checked (see `check_predictions`).
        img_ids (list | None): Images to evaluate (``params.imgIds``); None for every image of ``gt``.

    Returns:
        (dict[str, float]): ``COCO_METRICS`` -> value.
    """
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; we print our own table
        coco_gt = _coco_api(copy.deepcopy(gt))
        if dets:
            coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
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


# ----------------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------------
def coco_from_yolo_labels(images: list[str | Path], names: dict[int, str]) -> dict:
    """COCO annotations for any YOLO-format image list, with labels found as Ultralytics finds them.

    Each image's label is ``.../labels/.../<stem>.txt`` for ``.../images/.../<stem>.<ext>``; box and segment labels
    both work (see ``ibra_yolo.data.yolo_labels_to_coco``, used per label folder). Image ids are what Ultralytics
    writes in ``predictions.json`` (numeric stem as int, else the stem); category ids are class index + 1; ``area``
    is the box area (COCO's small/medium/large split uses it).

    Args:
        images (list[str | Path]): Image files of the split.
        names (dict[int, str]): Class names by index.

    Returns:
        (dict): COCO ``images``, ``annotations`` and ``categories``.

    Raises:
        AnnotationError: Two images share a file stem (predictions could not tell them apart).
    """
    from ultralytics.data.utils import img2label_paths

    from ibra_yolo.data import yolo_labels_to_coco

    groups: dict[Path, list[Path]] = {}
    for im, label in zip(images, img2label_paths([str(p) for p in images])):
        groups.setdefault(Path(label).parent, []).append(Path(im))
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in names.items()]}
    for label_dir, ims in groups.items():
        part = yolo_labels_to_coco(ims, label_dir, names)
        coco["images"] += part["images"]
        first = len(coco["annotations"]) + 1
        coco["annotations"] += [{**a, "id": first + k} for k, a in enumerate(part["annotations"])]
    seen: dict = {}
    for img in coco["images"]:
        if img["id"] in seen:
            raise AnnotationError(
                f"images {seen[img['id']]} and {img['file_name']} share the id {img['id']!r}: Ultralytics names "
                f"predictions by file stem, so stems must be unique within a split"
            )
        seen[img["id"]] = img["file_name"]
    if len({type(i) for i in seen}) > 1:  # numeric and other stems: string ids throughout (COCOeval sorts ids)
        for x in coco["images"] + coco["annotations"]:
            key = "id" if "file_name" in x else "image_id"
            x[key] = str(x[key])
    return coco


def _one_line(msg: str) -> str:
    return "; ".join(s.strip() for s in str(msg).splitlines() if s.strip())


def load_dataset(data: str | Path, split: str = "val") -> dict:
    """Resolve a dataset YAML as Ultralytics does (never downloading) and check that the split's images exist.

    Args:
        data (str | Path): A dataset YAML path or a name Ultralytics knows (``coco.yaml``).
        split (str): The split to evaluate.

    Returns:
        (dict): Ultralytics' dataset dict (absolute ``path``, ``names``, split paths).

    Raises:
        MissingFileError: The YAML or the split's images are missing.
        DatasetError: The YAML is malformed.
    """
    from ultralytics.data.utils import check_det_dataset

    try:
        return check_det_dataset(str(data), autodownload=False, split=split)
    except FileNotFoundError as e:
        raise MissingFileError(f"dataset {data}: {_one_line(e)}") from None
    except (SyntaxError, TypeError, ValueError, KeyError) as e:
        raise DatasetError(f"dataset {data}: {_one_line(e)}") from None


def find_annotations(data: dict, split: str = "val") -> Path | None:
    """The COCO annotation file of a dataset's split, if it has one.

    Looks in ``<path>/annotations/`` for ``instances_<split source>.json`` (``val2017.txt`` or ``images/val2017`` ->
    ``instances_val2017.json``, the stock COCO layout; ``images/val`` -> ``instances_val.json``, the demo dataset),
    then ``instances_<split>.json``.

    Args:
        data (dict): Dataset dict from `load_dataset`.
        split (str): The split.

    Returns:
        (Path | None): The file, or None.
    """
    src = data.get(split)
    src = src[0] if isinstance(src, list) and src else src
    names = [f"instances_{Path(src).stem}.json"] if src else []
    names.append(f"instances_{split}.json")
    for name in dict.fromkeys(names):
        p = Path(data["path"]) / "annotations" / name
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Predictions from the stock Ultralytics validator
# ----------------------------------------------------------------------------------------------------------------------
class SpikeProbe:
    """Records how the spike-fed convs of whatever model runs inside the ``with`` block actually executed.

    Uses global forward pre-hooks, so it sees the copy Ultralytics' validator makes of the model (deep copy, AutoBackend
    wrapper, fusion) and not only the object it was given. Each ``NeuronConv`` call fed by an integer neuron counts as
    spike-driven when it ran its ``{0, 1}``-plane path; each ``Synapse`` call (a plane's convolution) is checked to
    receive only 0s and 1s.
    """

    def __init__(self):
        self.calls = self.driven = self.synapse_calls = self.nonbinary = 0
        self._handle = None

    def _hook(self, module, args):
        from ibra_yolo.nn.blocks import NeuronConv, Synapse

        if isinstance(module, NeuronConv) and module.spiking:
            self.calls += 1
            self.driven += bool(module.spike_driven and not module.training)
        elif isinstance(module, Synapse):
            x = args[0]
            self.synapse_calls += 1
            self.nonbinary += bool(((x != 0) & (x != 1)).any())

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False

    @property
    def mode(self) -> str:
        """``"spike-driven"``, ``"integer"``, ``"mixed"`` or ``"non-spiking"`` (no integer neuron ran)."""
        if not self.calls:
            return "non-spiking"
        if self.driven == self.calls and not self.nonbinary:
            return "spike-driven"
        return "integer" if not self.driven else "mixed"

    def summary(self) -> dict:
        """The counts and the mode, for the results file."""
        return {
            "mode": self.mode,
            "spike_fed_conv_calls": self.calls,
            "spike_driven_calls": self.driven,
            "binary_plane_convolutions": self.synapse_calls - self.nonbinary,
            "non_binary_plane_convolutions": self.nonbinary,
        }


@dataclass
class ValidationRun:
    """What a run of the stock validator produced.

    Attributes:
        detections (list[dict]): Ultralytics' ``predictions.json`` entries (its category ids, see ``class_map``).
        class_map (list[int]): The category id Ultralytics wrote for each class index.
        names (dict[int, str]): The model's class names.
        im_files (list[str]): The images validated.
        save_dir (Path): The validator's output folder (holds ``predictions.json`` when there were detections).
        execution (dict): `SpikeProbe.summary` of the run.
        stats (dict): Ultralytics' own metrics (its mAP is computed differently from COCOeval's).
        model (object): The ``YOLO`` object that was validated.
    """

    detections: list[dict]
    class_map: list[int]
    names: dict[int, str]
    im_files: list[str]
    save_dir: Path
    execution: dict
    stats: dict = field(default_factory=dict)
    model: object = None


def run_detections(run: ValidationRun, gt: dict) -> tuple[list[dict], list, dict, list[str]]:
    """Express a validator run's detections in an annotation file's ids, and list the images to score.

    Ultralytics writes class index + 1 as ``category_id`` (COCO's 91 ids only when it recognises the stock COCO val
    list); here each class is mapped to the file's category by name or order (`match_categories`) whatever the
    validator wrote, and image ids are resolved by file name (`align_image_ids`).

    Args:
        run (ValidationRun): From `predict_split`.
        gt (dict): COCO annotations.

    Returns:
        (tuple): Detections, image ids to evaluate (the validated images), the category map
        ``{"how", "ids": {class name: category id}}``, and notes.

    Raises:
        CategoryMismatchError: The model's classes do not fit the file's categories.
        ImageIdMismatchError: Validated images are missing from the file.
    """
    cat_ids, how = match_categories(run.names, gt["categories"])
    index = {cid: i for i, cid in enumerate(run.class_map)}
    dets = [{**d, "category_id": cat_ids[index[d["category_id"]]]} for d in run.detections]
    dets, notes = align_image_ids(dets, gt, "model's predictions")
    ids, by_stem = _image_lookup(gt)
    img_ids, missing = [], []
    for f in map(Path, run.im_files):
        gid = _resolve_image(int(f.stem) if f.stem.isnumeric() else f.stem, f.name, ids, by_stem)
        (missing if gid is None else img_ids).append(f.name if gid is None else gid)
    if missing:
        raise ImageIdMismatchError(
            f"{len(missing)} of {len(run.im_files)} validation images ({_examples(missing)}) are not in the annotation "
            f"file: it does not describe this split (pass the right --ann, or omit it to build one from the labels)"
        )
    if len(ids) > len(set(img_ids)):
        notes.append(f"{len(ids) - len(set(img_ids))} images of the annotation file were not validated; not scored")
    if how == "by order":
        notes.append("class names differ from the annotation file's category names: classes mapped by order")
    return dets, img_ids, {"how": how, "ids": {run.names[i]: c for i, c in zip(sorted(run.names), cat_ids)}}, notes


def _load_model(weights: str | Path):
    from ultralytics import YOLO

    weights = Path(weights)
    if not weights.is_file():
        raise MissingFileError(f"weights file {weights} does not exist")
    try:
        return YOLO(str(weights))
    except IbraYoloError:
        raise
    except Exception as e:  # a corrupt or foreign file: say which, without the loader's traceback
        raise CocoEvalError(f"cannot load weights {weights}: {type(e).__name__}: {_one_line(e)[:300]}") from None


def predict_split(
    weights: str | Path,
    data: str | Path,
    imgsz: int = 640,
    batch: int = 16,
    conf: float = 0.001,
    iou: float = 0.7,
    device: str = "",
    spike_driven: bool = False,
    split: str = "val",
    project: str | Path | None = None,
    name: str | None = None,
) -> ValidationRun:
    """Predict over a dataset split with the stock validator (``YOLO(weights).val(save_json=True)``).

    Args:
        weights (str | Path): Checkpoint (``best.pt``).
        data (str | Path): Dataset YAML.
        imgsz (int): Inference size.
        batch (int): Batch size.
        conf (float): Confidence threshold (0.001: COCO convention, low so the PR curve is complete).
        iou (float): NMS IoU threshold.
        device (str): Ultralytics device string ("" = auto, "cpu", "0").
        spike_driven (bool): Run the model spike-driven (``ibra_yolo.spike_driven``) and verify that it did.
        split (str): Dataset split.
        project (str | Path | None): Output project folder (Ultralytics' ``project=``).
        name (str | None): Output run name (Ultralytics' ``name=``).

    Returns:
        (ValidationRun): Detections and everything needed to score them.

    Raises:
        SpikeModeError: ``spike_driven`` was asked for and not every spike-fed conv ran on ``{0, 1}`` planes.
    """
    from ibra_yolo.spike_mode import set_spike_driven

    model = _load_model(weights)
    if spike_driven:
        set_spike_driven(model, True)
    seen = {}
    model.add_callback("on_val_end", lambda v: seen.setdefault("validator", v))
    kwargs = {"project": str(project) if project else None, "name": name, "exist_ok": bool(name)}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with SpikeProbe() as probe:
        metrics = model.val(
            data=str(data), split=split, imgsz=imgsz, batch=batch, conf=conf, iou=iou, device=device,
            save_json=True, plots=False, **kwargs,
        )  # fmt: skip
    v = seen["validator"]
    if spike_driven and probe.mode != "spike-driven":
        raise SpikeModeError(
            f"spike-driven mode was requested but {probe.calls - probe.driven} of {probe.calls} spike-fed conv calls "
            f"ran in integer mode and {probe.nonbinary} plane convolutions saw non-binary input: the validator's model "
            f"copy lost the setting"
        )
    return ValidationRun(
        detections=list(v.jdict),
        class_map=list(v.class_map),
        names=dict(model.names),
        im_files=list(v.dataloader.dataset.im_files),
        save_dir=Path(v.save_dir),
        execution=probe.summary(),
        stats={k: float(x) for k, x in getattr(metrics, "results_dict", {}).items()},
        model=model,
    )
