"""The embedded demo dataset: coloured shapes on textured backgrounds, generated offline and deterministically.

It is written in the YOLO layout (``images/{train,val}``, ``labels/{train,val}``, ``data.yaml``) plus a COCO
annotation file for the validation split (``annotations/instances_val.json``), so the stock ``yolo`` commands and
``ibra-yolo eval`` run on it exactly as on COCO. Image file stems are numbers: they are the COCO image ids
Ultralytics writes in ``predictions.json`` (``ibra_yolo.coco.image_id``); COCO category ids are the class index + 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from ibra_yolo.coco.annotations import yolo_labels_to_coco
from ibra_yolo.errors import OutputExistsError, PathError
from ibra_yolo.files import as_path, check_folder, describe_os_error
from ibra_yolo.limits import MAX_DEMO_IMAGES, MAX_IMGSZ

__all__ = ("SHAPES", "make_shapes_dataset", "check_dataset_root")

SHAPES = ("circle", "square", "triangle")
_MANIFEST = "ibra_yolo_dataset.json"


def _draw(img: np.ndarray, rng: np.random.Generator, cls: int, cx: float, cy: float, r: float) -> tuple:
    """Draw one filled shape and return its exact box (x1, y1, x2, y2) in pixels."""
    color = tuple(int(c) for c in rng.integers(40, 256, 3))
    if SHAPES[cls] == "circle":
        cv2.circle(img, (round(cx), round(cy)), round(r), color, -1, cv2.LINE_AA)
        pts = np.array([[cx - r, cy - r], [cx + r, cy + r]])
    elif SHAPES[cls] == "square":
        a = rng.uniform(0, math.pi / 2)
        pts = np.array(
            [[cx + r * math.cos(a + k * math.pi / 2), cy + r * math.sin(a + k * math.pi / 2)] for k in range(4)]
        )
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], color, cv2.LINE_AA)
    else:
        a = rng.uniform(0, 2 * math.pi)
        pts = np.array(
            [[cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3)] for k in range(3)]
        )
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], color, cv2.LINE_AA)
    h, w = img.shape[:2]
    x1, y1 = np.clip(pts.min(0), 0, [w, h])
    x2, y2 = np.clip(pts.max(0), 0, [w, h])
    return float(x1), float(y1), float(x2), float(y2)


def _image(rng: np.random.Generator, imgsz: int, max_objects: int) -> tuple[np.ndarray, list]:
    """One image with 1..max_objects non-overlapping shapes; labels are (cls, x1, y1, x2, y2)."""
    base = rng.integers(0, 120, 3).astype(np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (imgsz, imgsz, 3)).astype(np.float32), (0, 0), 3)
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    labels, placed = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(20):
            r = rng.uniform(0.06, 0.2) * imgsz
            cx, cy = rng.uniform(r, imgsz - r, 2)
            if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                break
        else:
            continue
        cls = int(rng.integers(len(SHAPES)))
        labels.append((cls, *_draw(img, rng, cls, cx, cy, r)))
        placed.append((cx, cy, r))
    return img, labels


def _params(n_train: int, n_val: int, imgsz: int, max_objects: int, seed: int) -> dict:
    params = {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "max_objects": max_objects, "seed": seed}
    limits = {"n_train": MAX_DEMO_IMAGES, "n_val": MAX_DEMO_IMAGES, "imgsz": MAX_IMGSZ, "max_objects": 100}
    for k, most in limits.items():
        if not isinstance(params[k], int) or isinstance(params[k], bool) or not 1 <= params[k] <= most:
            raise ValueError(f"{k}={params[k]!r} is invalid: must be an integer in [1, {most}]")
    if imgsz < 32:
        raise ValueError(f"imgsz={imgsz} is invalid: must be >= 32")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: must be an integer >= 0")
    return params


def check_dataset_root(
    root: str | Path, n_train: int = 512, n_val: int = 128, imgsz: int = 160, max_objects: int = 4, seed: int = 0
) -> bool:
    """Whether ``root`` already holds this dataset (True: reuse it) or may receive it (False: absent or empty).

    Args:
        root (str | Path): The dataset folder.
        n_train, n_val, imgsz, max_objects, seed: As for ``make_shapes_dataset``.

    Returns:
        (bool): True when ``root`` holds the dataset made with these arguments.

    Raises:
        PathError: ``root`` or a parent is a file, or it cannot be written.
        OutputExistsError: ``root`` holds anything else (another demo dataset, or other files).
        ValueError: An argument out of range.
    """
    root = check_folder(root, "root")
    params = _params(n_train, n_val, imgsz, max_objects, seed)
    try:
        manifest = root / _MANIFEST
        made = json.loads(manifest.read_text()) if manifest.is_file() else None
        if made == params and (root / "data.yaml").is_file():
            return True
        if root.is_dir() and any(root.iterdir()):
            what = f"the demo dataset made with {made}" if isinstance(made, dict) else "files of its own"
            raise OutputExistsError(
                f"{root} holds {what}, not the one asked for ({params}): choose another folder (nothing in it is "
                "deleted or replaced)"
            )
    except (OSError, ValueError) as e:
        if isinstance(e, OutputExistsError):
            raise
        raise PathError(f"cannot read {root}: {describe_os_error(e) if isinstance(e, OSError) else e}") from None
    return False


def make_shapes_dataset(
    root: str | Path,
    n_train: int = 512,
    n_val: int = 128,
    imgsz: int = 160,
    max_objects: int = 4,
    seed: int = 0,
) -> Path:
    """Write the demo dataset under ``root`` and return its ``data.yaml``.

    Deterministic for a given set of arguments. An existing dataset made with the same arguments is reused; a folder
    holding anything else (another dataset, other files) is refused and never changed.

    Args:
        root (str | Path): Output folder.
        n_train (int): Training images.
        n_val (int): Validation images.
        imgsz (int): Square image size in pixels.
        max_objects (int): Most shapes per image.
        seed (int): Random seed.

    Returns:
        (Path): The dataset YAML, usable as ``data=`` with the stock CLI.

    Raises:
        PathError: ``root`` or a parent is a file, or writing failed (e.g. no permission, disk full).
        OutputExistsError: ``root`` holds anything else.
        ValueError: An argument out of range.
    """
    root = as_path(root, "root").resolve()
    if check_dataset_root(root, n_train, n_val, imgsz, max_objects, seed):
        return root / "data.yaml"
    try:
        _write_dataset(root, _params(n_train, n_val, imgsz, max_objects, seed))
    except OSError as e:
        raise PathError(f"cannot write the demo dataset in {root}: {describe_os_error(e)}") from None
    return root / "data.yaml"


def _write_dataset(root: Path, params: dict) -> None:
    """Write every file of the dataset; the manifest last, so a partial dataset is never reused."""
    rng = np.random.default_rng(params["seed"])
    imgsz, max_objects = params["imgsz"], params["max_objects"]
    names = dict(enumerate(SHAPES))
    first_id = 1
    for split, n in (("train", params["n_train"]), ("val", params["n_val"])):
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for k in range(first_id, first_id + n):
            img, labels = _image(rng, imgsz, max_objects)
            if not cv2.imwrite(str(img_dir / f"{k:06d}.png"), img):  # OpenCV reports a failed write as False
                raise OSError(f"OpenCV could not write {img_dir / f'{k:06d}.png'}")
            lines = []
            for c, x1, y1, x2, y2 in labels:
                xc, yc, w, h = (x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz, (x2 - x1) / imgsz, (y2 - y1) / imgsz
                lines.append(f"{c} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}")
            (lbl_dir / f"{k:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        first_id += n  # ids unique across splits, like COCO
    (root / "annotations").mkdir(exist_ok=True)
    coco = yolo_labels_to_coco(sorted((root / "images" / "val").glob("*.png")), root / "labels" / "val", names)
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    yaml_lines = [f"path: {root}", "train: images/train", "val: images/val", "names:"]
    yaml_lines += [f"  {i}: {n}" for i, n in names.items()]
    (root / "data.yaml").write_text("\n".join(yaml_lines) + "\n")
    (root / _MANIFEST).write_text(json.dumps(params))
