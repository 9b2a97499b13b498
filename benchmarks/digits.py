"""A detection set of real handwriting for the benchmarks: scikit-learn's bundled UCI digits on paper-like canvases.

The demo data (``ibra_yolo.data``, coloured shapes) is synthetic and easy. This set is made of real handwritten digits
(the 1,797 8x8 digits of 43 writers that scikit-learn ships inside its wheel; nothing is downloaded): each image is a
textured, tinted sheet with 1..``max_objects`` non-overlapping digits of different sizes, ink darkness and stroke
blur, 10 classes. Train and val images use disjoint sets of digit samples. Written in the YOLO layout with a
``data.yaml``; deterministic for given arguments (a manifest makes a rerun reuse it).

Needs scikit-learn (``pip install -e ".[bench]"``); only the benchmarks use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

__all__ = ("make_digits_dataset",)

_MANIFEST = "digits_dataset.json"
_TRAIN_SAMPLES = 1300  # of the 1,797 digits (shuffled once): the rest only ever appear in val images


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit('error: the digits benchmark data needs scikit-learn: pip install -e ".[bench]"') from None
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(int)


def _sheet(rng: np.random.Generator, imgsz: int) -> np.ndarray:
    paper = rng.uniform(170, 250)
    grain = cv2.GaussianBlur(rng.normal(0, 12, (imgsz, imgsz)).astype(np.float32), (0, 0), 2)
    return np.full((imgsz, imgsz), paper, np.float32) + grain


def _place(rng, img, glyphs, labels, pool, imgsz, placed) -> str | None:
    """Write one digit onto ``img`` where it overlaps nothing placed; return its YOLO label row (None if no room)."""
    for _ in range(30):
        s = int(rng.uniform(0.14, 0.35) * imgsz)
        x, y = (int(v) for v in rng.integers(0, imgsz - s, 2))
        if all(x + s <= px or px + ps <= x or y + s <= py or py + ps <= y for px, py, ps in placed):
            break
    else:
        return None
    i = int(rng.choice(pool))
    alpha = cv2.resize(glyphs[i], (s, s), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(0.3, 1.2))
    ink = rng.uniform(10, 90)
    img[y : y + s, x : x + s] = img[y : y + s, x : x + s] * (1 - alpha) + ink * alpha
    ys, xs = np.nonzero(alpha > 0.25)
    if not len(xs):
        return None
    x1, x2, y1, y2 = x + xs.min(), x + xs.max() + 1, y + ys.min(), y + ys.max() + 1
    placed.append((x, y, s))
    xc, yc, w, h = (x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz, (x2 - x1) / imgsz, (y2 - y1) / imgsz
    return f"{labels[i]} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}"


def make_digits_dataset(
    root: str | Path, n_train: int = 600, n_val: int = 200, imgsz: int = 128, max_objects: int = 5, seed: int = 0
) -> Path:
    """Write the digits detection set under ``root`` (an empty or missing folder) and return its ``data.yaml``.

    Args:
        root (str | Path): Output folder; a set made with the same arguments is reused, anything else is refused.
        n_train (int): Training images.
        n_val (int): Validation images.
        imgsz (int): Square image size in pixels.
        max_objects (int): Most digits per image.
        seed (int): Random seed.

    Returns:
        (Path): The dataset YAML, usable as ``data=`` with the stock CLI.
    """
    root = Path(root).resolve()
    params = {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "max_objects": max_objects, "seed": seed}
    manifest = root / _MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()) == params:
        return root / "data.yaml"
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"error: {root} is not empty and is not a digits set made with {params}: choose another --out")
    glyphs, labels = _load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(glyphs))
    pools = {"train": order[:_TRAIN_SAMPLES], "val": order[_TRAIN_SAMPLES:]}
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            img, placed, rows = _sheet(rng, imgsz), [], []
            for _ in range(int(rng.integers(1, max_objects + 1))):
                row = _place(rng, img, glyphs, labels, pools[split], imgsz, placed)
                if row:
                    rows.append(row)
            rgb = np.clip(img[..., None] * rng.uniform(0.85, 1.0, 3), 0, 255).astype(np.uint8)
            stem = f"{k + 1:06d}" if split == "train" else f"{n_train + k + 1:06d}"  # ids unique across splits
            cv2.imwrite(str(root / "images" / split / f"{stem}.png"), rgb)
            (root / "labels" / split / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
    names = "".join(f"  {i}: '{i}'\n" for i in range(10))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    manifest.write_text(json.dumps(params))
    return root / "data.yaml"
