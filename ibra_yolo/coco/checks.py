"""Pure checks of COCO files: annotations and predictions are read, checked and made consistent with each other.

Nothing here runs a model or pycocotools. Image ids are matched by file name where the ids differ (Ultralytics writes
``file_name`` beside each detection), category ids are checked against the annotation file, and the usual mix-ups
(COCO's contiguous 1..80 ids against its original 91-id scheme, 0-based class indices) are named with their fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from ibra_yolo.coco.records import check_annotations, check_detections, plain
from ibra_yolo.errors import IbraYoloError, MissingFileError
from ibra_yolo.files import as_path

__all__ = (
    "coco91_ids",
    "load_annotations",
    "load_predictions",
    "align_image_ids",
    "annotation_image_ids",
    "check_categories",
    "remap_categories",
    "check_predictions",
    "match_categories",
)

_EXAMPLES = 3  # offending values quoted in an error message
_COCO_UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # ids of COCO's paper categories without 2017 boxes


def coco91_ids() -> list[int]:
    """COCO's original category ids of the 80 detection classes, in class-index order: 1..90 less 10 unused ids.

    The same list as Ultralytics' ``coco80_to_coco91_class()`` (checked in the tests), without importing it.
    """
    return [i for i in range(1, 91) if i not in _COCO_UNUSED_IDS]


def _examples(values) -> str:
    values = sorted(values, key=lambda v: (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)))
    head = ", ".join(repr(v) for v in values[:_EXAMPLES])
    return head + (f" and {len(values) - _EXAMPLES} more" if len(values) > _EXAMPLES else "")


def _unique_keys(pairs: list) -> dict:
    """A JSON object whose keys are unique (``json`` would silently keep the last of two equal keys)."""
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise IbraYoloError(f"an object repeats the key {key!r}: keep one (JSON keeps the last)")
    return d


def _load_json(path: str | Path, what: str):
    path = as_path(path, f"{what} path")
    if not path.exists():
        raise MissingFileError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise IbraYoloError(f"{what} file {path} is a folder: name a JSON file")
    if not path.is_file():  # a FIFO or a device: reading it could block forever
        raise IbraYoloError(f"{what} file {path} is not a regular file: name a JSON file")
    try:
        return json.loads(path.read_bytes(), object_pairs_hook=_unique_keys)  # UTF-8 (a BOM too), UTF-16 or UTF-32
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IbraYoloError(f"{what} file {path} is not valid JSON ({e})") from None
    except RecursionError:
        raise IbraYoloError(f"{what} file {path} nests its JSON too deeply to be a COCO file") from None
    except ValueError as e:  # Python reads integers of at most sys.get_int_max_str_digits() digits
        raise IbraYoloError(f"{what} file {path} holds a number too long to read ({e}): not a COCO file") from None
    except IbraYoloError as e:  # a repeated key (_unique_keys)
        raise IbraYoloError(f"{what} file {path}: {e}") from None
    except OSError as e:
        raise IbraYoloError(f"cannot read {what} file {path}: {e.strerror or type(e).__name__}") from None


def _id_type_check(ids: list, what: str, path) -> None:
    kinds = {type(i).__name__ for i in ids}
    if not kinds <= {"int", "str"} or len(kinds) > 1:
        raise IbraYoloError(f"{path}: {what} ids must be all integers or all strings, found {sorted(kinds)}")


def load_annotations(path: str | Path) -> dict:
    """Read and check a COCO detection annotation file (``images``, ``annotations``, ``categories``).

    Args:
        path (str | Path): The JSON file, e.g. ``coco/annotations/instances_val2017.json``.

    Returns:
        (dict): The parsed file.

    Raises:
        MissingFileError: The file does not exist.
        NonFiniteError: A number of an annotation is NaN or infinite.
        IbraYoloError: Not JSON, a key is missing, ids are duplicated or of mixed types, an annotation is malformed
            (``ibra_yolo.coco.records.check_annotations``) or names an image or category the file does not list.
    """
    gt = _load_json(path, "annotation")
    keys = ("images", "annotations", "categories")
    missing = [repr(k) for k in keys if not isinstance(gt, dict) or not isinstance(gt.get(k), list)]
    if missing:
        raise IbraYoloError(f"{path} is not a COCO detection file: it has no {', '.join(missing)} list")
    if not gt["images"] or not gt["categories"]:
        raise IbraYoloError(f"{path} lists no {'images' if not gt['images'] else 'categories'}: nothing to score")
    check_annotation_ids(gt, path)
    return gt


def check_annotation_ids(gt: dict, name) -> None:
    """Check the records of COCO annotations that hold ``images``, ``annotations`` and ``categories`` lists.

    Every image and category is an object with an id (all integers or all strings, none twice); there are annotations,
    each well-formed (``ibra_yolo.coco.records.check_annotations``) and naming a listed image and category (pycocotools
    would leave it out of every metric without a word), not all crowd regions (every metric would be -1), and no
    annotation id used twice (pycocotools indexes boxes by id). numpy and torch numbers count as the numbers they hold.

    Args:
        gt (dict): The annotations.
        name: How to name them in messages (the file, or ``score()``'s argument).

    Raises:
        NonFiniteError: A number of an annotation is NaN or infinite.
        IbraYoloError: The first problem, naming the record and its value.
    """
    ids = {}
    for key in ("images", "categories"):
        bad = next((i for i, x in enumerate(gt[key]) if not isinstance(x, dict) or "id" not in x), None)
        if bad is not None:
            raise IbraYoloError(f"{name}: {key}[{bad}] is {str(gt[key][bad])[:80]}: expected an object with an 'id'")
        ids[key] = [plain(x["id"]) for x in gt[key]]
        _id_type_check(ids[key], key[:-1] if key == "images" else "category", name)
        if len(set(ids[key])) != len(ids[key]):
            seen: set = set()
            twice = next(i for i in ids[key] if i in seen or seen.add(i))
            raise IbraYoloError(
                f"{name}: {key} id {twice!r:.40} is listed {ids[key].count(twice)} times: each id must be listed once"
            )
    if not gt["annotations"]:
        raise IbraYoloError(
            f"{name} has no annotations (an empty 'annotations' list): there is nothing to score against"
        )
    check_annotations(gt["annotations"], str(name))
    if all(a["iscrowd"] for a in gt["annotations"]):  # COCOeval ignores crowd boxes: every metric would be -1
        raise IbraYoloError(
            f"{name}: every annotation is a crowd region (iscrowd 1): there is nothing to score against"
        )
    ann_ids = [plain(a["id"]) for a in gt["annotations"]]
    if len(set(ann_ids)) != len(ann_ids):  # pycocotools indexes boxes by id: one lost, one counted twice
        seen, dup = set(), None
        for i in ann_ids:
            if i in seen:
                dup = i
                break
            seen.add(i)
        raise IbraYoloError(f"{name}: annotation id {dup!r} is used more than once: every box needs its own id")
    images, categories = set(ids["images"]), set(ids["categories"])
    for i, a in enumerate(gt["annotations"]):  # pycocotools would silently leave such a box out of every metric
        for key, known in (("image_id", images), ("category_id", categories)):
            if plain(a[key]) not in known:
                raise IbraYoloError(
                    f"{name}: annotation {i} has {key}={plain(a[key])!r}, which is not in its {key.split('_')[0]} list"
                )


def load_predictions(path: str | Path) -> list[dict]:
    """Read and check a COCO results file: a list of ``{image_id, category_id, bbox: [x, y, w, h], score}``.

    Args:
        path (str | Path): The JSON file (``predictions.json`` from ``yolo val save_json=True``).

    Returns:
        (list[dict]): The detections.

    Raises:
        MissingFileError: The file does not exist.
        NonFiniteError: A number of an entry is NaN or infinite (the first such entry is named).
        IbraYoloError: Not JSON, not a list, empty, or an entry lacks a key or has a bad id, box or score (see
            ``ibra_yolo.coco.records.check_detections``).
    """
    dets = _load_json(path, "predictions")
    if not isinstance(dets, list):
        raise IbraYoloError(f"{path} is not a COCO results file: expected a JSON list of detections")
    if not dets:
        raise IbraYoloError(f"predictions file {path} is empty (no detections): nothing to score")
    check_detections(dets, str(path))
    return dets


# ----------------------------------------------------------------------------------------------------------------------
# Image ids
# ----------------------------------------------------------------------------------------------------------------------
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
        IbraYoloError: Some detections name images the file does not have.
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
        raise IbraYoloError(
            f"{len(unknown)} image ids in the {source} are not in the annotation file ({_examples(unknown)}; "
            f"the file's ids: {_examples(ids)}): predictions and annotations come from "
            f"different datasets or splits"
        )
    notes = [f"{changed} detections' image ids re-mapped to the annotation file's ids by file name"] if changed else []
    return out, notes


def annotation_image_ids(files: list[str | Path], gt: dict) -> list:
    """The annotation file's id of each image file: by file name, else by Ultralytics' id of the file (``image_id``).

    Raises:
        IbraYoloError: Some images are not in the annotation file (it does not describe these images).
    """
    from ibra_yolo.coco.annotations import image_id

    ids, by_stem = _image_lookup(gt)
    found, missing = [], []
    for f in map(Path, files):
        gid = _resolve_image(image_id(f), f.name, ids, by_stem)
        (missing if gid is None else found).append(f.name if gid is None else gid)
    if missing:
        raise IbraYoloError(
            f"{len(missing)} of {len(files)} validation images ({_examples(missing)}) are not in the annotation "
            f"file: it does not describe this split (pass the right --ann, or omit it to build one from the labels)"
        )
    return found


# ----------------------------------------------------------------------------------------------------------------------
# Category ids
# ----------------------------------------------------------------------------------------------------------------------
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
        IbraYoloError: Some ids are unknown; the message names the likely mix-up and its fix.
    """
    cats = {c["id"] for c in gt["categories"]}
    pred = {d["category_id"] for d in dets}
    unknown = pred - cats
    if unknown:
        raise IbraYoloError(
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
        IbraYoloError: An id outside the source scheme.
    """
    c91 = coco91_ids()
    table = {i + 1: c for i, c in enumerate(c91)} if how == "coco80to91" else {c: i + 1 for i, c in enumerate(c91)}
    bad = {d["category_id"] for d in dets} - set(table)
    if bad:
        scheme = "1..80" if how == "coco80to91" else "COCO's 91-id scheme"
        raise IbraYoloError(f"--remap {how}: category ids {_examples(bad)} are not in {scheme}")
    return [{**d, "category_id": table[d["category_id"]]} for d in dets]


def check_predictions(
    dets: list[dict], gt: dict, remap: str | None = None, source: str = "predictions"
) -> tuple[list[dict], list[str]]:
    """All checks of a predictions list against annotations: each record, optional remap, image and category ids.

    Each record is checked first (``ibra_yolo.coco.records.check_detections``: the four keys, integer ids, four finite
    box numbers with ``w, h >= 0``, a finite score); the first bad one is named with its index, field and value.

    Args:
        dets (list[dict]): Detections (COCO results format).
        gt (dict): COCO annotations.
        remap (str | None): ``"coco80to91"``, ``"coco91to80"`` or None.
        source (str): How to name the detections in messages.

    Returns:
        (tuple[list[dict], list[str]]): Detections ready for `score` and notes on what was changed or looks odd.

    Raises:
        NonFiniteError: A detection holds a NaN or infinite number.
        IbraYoloError: No detections, a malformed detection, or ids that do not fit the annotation file.
    """
    check_detections(dets, source)
    if not dets:
        raise IbraYoloError(f"the {source} contain no detections: nothing to score")
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
        IbraYoloError: Neither names nor counts match.
    """
    seen: dict[str, int] = {}
    for i in sorted(names):  # two classes of one name would both score as that category (battery 30, H41)
        if seen.setdefault(_norm(names[i]), i) != i:
            raise IbraYoloError(
                f"the model names classes {seen[_norm(names[i])]} and {i} both {names[i]!r:.60}: its class names must "
                f"differ to be matched to the annotation file's categories (the checkpoint's names were edited?)"
            )
    by_name: dict[str, list] = {}
    for c in categories:
        by_name.setdefault(_norm(c.get("name", "")), []).append(c["id"])
    twice = next((n for n in names.values() if len(by_name.get(_norm(n), ())) > 1), None)
    if twice is not None:  # by order, the model's next class would take the second one's boxes (battery 28, E08m)
        raise IbraYoloError(
            f"the annotation file lists the model's class name {twice!r:.60} as {len(by_name[_norm(twice)])} "
            f"categories (ids {_examples(by_name[_norm(twice)])}): each category name must be listed once to match "
            f"the model's classes"
        )
    if all(len(by_name.get(_norm(n), ())) == 1 for n in names.values()):
        return [by_name[_norm(names[i])][0] for i in sorted(names)], "by name"
    if len(categories) == len(names):
        ids = sorted(c["id"] for c in categories)
        return [ids[i] for i in range(len(names))], "by order"
    cat_names = [c.get("name", "") for c in categories]
    missing = [n for n in names.values() if len(by_name.get(_norm(n), ())) != 1]
    raise IbraYoloError(
        f"the model has {len(names)} classes but the annotation file has {len(categories)} categories, and class "
        f"names {_examples(missing)} are not among its names ({_examples(cat_names)}): a model trained on another "
        f"dataset, or the wrong annotation file"
    )
