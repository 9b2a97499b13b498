"""Where a split's COCO annotations come from: the dataset's own file, or built from its YOLO labels.

``image_id(path)`` is Ultralytics' rule for the ``image_id`` it writes in ``predictions.json`` (the file stem as an
integer when it is a number, else the stem); every id we write or match follows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ibra_yolo.errors import IbraYoloError

__all__ = ("image_id", "yolo_labels_to_coco", "coco_from_yolo_labels", "find_annotations")


def image_id(path: str | Path) -> int | str:
    """The id Ultralytics gives an image in ``predictions.json``: its file stem, as an integer when it is a number.

    The same rule as Ultralytics' ``DetectionValidator.pred_to_json`` (checked in the tests).
    """
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def _read_yolo_boxes(label: Path) -> list[tuple[int, float, float, float, float]]:
    """Rows ``(cls, xc, yc, w, h)`` (normalised) of a YOLO label file; polygon rows become their enclosing box.

    Like Ultralytics' loader, a row with more than 6 values is a segment ``cls x1 y1 x2 y2 ...``; blank lines are
    skipped and extra columns of box rows ignored.
    """
    rows = []
    if not label.exists():
        return rows
    for line in label.read_text().splitlines():
        v = [float(x) for x in line.split()]
        if len(v) > 6:  # segment: the box spanning its vertices
            xy = np.array(v[1 : 1 + (len(v) - 1) // 2 * 2]).reshape(-1, 2)
            (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
            rows.append((int(v[0]), (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
        elif len(v) >= 5:
            rows.append((int(v[0]), *v[1:5]))
    return rows


def yolo_labels_to_coco(images: list[Path], label_dir: Path, names: dict[int, str]) -> dict:
    """Build a COCO detection dict from YOLO-format label files in one folder.

    Image ids follow ``image_id``; category ids are class index + 1; boxes are ``[x, y, w, h]`` in pixels (segment
    labels: the box around the polygon, as Ultralytics trains on).

    Args:
        images (list[Path]): Image files.
        label_dir (Path): Folder of ``<stem>.txt`` label files (``cls xc yc w h`` normalised).
        names (dict[int, str]): Class names by index.

    Returns:
        (dict): COCO ``images``, ``annotations`` and ``categories``.

    Raises:
        IbraYoloError: An image cannot be read.
    """
    import cv2

    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in names.items()]}
    for p in sorted(map(Path, images)):
        img = cv2.imread(str(p))
        if img is None:
            raise IbraYoloError(f"cannot read image {p}")
        h, w = img.shape[:2]
        iid = image_id(p)
        coco["images"].append({"id": iid, "file_name": p.name, "width": w, "height": h})
        for cls, xc, yc, bw, bh in _read_yolo_boxes(Path(label_dir) / f"{p.stem}.txt"):
            box = [(xc - bw / 2) * w, (yc - bh / 2) * h, bw * w, bh * h]
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": iid,
                    "category_id": int(cls) + 1,
                    "bbox": [round(v, 3) for v in box],
                    "area": round(box[2] * box[3], 3),
                    "iscrowd": 0,
                }
            )
    return coco


def coco_from_yolo_labels(images: list[str | Path], names: dict[int, str]) -> dict:
    """COCO annotations for any YOLO-format image list, with labels found as Ultralytics finds them.

    Each image's label is ``.../labels/.../<stem>.txt`` for ``.../images/.../<stem>.<ext>``; box and segment labels
    both work (``yolo_labels_to_coco``, per label folder). Image ids follow ``image_id``; category ids are class
    index + 1; ``area`` is the box area (COCO's small/medium/large split uses it).

    Args:
        images (list[str | Path]): Image files of the split.
        names (dict[int, str]): Class names by index.

    Returns:
        (dict): COCO ``images``, ``annotations`` and ``categories``.

    Raises:
        IbraYoloError: Two images share a file stem (predictions could not tell them apart).
    """
    from ultralytics.data.utils import img2label_paths

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
            raise IbraYoloError(
                f"images {seen[img['id']]} and {img['file_name']} share the id {img['id']!r}: Ultralytics names "
                f"predictions by file stem, so stems must be unique within a split"
            )
        seen[img["id"]] = img["file_name"]
    if len({type(i) for i in seen}) > 1:  # numeric and other stems: string ids throughout (COCOeval sorts ids)
        for x in coco["images"] + coco["annotations"]:
            key = "id" if "file_name" in x else "image_id"
            x[key] = str(x[key])
    return coco


def find_annotations(data: dict, split: str = "val") -> Path | None:
    """The COCO annotation file of a dataset's split, if it has one.

    Looks in ``<path>/annotations/`` for ``instances_<split source>.json`` (``val2017.txt`` or ``images/val2017`` ->
    ``instances_val2017.json``, the stock COCO layout; ``images/val`` -> ``instances_val.json``, the demo dataset),
    then ``instances_<split>.json``.

    Args:
        data (dict): Dataset dict from ``ibra_yolo.sources.load_dataset``.
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
