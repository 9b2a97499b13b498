"""Each record of a COCO file checked on its own: keys, types, finite numbers and box sizes.

A detection is ``{image_id, category_id, bbox: [x, y, w, h], score}``; an annotation is ``{id, image_id, category_id,
bbox, area, iscrowd}``. pycocotools checks none of this: a NaN box or a negative width is scored without a word, so
every record is checked here before anything is scored, and the first bad one is named (its index, field and value).
Whether the ids exist in the annotation file is checked in ``ibra_yolo.coco.checks``.
"""

from __future__ import annotations

import math
import numbers

from ibra_yolo.errors import IbraYoloError, NonFiniteError

__all__ = ("DETECTION_KEYS", "ANNOTATION_KEYS", "check_detections", "check_annotations", "plain")

DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")
COCO_MAX_AREA = 1e5**2  # the upper bound of COCOeval's area range "all" (pycocotools Params.areaRng)
ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")  # the keys COCOeval reads
_BOX = ("x", "y", "w", "h")


def plain(v):
    """``v`` as plain Python values: numpy and torch scalars and arrays (what a numpy or torch pipeline hands over) via
    their ``tolist()``; anything else as it is."""
    return v.tolist() if hasattr(v, "tolist") and not isinstance(v, (str, bytes, dict)) else v


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(where: str, field: str, v, minimum: float | None = None) -> None:
    """A finite number (not a bool), ``>= minimum`` when given."""
    v = plain(v)
    if not _is_number(v):
        raise IbraYoloError(f"{where} has {field}={_short(v)}: expected a number")
    if _is_int(v) and not -1e308 < v < 1e308:  # math.isfinite raised OverflowError: "int too large to convert"
        raise IbraYoloError(f"{where} has {field}={_short(v)}: too large for a float (a 64-bit number)")
    if not math.isfinite(v):
        raise NonFiniteError(f"{where} has {field}={v!r}: every number must be finite")
    if minimum is not None and v < minimum:
        raise IbraYoloError(f"{where} has {field}={v!r}: it must be >= {minimum:g}")


def _id(where: str, field: str, v, strings: bool) -> None:
    """An integer id (or, where ``strings``, a non-empty string: Ultralytics names images by file stem)."""
    v = plain(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise NonFiniteError(f"{where} has {field}={v!r}: every number must be finite")
    if not (_is_int(v) or (strings and isinstance(v, str) and v)):
        expected = "an integer or a file stem" if strings else "an integer"
        raise IbraYoloError(f"{where} has {field}={_short(v)}: expected {expected}")


def _box(where: str, box) -> None:
    """``[x, y, w, h]``: four finite numbers, ``w, h >= 0`` (a list, a tuple or a 1-D numpy array or tensor)."""
    box = plain(box)
    if not (isinstance(box, (list, tuple)) and len(box) == 4):
        raise IbraYoloError(f"{where} has bbox={_short(box)}: expected [x, y, w, h] (4 numbers)")
    for k, (name, v) in enumerate(zip(_BOX, box)):
        _number(where, f"bbox[{k}] ({name})", v, 0 if name in "wh" else None)


def _record(where: str, d, keys: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        raise IbraYoloError(f"{where} is {_short(d)}: expected an object with keys {', '.join(keys)}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise IbraYoloError(f"{where} has no {', '.join(map(repr, missing))}: expected keys {', '.join(keys)}")


def check_detections(dets: list, source: str = "predictions") -> None:
    """Check every detection of a COCO results list; the first bad one stops the check.

    Args:
        dets (list): The detections.
        source (str): How to name them in messages (e.g. the file).

    Raises:
        NonFiniteError: A NaN or infinite number.
        IbraYoloError: A record that is not an object with the four keys, an id that is not an integer (or a file
            stem, for images), a box that is not four numbers, a negative width or height, a score that is not a number.
    """
    if not isinstance(dets, list):
        raise IbraYoloError(f"{source} are not a COCO results list: expected a JSON list of detections")
    for i, d in enumerate(dets):
        where = f"{source}: detection {i}"
        _record(where, d, DETECTION_KEYS)
        _id(where, "image_id", d["image_id"], strings=True)
        _id(where, "category_id", d["category_id"], strings=False)
        _box(where, d["bbox"])
        _number(where, "score", d["score"])


def check_annotations(annotations: list, source: str) -> None:
    """Check every ground-truth box of a COCO annotation file (the keys COCOeval reads, finite, non-negative).

    Raises:
        NonFiniteError: A NaN or infinite number.
        IbraYoloError: A record without the keys COCOeval reads, an id that is not an integer (or, for images, a
            string), a bad box, a negative area or one above `COCO_MAX_AREA`, or an ``iscrowd`` other than 0 or 1.
    """
    for i, a in enumerate(annotations):
        where = f"{source}: annotation {i}"
        _record(where, a, ANNOTATION_KEYS)
        _id(where, "id", a["id"], strings=True)  # pycocotools indexes boxes by it
        _id(where, "image_id", a["image_id"], strings=True)
        _id(where, "category_id", a["category_id"], strings=False)
        _box(where, a["bbox"])
        _number(where, "area", a["area"], 0)
        if plain(a["area"]) > COCO_MAX_AREA:  # COCOeval's widest range, "all": a box beyond it is in no metric
            raise IbraYoloError(
                f"{where} has area={_short(a['area'])}: above {COCO_MAX_AREA:.0e} (1e5 px squared, the largest area "
                f"COCOeval scores), so every metric would ignore the box"
            )
        if not (_is_int(plain(a["iscrowd"])) and plain(a["iscrowd"]) in (0, 1)):
            raise IbraYoloError(f"{where} has iscrowd={_short(a['iscrowd'])}: expected 0 or 1")
