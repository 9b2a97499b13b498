"""Datasets, images and devices, resolved by Ultralytics' own helpers so that our tools find what ``yolo`` finds.

- ``load_dataset``: a data YAML (a path, or a name Ultralytics knows such as ``coco.yaml``) through
  ``check_det_dataset``, as ``yolo val data=...`` resolves it, never downloading;
- ``list_images``: the images of a source: a data YAML's split listed as ``yolo val`` lists it (folders searched
  recursively, ``.txt`` lists), or a folder, image, glob, ``.txt``/``.csv`` list or list of paths read by
  ``LoadImagesAndVideos``, as ``yolo predict source=...`` reads it;
- ``image_batches``: those images read in batches by ``LoadImagesAndVideos`` and letterboxed with Ultralytics'
  ``LetterBox`` to a square (the grey padding of validation);
- ``select_device``: Ultralytics' ``select_device`` (``cpu``, ``0``, ``cuda:1``, ...).

Every failure is one ``IbraYoloError`` line naming the bad value.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ibra_yolo.errors import IbraYoloError, MissingFileError

__all__ = ("load_dataset", "list_images", "image_batches", "select_device")

_YAML = {".yaml", ".yml"}


def _one_line(e: BaseException) -> str:
    return "; ".join(s.strip() for s in str(e).splitlines() if s.strip())


def load_dataset(data: str | Path, split: str = "val") -> dict:
    """Resolve a dataset YAML as Ultralytics does (never downloading) and check that the split's images exist.

    Args:
        data (str | Path): A dataset YAML path or a name Ultralytics knows (``coco.yaml``).
        split (str): The split that will be used.

    Returns:
        (dict): Ultralytics' dataset dict (absolute ``path``, ``names``, split paths).

    Raises:
        MissingFileError: The YAML or the split's images are missing.
        IbraYoloError: The YAML is malformed.
    """
    from ultralytics.data.utils import check_det_dataset

    if Path(data).exists() and not (Path(data).is_file() or Path(data).is_dir()):  # a FIFO would block the reader
        raise IbraYoloError(f"dataset {data} is not a regular file (a FIFO or a device): name a data YAML")
    try:
        return check_det_dataset(str(data), autodownload=False, split=split)
    except IbraYoloError:
        raise  # the plugin's dataset check words it already (ibra_yolo.dataset_guard)
    except FileNotFoundError as e:
        raise MissingFileError(f"dataset {data}: {_one_line(e)}") from None
    except (SyntaxError, TypeError, ValueError, KeyError) as e:
        raise IbraYoloError(f"dataset {data}: {_one_line(e)}") from None


def _loader_files(source: str | list[str], what: str) -> list[str]:
    """The image files ``LoadImagesAndVideos`` finds in ``source`` (videos left out)."""
    from ultralytics.data.loaders import LoadImagesAndVideos

    if isinstance(source, str) and "*" not in source and not Path(source).exists():
        raise MissingFileError(f"{what} {source} does not exist: pass an image folder, an image, a list or a data YAML")
    if isinstance(source, str) and Path(source).exists() and not (Path(source).is_file() or Path(source).is_dir()):
        raise IbraYoloError(f"{what} {source} is not a file or folder (a device or FIFO): pass images")
    try:
        loader = LoadImagesAndVideos(
            [literal_path(x) for x in source] if isinstance(source, list) else literal_path(source)
        )
    except FileNotFoundError as e:
        raise MissingFileError(f"{what} {source}: {_one_line(e)}") from None
    loader.close()  # a video capture opened on construction
    return loader.files[: loader.ni]  # images come first


def literal_path(path: str) -> str:
    """``path`` for ``LoadImagesAndVideos``, which takes a name holding ``*`` as a glob pattern (as ``yolo predict``
    does, and so do we): a pattern that matches nothing but names an existing image or folder (``img[1]*.png``: the
    ``[1]`` matches only ``1``) was "No images or videos found"; that name is escaped to be read as it is."""
    if "*" not in path or not Path(path).exists() or glob.glob(path, recursive=True):
        return path
    return str(Path(glob.escape(path)) / "*.*") if Path(path).is_dir() else glob.escape(path)


def list_images(source: str | Path | list | tuple, split: str = "val") -> list[str]:
    """Image files of ``source``, in the order they are measured.

    Args:
        source: A data YAML (path or a name such as ``coco.yaml``: its ``split``, as ``yolo val`` lists it), a folder
            (its images, not recursive, as ``yolo predict`` reads it), an image, a glob, a ``.txt``/``.csv`` list, or
            a list of image paths.
        split (str): The split of a data YAML.

    Returns:
        (list[str]): Absolute paths of the images (videos are left out).

    Raises:
        MissingFileError: The source, or a file it names, does not exist.
        IbraYoloError: The source holds no images.
    """
    if isinstance(source, (list, tuple)):
        files = _loader_files([str(p) for p in source], "image") if source else []
    elif Path(source).suffix.lower() in _YAML:
        d = load_dataset(source, split)
        entries = d[split] if isinstance(d[split], list) else [d[split]]
        files = []
        for e in map(Path, entries):  # as YOLODataset.get_img_files: folders recursively, list files line by line
            pattern = str(Path(glob.escape(str(e))) / "**" / "*.*")  # a folder named set[1] is a folder, no pattern
            files += _loader_files(pattern if e.is_dir() else str(e), f"{split} split of {source}:")
        files = sorted(files)
    else:
        files = _loader_files(str(source), "source")
    if not files:
        raise IbraYoloError(f"no images found in {source}")
    special = next((f for f in files if not os.path.isfile(f)), None)  # Ultralytics' reader: "does not exist"
    if special is not None:
        raise IbraYoloError(
            f"image {special} of {source} is not a regular file (a device, FIFO or socket, or a link to one): remove "
            f"it from the source"
        )
    return files


def image_batches(files: list[str], imgsz: int, batch: int) -> Iterator[torch.Tensor]:
    """Yield ``uint8`` batches ``[B, 3, imgsz, imgsz]`` (RGB, letterboxed to a square), reading images lazily.

    Images are read by ``LoadImagesAndVideos`` (in threads for large batches); one that cannot be decoded is skipped
    with Ultralytics' warning, so count the images of the batches, not ``files``.
    """
    import cv2
    from ultralytics.data.augment import LetterBox
    from ultralytics.data.loaders import LoadImagesAndVideos

    letterbox = LetterBox((imgsz, imgsz), auto=False)
    files, done = list(files), 0
    # the loader globs every entry holding a "*"; these are files already listed, so a name such as a*b.png is escaped
    # (read once, not again as a pattern that also matches axxb.png)
    literal = [glob.escape(f) if "*" in f else f for f in map(str, files)]
    loader = iter(LoadImagesAndVideos(literal, batch=batch))
    while True:
        try:
            paths, images, _ = next(loader)
        except StopIteration:
            return
        except (cv2.error, MemoryError) as e:  # e.g. a PNG header claiming 60000 x 60000 pixels
            what = ", ".join(files[done : done + batch][:3]) + (" ..." if len(files) - done > 3 else "")
            raise IbraYoloError(f"cannot decode an image of {what}: {_one_line(e)[:200]}") from None
        done += len(paths)
        arrays = [np.ascontiguousarray(letterbox(image=im)[..., ::-1].transpose(2, 0, 1)) for im in images]
        yield torch.from_numpy(np.stack(arrays))


def select_device(device: str | int | torch.device) -> torch.device:
    """A torch device from ``cpu``, ``0``, ``0,1`` (the first), ``cuda:1`` or a ``torch.device``, as Ultralytics picks.

    Raises:
        IbraYoloError: The device does not exist on this machine.
    """
    from ultralytics.utils.torch_utils import select_device as ultralytics_select_device

    try:
        return ultralytics_select_device(device if isinstance(device, torch.device) else str(device), verbose=False)
    except ValueError as e:
        raise IbraYoloError(f"device={device!r} is not available: {_one_line(e)}") from None
